from __future__ import annotations

import numpy as np
import pytest

from textbatch import TextBatchError
from textbatch.batching.stats import length_summary, padding_stats

# (lengths, batches, pad_to_multiple_of) -> (real, padded, waste, max_batch_tokens), by hand
CASES = [
    ([1, 2, 3, 4], [[0, 1], [2, 3]], None, (10, 2 * 2 + 2 * 4, 2 / 12, 8)),
    ([1, 2, 3, 4], [[0, 1], [2, 3]], 4, (10, 4 * 2 + 4 * 2, 6 / 16, 8)),
    ([5, 5, 5], [[0, 1, 2]], None, (15, 15, 0.0, 15)),
    ([7, 1, 1, 1], [[1, 0], [2], [3]], None, (10, 14 + 1 + 1, 6 / 16, 14)),
    ([3, 9], [[1], [0]], 8, (12, 16 + 8, 12 / 24, 16)),
]


@pytest.mark.parametrize(("lengths", "batches", "multiple", "expected"), CASES)
def test_padding_stats_by_hand(lengths, batches, multiple, expected):
    stats = padding_stats(lengths, batches, pad_to_multiple_of=multiple)
    assert stats.real_tokens == expected[0]
    assert stats.padded_tokens == expected[1]
    assert stats.waste == pytest.approx(expected[2])
    assert stats.max_batch_tokens == expected[3]
    assert stats.num_batches == len(batches)
    assert stats.padding_tokens == expected[1] - expected[0]


def test_fill_of_a_token_budget():
    stats = padding_stats([2, 2, 4], [[0, 1], [2]], max_tokens=8)
    assert stats.fill == pytest.approx((4 / 8 + 4 / 8) / 2)
    assert padding_stats([2], [[0]]).fill is None


def test_batch_size_summary():
    stats = padding_stats([1] * 6, [[0], [1, 2], [3, 4, 5]])
    assert (stats.batch_size_min, stats.batch_size_max, stats.batch_size_mean) == (1, 3, 2.0)
    assert stats.num_examples == 6
    assert set(stats.as_dict()) >= {"real_tokens", "padded_tokens", "waste", "num_batches"}


def test_padding_stats_bad_input():
    with pytest.raises(TextBatchError, match="batches is empty"):
        padding_stats([1, 2], [])
    with pytest.raises(TextBatchError, match="batch 1 is empty"):
        padding_stats([1, 2], [[0], []])
    with pytest.raises(TextBatchError, match="index 5 is out of range"):
        padding_stats([1, 2], [[0, 5]])
    with pytest.raises(TextBatchError, match=r"lengths\[1\] = 0"):
        padding_stats([1, 0], [[0, 1]])
    with pytest.raises(TextBatchError, match="pad_to_multiple_of"):
        padding_stats([1, 2], [[0, 1]], pad_to_multiple_of=0)


def test_length_summary():
    summary = length_summary(np.array([1, 2, 3, 4, 10]), max_length=4)
    assert summary["examples"] == 5 and summary["tokens"] == 20
    assert summary["mean"] == 4.0 and summary["p50"] == 3.0
    assert summary["min"] == 1 and summary["max"] == 10
    assert summary["at_max_length"] == 2


def test_a_batch_sampler_is_read_once_so_every_number_is_of_one_epoch():
    """A BucketBatchSampler moves to its next epoch after a pass; reading it twice (batch sizes,
    then indices) mixed epoch 0's sizes with epoch 1's indices: waste 0.70 where 0.14 is true."""
    from textbatch import BucketBatchSampler
    from textbatch.batching.stats import packing_stats

    lengths = np.random.default_rng(0).integers(1, 300, 500)
    sampler = BucketBatchSampler(lengths, max_tokens=2048, seed=0)
    expected = padding_stats(lengths, sampler.batches(0), max_tokens=2048)
    assert padding_stats(lengths, BucketBatchSampler(lengths, max_tokens=2048, seed=0),
                         max_tokens=2048) == expected  # fmt: skip
    assert expected.max_batch_tokens <= 2048
    packed = packing_stats(lengths, BucketBatchSampler(lengths, max_tokens=2048, seed=0), 512)
    assert packed == packing_stats(lengths, sampler.batches(0), 512)
    assert padding_stats(lengths, iter(sampler.batches(0))) == padding_stats(
        lengths, sampler.batches(0)
    )  # any iterable of batches


def test_packing_stats_checks_indices_as_padding_stats_does():
    from textbatch.batching.stats import packing_stats

    with pytest.raises(TextBatchError, match="index -1 is out of range for 2 lengths"):
        packing_stats([3, 4], [[-1]], capacity=8)  # took the last example silently
    with pytest.raises(TextBatchError, match="index 7 is out of range"):
        packing_stats([3, 4], [[7]], capacity=8)
    with pytest.raises(TextBatchError, match="batch 0 is empty"):
        packing_stats([3, 4], [[]], capacity=8)
    with pytest.raises(TextBatchError, match="batches is empty; packing_stats"):
        packing_stats([3, 4], [], capacity=8)
    with pytest.raises(TextBatchError, match="index -2 is out of range"):
        padding_stats([1, 2], [[0, -2]])


@pytest.mark.parametrize(
    ("batches", "dtype"),
    [([[[0, 1]], [2]], "shape"), ([[0.0, 1.7]], "float64"), ([[True]], "bool")],
)
def test_a_batch_that_is_not_a_list_of_indices_is_refused(batches, dtype):
    """Nested batches were flattened and float indices cut down to integers, silently."""
    from textbatch.batching.stats import packing_stats

    with pytest.raises(TextBatchError, match=rf"is not a list of integer indices .*{dtype}"):
        padding_stats([1, 2, 3], batches)
    with pytest.raises(TextBatchError, match=rf"is not a list of integer indices .*{dtype}"):
        packing_stats([1, 2, 3], batches, capacity=8)
