"""textbatch: fast, low-padding PyTorch batches from labelled text."""

from textbatch._version import __version__
from textbatch.bucketed_stream import BucketedStream
from textbatch.collate import PaddingCollator
from textbatch.corpus import corpus_dataset, make_corpus
from textbatch.data import TextDataset
from textbatch.errors import TextBatchError
from textbatch.sampling import BucketBatchSampler, balanced_weights
from textbatch.streaming import StreamingTextDataset
from textbatch.tokenizers import load_tokenizer, train_tokenizer
from textbatch.transforms import TokenDropout

__all__ = [
    "BucketBatchSampler",
    "BucketedStream",
    "PaddingCollator",
    "StreamingTextDataset",
    "TextBatchError",
    "TextDataset",
    "TokenDropout",
    "__version__",
    "balanced_weights",
    "corpus_dataset",
    "load_tokenizer",
    "make_corpus",
    "train_tokenizer",
]
