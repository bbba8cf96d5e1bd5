"""Defaults that let a run learn without tuning: learning rates by kind of model, a truncation
length read off the data, and enough optimizer steps for small data sets.

Why these values: fine-tuning MiniLM-L6 on 1,000 short texts of 3 imbalanced classes for one
epoch at the old defaults (peak rate 5e-5, batches of 32, 512 tokens) took 31 optimizer steps,
peaked at 12 GB and predicted the majority class only. A pretrained encoder needs a small rate
(a large one wrecks what it knows), its new head a large one (it starts from random), and
both need a few hundred steps. README "Fine-tuning a pretrained backbone" has the measurements.
"""

from __future__ import annotations

import math

import numpy as np

# Peak learning rates (AdamW, linear warm-up then linear decay to 0).
SCRATCH_LR = 1e-3  # fit()'s rate for a model trained from scratch
BACKBONE_LR = 1e-4  # a pretrained encoder
BACKBONE_HEAD_LR = 2e-3  # the new classification head on it
BACKBONE_WARMUP = 0.1  # share of the steps spent warming up

# A pretrained backbone trains on batches of at most this many examples and tokens (padding
# included): the budget bounds memory whatever the lengths (about 1.5 GB for MiniLM-L6 on 2
# CPU cores), the cap keeps enough steps per epoch on short texts.
BACKBONE_BATCH_SIZE = 16
BACKBONE_MAX_TOKENS = 4096

MIN_STEPS = 300  # optimizer steps a default run takes at least, over more epochs if needed
MAX_EPOCHS = 20  # ... but never more epochs than this

LENGTH_QUANTILE = 99.0  # percent of examples the suggested max_length keeps whole
LENGTH_MULTIPLE = 32  # the suggested max_length is rounded up to a multiple of this


def suggest_max_length(lengths: np.ndarray, cap: int) -> int:
    """A truncation length (tokens) for data with these token ``lengths`` (special tokens
    included, already truncated at ``cap``): the 99th percentile rounded up to a multiple of
    32, but no more than the longest example nor ``cap`` (the model's limit). It cuts at most
    1% of the examples, and only their tails.

    >>> suggest_max_length(np.array([10] * 99 + [400]), cap=512)
    32
    >>> suggest_max_length(np.array([10, 20, 40]), cap=512)
    40
    """
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        return cap
    quantile = float(np.percentile(lengths, LENGTH_QUANTILE))
    rounded = LENGTH_MULTIPLE * math.ceil(quantile / LENGTH_MULTIPLE)
    return int(min(cap, rounded, lengths.max()))


def default_epochs(steps_per_epoch: int, at_least: int = 3) -> int:
    """Epochs for a default run: ``at_least``, or more so that the run takes
    :data:`MIN_STEPS` optimizer steps, at most :data:`MAX_EPOCHS`.

    >>> default_epochs(63), default_epochs(500), default_epochs(5)
    (5, 3, 20)
    """
    if steps_per_epoch < 1:
        return at_least
    return max(at_least, min(MAX_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch)))
