"""textbatch: fast, low-padding PyTorch batches from labelled text.

The public API, re-exported from the layers (``data`` -> ``batching`` -> ``models`` ->
``training``); see docs/ARCHITECTURE.md.
"""

from textbatch._version import __version__
from textbatch.batching import (
    BucketBatchSampler,
    BucketedStream,
    PackingCollator,
    PaddingCollator,
    PaddingStats,
    balanced_weights,
    make_loader,
    packing_stats,
    padding_stats,
)
from textbatch.data import (
    StreamingTextDataset,
    TextDataset,
    TokenDropout,
    corpus_dataset,
    load_tokenizer,
    make_corpus,
    train_tokenizer,
)
from textbatch.errors import TextBatchError, TextBatchWarning
from textbatch.models import BackboneClassifier, TextClassifier, load_model
from textbatch.training import evaluate, fit

# textbatch.hf (Trainer integration) on first use: importing textbatch never imports Trainer.
_HF_NAMES = ("BucketTrainer", "bucket_sampler_for")


def __getattr__(name: str):
    if name in _HF_NAMES:
        from textbatch import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'textbatch' has no attribute {name!r}")


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
