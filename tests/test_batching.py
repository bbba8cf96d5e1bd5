"""The pure planning functions behind the sampler, as tables of inputs and outputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textbatch import TextBatchError
from textbatch.batching.epochs import SamplerOptions, plan_epoch
from textbatch.batching.planning import (
    NUM_CODES,
    LengthRuns,
    TieScatter,
    batch_cost,
    batch_size_plan,
    code_counts,
    code_lower_bounds,
    code_table,
    even_sizes,
    least_padding_bounds,
    length_code_counts,
    length_codes,
    length_keys,
    length_order,
    running_max_runs,
    shuffled_order,
    sorted_with,
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


@pytest.mark.parametrize(
    "lengths",
    [
        np.arange(1, 3000),  # every length once: the lookup table
        np.repeat([5, 1024, 1030, 2048, 65_000], 40_000),  # few lengths, many examples: the table
        np.array([7, 2**22 + 5, 10**9]),  # too long for a table: logarithms
        np.array([3000, 1024]),  # fewer examples than max / 8: logarithms
    ],
)
def test_length_codes_by_table_or_logarithm_agree(lengths):
    from textbatch.batching.planning import _codes_of

    assert length_codes(lengths).tolist() == _codes_of(lengths).tolist()


@pytest.mark.parametrize("n", [1, 2, 3, 10, 997, 1000, 4096, 100_000])
def test_tie_scatter_is_a_bijection_that_spreads_neighbours(n):
    scatter = TieScatter(n, np.random.default_rng(0))
    images = scatter.all()
    assert sorted(images.tolist()) == list(range(n))
    again = TieScatter(n, np.random.default_rng(0)).all()
    assert images.tolist() == again.tolist()  # a function of the seed
    positions = np.arange(n, dtype=np.int64)[::-1].copy()
    assert scatter(positions, in_place=True) is positions  # written over the positions
    assert positions.tolist() == images[::-1].tolist()
    if n >= 1000:
        # neighbouring positions land far apart, and any 32 consecutive positions spread over
        # the whole dataset (no gap between their examples above a tenth of it)
        step = np.abs(np.diff(images))
        assert np.minimum(step, n - step).min() > n // 4
        window = np.sort(images[500:532])
        gaps = np.diff(np.concatenate([window, [window[0] + n]]))
        assert gaps.max() < n / 10
        assert images.tolist() != TieScatter(n, np.random.default_rng(1)).all().tolist()


@pytest.mark.parametrize("n", [1, 2, 3, 997, 1000, 10**12 + 39])
def test_tie_scatter_inverse_undoes_it(n):
    scatter = TieScatter(n, np.random.default_rng(2))
    positions = np.unique(np.linspace(0, n - 1, 50).astype(np.int64))
    assert scatter.inverse()(scatter(positions)).tolist() == positions.tolist()
    assert scatter(scatter.inverse()(positions)).tolist() == positions.tolist()


def test_tie_scatter_of_very_many_positions_is_exact():
    n = 10**12 + 39  # far beyond int64 products: the two-part multiplication
    scatter = TieScatter(n, np.random.default_rng(3))
    positions = np.array([0, 1, 2, 12345678901, n - 2, n - 1], dtype=np.int64)
    expected = [(scatter.step * int(j) + scatter.offset) % n for j in positions]
    assert scatter(positions).tolist() == expected
    assert scatter(positions, in_place=True).tolist() == expected
    assert np.gcd(scatter.step, n) == 1  # hence a bijection


@pytest.mark.parametrize(
    ("still_runs", "long_runs_move"),
    [(8.0, True), (0.5, False)],  # runs of 100 examples vs reach 50: 8 x 50 > 100 > 0.5 x 50
)
def test_length_order_keeps_runs_of_still_runs_reaches_in_place(still_runs, long_runs_move):
    lengths = np.repeat([500, 510, 520], [100, 3, 100])
    codes = length_codes(lengths)
    reach = np.full(NUM_CODES, 50.0)
    moved = False
    for seed in range(5):
        order = length_order(codes, np.random.default_rng(seed), reach, still_runs=still_runs)
        assert sorted(order.tolist()) == list(range(len(lengths)))
        moved |= set(order[:100].tolist()) != set(range(100))  # a 500 went past a 510 or 520
    assert moved == long_runs_move


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


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 400),
    st.integers(0, 2**16 - 1),
    st.sampled_from([None, 1, 300, 2**31 - 1, 2**47]),
    st.sampled_from([3, 2**20]),
    st.integers(0, 3),
)
def test_sorted_with_is_a_stable_argsort_and_a_gather(n, top_key, top_value, chunk, seed):
    import textbatch.batching.planning as planning

    rng = np.random.default_rng(seed)
    keys = rng.integers(0, top_key + 1, n).astype(np.uint16)  # many ties when top_key is small
    values = None if top_value is None else rng.integers(0, top_value, n, endpoint=True)
    old, planning.RECORD_CHUNK = planning.RECORD_CHUNK, chunk  # several chunks, or one
    try:
        order, ordered = sorted_with(keys, values)
    finally:
        planning.RECORD_CHUNK = old
    expected = np.argsort(keys, kind="stable")
    assert order.dtype == np.int64 and order.tolist() == expected.tolist()
    if values is None:
        assert ordered is None
    else:  # values of 2**47 leave no room for the positions: argsort and a gather
        assert ordered.dtype == values.dtype and ordered.tolist() == values[expected].tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=200), st.integers(1, 9))
def test_running_max_runs_chunk_by_chunk(lengths, chunk):
    lengths = np.array(lengths, dtype=np.int16)
    width = np.maximum.accumulate(lengths.astype(np.int64))
    starts = np.flatnonzero(np.concatenate([[True], width[1:] != width[:-1]]))
    for size in (chunk, 2**20):
        got_starts, got_widths = running_max_runs(lengths, chunk=size)
        assert got_starts.tolist() == starts.tolist()
        assert got_widths.dtype == np.int64 and got_widths.tolist() == width[starts].tolist()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(1, 3000), min_size=1, max_size=300),
    st.integers(0, 5),
    st.sampled_from([None, 1.0, 6.0]),
    st.sampled_from([0.25, 8.0]),
    st.sampled_from([2, 6, 2**18]),
    st.booleans(),
    st.booleans(),
)
def test_shuffled_order_is_a_stable_sort_by_length_keys(
    lengths, seed, reach, still_runs, chunk, table, tied
):
    import textbatch.batching.planning as planning

    lengths = np.array(lengths, dtype=np.int16)
    counts = length_code_counts(lengths)
    reach = None if reach is None else np.full(NUM_CODES, reach)
    ties = TieScatter(len(lengths), np.random.default_rng(seed + 1)) if tied else None
    keys = length_keys(
        length_codes(lengths), np.random.default_rng(seed), reach, counts, still_runs
    )
    in_tie_order = ties.all() if tied else np.arange(len(lengths))  # equal keys in this order
    expected = in_tie_order[np.argsort(keys[in_tie_order], kind="stable")]
    old, planning.RECORD_CHUNK = planning.RECORD_CHUNK, chunk  # an even number of draws a step
    try:
        order, ordered = shuffled_order(
            lengths,
            counts,
            np.random.default_rng(seed),
            reach,
            still_runs,
            True,
            code_table(int(lengths.max())) if table else None,
            ties,
        )
        rng = np.random.default_rng(seed)
        order_only = shuffled_order(lengths, counts, rng, reach, still_runs, ties=ties)
        rng = np.random.default_rng(seed)
        by_runs = shuffled_order(
            lengths, counts, rng, reach, still_runs, True, ties=ties, as_runs=True
        )
    finally:
        planning.RECORD_CHUNK = old
    assert order.tolist() == expected.tolist()
    assert ordered.dtype == np.int16 and ordered.tolist() == lengths[expected].tolist()
    assert order_only[0].tolist() == expected.tolist() and order_only[1] is None
    starts, widths = running_max_runs(lengths[expected])
    assert by_runs[0].tolist() == expected.tolist()
    assert isinstance(by_runs[1], LengthRuns) and by_runs[1].count == len(lengths)
    assert by_runs[1].starts.tolist() == starts.tolist()
    assert by_runs[1].widths.tolist() == widths.tolist()


def test_shuffled_order_of_positions_and_lengths_beyond_48_bits():
    lengths = np.array([2**40, 5, 2**40, 7, 5], dtype=np.int64)  # 41 + 3 bits: fits
    counts = length_code_counts(lengths)
    ties = TieScatter(len(lengths), np.random.default_rng(0))
    fits = shuffled_order(lengths, counts, np.random.default_rng(3), None, 8.0, True, None, ties)
    assert fits[1].tolist() == sorted(lengths.tolist())
    huge = np.array([2**46, 5, 2**46, 7, 5, 9, 11, 13, 2**45], dtype=np.int64)  # 47 + 4 bits
    counts = length_code_counts(huge)
    ties = TieScatter(len(huge), np.random.default_rng(0))
    order, ordered = shuffled_order(
        huge, counts, np.random.default_rng(3), None, 8.0, True, None, ties
    )
    assert sorted(order.tolist()) == list(range(len(huge)))  # the argsort and gather fallback
    assert ordered.tolist() == huge[order].tolist()
    assert np.all(np.diff(length_codes(ordered).astype(int)) >= 0)
    rng = np.random.default_rng(3)
    _, runs = shuffled_order(huge, counts, rng, None, 8.0, True, None, ties, as_runs=True)
    starts, widths = running_max_runs(ordered)
    assert runs.count == len(huge) and runs.starts.tolist() == starts.tolist()
    assert runs.widths.tolist() == widths.tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=300), st.integers(0, 3))
def test_least_padding_bounds_from_runs_or_lengths_agree(lengths, seed):
    ordered = np.sort(np.array(lengths, dtype=np.int32))
    runs = LengthRuns(*running_max_runs(ordered), len(ordered))
    for rng in (None, seed):
        from_lengths = least_padding_bounds(
            ordered, 1024, rng=None if rng is None else np.random.default_rng(rng)
        )
        from_runs = least_padding_bounds(
            runs, 1024, rng=None if rng is None else np.random.default_rng(rng)
        )
        assert from_runs.tolist() == from_lengths.tolist()


def test_code_table_and_counts_of_lengths():
    assert code_table(1023) is None and code_table(2**22) is None  # the lengths, or too big
    table = code_table(5000)
    assert table.dtype == np.uint16 and table.tolist() == length_codes(np.arange(5001)).tolist()
    lengths = np.random.default_rng(1).integers(1, 5000, 3000)
    expected = np.bincount(length_codes(lengths), minlength=NUM_CODES).tolist()
    assert length_code_counts(lengths, table).tolist() == expected
    assert length_code_counts(lengths).tolist() == expected


def test_code_counts_chunk_by_chunk():
    codes = length_codes(np.random.default_rng(0).integers(1, 10**6, 5000))
    expected = np.bincount(codes, minlength=NUM_CODES)
    for chunk in (1, 7, 2**20):
        counts = code_counts(codes, chunk=chunk)
        assert counts.dtype == np.int64 and counts.tolist() == expected.tolist()


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


# ------------------------------------------------------------------ token budgets, whole epochs


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 400), min_size=1, max_size=500),
    max_tokens=st.integers(400, 5000),
    batch_size=st.one_of(st.none(), st.integers(1, 64)),
    multiple=st.sampled_from([None, 8]),
    quadratic=st.sampled_from([None, 256]),
    mix=st.sampled_from([0.0, 1.0, 4.0]),
    epoch=st.integers(0, 3),
)
def test_token_budget_plans_stay_within_budget_and_use_every_index_once(
    lengths, max_tokens, batch_size, multiple, quadratic, mix, epoch
):
    lengths = np.array(lengths)
    options = SamplerOptions(
        max_tokens=max_tokens,
        batch_size=batch_size,
        pad_to_multiple_of=multiple,
        quadratic_length=quadratic,
        mix=mix,
        oversized="alone",
    )
    plan = plan_epoch(lengths, options, epoch)
    batches = [plan.batch(k, 0, 1) for k in range(len(plan.steps))]
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        cost = len(batch) * batch_cost(lengths[batch].max(), multiple, quadratic)
        assert cost <= max_tokens or len(batch) == 1  # alone: too long for the budget by itself
        assert batch_size is None or len(batch) <= batch_size


def widths_in_order(lengths, options, epoch):
    plan = plan_epoch(lengths, options, epoch)
    return [int(lengths[plan.batch(k, 0, 1)].max()) for k in range(len(plan.steps))]


def padded_tokens(lengths, options, epoch):
    plan = plan_epoch(lengths, options, epoch)
    batches = [plan.batch(k, 0, 1) for k in range(len(plan.steps))]
    return sum(len(b) * int(lengths[b].max()) for b in batches)


@pytest.mark.parametrize(
    ("lengths", "options", "moves"),
    [
        # runs of 40 equal lengths: by batch size 10 they move (40 < 8 x 10 places), by a
        # budget of 120 tokens (10 to 12 per batch) they regroup through their ties alone
        (np.repeat([10, 11, 12], 40), {"batch_size": 10}, True),
        (np.repeat([10, 11, 12], 40), {"max_tokens": 120}, False),
        # runs of 2: shorter than a quarter of the reach, they move by a budget too
        (np.repeat(np.arange(20, 80), 2), {"max_tokens": 400}, True),
        # a budget holds 800 examples of 10 tokens, but they move no further than 32 places:
        # runs of 40 (more than a quarter of 32) stay
        (np.repeat([10, 11, 12], 40), {"max_tokens": 8000}, False),
    ],
)
def test_which_examples_move_by_batch_size_and_by_token_budget(lengths, options, moves):
    still = SamplerOptions(**options, mix=0)
    mixed = SamplerOptions(**options, mix=1)
    differs = any(
        padded_tokens(lengths, mixed, epoch) != padded_tokens(lengths, still, epoch)
        for epoch in range(6)
    )
    assert differs == moves


# ------------------------------------------------------------------ cutting where padding is least


@pytest.mark.parametrize(
    ("lengths", "max_tokens", "penalty", "greedy", "least"),
    [
        # the greedy batch takes 20 threes into the twos (60 padding); two pure batches pad nothing
        ([2] * 60 + [3] * 60, 240, None, [0, 80, 120], [0, 60, 120]),
        # one more batch would save 39 tokens of padding: not worth half a batch (120) ...
        ([5] * 39 + [6], 240, None, [0, 40], [0, 40]),
        # ... but worth it when batches cost nothing
        ([5] * 39 + [6], 240, 0, [0, 40], [0, 39, 40]),
        # equal lengths: as many batches as the greedy cut, the part-filled one first
        ([4] * 100, 160, None, [0, 40, 80, 100], [0, 20, 60, 100]),
        # everything fits one batch: one batch
        ([1, 1, 2, 2, 3, 3], 100, None, [0, 6], [0, 6]),
    ],
)
def test_least_padding_bounds_by_hand(lengths, max_tokens, penalty, greedy, least):
    from textbatch.batching.planning import least_padding_bounds

    lengths = np.array(lengths)
    assert token_budget_bounds(lengths, max_tokens).tolist() == greedy
    got = least_padding_bounds(lengths, max_tokens, batch_penalty=penalty)
    assert got.tolist() == least
    assert least_padding_bounds(lengths[:0], max_tokens).tolist() == [0]


def least_cost_by_hand(cost, capacity, penalty, cut_extra=None):
    """The least total of (examples x cost at the batch's end) + penalty (+ ``cut_extra[j]``
    for a boundary at ``j``), over every cut."""
    best = [0.0]
    for j in range(1, len(cost) + 1):
        starts = range(max(0, j - int(capacity[j - 1])), j)
        extra = 0.0 if cut_extra is None else cut_extra.get(j, 0.0)
        best.append(min(best[i] + (j - i) * cost[j - 1] + penalty for i in starts) + extra)
    return best[-1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 80), min_size=1, max_size=250),
    st.integers(80, 2500),
    st.one_of(st.none(), st.integers(1, 60)),
    st.sampled_from([None, 8]),
    st.sampled_from([None, 50]),
    st.floats(0, 2000),
    st.one_of(st.none(), st.integers(0, 3)),
)
def test_least_padded_is_the_optimum(lengths, budget, cap, multiple, quadratic, penalty, seed):
    from textbatch.batching.planning import _least_padded

    width = np.maximum.accumulate(np.sort(lengths))
    cost = batch_cost(width, multiple, quadratic)
    capacity = np.floor(budget / cost).astype(np.int64)
    if cap is not None:
        capacity = np.minimum(capacity, cap)
    if capacity.min() < 1:
        return
    jitter = None if seed is None else (50.0, np.random.default_rng(seed))
    starts = np.flatnonzero(np.concatenate([[True], cost[1:] != cost[:-1]]))
    bounds = _least_padded(starts, cost[starts], capacity[starts], len(cost), penalty, jitter)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == len(lengths) and (sizes >= 1).all()
    assert (sizes <= capacity[bounds[1:] - 1]).all()
    total = float((sizes * cost[bounds[1:] - 1]).sum() + penalty * len(sizes))
    cut_extra = None
    if seed is not None:  # the same draws: one per run of equal cost, for a cut at its end
        run_ends = np.append(np.flatnonzero(cost[1:] != cost[:-1]) + 1, len(cost))
        draws = np.random.default_rng(seed).random(len(run_ends)) * 50.0
        cut_extra = dict(zip(run_ends.tolist(), draws.tolist(), strict=True))
        total += sum(cut_extra.get(b, 0.0) for b in bounds[1:].tolist())
    expected = least_cost_by_hand(cost, capacity, penalty, cut_extra)
    assert total == pytest.approx(expected, rel=1e-12, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 120), min_size=1, max_size=300),
    st.integers(120, 4000),
    st.one_of(st.none(), st.integers(1, 80)),
    st.floats(0, 3000),
    st.one_of(st.none(), st.integers(0, 3)),
    st.integers(0, 30),
)
def test_least_padded_gives_the_same_cuts_in_python_and_in_numpy(
    lengths, budget, cap, penalty, seed, unsorted
):
    # Small runs take a plain-Python path (planning.PYTHON_CAPACITY); it must be the numpy
    # path's arithmetic, not merely as good: a resumed run replans the same epoch.
    from textbatch.batching import planning

    lengths = np.sort(lengths)
    lengths[:unsorted] = lengths[:unsorted][::-1]  # nearly sorted
    rng = None if seed is None else np.random.default_rng
    cuts = []
    for threshold in (0, 10**9):  # all numpy, all Python
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(planning, "PYTHON_CAPACITY", threshold)
            cuts.append(
                planning.least_padding_bounds(
                    lengths, budget, cap, batch_penalty=penalty, rng=rng and rng(seed)
                )
            )
    np.testing.assert_array_equal(cuts[0], cuts[1])


def test_least_padded_breaks_ties_alike_in_python_and_in_numpy(monkeypatch):
    # Few distinct lengths, whole-number budgets and penalties: many cuts cost exactly the
    # same, and both paths must take the same one.
    from textbatch.batching import planning

    rng = np.random.default_rng(0)
    for _ in range(400):
        lengths = np.sort(rng.integers(1, 6, int(rng.integers(1, 60))))
        budget, penalty = int(rng.integers(6, 40)), float(rng.integers(0, 5))
        cuts = []
        for threshold in (0, 10**9):  # all numpy, all Python
            monkeypatch.setattr(planning, "PYTHON_CAPACITY", threshold)
            cuts.append(planning.least_padding_bounds(lengths, budget, batch_penalty=penalty))
        np.testing.assert_array_equal(cuts[0], cuts[1])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 300), min_size=1, max_size=400),
    st.integers(300, 6000),
    st.one_of(st.none(), st.integers(1, 64)),
    st.sampled_from([None, 8]),
    st.sampled_from([None, 256]),
    st.integers(0, 20),
)
def test_least_padding_bounds_stay_in_budget_and_pad_no_more_than_greedy(
    lengths, budget, cap, multiple, quadratic, unsorted
):
    from textbatch.batching.planning import least_padding_bounds

    lengths = np.sort(lengths)
    lengths[:unsorted] = lengths[:unsorted][::-1]  # nearly sorted
    if batch_cost(lengths.max(), multiple, quadratic) > budget:
        with pytest.raises(TextBatchError):
            least_padding_bounds(lengths, budget, cap, multiple, quadratic)
        return
    bounds = least_padding_bounds(lengths, budget, cap, multiple, quadratic)
    greedy = token_budget_bounds(lengths, budget, cap, multiple, quadratic)
    sizes, widths = np.diff(bounds), np.maximum.reduceat(lengths, bounds[:-1])
    assert bounds[0] == 0 and bounds[-1] == len(lengths) and (sizes >= 1).all()
    assert (sizes * batch_cost(widths, multiple, quadratic) <= budget).all()
    assert cap is None or sizes.max() <= cap

    def padded(b):
        running = np.maximum.accumulate(lengths)[b[1:] - 1]
        return float((np.diff(b) * batch_cost(running, multiple, quadratic)).sum())

    assert (
        padded(bounds) + budget / 2 * len(sizes)
        <= padded(greedy) + budget / 2 * (len(greedy) - 1) + 1e-6
    )
