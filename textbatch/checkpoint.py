"""Training checkpoints: written atomically, read back safely.

A checkpoint is a directory ``checkpoints/step-<n>/`` holding the model weights (safetensors),
the optimizer, scheduler and gradient-scaler states and the RNG states (``torch.save``, read with
``weights_only=True``), and ``trainer_state.json`` (epoch, position, sampler state, history).
It is written under a temporary name and renamed into place, and ``checkpoints/latest`` names the
newest complete one, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textbatch.errors import TextBatchError
from textbatch.io import write_text

STATE_FILE = "trainer_state.json"
KEEP = 2  # checkpoints kept on disk


def rng_states() -> dict[str, Any]:
    """Every random number generator's state, so that a resumed run draws the same numbers."""
    kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # plain types only, so that torch.load(weights_only=True) reads them back
        "numpy": (kind, keys.tolist(), position, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    folder: str | Path,
    step: int,
    model: torch.nn.Module,
    objects: dict[str, Any],
    state: dict[str, Any],
    rng: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` under ``folder`` atomically; keep the newest ``KEEP``.

    ``objects`` maps names to things with ``state_dict()`` (optimizer, scheduler, scaler);
    ``state`` is plain JSON data; ``rng`` holds RNG states (default: the current ones).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        for key, obj in objects.items():
            if obj is not None:
                torch.save(obj.state_dict(), tmp / f"{key}.pt")
        torch.save(rng if rng is not None else rng_states(), tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        final = folder / name
        if final.exists():  # the same step again (an epoch's end on a checkpoint_every step)
            final.rename(tmp.with_name(tmp.name + ".old"))  # aside, not deleted, until replaced
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text(folder / "latest", name + "\n")
    shutil.rmtree(tmp.with_name(tmp.name + ".old"), ignore_errors=True)
    # Keep the newest by time (a fresh run may leave higher step numbers behind), never this one.
    others = sorted(
        (p for p in folder.glob("step-*") if p != final), key=lambda p: p.stat().st_mtime
    )
    for old in others[: max(0, len(others) - (KEEP - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint under ``folder``, or None when there is none."""
    pointer = Path(folder) / "latest"
    if not pointer.is_file():
        return None
    path = Path(folder) / pointer.read_text().strip()
    if not path.is_dir():
        raise TextBatchError(
            f"{str(pointer)!r} names {path.name!r}, which is missing; the checkpoint folder is "
            "damaged. Delete it to start afresh, or restore the checkpoint."
        )
    return path


def load_checkpoint(
    path: Path, model: torch.nn.Module, objects: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load weights and states from checkpoint ``path`` into ``model`` and ``objects``.

    Returns ``(trainer_state, rng_states)``; the caller restores the RNG states once its data
    iterator exists. A damaged checkpoint raises a ``TextBatchError`` that names it.
    """
    from safetensors.torch import load_file

    from textbatch.models import load_state

    try:
        state = json.loads((path / STATE_FILE).read_text())
        weights = load_file(str(path / "model.safetensors"))
        loaded = {
            key: torch.load(path / f"{key}.pt", weights_only=True)
            for key, obj in objects.items()
            if obj is not None
        }
        rng = torch.load(path / "rng.pt", weights_only=True)
    except TextBatchError:
        raise
    except Exception as error:  # truncated files, bad JSON, not a checkpoint at all
        raise TextBatchError(
            f"checkpoint {str(path)!r} is damaged or incomplete ({type(error).__name__}: "
            f"{error}); delete it (and {path.parent / 'latest'}) to start afresh."
        ) from error
    load_state(model, weights, str(path / "model.safetensors"))
    for key, obj in objects.items():
        if obj is not None:
            obj.load_state_dict(loaded[key])
    return state, rng
