"""The same number of batches in every epoch, for loops that count an epoch's steps once.

``Trainer`` takes ``len(train_dataloader)`` at the start of training as every epoch's length.
With a token budget, ``BucketBatchSampler``'s epochs differ by a batch or two (how many batches
the budget cuts depends on each epoch's shuffle): a longer epoch would lose its last batches, a
shorter one would end the schedule's step count early. ``EvenSteps`` makes every epoch as long
as the longest one of the run by splitting its costliest batches in two: every example still
comes once per epoch, no batch grows, and every rank splits to the same count.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from textbatch.batching.sampler import BucketBatchSampler
from textbatch.errors import TextBatchError


def split_to(batches: list[list[int]], steps: int, lengths: np.ndarray) -> list[list[int]]:
    """``batches`` with the costliest (examples x longest, in tokens) split into its shorter
    and longer half, again and again, until there are ``steps`` of them; each half stays in
    the place of the batch it came from."""
    if len(batches) > steps:
        raise TextBatchError(
            f"this epoch has {len(batches)} batches, more than the {steps} counted on; "
            "plan the steps over every epoch the run trains."
        )
    batches = [list(b) for b in batches]
    while len(batches) < steps:
        costs = [len(b) * int(lengths[b].max()) if len(b) > 1 else -1 for b in batches]
        k = int(np.argmax(costs))
        if costs[k] < 0:
            raise TextBatchError(
                f"cannot make {steps} batches of {sum(map(len, batches))} examples; use fewer "
                "ranks or more examples."
            )
        order = sorted(batches[k], key=lambda i: int(lengths[i]))
        half = len(order) // 2
        batches[k : k + 1] = [order[:half], order[half:]]
    return batches


def longest_epoch(sampler: BucketBatchSampler, epochs: int) -> int:
    """The most batches (per rank) of the sampler's epochs 0 to ``epochs`` - 1."""
    return max(sampler.epoch_lengths(max(1, epochs)))


class EvenSteps:
    """A batch sampler that yields ``steps`` batches of ``sampler`` per epoch (``steps`` at
    least the sampler's longest epoch), splitting batches of shorter epochs (:func:`split_to`).

    ``set_epoch`` goes to the sampler; each pass is one whole epoch of it.
    """

    def __init__(self, sampler: BucketBatchSampler, steps: int) -> None:
        self.sampler = sampler
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        yield from split_to(list(self.sampler), self.steps, self.sampler.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
