"""Shared set-up of the benchmark scripts: the embedded corpus, timing, JSON output."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def corpus_dataset_and_tokenizer(n: int = 20_000, max_length: int | None = None):
    """The embedded corpus tokenised with a WordPiece tokenizer trained on it."""
    from textbatch.corpus import corpus_dataset
    from textbatch.data import TextDataset
    from textbatch.tokenizers import train_tokenizer

    raw = corpus_dataset(n)
    tokenizer = train_tokenizer(raw["text"], vocab_size=8000)
    return TextDataset.from_hf(raw, tokenizer, max_length=max_length), tokenizer


def best_time(fn: Callable[[], Any], repeats: int = 5) -> float:
    """The fastest of ``repeats`` runs of ``fn``, in seconds (the least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_time(fn: Callable[[], Any], repeats: int = 5) -> float:
    """The median of ``repeats`` runs of ``fn``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import os

    import torch

    return {
        "date": date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def save(name: str, data: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``data`` (with the machine description) as JSON, atomically."""
    from textbatch.io import write_json

    path = Path(out) if out else RESULTS / f"{name}.json"
    write_json(path, {"benchmark": name, "machine": machine(), **data})
    print(f"wrote {path}")
    return path
