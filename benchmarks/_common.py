"""Shared set-up of the benchmark scripts: the embedded corpus, timing, JSON output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def corpus_dataset_and_tokenizer(max_length: int | None = None):
    """The embedded corpus tokenised with a WordPiece tokenizer trained on it."""
    from textbatch.data.prepare import load_dataset_and_tokenizer

    return load_dataset_and_tokenizer(None, max_length=max_length)


def best_time(fn: Callable[[], Any], repeats: int = 5) -> float:
    """The fastest of ``repeats`` runs of ``fn``, in seconds (the least disturbed by other work)."""
    from textbatch.bench.compare import timed

    return timed(fn, repeats)[1]


def save(name: str, data: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``data`` (with the machine description) as JSON, atomically."""
    from textbatch.bench.compare import machine
    from textbatch.files import write_json

    path = Path(out) if out else RESULTS / f"{name}.json"
    write_json(path, {"benchmark": name, "machine": machine(), **data})
    print(f"wrote {path}")
    return path
