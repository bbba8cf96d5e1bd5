"""The batching layer: pure planning functions, the length-bucketing sampler, the stream
bucketer, collators and padding statistics. Imports from data and the base modules only."""

from textbatch.batching.collate import PackingCollator, PaddingCollator
from textbatch.batching.loaders import make_loader
from textbatch.batching.sampler import BucketBatchSampler, balanced_weights
from textbatch.batching.stats import PaddingStats, packing_stats, padding_stats
from textbatch.batching.stream import BucketedStream

__all__ = [
    "BucketBatchSampler",
    "BucketedStream",
    "PackingCollator",
    "PaddingCollator",
    "PaddingStats",
    "balanced_weights",
    "make_loader",
    "packing_stats",
    "padding_stats",
]
