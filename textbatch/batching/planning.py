"""Pure planning functions behind the bucketing sampler: order by length, then cut into batches.

Every function here is a deterministic function of its arguments (and of ``rng`` where it takes
one), vectorised with numpy: no Python loop per example. ``sampling.BucketBatchSampler`` strings
them together; they are public so that their behaviour can be tested and reused on its own.

Vocabulary: an *order* is an array of item positions; *bounds* are batch boundaries into an order
(``order[bounds[b]:bounds[b + 1]]`` is batch ``b``); a *step* is ``num_replicas`` consecutive
batches, one per rank, processed at the same time.
"""

from __future__ import annotations

import numpy as np

from textbatch.errors import TextBatchError

EXACT_BELOW = 1024  # lengths below this many tokens get a sort code of their own
CODE_BITS = 11  # codes fit 11 bits; the 5 low bits of a 16-bit sort key break ties at random
_LOG_STEP = np.log(1e7 / EXACT_BELOW) / (2**CODE_BITS - EXACT_BELOW - 1)


def length_codes(lengths: np.ndarray) -> np.ndarray:
    """Sort codes of lengths (uint16, below 2**11): the length itself below 1,024 tokens, and
    log-spaced buckets about 0.9% wide above (up to 10 million tokens). Sorting by code is a
    sort by length, up to 0.9% for long examples; it lets numpy use its 16-bit radix sort."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.minimum(lengths, EXACT_BELOW - 1)
    long = lengths >= EXACT_BELOW
    if long.any():
        steps = np.log(lengths[long] / EXACT_BELOW) / _LOG_STEP
        codes[long] = EXACT_BELOW + np.minimum(
            steps.astype(np.int64), 2**CODE_BITS - 1 - EXACT_BELOW
        )
    return codes.astype(np.uint16)


def code_lower_bounds() -> np.ndarray:
    """The shortest length (tokens) of each sort code: the bucket boundaries of ``length_codes``
    (code 0, which no example has, is given length 1)."""
    exact = np.arange(EXACT_BELOW, dtype=np.float64)
    exact[0] = 1
    steps = np.arange(2**CODE_BITS - EXACT_BELOW, dtype=np.float64)
    return np.concatenate([exact, np.ceil(EXACT_BELOW * np.exp(steps * _LOG_STEP))]).astype(
        np.int64
    )


NUM_CODES = 2**CODE_BITS


STRETCH = 0.1


def length_order(
    codes: np.ndarray,
    rng: np.random.Generator | None = None,
    reach: np.ndarray | None = None,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Positions of ``codes`` (from ``length_codes``) sorted by code, in one 16-bit radix sort.

    Without ``rng``, equal codes keep their order (a stable sort). With ``rng``, equal codes are
    split into 32 random groups and, with ``reach`` (examples, by code), each example first takes
    the code found a random 0 .. ``reach`` places further along the sorted order (``counts``,
    examples per code, if known, saves counting them): the order stays nearly sorted while the
    examples that end up side by side change from call to call. About 0.4 s for 10 million.
    """
    key = codes
    if rng is not None and reach is not None and len(codes) > 1:
        if counts is None:
            counts = np.bincount(codes, minlength=NUM_CODES)
        reach = np.asarray(reach, dtype=np.float64)
        # Runs of equal codes much longer than the reach hardly move (and their examples meet
        # random neighbours already): only examples in shorter runs are moved, which is cheap.
        movers = np.flatnonzero((counts < 8 * reach)[codes])
        if len(movers):
            before = np.cumsum(counts) - counts  # examples with a smaller code
            moving = codes[movers]
            # A random place in the example's own run of equal codes, then up to `reach` on.
            place = (
                rng.random(len(movers)) * counts[moving] + rng.random(len(movers)) * reach[moving]
            )
            place = np.minimum(before[moving] + place.astype(np.int64), len(codes) - 1)
            code_at = np.repeat(np.arange(NUM_CODES, dtype=np.uint16), counts)
            bounds = code_lower_bounds()
            limit = np.searchsorted(bounds, bounds * (1 + STRETCH), side="right") - 1
            key = codes.copy()
            key[movers] = np.clip(code_at[place], moving, limit[moving])  # never backwards
    key = key << np.uint16(16 - CODE_BITS)
    if rng is not None:
        key |= rng.integers(0, 2 ** (16 - CODE_BITS), size=len(key), dtype=np.uint16)
    return np.argsort(key, kind="stable")


def even_sizes(total: int, parts: int) -> np.ndarray:
    """``total`` items split into ``parts`` sizes that differ by at most one."""
    sizes = np.full(parts, total // parts, dtype=np.int64)
    sizes[: total % parts] += 1
    return sizes


def batch_size_plan(
    num_items: int, batch_size: int, num_replicas: int = 1, drop_last: bool = False
) -> tuple[np.ndarray, int, int]:
    """Batch sizes for ``num_items`` items in ``batch_size`` batches, whole steps of
    ``num_replicas`` batches. Returns ``(sizes, dropped, repeated)``.

    - ``drop_last``: only full batches, in whole steps; ``dropped`` items are left out.
    - otherwise every item is used once: full batches, then the remainder spread evenly over the
      last step (or the last few steps, so that no batch is empty). In a length order the
      remainder thus holds the longest examples, in smaller batches: the least padding, and the
      least memory. Where no even spread is possible (fewer items than batch slots, e.g.
      ``num_items < num_replicas``), ``repeated`` items are used twice: the fewest possible.
    """
    if drop_last:
        usable = (num_items // batch_size) // num_replicas * num_replicas
        sizes = np.full(usable, batch_size, dtype=np.int64)
        return sizes, num_items - usable * batch_size, 0
    batches = -(-num_items // batch_size)
    batches = -(-batches // num_replicas) * num_replicas
    repeated = max(0, batches - num_items)
    total = num_items + repeated
    steps = batches // num_replicas
    uneven_steps = 1
    while total - (steps - uneven_steps) * num_replicas * batch_size < uneven_steps * num_replicas:
        uneven_steps += 1
    full = (steps - uneven_steps) * num_replicas
    tail = even_sizes(total - full * batch_size, uneven_steps * num_replicas)
    sizes = np.concatenate([np.full(full, batch_size, dtype=np.int64), tail])
    return sizes, 0, repeated


def batch_cost(width: np.ndarray, pad_to_multiple_of: int | None, quadratic_length: int | None):
    """Cost per example of a batch padded to ``width`` tokens: the padded width, plus
    ``width**2 / quadratic_length`` when attention's quadratic cost is modelled."""
    width = np.asarray(width, dtype=np.float64)
    if pad_to_multiple_of:
        width = np.ceil(width / pad_to_multiple_of) * pad_to_multiple_of
    if quadratic_length:
        return width + width * width / quadratic_length
    return width


def token_budget_bounds(
    ordered_lengths: np.ndarray,
    max_tokens: int,
    max_examples: int | None = None,
    pad_to_multiple_of: int | None = None,
    quadratic_length: int | None = None,
) -> np.ndarray:
    """Greedy batch boundaries over ``ordered_lengths`` (nearly sorted, ascending) so that every
    batch's examples x padded width (x the attention factor) is at most ``max_tokens``.

    A batch's width is bounded by the running maximum of the lengths: exact for a sorted order,
    safe for a nearly sorted one. That bound is constant over long runs of positions, and inside
    a run every batch holds the same number of examples, so the walk steps from run to run (a
    few thousand steps at most), never from example to example. Every length must fit the
    budget on its own.
    """
    n = len(ordered_lengths)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    width = np.maximum.accumulate(ordered_lengths)
    run_starts = np.flatnonzero(np.concatenate([[True], width[1:] != width[:-1]]))
    run_ends = np.append(run_starts[1:], n)
    capacity = np.floor(
        max_tokens / batch_cost(width[run_starts], pad_to_multiple_of, quadratic_length)
    )
    capacity = capacity.astype(np.int64)
    if max_examples is not None:
        capacity = np.minimum(capacity, max_examples)
    if capacity.min() < 1:
        raise TextBatchError("an example exceeds the token budget on its own; filter those first.")
    starts, ends, caps = run_starts.tolist(), run_ends.tolist(), capacity.tolist()
    bounds = [0]
    start, run = 0, 0
    while start < n:
        while ends[run] <= start:  # the run holding the batch's first example
            run += 1
        # The batch may end in a later run, as long as that run's capacity still reaches it.
        last = run
        while last + 1 < len(starts) and start + caps[last + 1] > starts[last + 1]:
            last += 1
        end = min(ends[last], start + caps[last])
        bounds.append(end)
        if end == start + caps[last]:  # whole batches of this run's size follow inside it
            count = (ends[last] - end) // caps[last]
            if count:
                bounds.extend(range(end + caps[last], end + count * caps[last] + 1, caps[last]))
                end += count * caps[last]
        start = end
    return np.asarray(bounds, dtype=np.int64)


def split_for_replicas(
    order: np.ndarray,
    bounds: np.ndarray,
    num_replicas: int,
    drop_last: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Make the number of batches (``order[bounds[b]:bounds[b + 1]]``) a multiple of
    ``num_replicas``.

    Without ``drop_last`` the batches with the most examples are halved until it is (a half
    fits wherever the whole did). Where every batch holds one example already, the rest must
    repeat examples: their number is returned as ``missing``. With ``drop_last`` the leftover
    batches are dropped instead, chosen with ``rng`` (the last ones without it), so that it is
    not always the same examples. Returns ``(order, bounds, dropped_items, missing_batches)``.
    """
    extra = (len(bounds) - 1) % num_replicas
    if extra == 0:
        return order, bounds, 0, 0
    if drop_last:
        batches = len(bounds) - 1
        gone = (
            np.arange(batches - extra, batches)
            if rng is None
            else rng.choice(batches, extra, replace=False)
        )
        keep = np.ones(batches, dtype=bool)
        keep[gone] = False
        sizes = np.diff(bounds)
        kept = np.repeat(keep, sizes)
        new_bounds = np.concatenate([[0], np.cumsum(sizes[keep])])
        return order[kept], new_bounds, int(sizes[~keep].sum()), 0
    needed = num_replicas - extra
    bounds = bounds.copy()
    for done in range(needed):
        sizes = np.diff(bounds)
        largest = int(np.argmax(sizes))
        if sizes[largest] < 2:
            return order, bounds, 0, needed - done
        middle = bounds[largest] + sizes[largest] // 2
        bounds = np.insert(bounds, largest + 1, middle)
    return order, bounds, 0, 0
