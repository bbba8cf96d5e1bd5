"""textbatch: fast, low-padding PyTorch batches from labelled text."""

from textbatch._version import __version__
from textbatch.bucketed_stream import BucketedStream
from textbatch.collate import PackingCollator, PaddingCollator
from textbatch.corpus import corpus_dataset, make_corpus
from textbatch.data import TextDataset
from textbatch.errors import TextBatchError
from textbatch.models import BackboneClassifier, TextClassifier, load_model
from textbatch.sampling import BucketBatchSampler, balanced_weights
from textbatch.stats import PaddingStats, packing_stats, padding_stats
from textbatch.streaming import StreamingTextDataset
from textbatch.tokenizers import load_tokenizer, train_tokenizer
from textbatch.train import evaluate, fit
from textbatch.transforms import TokenDropout

__all__ = [
    "BackboneClassifier",
    "BucketBatchSampler",
    "BucketedStream",
    "PackingCollator",
    "PaddingCollator",
    "PaddingStats",
    "StreamingTextDataset",
    "TextBatchError",
    "TextClassifier",
    "TextDataset",
    "TokenDropout",
    "__version__",
    "balanced_weights",
    "corpus_dataset",
    "evaluate",
    "fit",
    "load_model",
    "load_tokenizer",
    "make_corpus",
    "packing_stats",
    "padding_stats",
    "train_tokenizer",
]
