"""One epoch of batches as a pure function of (lengths, options, epoch).

How an epoch is planned (all vectorised, see ``textbatch.batching.planning``):

1. the epoch's items: every example once (or drawn by ``weights``);
2. sort them by length, ties in random order, then let each move forward a random number of
   places below ``mix`` batches' worth (the knob that trades padding for randomness; with a
   token budget, no further than ``mix`` batches of 32);
3. cut the order into batches: ``batch_size`` each, up to ``max_tokens`` where they pad least,
   or packed rows of ``packing_capacity`` tokens;
4. group consecutive batches into steps of one batch per rank (so ranks at the same step get
   similar lengths) and shuffle the steps (so lengths never sweep up or down through the epoch).

``SamplerOptions`` holds and checks the options (once, when made); ``EpochPlanner`` checks them
against the lengths and keeps what every epoch reuses; ``plan_epoch`` is the whole function.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from textbatch.batching.packing import plan_packed_batches
from textbatch.batching.planning import (
    NUM_CODES,
    TOKEN_REACH,
    TOKEN_STILL_RUNS,
    LengthRuns,
    TieScatter,
    batch_cost,
    batch_size_plan,
    code_lower_bounds,
    code_table,
    least_padding_bounds,
    length_code_counts,
    length_codes,
    length_keys,
    per_batch_by_code,
    shuffled_order,
    sorted_with,
    split_for_replicas,
)
from textbatch.batching.stats import as_lengths
from textbatch.checks import non_negative_int, positive_int
from textbatch.errors import TextBatchError

# Independent random streams of one (seed, epoch).
_ORDER, _DRAWS, _PICKS, _TIES = range(4)
OVERSIZED = ("error", "alone", "truncate")


@dataclass(frozen=True)
class EpochPlan:
    """All ranks' batches of one epoch: batch ``b`` is ``items[bounds[b]:bounds[b + 1]]``, and
    step ``k`` gives rank ``r`` batch ``steps[k] * num_replicas + r``."""

    items: np.ndarray
    bounds: np.ndarray
    steps: np.ndarray
    dropped: int
    repeated: int

    def batch(self, step: int, rank: int, num_replicas: int) -> np.ndarray:
        b = int(self.steps[step]) * num_replicas + rank
        return self.items[self.bounds[b] : self.bounds[b + 1]]

    def rank_bounds(self, rank: int, num_replicas: int) -> tuple[list[int], list[int]]:
        """Where rank ``rank``'s batches start and end in ``items``, step by step, as Python
        ints: ``items[starts[k]:ends[k]]`` is its batch at step ``k``."""
        batches = self.steps * num_replicas + rank
        return self.bounds[batches].tolist(), self.bounds[batches + 1].tolist()

    def first_uses(self, rank: int, num_replicas: int) -> list[np.ndarray]:
        """For each of rank ``rank``'s batches, True where the example is used for the first
        time in the epoch over all ranks (in step order, then rank order): False marks the
        repeats that keep every rank's batch count even."""
        batches = [int(s) * num_replicas + r for s in self.steps for r in range(num_replicas)]
        first = np.ones(len(self.items), dtype=bool)
        if self.repeated:
            used = np.concatenate([np.arange(self.bounds[b], self.bounds[b + 1]) for b in batches])
            _, once = np.unique(self.items[used], return_index=True)
            first[:] = False
            first[used[once]] = True
        mine = batches[rank::num_replicas]
        return [first[self.bounds[b] : self.bounds[b + 1]] for b in mine]


@dataclass(frozen=True)
class SamplerOptions:
    """Everything but the lengths that decides an epoch's batches; checked when made.

    See ``BucketBatchSampler`` for what each option means. Two samplers with equal options and
    lengths plan the same epochs, which is what a resume checks.
    """

    batch_size: int | None = None
    max_tokens: int | None = None
    shuffle: bool = True
    seed: int = 0
    drop_last: bool = False
    num_replicas: int = 1
    mix: float = 1.0
    pad_to_multiple_of: int | None = None
    quadratic_length: int | None = None
    oversized: str = "error"
    num_samples: int | None = None
    longest_first: bool = False
    packing_capacity: int | None = None
    packing_window: int = 128

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:  # normalise a field of the frozen instance
            object.__setattr__(self, name, value)

        for name in ("batch_size", "max_tokens", "pad_to_multiple_of", "quadratic_length"):
            put(name, positive_int(name, getattr(self, name)))
        for name in ("num_samples", "packing_capacity"):
            put(name, positive_int(name, getattr(self, name)))
        put("num_replicas", positive_int("num_replicas", self.num_replicas, allow_none=False))
        put("packing_window", positive_int("packing_window", self.packing_window, allow_none=False))
        put("seed", non_negative_int("seed", self.seed))
        for name in ("shuffle", "drop_last", "longest_first"):
            put(name, bool(getattr(self, name)))
        if self.batch_size is None and self.max_tokens is None:
            raise TextBatchError(
                "give batch_size (examples per batch), max_tokens (a token budget), or both."
            )
        mix = self.mix
        if isinstance(mix, bool) or not isinstance(mix, int | float) or not 0 <= mix <= 1000:
            raise TextBatchError(
                f"mix={mix!r} must be a number of batches from 0 to 1000 (default 1)."
            )
        put("mix", float(mix))
        if self.oversized not in OVERSIZED:
            raise TextBatchError(
                f"oversized={self.oversized!r} must be 'error', 'alone' or (with packing) "
                "'truncate'."
            )
        self._check_packing()

    def _check_packing(self) -> None:
        capacity = self.packing_capacity
        if capacity is None:
            if self.oversized == "truncate":
                raise TextBatchError("oversized='truncate' applies to packing_capacity only.")
            return
        if self.max_tokens is None or self.max_tokens < capacity:
            raise TextBatchError(
                f"packing_capacity={capacity} needs max_tokens, a whole number of rows per batch "
                f"(at least {capacity}), e.g. max_tokens={8 * capacity}."
            )
        if self.batch_size is not None:
            raise TextBatchError(
                "batch_size does not apply with packing_capacity: max_tokens sets the batch."
            )
        if self.quadratic_length is not None or self.oversized == "alone":
            raise TextBatchError(
                "with packing_capacity, rows are a fixed width: quadratic_length and "
                "oversized='alone' do not apply (use oversized='truncate' to cut long examples)."
            )

    def example_cost(self, lengths: np.ndarray) -> np.ndarray:
        """Budget tokens of batch rows padded to ``lengths`` (rounding and attention cost)."""
        return batch_cost(lengths, self.pad_to_multiple_of, self.quadratic_length)

    def as_dict(self) -> dict[str, Any]:
        """The options as plain data (a sampler state's ``options``)."""
        return dataclasses.asdict(self)


class EpochPlanner:
    """Plans the epochs of one set of lengths: checks the lengths against the options once,
    and keeps what every epoch reuses (sort codes, a fixed random order among ties). Each
    plan is a function of (lengths, options, weights, epoch) alone."""

    def __init__(self, lengths: Any, options: SamplerOptions, weights: Any = None) -> None:
        self.lengths = as_lengths(lengths)
        if self.lengths.size == 0:
            raise TextBatchError("lengths is empty; the sampler needs at least one example.")
        self.longest = int(self.lengths.max())  # tokens
        self.options = options
        self.weights = self._check_weights(weights)
        if options.num_samples is not None and self.weights is None:
            raise TextBatchError("num_samples only applies with weights=...; pass weights too.")
        self._check_capacity()
        self._check_budget()
        self._codes: np.ndarray | None = None  # sort code of each length
        self._narrow: np.ndarray | None = None  # the lengths in the narrowest type that holds them
        # For shuffled epochs of every example: a fixed pseudo-random order among equal keys,
        # and the examples per code.
        self._ties: TieScatter | None = None
        self._code_table: np.ndarray | None = None  # the sort code of every length, if kept
        self._code_counts: np.ndarray | None = None

    # ------------------------------------------------------------------ checks
    def _check_weights(self, weights: Any) -> np.ndarray | None:
        if weights is None:
            return None
        array = np.asarray(weights, dtype=np.float64)
        if array.shape != self.lengths.shape:
            raise TextBatchError(
                f"weights has shape {array.shape} but there are {len(self.lengths)} lengths; "
                "give one weight per example."
            )
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.sum() <= 0:
            raise TextBatchError(
                "weights must be finite, non-negative and not all zero; e.g. "
                "balanced_weights(labels)."
            )
        return array / array.sum()

    def _check_capacity(self) -> None:
        capacity = self.options.packing_capacity
        if capacity is None:
            return
        if self.longest > capacity and self.options.oversized != "truncate":
            over = self.lengths > capacity
            index = int(np.flatnonzero(over)[0])
            raise TextBatchError(
                f"example {index} has {self.lengths[index]} tokens, more than the row capacity "
                f"packing_capacity={capacity} ({int(over.sum())} examples do). Raise it, truncate "
                "with max_length, or pass oversized='truncate' (and pack with "
                "PackingCollator(overlong='truncate'))."
            )

    def _check_budget(self) -> None:
        options = self.options
        if options.max_tokens is None or options.packing_capacity is not None:
            return
        # The longest example that fits the budget alone (the cost grows with the length).
        low, high = 0, options.max_tokens
        while low < high:
            middle = (low + high + 1) // 2
            if options.example_cost(np.array([middle]))[0] <= options.max_tokens:
                low = middle
            else:
                high = middle - 1
        self.longest_fit = low
        # Examples per batch by sort code (at the code's shortest length), for the jitter.
        self.per_batch_by_code = per_batch_by_code(
            options.example_cost(code_lower_bounds()), options.max_tokens, options.batch_size
        )
        if self.longest > low and options.oversized == "error":
            over = self.lengths > low
            index = int(np.flatnonzero(over)[0])
            padded = options.example_cost(self.lengths[index : index + 1])[0]
            raise TextBatchError(
                f"example {index} has {self.lengths[index]} tokens (costing {padded:g} once "
                f"padded), more than max_tokens={options.max_tokens} allows on its own "
                f"({int(over.sum())} examples do). Raise "
                "max_tokens, truncate with max_length, or pass oversized='alone' to give each "
                "such example a batch of its own."
            )

    # ------------------------------------------------------------------ planning
    def _rng(self, epoch: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.options.seed, epoch, stream])

    def plan(self, epoch: int) -> EpochPlan:
        """Every rank's batches of epoch ``epoch``."""
        rng = self._rng(epoch, _ORDER) if self.options.shuffle else None
        if self.weights is not None:
            size = self.options.num_samples or len(self.lengths)
            items = self._rng(epoch, _DRAWS).choice(len(self.lengths), size=size, p=self.weights)
        else:
            items = None  # every example once
        if self.options.packing_capacity is not None:
            return self._plan_packed(items, rng)
        if self.options.max_tokens is None:
            return self._plan_by_size(items, rng)
        return self._plan_by_tokens(items, rng)

    def _plan_packed(self, items: np.ndarray | None, rng: np.random.Generator | None) -> EpochPlan:
        capacity, max_tokens = self.options.packing_capacity, self.options.max_tokens
        assert capacity is not None and max_tokens is not None
        if items is None:
            items = np.arange(len(self.lengths), dtype=np.int64)
        order = items[rng.permutation(len(items))] if rng is not None else items
        lengths = np.minimum(self.lengths, capacity)  # oversized="truncate"
        # A window of about `packing_window` rows' worth of examples is packed at a time.
        per_row = capacity / max(float(lengths[order].mean()), 1.0)
        window = max(1, round(self.options.packing_window * per_row))
        rows = max_tokens // capacity
        indices, bounds = plan_packed_batches(lengths, order, capacity, rows, window, rng)
        return self._balance(indices, bounds, rng)

    def _length_order(
        self,
        items: np.ndarray | None,
        rng: np.random.Generator | None,
        per_batch: np.ndarray,
        still_runs: float = 8.0,
        with_lengths: bool = False,
        as_runs: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | LengthRuns | None]:
        """Dataset indices of ``items`` (default: all) sorted by length, ties at random, each
        moved forward by up to ``mix`` x ``per_batch`` places (examples per batch by sort code;
        see ``length_order`` for ``still_runs``); and, ``with_lengths``, their lengths in that
        order (in the narrowest integer type that holds them), else None. With ``as_runs``,
        shuffled epochs of every example may give the lengths' ``LengthRuns`` instead."""
        if rng is not None and items is None:
            return self._shuffled_order(rng, per_batch, still_runs, with_lengths, as_runs)
        if self._codes is None:
            self._codes = length_codes(self.lengths)
        codes = self._codes if items is None else self._codes[items]
        reach = self.options.mix * per_batch if rng is not None and self.options.mix > 0 else None
        keys = length_keys(codes, rng, reach, None, still_runs)  # as length_order sorts them
        lengths = None
        if with_lengths:
            lengths = self._narrow_lengths() if items is None else self._narrow_lengths()[items]
        order, ordered = sorted_with(keys, lengths)
        return (order if items is None else items[order]), ordered

    def _shuffled_order(
        self,
        rng: np.random.Generator,
        per_batch: np.ndarray,
        still_runs: float,
        with_lengths: bool,
        as_runs: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | LengthRuns | None]:
        """``_length_order`` of every example, shuffled: equal keys in a fixed scattered order
        (so that neighbours never follow the dataset's own order), which the random groups
        of ``length_keys`` regroup every epoch. The lengths come out of the same sort
        (``shuffled_order``): no gather by the order."""
        if self._ties is None:
            self._ties = TieScatter(len(self.lengths), self._rng(0, _TIES))
            self._code_table = code_table(self.longest)
            self._code_counts = length_code_counts(self.lengths, self._code_table)
        reach = self.options.mix * per_batch if self.options.mix > 0 else None
        return shuffled_order(
            self._narrow_lengths(),
            self._code_counts,
            rng,
            reach,
            still_runs,
            with_lengths,
            self._code_table,
            self._ties,
            as_runs,
        )

    def _narrow_type(self) -> type:
        """The narrowest integer type that holds every length: int16 for most corpora, so that
        an epoch's lengths in sorted order write 4x fewer fresh bytes than int64 (60 MB less at
        10 million lengths)."""
        return np.int16 if self.longest < 2**15 else np.int32 if self.longest < 2**31 else np.int64

    def _narrow_lengths(self) -> np.ndarray:
        """The lengths as ``_narrow_type``, made once."""
        if self._narrow is None:
            self._narrow = self.lengths.astype(self._narrow_type())
        return self._narrow

    def _plan_by_size(self, items: np.ndarray | None, rng: np.random.Generator | None) -> EpochPlan:
        assert self.options.batch_size is not None
        num_items = len(self.lengths) if items is None else len(items)
        sizes, dropped, repeated = batch_size_plan(
            num_items, self.options.batch_size, self.options.num_replicas, self.options.drop_last
        )
        order, _ = self._length_order(items, rng, np.full(NUM_CODES, self.options.batch_size))
        if dropped or repeated:  # chosen at random, not always among the longest examples
            picker = rng if rng is not None else self._rng(0, _PICKS)
            if dropped:
                keep = np.sort(picker.choice(num_items, size=num_items - dropped, replace=False))
                order = order[keep]
            if repeated:
                extra = picker.choice(order, size=repeated)
                order = np.concatenate([order, extra])
                order = order[np.argsort(self.lengths[order], kind="stable")]
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        return self._finish(order, bounds, rng, dropped, repeated)

    def _plan_by_tokens(
        self, items: np.ndarray | None, rng: np.random.Generator | None
    ) -> EpochPlan:
        assert self.options.max_tokens is not None
        reach = np.minimum(self.per_batch_by_code, TOKEN_REACH)
        # Where every example fits the budget, the cut needs only the runs of the sorted
        # lengths' running maxima, which the shuffled sort gives without an array of lengths.
        fit = self.longest <= self.longest_fit
        order, ordered = self._length_order(items, rng, reach, TOKEN_STILL_RUNS, True, fit)
        assert ordered is not None
        alone = order[:0]
        if not fit:  # only with oversized="alone"
            assert isinstance(ordered, np.ndarray)
            fits = ordered <= self.longest_fit
            order, alone = order[fits], order[~fits]  # each of those gets a batch of its own
            ordered = ordered[fits]
        bounds = least_padding_bounds(
            ordered,
            self.options.max_tokens,
            self.options.batch_size,
            self.options.pad_to_multiple_of,
            self.options.quadratic_length,
            rng=rng,
        )
        if len(alone):
            order = np.concatenate([order, alone])
            bounds = np.concatenate([bounds, bounds[-1] + np.arange(1, len(alone) + 1)])
        return self._balance(order, bounds, rng)

    def _balance(
        self, order: np.ndarray, bounds: np.ndarray, rng: np.random.Generator | None
    ) -> EpochPlan:
        """Whole steps of one batch per rank: halve batches, drop some (``drop_last``), or,
        where every batch holds one example already, repeat the fewest examples possible."""
        picker = rng if rng is not None else self._rng(0, _PICKS)
        order, bounds, dropped, missing = split_for_replicas(
            order, bounds, self.options.num_replicas, self.options.drop_last, picker
        )
        if missing:
            order = np.concatenate([order, picker.choice(order, size=missing)])
            bounds = np.concatenate([bounds, bounds[-1] + np.arange(1, missing + 1)])
        return self._finish(order, bounds, rng, dropped, missing)

    def _finish(
        self,
        order: np.ndarray,
        bounds: np.ndarray,
        rng: np.random.Generator | None,
        dropped: int,
        repeated: int,
    ) -> EpochPlan:
        num_steps = (len(bounds) - 1) // self.options.num_replicas
        steps = rng.permutation(num_steps) if rng is not None else np.arange(num_steps)
        if self.options.longest_first and num_steps > 1:
            sizes = np.diff(bounds)
            widths = np.maximum.reduceat(self.lengths[order], bounds[:-1])
            padded = (sizes * self.options.example_cost(widths)).reshape(num_steps, -1).max(axis=1)
            first = int(np.argmax(padded))
            steps = np.concatenate([[first], steps[steps != first]])
        return EpochPlan(order, bounds, steps, dropped, repeated)


def plan_epoch(lengths: Any, options: SamplerOptions, epoch: int, weights: Any = None) -> EpochPlan:
    """Every rank's batches of epoch ``epoch`` of ``lengths`` (tokens per example) under
    ``options``: a pure function (``EpochPlanner`` keeps the per-lengths work for many epochs).

    Example:
        >>> plan = plan_epoch([5, 3, 9, 4], SamplerOptions(batch_size=2), epoch=0)
        >>> sorted(len(plan.batch(k, 0, 1)) for k in range(len(plan.steps)))
        [2, 2]
    """
    return EpochPlanner(lengths, options, weights).plan(epoch)
