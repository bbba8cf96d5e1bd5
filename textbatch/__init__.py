"""textbatch: fast, low-padding PyTorch batches from labelled text.

The public API, re-exported from the layers (``data`` -> ``batching`` -> ``models`` ->
``training`` -> ``hf``); see docs/ARCHITECTURE.md. Names load on first use, so that
``import textbatch`` imports neither torch nor transformers until they are needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from textbatch._version import __version__
from textbatch.errors import TextBatchError, TextBatchWarning

_WHERE = {
    "BucketBatchSampler": "textbatch.batching",
    "BucketedStream": "textbatch.batching",
    "PackingCollator": "textbatch.batching",
    "PaddingCollator": "textbatch.batching",
    "PaddingStats": "textbatch.batching",
    "balanced_weights": "textbatch.batching",
    "make_loader": "textbatch.batching",
    "packing_stats": "textbatch.batching",
    "padding_stats": "textbatch.batching",
    "StreamingTextDataset": "textbatch.data",
    "TextDataset": "textbatch.data",
    "TokenDropout": "textbatch.data",
    "corpus_dataset": "textbatch.data",
    "load_tokenizer": "textbatch.data",
    "make_corpus": "textbatch.data",
    "train_tokenizer": "textbatch.data",
    "BackboneClassifier": "textbatch.models",
    "TextClassifier": "textbatch.models",
    "load_model": "textbatch.models",
    "evaluate": "textbatch.training",
    "fit": "textbatch.training",
    "BucketTrainer": "textbatch.hf",
    "bucket_sampler_for": "textbatch.hf",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name]), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'textbatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "BackboneClassifier",
    "BucketBatchSampler",
    "BucketTrainer",
    "BucketedStream",
    "PackingCollator",
    "PaddingCollator",
    "PaddingStats",
    "StreamingTextDataset",
    "TextBatchError",
    "TextBatchWarning",
    "TextClassifier",
    "TextDataset",
    "TokenDropout",
    "__version__",
    "balanced_weights",
    "bucket_sampler_for",
    "corpus_dataset",
    "evaluate",
    "fit",
    "load_model",
    "load_tokenizer",
    "make_corpus",
    "make_loader",
    "packing_stats",
    "padding_stats",
    "train_tokenizer",
]
