"""The Hugging Face layer: textbatch's batches inside ``transformers.Trainer`` (and
Accelerate). May import data, batching, models and training; nothing below imports it.

Names are loaded on first use, so that ``import textbatch`` does not import ``Trainer``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "BucketTrainer": "textbatch.hf.trainer",
    "bucket_sampler_for": "textbatch.hf.trainer",
    "token_lengths": "textbatch.hf.lengths",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
