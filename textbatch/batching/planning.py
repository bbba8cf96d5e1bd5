"""Pure planning functions behind the bucketing sampler: order by length, then cut into batches.

Every function here is a deterministic function of its arguments (and of ``rng`` where it takes
one), vectorised with numpy: no Python loop per example. ``sampling.BucketBatchSampler`` strings
them together; they are public so that their behaviour can be tested and reused on its own.

Vocabulary: an *order* is an array of item positions; *bounds* are batch boundaries into an order
(``order[bounds[b]:bounds[b + 1]]`` is batch ``b``); a *step* is ``num_replicas`` consecutive
batches, one per rank, processed at the same time.
"""

from __future__ import annotations

import math
import mmap
from typing import NamedTuple

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
    longest = int(lengths.max()) if lengths.size else 0
    # Many lengths, few distinct values: look the codes up in a table of every length (a
    # gather instead of a logarithm per long example; the same codes).
    return _codes_by(lengths, code_table(longest) if lengths.size >= longest // 8 else None)


def code_table(longest: int) -> np.ndarray | None:
    """The sort code (uint16) of every length from 0 to ``longest`` tokens, where a table
    saves work: ``longest`` from 1,024 (below, the code is the length) to 2**22; else None."""
    if not EXACT_BELOW <= longest < _TABLE_BELOW:
        return None
    return _codes_of(np.arange(longest + 1, dtype=np.int64))


_TABLE_BELOW = 2**22  # lengths (tokens) up to which a lookup table of codes may be used


def _codes_by(lengths: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    """The sort codes of ``lengths``: looked up in ``table`` (``code_table``), or, without
    one, computed."""
    return table[lengths] if table is not None else _codes_of(lengths)


def _codes_of(lengths: np.ndarray) -> np.ndarray:
    # Written straight into uint16 (below 1,024 the value fits): no int64 temporary.
    codes = np.empty(len(lengths), dtype=np.uint16)
    np.minimum(lengths, EXACT_BELOW - 1, out=codes, casting="unsafe")
    long = lengths >= EXACT_BELOW
    if long.any():
        steps = np.log(lengths[long] / EXACT_BELOW) / _LOG_STEP
        codes[long] = EXACT_BELOW + np.minimum(
            steps.astype(np.int64), 2**CODE_BITS - 1 - EXACT_BELOW
        )
    return codes


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


# With a token budget a batch holds up to thousands of short examples, and a move of a whole
# batch's worth of places would cross several lengths. So examples move at most as far as in
# batches of 32 (mix x min(examples per batch, 32) places), and only out of runs of equal
# lengths shorter than a quarter of that reach; longer runs regroup through their random order
# among ties. The long tail then regroups about as much as by batch size, and the moves add a
# fifth of the padding they did (benchmarks/sampler.py, "budgets").
TOKEN_REACH = 32  # places per unit of mix, at most
TOKEN_STILL_RUNS = 0.25  # runs of at least this many reaches keep their place


def per_batch_by_code(code_cost: np.ndarray, max_tokens: int, batch_size: int | None) -> np.ndarray:
    """Examples per batch of ``max_tokens`` at each sort code, given each code's cost per
    example (budget tokens at its shortest length): capped at ``batch_size``, at least 1."""
    per_batch = np.floor(max_tokens / code_cost)
    if batch_size is not None:
        per_batch = np.minimum(per_batch, batch_size)
    return np.maximum(per_batch, 1)


STRETCH = 0.1


def length_order(
    codes: np.ndarray,
    rng: np.random.Generator | None = None,
    reach: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    still_runs: float = 8.0,
) -> np.ndarray:
    """Positions of ``codes`` (from ``length_codes``) sorted by code, in one 16-bit radix sort.

    Without ``rng``, equal codes keep their order (a stable sort). With ``rng``, equal codes are
    split into 32 random groups and, with ``reach`` (examples, by code), each example first takes
    the code found a random 0 .. ``reach`` places further along the sorted order (``counts``,
    examples per code, if known, saves counting them): the order stays nearly sorted while the
    examples that end up side by side change from call to call. Examples in runs of at least
    ``still_runs`` x ``reach`` equal codes keep their code: their random tie order regroups
    them already (the default, 8, skips only runs that would hardly move; a smaller value keeps
    more runs still, for less padding). About 0.2 s for 10 million.
    """
    return np.argsort(length_keys(codes, rng, reach, counts, still_runs), kind="stable")


def length_keys(
    codes: np.ndarray,
    rng: np.random.Generator | None = None,
    reach: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    still_runs: float = 8.0,
) -> np.ndarray:
    """The 16-bit sort keys (uint16) behind ``length_order``: a stable sort by key is that
    order. The code, moved forward as ``length_order`` says, in the high 11 bits; with
    ``rng``, a random group among equal codes in the low 5."""
    codes = np.asarray(codes)
    key = np.left_shift(codes.astype(np.uint16, copy=False), KEY_SHIFT)
    if rng is not None and reach is not None and len(codes) > 1:
        if counts is None:
            counts = code_counts(codes)
        reach = np.asarray(reach, dtype=np.float64)
        short = _moving_codes(counts, reach, still_runs)
        movers = np.flatnonzero(short[codes]) if short is not None else codes[:0]
        if len(movers):
            key[movers] = _moved_codes(codes[movers], counts, reach, rng) << KEY_SHIFT
    if rng is not None:
        key |= rng.integers(0, 2**KEY_SHIFT, size=len(key), dtype=np.uint16)
    return key


KEY_SHIFT = np.uint16(16 - CODE_BITS)  # a key is code << KEY_SHIFT | random group


def _moving_codes(counts: np.ndarray, reach: np.ndarray, still_runs: float) -> np.ndarray | None:
    """Which codes' examples move (``length_order``: those in runs shorter than
    ``still_runs`` x ``reach``), as a mask over codes; None where no example does."""
    short = counts < still_runs * reach
    return short if short[counts > 0].any() else None


def _moved_codes(
    moving: np.ndarray, counts: np.ndarray, reach: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The codes (uint16) that examples of codes ``moving`` take (``length_order``): the code
    found a random place in their own run of equal codes, then up to ``reach`` on, in the
    sorted order of ``counts`` examples per code; never a smaller code, nor one more than
    ``STRETCH`` longer."""
    ends = np.cumsum(counts)  # examples with at most each code
    place = rng.random(len(moving)) * counts[moving] + rng.random(len(moving)) * reach[moving]
    place = np.minimum(ends[moving] - counts[moving] + place.astype(np.int64), ends[-1] - 1)
    code_at = np.searchsorted(ends, place, side="right")  # the code found there
    bounds = code_lower_bounds()
    limit = np.searchsorted(bounds, bounds * (1 + STRETCH), side="right") - 1
    return np.clip(code_at, moving, limit[moving]).astype(np.uint16)  # never backwards


def code_counts(codes: np.ndarray, chunk: int = 2**16) -> np.ndarray:
    """Examples per sort code (int64, ``NUM_CODES`` of them), counted ``chunk`` codes at a time
    (``np.bincount`` of the whole array would first copy it into 64-bit integers)."""
    counts = np.zeros(NUM_CODES, dtype=np.int64)
    for start in range(0, len(codes), chunk):
        counts += np.bincount(codes[start : start + chunk], minlength=NUM_CODES)
    return counts


def length_code_counts(lengths: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """``code_counts(length_codes(lengths))`` without an array of every code: the codes of
    ``RECORD_CHUNK`` lengths at a time, looked up in ``table`` (``code_table``) if given."""
    counts = np.zeros(NUM_CODES, dtype=np.int64)
    for start in range(0, len(lengths), RECORD_CHUNK):
        codes = _codes_by(lengths[start : start + RECORD_CHUNK], table)
        counts += np.bincount(codes, minlength=NUM_CODES)
    return counts


RECORD_CHUNK = 2**18  # examples per step when sort records are built (even: see shuffled_order)


def sorted_with(
    keys: np.ndarray, values: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``order = np.argsort(keys, kind="stable")`` (int64) for 16-bit ``keys``, and ``values``
    (non-negative integers, or None) in that order: ``values[order]``.

    Both come from one sort of 64-bit records, key above position above value, so that no
    random gather of the values follows the sort; numpy sorts 64-bit integers with SIMD
    (AVX-512, AVX2 or NEON), in place. At 10 million: 0.17 s, against 0.29 s for ``argsort``
    and the gather. Where position and value need more than 48 bits between them, it is
    ``argsort`` and the gather.
    """
    n = len(keys)
    value_bits = _value_bits(values)
    if not _records_hold(n, value_bits):
        order = np.argsort(keys, kind="stable")
        return order, None if values is None else values[order]
    records = np.empty(n, dtype=np.uint64)
    for start in range(0, n, RECORD_CHUNK):
        stop = min(start + RECORD_CHUNK, n)
        chunk = None if values is None else values[start:stop]
        positions = np.arange(start, stop, dtype=np.int64)
        _fill_records(records, keys[start:stop], positions, chunk, value_bits, start)
    return _sort_records(records, None if values is None else values.dtype, value_bits)


def shuffled_order(
    lengths: np.ndarray,
    counts: np.ndarray,
    rng: np.random.Generator,
    reach: np.ndarray | None,
    still_runs: float = 8.0,
    with_lengths: bool = False,
    table: np.ndarray | None = None,
    ties: TieScatter | None = None,
    as_runs: bool = False,
) -> tuple[np.ndarray, np.ndarray | LengthRuns | None]:
    """``length_order(length_codes(lengths), rng, reach, counts, still_runs)`` and, with
    ``with_lengths``, ``lengths`` in that order (``as_runs``: only their ``LengthRuns``): the
    same values as ``sorted_with`` of ``length_keys``, without an array of codes or keys
    (``table``, the codes of every length from 0, if given, is where the codes are looked up).
    With ``ties`` (a ``TieScatter`` over the examples), equal keys are in its order instead of
    the examples' own: example ``ties(j)`` before ``ties(j + 1)``.

    The codes and keys are made ``RECORD_CHUNK`` examples at a time, straight into the sort
    records, which carry each example's place in the order of ties (``ties.inverse()``,
    arithmetic): no array of codes or keys, and no gather of the lengths in that order. The
    random groups are drawn chunk by chunk, an even number at a time, which numpy draws from
    the same stream as one call for all (the sampler's pinned plans check it).
    """
    n = len(lengths)
    value_bits = _value_bits(lengths) if with_lengths else 0
    if not _records_hold(n, value_bits):  # a gather, then argsort (n x longest >= 2**48)
        keys = length_keys(length_codes(lengths), rng, reach, counts, still_runs)
        tied = ties.all() if ties is not None else np.arange(n)
        order = tied[np.argsort(keys[tied], kind="stable")]
        if not with_lengths:
            return order, None
        ordered = lengths[order]
        return order, LengthRuns(*running_max_runs(ordered), n) if as_runs else ordered

    movers, moved = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint16)
    if reach is not None and n > 1:
        reach = np.asarray(reach, dtype=np.float64)
        short = _moving_codes(counts, reach, still_runs)
        if short is not None:
            found = []
            for start in range(0, n, RECORD_CHUNK):
                codes = _codes_by(lengths[start : start + RECORD_CHUNK], table)
                found.append(np.flatnonzero(short[codes]) + start)
            movers = np.concatenate(found)
            if len(movers):
                moved = _moved_codes(_codes_by(lengths[movers], table), counts, reach, rng)
    places = ties.inverse() if ties is not None else None
    records = np.empty(n, dtype=np.uint64)
    first = 0  # the first mover at or after the chunk
    for start in range(0, n, RECORD_CHUNK):
        stop = min(start + RECORD_CHUNK, n)
        key = np.left_shift(_codes_by(lengths[start:stop], table), KEY_SHIFT)
        last = first + int(np.searchsorted(movers[first:], stop))
        key[movers[first:last] - start] = moved[first:last] << KEY_SHIFT
        first = last
        key |= rng.integers(0, 2**KEY_SHIFT, size=stop - start, dtype=np.uint16)
        positions = np.arange(start, stop, dtype=np.int64)
        if places is not None:
            places(positions, in_place=True)
        _fill_records(
            records,
            key,
            positions,
            lengths[start:stop] if with_lengths else None,
            value_bits,
            start,
        )
    value_type = lengths.dtype if with_lengths else None
    order, ordered = _sort_records(records, value_type, value_bits, as_runs)
    return (ties(order, in_place=True) if ties is not None else order), ordered


def _value_bits(values: np.ndarray | None) -> int:
    return 0 if values is None else max(1, int(values.max(initial=0)).bit_length())


def _records_hold(n: int, value_bits: int) -> bool:
    """Whether a 64-bit record holds a 16-bit key, a position below ``n`` and a value."""
    return max(1, (n - 1).bit_length()) + value_bits <= 48


def _fill_records(
    records: np.ndarray,
    keys: np.ndarray,
    positions: np.ndarray,
    values: np.ndarray | None,
    value_bits: int,
    start: int,
) -> None:
    """Writes the sort records (key, position, value) from ``records[start]`` on."""
    record = records[start : start + len(keys)]
    record[:] = keys
    record <<= np.uint64(48)
    low = positions.astype(np.uint64)
    if values is not None:
        low <<= np.uint64(value_bits)
        low |= values.astype(np.uint64)
    record |= low


def _sort_records(
    records: np.ndarray, value_type: np.dtype | None, value_bits: int, as_runs: bool = False
) -> tuple[np.ndarray, np.ndarray | LengthRuns | None]:
    """Sorts the records in place; returns their positions (int64, a view of ``records``) and,
    with ``value_type``, their values in sorted order: as that type, or, ``as_runs``, only
    their ``LengthRuns`` (no array of the values)."""
    n = len(records)
    records.sort()  # positions are unique: the order of equal keys is theirs (stable)
    ordered: np.ndarray | LengthRuns | None = None
    if value_type is not None:
        value_mask = np.uint64((1 << value_bits) - 1)
        maxima = _RunningMaxima() if as_runs else None
        ordered = None if as_runs else np.empty(n, dtype=value_type)
        for start in range(0, n, 2**20):
            stop = min(start + 2**20, n)
            if maxima is not None:
                maxima.add(records[start:stop] & value_mask)
            else:
                ordered[start:stop] = records[start:stop] & value_mask
        if maxima is not None:
            ordered = maxima.runs()
        records >>= np.uint64(value_bits)
    records &= np.uint64((1 << max(1, (n - 1).bit_length())) - 1)
    return records.view(np.int64), ordered


class TieScatter:
    """A fixed pseudo-random bijection of positions ``0 .. n - 1``: ``j -> (step * j + offset)
    mod n``, with ``step`` coprime with ``n`` near ``n`` times the golden ratio's fraction.

    It stands in for a random permutation of the examples when ties are put in order: any run
    of consecutive positions maps to examples spread evenly over the whole dataset, so examples
    of equal length never meet in the dataset's own order. Applying it is arithmetic (no table
    of ``n`` entries, no gather): about 10x cheaper than drawing a permutation.
    """

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n = int(n)
        fraction = 0.6180339887498949 + 0.02 * (rng.random() - 0.5)
        step = max(1, round(self.n * fraction))
        while math.gcd(step, self.n) != 1:
            step += 1
        self.step = step % self.n if self.n > 1 else 0
        self.offset = int(rng.integers(self.n))

    def inverse(self) -> TieScatter:
        """The inverse bijection, ``i -> j`` where ``self(j) = i``: the same form, with
        ``step`` its inverse mod ``n``."""
        inverse = object.__new__(TieScatter)
        inverse.n = self.n
        inverse.step = pow(self.step, -1, self.n) if self.n > 1 else 0
        inverse.offset = (-inverse.step * self.offset) % self.n if self.n > 1 else 0
        return inverse

    def __call__(self, positions: np.ndarray, in_place: bool = False) -> np.ndarray:
        """The examples (int64) at ``positions`` (int64, each in ``0 .. n - 1``); with
        ``in_place``, written over ``positions`` (a fresh array of 10 million costs more than
        the arithmetic on it)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.n <= _EXACT_PRODUCTS:  # step * position fits an int64
            out = positions if in_place else positions.copy()
            out *= self.step
            out += self.offset
            return np.remainder(out, self.n, out=out)
        # Larger n (up to 2**46): multiply by step 16 bits at a time, reducing after each.
        out = np.zeros_like(positions)
        for shift in range((self.step.bit_length() - 1) // 16 * 16, -1, -16):
            out = (out * 2**16 + positions * ((self.step >> shift) & 0xFFFF)) % self.n
        out = (out + self.offset) % self.n
        if in_place:
            positions[:] = out
            return positions
        return out

    def all(self) -> np.ndarray:
        """The examples at every position, in order: the bijection as an array."""
        return self(np.arange(self.n, dtype=np.int64), in_place=True)


_EXACT_PRODUCTS = 3_000_000_000  # n up to which n * n (> step * position + offset) fits an int64


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


class LengthRuns(NamedTuple):
    """The runs of equal running maxima of ``count`` ordered lengths: run ``k`` starts at
    position ``starts[k]`` (int64, the first is 0) and its running maximum is ``widths[k]``
    (int64, tokens). All that the cuts by token budget need of the lengths."""

    starts: np.ndarray
    widths: np.ndarray
    count: int


class _RunningMaxima:
    """Builds ``LengthRuns`` from lengths given a chunk at a time, in order: no array of every
    running maximum is made (40 MB of fresh memory at 10 million int32 lengths)."""

    def __init__(self) -> None:
        self.starts: list[np.ndarray] = []
        self.widths: list[np.ndarray] = []
        self.count = 0
        self.carry: np.generic | None = None

    def add(self, lengths: np.ndarray) -> None:
        if len(lengths) == 0:
            return
        width = np.maximum.accumulate(lengths)
        if self.carry is not None:
            np.maximum(width, self.carry, out=width)
        changed = np.flatnonzero(width[1:] != width[:-1]) + 1
        if self.carry is None or width[0] != self.carry:
            changed = np.concatenate([[0], changed])
        self.starts.append(changed + self.count)
        self.widths.append(width[changed].astype(np.int64))
        self.count += len(lengths)
        self.carry = width[-1]

    def runs(self) -> LengthRuns:
        empty = [np.zeros(0, dtype=np.int64)]
        return LengthRuns(
            np.concatenate(self.starts or empty), np.concatenate(self.widths or empty), self.count
        )


def running_max_runs(lengths: np.ndarray, chunk: int = 2**20) -> tuple[np.ndarray, np.ndarray]:
    """The runs of equal running maxima of ``lengths`` (at least one): ``(starts, widths)``,
    the first position of each run (int64, from 0) and its running maximum (int64).
    Computed ``chunk`` lengths at a time (``LengthRuns``)."""
    lengths = np.asarray(lengths)
    maxima = _RunningMaxima()
    for start in range(0, len(lengths), chunk):
        maxima.add(lengths[start : start + chunk])
    runs = maxima.runs()
    return runs.starts, runs.widths


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
    run_starts, widths = running_max_runs(ordered_lengths)
    run_ends = np.append(run_starts[1:], n)
    capacity = np.floor(max_tokens / batch_cost(widths, pad_to_multiple_of, quadratic_length))
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


CUT_JITTER = 0.01  # of the budget: the most a cut at a change of length may cost extra


def least_padding_bounds(
    ordered_lengths: np.ndarray | LengthRuns,
    max_tokens: int,
    max_examples: int | None = None,
    pad_to_multiple_of: int | None = None,
    quadratic_length: int | None = None,
    batch_penalty: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Batch boundaries over ``ordered_lengths`` (nearly sorted, ascending; or their
    ``LengthRuns``) within the same budget as ``token_budget_bounds``, placed to pad least.

    A greedy cut fills every batch to the brim, so where a batch holds hundreds of short
    examples it straddles each change of length with up to a batch of the shorter ones, all
    padded, and it leaves the epoch's spare room in its last batch. Here the boundaries
    minimise the padded tokens (budget tokens, as ``batch_cost`` counts them, widths by the
    running maximum) plus ``batch_penalty`` tokens per batch (default ``max_tokens / 2``: one
    batch more only where it saves half a batch of padding). It is an exact dynamic programme
    with one numpy pass per run of equal running maxima: a few thousand at most in the
    sampler's order by sort code, however many examples.

    With ``rng``, a boundary at the end of each such run costs a random 0 to ``CUT_JITTER`` x
    ``max_tokens`` more: a run of equal lengths that fills a batch on its own would otherwise
    be that same batch every epoch; now, where other cuts pad about as little, which one is
    taken changes from call to call.
    """
    if isinstance(ordered_lengths, LengthRuns):
        starts, widths, n = ordered_lengths
    else:
        n = len(ordered_lengths)
        if n:
            starts, widths = running_max_runs(ordered_lengths)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    cost = batch_cost(widths, pad_to_multiple_of, quadratic_length)  # per example
    capacity = np.floor(max_tokens / cost).astype(np.int64)
    if max_examples is not None:
        capacity = np.minimum(capacity, max_examples)
    if capacity.min() < 1:
        raise TextBatchError("an example exceeds the token budget on its own; filter those first.")
    merged = np.concatenate([[True], cost[1:] != cost[:-1]])  # equal cost after rounding
    penalty = max_tokens / 2 if batch_penalty is None else float(batch_penalty)
    jitter = None if rng is None else (CUT_JITTER * max_tokens, rng)
    return _least_padded(starts[merged], cost[merged], capacity[merged], n, penalty, jitter)


def _least_padded(
    starts: np.ndarray,
    cost: np.ndarray,
    capacity: np.ndarray,
    n: int,
    penalty: float,
    jitter: tuple[float, np.random.Generator] | None = None,
) -> np.ndarray:
    """Boundaries ``0 = b_0 < ... < b_K = n`` over ``n`` positions in runs from ``starts`` (each
    with a ``cost`` per example, non-decreasing, and a ``capacity``, non-increasing),
    minimising the sum over batches of (examples x the cost of the run of the batch's last
    position) + ``penalty``, each batch at most that run's capacity. With ``jitter = (most,
    rng)``, a boundary at the end of each run costs a random 0 .. ``most`` more.

    ``best[j]``, the least cost of the first ``j`` positions, is ``min over i in [j - cap, j)
    of best[i] + (j - i) w + penalty``. Inside a run of equal ``w`` and ``cap`` from position
    ``p``, with ``g(i) = best[i] - i w``: each of the first ``cap`` values takes the better of a
    batch starting before the run (a suffix minimum of ``g``) and one starting at ``p``, and
    every later value is the one ``cap`` places before plus ``penalty``. So only a run's first
    and last ``cap`` values are computed (the last for the runs after it); the work is the
    number of runs times the batch size, not the number of examples.
    """
    best = _scattered_scratch(n + 1)  # only the values a later run reads are written
    best[0] = 0.0
    runs = list(zip(starts.tolist(), np.append(starts[1:], n).tolist(), strict=True))
    caps = capacity.tolist()
    extra = None if jitter is None else jitter[1].random(len(runs)) * jitter[0]
    origins = []  # per run: where the batch ending at each of its first `cap` positions starts
    for (p, q), cap, w in zip(runs, caps, cost.tolist(), strict=True):
        step = _run_in_python if cap <= PYTHON_CAPACITY else _run_in_numpy
        origins.append(step(best, p, q, cap, w, penalty))
        if extra is not None:
            best[q] += extra[len(origins) - 1]  # what a cut at the run's end costs more
    bounds, j, run = [n], n, len(runs) - 1
    while j > 0:
        while runs[run][0] >= j:  # the run holding position j - 1
            run -= 1
        p, cap = runs[run][0], caps[run]
        k = j - p - 1
        if k >= cap:  # whole batches of `cap` back to the run's first block
            whole = k // cap
            bounds.extend(range(j - cap, j - whole * cap - 1, -cap))
            j, k = j - whole * cap, k - whole * cap
        j = origins[run][k]
        bounds.append(j)
    return np.asarray(bounds[::-1], dtype=np.int64)


def _scattered_scratch(size: int) -> np.ndarray:
    """An uninitialised float64 array of ``size`` values, for writes at scattered places.

    numpy asks the kernel to back arrays of 4 MB and more with 2 MB huge pages. On the 2-core
    VM of ``benchmarks/sampler.py`` the first write into such a page sometimes took about 5
    ms (not memory compaction: the kernel counted no compaction stall), 40 times over for
    ``best`` at 10 million examples (80 MB, of which about a quarter is ever written), so the
    programme took 0.10 to 0.30 s from call to call. An anonymous ``mmap`` carries no such
    advice: it is faulted in small pages, or huge ones only where they are free (0.09 s,
    steady)."""
    if size * 8 < 2**22:
        return np.empty(size, dtype=np.float64)
    return np.frombuffer(mmap.mmap(-1, size * 8), dtype=np.float64)


PYTHON_CAPACITY = 48  # runs whose batches hold at most this many examples: plain Python


def _run_in_numpy(best: np.ndarray, p: int, q: int, cap: int, w: float, penalty: float) -> list:
    """One run of ``_least_padded`` (positions ``p .. q - 1``, capacity ``cap``, cost ``w``):
    writes the run's first and last ``cap`` values of ``best`` and returns where the batch
    ending at each of its first ``cap`` positions starts."""
    low = max(0, p - cap)
    before = (best[low : p + 1] - np.arange(low, p + 1) * w)[::-1]  # g(p), g(p - 1), ...
    suffix = np.minimum.accumulate(before)  # suffix[t]: least g over [p - t, p]
    fresh = np.concatenate([[True], before[1:] < suffix[:-1]])
    suffix_at = p - np.maximum.accumulate(np.where(fresh, np.arange(len(before)), 0))
    first = min(q - p, cap)
    t = np.minimum(np.arange(cap - 1, cap - 1 - first, -1), len(before) - 1)
    outside, outside_at = suffix[t], suffix_at[t]  # batches that start before the run
    inside = penalty + outside[0]  # g(p + 1): a batch that starts at the run's start
    use_inside = np.concatenate([[False], inside < outside[1:]])
    g = penalty + np.where(use_inside, inside, outside)
    best[p + 1 : p + first + 1] = g + np.arange(p + 1, p + first + 1) * w
    if q - p > first:  # the last `cap` values, periodic after the first block
        k = np.arange(max(first, q - p - cap), q - p)
        best[p + 1 + k[0] : q + 1] = g[k % cap] + penalty * (k // cap) + (p + 1 + k) * w
    return np.where(use_inside, p + 1, outside_at).tolist()


def _run_in_python(best: np.ndarray, p: int, q: int, cap: int, w: float, penalty: float) -> list:
    """``_run_in_numpy`` on Python floats, the same operations in the same order (so the same
    values): for small capacities, where numpy's cost per call outweighs the work (most runs
    of a token budget over long examples hold a few dozen at most)."""
    low = max(0, p - cap)
    known = best[low : p + 1].tolist()
    suffix, suffix_at = [], []  # over t = 0, 1, ...: least g over [p - t, p], and where
    least, where = 0.0, p
    for t in range(p - low + 1):
        value = known[p - t - low] - (p - t) * w  # g(p - t)
        if t == 0 or value < least:
            least, where = value, p - t
        suffix.append(least)
        suffix_at.append(where)
    first = min(q - p, cap)
    deepest = len(suffix) - 1
    inside = penalty + suffix[min(cap - 1, deepest)]  # g(p + 1): a batch from the run's start
    g, origins = [], []
    for j in range(first):
        t = min(cap - 1 - j, deepest)
        if j and inside < suffix[t]:
            g.append(penalty + inside)
            origins.append(p + 1)
        else:
            g.append(penalty + suffix[t])
            origins.append(suffix_at[t])
    best[p + 1 : p + first + 1] = [g[j] + (p + 1 + j) * w for j in range(first)]
    if q - p > first:  # the last `cap` values, periodic after the first block
        ks = range(max(first, q - p - cap), q - p)
        best[p + 1 + ks[0] : q + 1] = [
            g[k % cap] + penalty * (k // cap) + (p + 1 + k) * w for k in ks
        ]
    return origins


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
