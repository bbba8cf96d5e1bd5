"""Training checkpoints: written atomically, found and checked without a pointer file.

A checkpoint is a directory ``checkpoints/step-<n>/`` (``step-<n>-end/`` at an epoch's end)
holding the model weights (safetensors), the optimizer, scheduler and gradient-scaler states and
every rank's RNG states (``torch.save``, read with ``weights_only=True``), ``trainer_state.json``
(epoch, position, sampler state, history, the run's id) and, written last, ``manifest.json``: the
size and XXH3-128 digest of every other file. It is built under a temporary name and renamed into
place, so a crash never leaves a half-written checkpoint behind; a checkpoint whose files do not
match its manifest is damaged, and :func:`find_checkpoint` passes over it with a warning.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textbatch.data.hashing import file_digest
from textbatch.errors import TextBatchError, TextBatchWarning
from textbatch.files import atomic_folder, default_mode

STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
KEEP = 2  # checkpoints of one run kept on disk
_NAME = re.compile(r"step-(\d+)(-end)?")
_TEMP_PREFIX = ".step-"  # folders being written; leftovers of a killed write


def rng_states(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every random number generator's state (and those of ``generators``, e.g. a DataLoader's
    own), so that a resumed run draws the same numbers."""
    kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # plain types only, so that torch.load(weights_only=True) reads them back
        "numpy": (kind, keys.tolist(), position, has_gauss, gauss),
        "python": random.getstate(),
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(
    states: dict[str, Any], generators: dict[str, torch.Generator] | None = None
) -> None:
    """Restore what :func:`rng_states` returned (and the states of ``generators``)."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    saved = states.get("generators", {})
    for name, generator in (generators or {}).items():
        if name in saved:
            generator.set_state(saved[name])


def checkpoint_name(step: int, end_of_epoch: bool) -> str:
    """``step-<n>`` mid-epoch, ``step-<n>-end`` for the checkpoint after an epoch's evaluation."""
    return f"step-{step:08d}" + ("-end" if end_of_epoch else "")


def _order(path: Path) -> tuple[int, int]:
    """Training progress of a checkpoint folder, from its name: later steps, then epoch ends."""
    match = _NAME.fullmatch(path.name)
    assert match is not None
    return int(match.group(1)), int(match.group(2) is not None)


def checkpoint_folders(folder: str | Path) -> list[Path]:
    """The checkpoint folders under ``folder``, newest (furthest in training) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)]
    return sorted(found, key=_order, reverse=True)


def _write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    manifest = {p.name: {"bytes": p.stat().st_size, "xxh3_128": file_digest(p)} for p in files}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


def checkpoint_problem(path: Path) -> str | None:
    """Why checkpoint ``path`` cannot be used (missing or changed files), or None when its files
    match its manifest."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        return f"it has no {MANIFEST_FILE} (its write did not finish)"
    except (OSError, ValueError) as error:
        return f"its {MANIFEST_FILE} is unreadable ({error})"
    for name in (STATE_FILE, "model.safetensors", "rng.pt"):
        if name not in manifest:
            return f"its {MANIFEST_FILE} does not list {name}"
    for name, expected in manifest.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, not {expected['bytes']}"
        if file_digest(file) != expected.get("xxh3_128"):
            return f"{name} is not the file that was written (its digest differs)"
    return None


def remove_leftovers(folder: str | Path) -> None:
    """Delete temporary folders that a killed checkpoint write left under ``folder``."""
    folder = Path(folder)
    if folder.is_dir():
        for leftover in folder.glob(_TEMP_PREFIX + "*"):
            shutil.rmtree(leftover, ignore_errors=True)


def save_checkpoint(
    folder: str | Path,
    name: str,
    model: torch.nn.Module,
    objects: dict[str, Any],
    state: dict[str, Any],
    rng: Any,
) -> Path:
    """Write checkpoint ``name`` under ``folder`` atomically; keep the newest ``KEEP`` of this
    run (``state["run_id"]``) and never touch another run's checkpoints.

    ``objects`` maps names to things with ``state_dict()`` (optimizer, scheduler, scaler);
    ``state`` is plain JSON data; ``rng`` holds the RNG states (of every rank).
    """
    from safetensors.torch import save_file

    folder = Path(folder)

    def write(tmp: Path) -> None:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        for key, obj in objects.items():
            if obj is not None:
                torch.save(obj.state_dict(), tmp / f"{key}.pt")
        torch.save(rng, tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        for file in tmp.iterdir():
            default_mode(file)  # safetensors writes 0600 whatever the umask
        _write_manifest(tmp)  # last: its presence says the checkpoint is complete

    # An existing folder of this name is a damaged checkpoint of this run, rewritten after a
    # fallback.
    final = atomic_folder(folder / name, write)
    _prune(folder, state["run_id"], keep=final)
    return final


def _run_id(path: Path) -> str | None:
    try:
        return json.loads((path / STATE_FILE).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None  # unreadable: not known to be ours, so kept


def _prune(folder: Path, run_id: str, keep: Path) -> None:
    """Delete this run's checkpoints older than ``keep`` but the newest ``KEEP - 1``; those
    ahead of it (a damaged branch after a fallback) are replaced when training reaches them."""
    older = [p for p in checkpoint_folders(folder) if _order(p) < _order(keep)]
    ours = [p for p in older if _run_id(p) == run_id]
    for old in ours[KEEP - 1 :]:
        # Renamed out of the checkpoints first (one atomic step), then deleted: a kill while
        # deleting it in place left a part of a checkpoint that no later prune could name as
        # this run's (its state file gone); a renamed leftover goes with the others.
        aside = old.with_name(f".{old.name}.pruned")
        try:
            old.rename(aside)
        except OSError:
            aside = old
        shutil.rmtree(aside, ignore_errors=True)


def find_checkpoint(folder: str | Path) -> Path | None:
    """The newest valid checkpoint under ``folder``: None when there is none at all; damaged
    ones are passed over with a warning; an error when checkpoints exist but none is valid."""
    candidates = checkpoint_folders(folder)
    problems = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            if problems:
                warnings.warn(
                    f"resuming from {str(path)!r}, the newest valid checkpoint; passed over "
                    + "; ".join(problems)
                    + ". Delete the damaged folders once you no longer need them.",
                    TextBatchWarning,
                    stacklevel=2,
                )
            return path
        problems.append(f"{str(path)!r}: {problem}")
    if problems:
        raise TextBatchError(
            f"no valid checkpoint to resume from in {str(folder)!r}: "
            + "; ".join(problems)
            + ". Restore one, or start afresh in another output directory (deleting these "
            "discards the run)."
        )
    return None


def read_trainer_state(path: Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of checkpoint ``path``."""
    try:
        return json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as error:
        raise TextBatchError(f"checkpoint {str(path)!r} is damaged: {error}.") from error


def load_checkpoint(
    path: Path, model: torch.nn.Module, objects: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    """Load weights and states from checkpoint ``path`` into ``model`` and ``objects``.

    Returns ``(trainer_state, rng_states)``; the caller restores the RNG states around the
    creation of its data iterator. A damaged checkpoint raises a ``TextBatchError`` that names
    it.
    """
    from safetensors.torch import load_file

    from textbatch.models.classifiers import load_state

    problem = checkpoint_problem(path)
    if problem is not None:
        raise TextBatchError(f"checkpoint {str(path)!r} is damaged or incomplete: {problem}.")
    try:
        state = json.loads((path / STATE_FILE).read_text())
        weights = load_file(str(path / "model.safetensors"))
        loaded = {
            key: torch.load(path / f"{key}.pt", weights_only=True)
            for key, obj in objects.items()
            if obj is not None
        }
        rng = torch.load(path / "rng.pt", weights_only=True)
    except Exception as error:  # files that match the manifest but were written wrong
        raise TextBatchError(
            f"checkpoint {str(path)!r} is damaged or incomplete ({type(error).__name__}: "
            f"{error}); restore it, or start afresh in another output directory."
        ) from error
    load_state(model, weights, str(path / "model.safetensors"))
    for key, obj in objects.items():
        if obj is not None:
            obj.load_state_dict(loaded[key])
    return state, rng
