"""The pure planning functions behind the sampler, as tables of inputs and outputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textbatch import TextBatchError
from textbatch.batching.planning import (
    NUM_CODES,
    batch_cost,
    batch_size_plan,
    code_lower_bounds,
    even_sizes,
    length_codes,
    length_order,
    split_for_replicas,
    token_budget_bounds,
)


def test_length_codes_are_exact_below_1024_and_log_spaced_above():
    assert length_codes(np.array([1, 2, 500, 1023])).tolist() == [1, 2, 500, 1023]
    codes = length_codes(np.array([1024, 1030, 2048, 100_000, 10**7, 10**9]))
    assert codes.tolist() == sorted(codes.tolist()) and codes.max() == NUM_CODES - 1
    assert codes[0] == 1024 and codes[1] == 1024  # within 0.9% of each other
    assert codes.dtype == np.uint16


def test_code_lower_bounds_invert_length_codes():
    bounds = code_lower_bounds()
    assert len(bounds) == NUM_CODES and np.all(np.diff(bounds) >= 0)
    lengths = np.unique(np.geomspace(1, 5_000_000, 3000).astype(int))
    codes = length_codes(lengths)
    assert np.all(bounds[codes] <= lengths)
    upper = np.append(bounds[1:], np.iinfo(np.int64).max)
    assert np.all(lengths < np.maximum(upper[codes], bounds[codes] + 1))
    assert np.all(np.diff(bounds[1024:]) / bounds[1024:-1] < 0.01)  # buckets under 1% wide


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=300), st.integers(0, 5))
def test_length_order_sorts(lengths, seed):
    lengths = np.array(lengths)
    codes = length_codes(lengths)
    stable = length_order(codes)
    assert np.all(np.diff(codes[stable].astype(int)) >= 0)
    assert stable.tolist() == np.argsort(codes, kind="stable").tolist()
    shuffled = length_order(codes, np.random.default_rng(seed))
    assert sorted(shuffled.tolist()) == list(range(len(lengths)))
    assert np.all(np.diff(codes[shuffled].astype(int)) >= 0)


def test_length_order_reach_moves_forward_a_little():
    rng = np.random.default_rng(0)
    lengths = np.sort(rng.integers(1, 400, 5000))
    codes = length_codes(lengths)
    orders = [
        length_order(codes, np.random.default_rng(s), np.full(NUM_CODES, 16.0)) for s in (1, 2)
    ]
    for order in orders:
        assert sorted(order.tolist()) == list(range(5000))
        position = np.empty(5000, dtype=int)
        position[order] = np.arange(5000)
        # nearly sorted: no example lands far from its place in a full sort
        assert np.abs(position - np.arange(5000)).max() < 200
    assert orders[0].tolist() != orders[1].tolist()


@pytest.mark.parametrize(
    ("n", "batch_size", "replicas", "drop_last", "sizes", "dropped", "repeated"),
    [
        (10, 4, 1, False, [4, 4, 2], 0, 0),
        (12, 4, 1, False, [4, 4, 4], 0, 0),
        (10, 4, 1, True, [4, 4], 2, 0),
        (10, 4, 2, False, [4, 4, 1, 1], 0, 0),
        (9, 4, 2, False, [3, 2, 2, 2], 0, 0),
        (100, 32, 4, False, [25, 25, 25, 25], 0, 0),
        (65, 32, 2, False, [17, 16, 16, 16], 0, 0),
        (100, 32, 4, True, [], 100, 0),
        (3, 8, 4, False, [1, 1, 1, 1], 0, 1),
        (5, 1, 4, False, [1] * 8, 0, 3),
    ],
)
def test_batch_size_plan(n, batch_size, replicas, drop_last, sizes, dropped, repeated):
    got, got_dropped, got_repeated = batch_size_plan(n, batch_size, replicas, drop_last)
    assert (got_dropped, got_repeated) == (dropped, repeated)
    assert got.sum() == n - dropped + repeated
    assert len(got) % replicas == 0 and (got >= 1).all() and (got <= batch_size).all()
    assert got.tolist() == sizes


def test_even_sizes():
    assert even_sizes(10, 4).tolist() == [3, 3, 2, 2]
    assert even_sizes(8, 4).tolist() == [2, 2, 2, 2]


def greedy_by_hand(lengths, max_tokens, max_examples=None, multiple=None, quadratic=None):
    bounds, start = [0], 0
    while start < len(lengths):
        end = start + 1
        while end < len(lengths):
            width = max(lengths[: end + 1])  # running maximum
            count = end + 1 - start
            if count * batch_cost(width, multiple, quadratic) > max_tokens:
                break
            if max_examples is not None and count > max_examples:
                break
            end += 1
        bounds.append(end)
        start = end
    return bounds


@pytest.mark.parametrize(
    ("lengths", "max_tokens", "options", "expected"),
    [
        ([1, 2, 3, 4], 8, {}, [0, 2, 4]),  # [1, 2]: 2 x 2; [1, 2, 3] would be 3 x 3 > 8
        ([5, 5, 5, 5], 10, {}, [0, 2, 4]),
        ([5, 5, 5, 5], 100, {"max_examples": 3}, [0, 3, 4]),
        ([5, 5, 9, 9], 32, {"multiple": 8}, [0, 2, 4]),
        ([4, 4, 4], 24, {"quadratic": 4}, [0, 3]),
    ],
)
def test_token_budget_bounds_by_hand(lengths, max_tokens, options, expected):
    names = {"max_examples": "max_examples", "multiple": "pad_to_multiple_of"}
    kwargs = {names.get(k, "quadratic_length"): v for k, v in options.items()}
    assert token_budget_bounds(np.array(lengths), max_tokens, **kwargs).tolist() == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 60), min_size=1, max_size=200),
    st.integers(60, 600),
    st.one_of(st.none(), st.integers(1, 20)),
    st.sampled_from([None, 8]),
    st.sampled_from([None, 50]),
    st.booleans(),
)
def test_token_budget_bounds_match_a_greedy_walk(lengths, budget, cap, multiple, quadratic, sort):
    lengths = sorted(lengths) if sort else lengths
    if batch_cost(max(lengths), multiple, quadratic) > budget:
        with pytest.raises(TextBatchError):
            token_budget_bounds(np.array(lengths), budget, cap, multiple, quadratic)
        return
    got = token_budget_bounds(np.array(lengths), budget, cap, multiple, quadratic)
    assert got.tolist() == greedy_by_hand(lengths, budget, cap, multiple, quadratic)


@pytest.mark.parametrize(
    ("bounds", "replicas", "drop_last", "expected", "dropped", "missing"),
    [
        ([0, 4, 8], 2, False, [0, 4, 8], 0, 0),
        ([0, 4, 8, 9], 2, False, [0, 2, 4, 8, 9], 0, 0),
        ([0, 4, 8, 9], 2, True, [0, 4, 8], 1, 0),  # without rng: the last batch goes
        ([0, 1, 2, 3], 4, False, [0, 1, 2, 3], 0, 1),
        ([0, 6], 3, False, [0, 1, 3, 6], 0, 0),  # halve the largest batch, twice
    ],
)
def test_split_for_replicas(bounds, replicas, drop_last, expected, dropped, missing):
    order = np.arange(bounds[-1]) * 10
    got_order, got, got_dropped, got_missing = split_for_replicas(
        order, np.array(bounds), replicas, drop_last
    )
    assert (got.tolist(), got_dropped, got_missing) == (expected, dropped, missing)
    assert got_order.tolist() == order[: got[-1]].tolist()


def test_split_for_replicas_drops_batches_at_random():
    order, bounds = np.arange(10), np.array([0, 2, 4, 6, 8, 10])
    dropped = set()
    for seed in range(20):
        kept, new_bounds, gone, _ = split_for_replicas(
            order, bounds, 2, True, np.random.default_rng(seed)
        )
        assert gone == 2 and len(new_bounds) == 5 and len(kept) == 8
        dropped |= set(range(10)) - set(kept.tolist())
    assert len(dropped) > 2  # not always the same batch
