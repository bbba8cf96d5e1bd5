"""The data layer: raw text (files, records, Hugging Face datasets, streams) tokenised once into
Arrow, with token lengths as a numpy array. Imports nothing from batching, models, training,
cli or bench."""

from textbatch.data.corpus import corpus_dataset, make_corpus
from textbatch.data.dataset import TextDataset, load_file
from textbatch.data.streaming import StreamingTextDataset
from textbatch.data.tokenizers import load_tokenizer, train_tokenizer
from textbatch.data.transforms import TokenDropout

__all__ = [
    "StreamingTextDataset",
    "TextDataset",
    "TokenDropout",
    "corpus_dataset",
    "load_file",
    "load_tokenizer",
    "make_corpus",
    "train_tokenizer",
]
