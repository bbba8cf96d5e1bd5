"""BucketBatchSampler: batches of similar length, by batch size or token budget, reshuffled each
epoch, with an exact ``len``, resumable mid-epoch and sharded across ``torch.distributed`` ranks.

How an epoch is planned (all vectorised, see ``textbatch.batching``):

1. the epoch's items: every example once (or drawn by ``weights``);
2. sort them by length, ties in random order, then let each move forward a random number of
   places below ``mix`` batches' worth (the knob that trades padding for randomness);
3. cut the order into batches: ``batch_size`` each, or greedily up to ``max_tokens``;
4. group consecutive batches into steps of one batch per rank (so ranks at the same step get
   similar lengths) and shuffle the steps (so lengths never sweep up or down through the epoch).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from textbatch.batching import (
    NUM_CODES,
    batch_cost,
    batch_size_plan,
    code_lower_bounds,
    length_codes,
    length_order,
    split_for_replicas,
    token_budget_bounds,
)
from textbatch.collate import check_pad_to_multiple_of
from textbatch.distributed import resolve_rank
from textbatch.errors import TextBatchError
from textbatch.packing import plan_packed_batches
from textbatch.stats import as_lengths

# Independent random streams of one (seed, epoch).
_ORDER, _DRAWS, _PICKS, _TIES = range(4)


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


def _positive_int(name: str, value: Any, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise TextBatchError(f"{name}={value!r} must be a positive int.")
    return int(value)


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yield lists of dataset indices whose examples have similar lengths.

    Use it as ``DataLoader(dataset, batch_sampler=sampler, collate_fn=collator)``.

    Args:
        lengths: tokens per example (e.g. ``TextDataset.lengths``).
        batch_size: examples per batch; with ``max_tokens`` too, the most examples per batch.
        max_tokens: token budget per batch: examples x padded width (rounded up to
            ``pad_to_multiple_of``) is at most this.
        shuffle: reshuffle each epoch (``set_epoch``); False gives a fixed order sorted by length,
            for evaluation.
        seed: the epochs' batches are a function of (lengths, options, seed, epoch) alone.
        drop_last: by batch size, drop incomplete batches (and, across ranks, batches that do not
            make a whole step of one per rank); by token budget or packing, where no batch is
            "incomplete", drop only batches that do not make a whole step, chosen at random.
            ``num_dropped`` says how many examples that was. Otherwise every example is used
            exactly once per epoch.
        num_replicas, rank: shard across ranks (default: from ``torch.distributed`` when it is
            initialised). Every rank yields the same number of batches and each example goes to
            one rank; the batches of one step have similar lengths.
        mix: how far (in batches' worth of places) examples may move from a full sort by length.
            0 is a full sort (ties still random); larger values change batches more from epoch to
            epoch and pad a little more. Default 1.
        pad_to_multiple_of: the collator's rounding, so that budgets count the real padded size.
        quadratic_length: model attention's quadratic cost: a batch padded to ``T`` costs
            ``examples x (T + T**2 / quadratic_length)`` tokens of budget.
        oversized: what to do with an example that does not fit ``max_tokens`` on its own:
            ``"error"`` (default) or ``"alone"`` (a batch of its own).
        weights: per-example sampling weights: each epoch draws ``num_samples`` (default all)
            examples with replacement, in proportion to them, then buckets them (see
            ``balanced_weights``).
        longest_first: put the step with the largest padded batch first, so that running out of
            memory shows at the first step rather than hours in.
        packing_capacity: plan packed rows of this many tokens instead of padded batches: each
            epoch, shuffled windows of about ``packing_window`` rows' worth of examples are
            packed by best-fit decreasing, and batches are whole rows, at most ``max_tokens``
            tokens (``max_tokens // packing_capacity`` rows). ``PackingCollator(capacity=...)``
            with the same capacity lays every batch out as planned, never in more rows.
    """

    STATE_VERSION = 1

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        *,
        mix: float = 1.0,
        pad_to_multiple_of: int | None = None,
        quadratic_length: int | None = None,
        oversized: str = "error",
        weights: Sequence[float] | np.ndarray | None = None,
        num_samples: int | None = None,
        longest_first: bool = False,
        packing_capacity: int | None = None,
        packing_window: int = 128,
    ) -> None:
        self.lengths = as_lengths(lengths)
        if self.lengths.size == 0:
            raise TextBatchError("lengths is empty; the sampler needs at least one example.")
        self.batch_size = _positive_int("batch_size", batch_size)
        self.max_tokens = _positive_int("max_tokens", max_tokens)
        if self.batch_size is None and self.max_tokens is None:
            raise TextBatchError(
                "give batch_size (examples per batch), max_tokens (a token budget), or both."
            )
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.rank, self.num_replicas = resolve_rank(num_replicas, rank)
        if not 0 <= mix <= 1000:
            raise TextBatchError(
                f"mix={mix!r} must be a number of batches from 0 to 1000 (default 1)."
            )
        self.mix = float(mix)
        self.pad_to_multiple_of = check_pad_to_multiple_of(pad_to_multiple_of)
        self.quadratic_length = _positive_int("quadratic_length", quadratic_length)
        if oversized not in ("error", "alone", "truncate"):
            raise TextBatchError(
                f"oversized={oversized!r} must be 'error', 'alone' or (with packing) 'truncate'."
            )
        self.oversized = oversized
        self.longest_first = bool(longest_first)
        self.packing_capacity = _positive_int("packing_capacity", packing_capacity)
        self.packing_window = _positive_int("packing_window", packing_window, allow_none=False)
        self._check_packing(oversized)
        self.weights = self._check_weights(weights)
        self.num_samples = _positive_int("num_samples", num_samples)
        if self.num_samples is not None and self.weights is None:
            raise TextBatchError("num_samples only applies with weights=...; pass weights too.")
        self._check_budget()
        self.epoch = 0
        self._position = 0  # steps of the current epoch already yielded
        self._completed = False  # the current epoch was iterated to its end
        self._just_loaded = False  # a state was loaded and no pass has begun since
        self._plans: dict[int, EpochPlan] = {}  # cached plans by epoch
        self._fingerprint: str | None = None
        self._codes: np.ndarray | None = None  # sort code of each length
        self._ties: np.ndarray | None = None  # a fixed random order among equal codes
        self._tied_codes: np.ndarray | None = None  # codes in that order
        self._code_counts: np.ndarray | None = None  # examples per code
        if self.drop_last and len(self) == 0:
            examples = self.num_samples or len(self.lengths)
            what = (
                f"one batch of {self.batch_size}"
                if self.max_tokens is None
                else f"{self.num_replicas} batches of {self.max_tokens} tokens"
            )
            raise TextBatchError(
                f"with drop_last=True an epoch would be empty: {examples} examples do not make "
                f"{what} per rank ({self.num_replicas} ranks). Use drop_last=False, smaller "
                "batches or fewer ranks."
            )

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

    def _example_cost(self, lengths: np.ndarray) -> np.ndarray:
        return batch_cost(lengths, self.pad_to_multiple_of, self.quadratic_length)

    def _check_packing(self, oversized: str) -> None:
        capacity = self.packing_capacity
        if capacity is None:
            if oversized == "truncate":
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
        if self.quadratic_length is not None or oversized == "alone":
            raise TextBatchError(
                "with packing_capacity, rows are a fixed width: quadratic_length and "
                "oversized='alone' do not apply (use oversized='truncate' to cut long examples)."
            )
        over = self.lengths > capacity
        if over.any() and oversized != "truncate":
            index = int(np.flatnonzero(over)[0])
            raise TextBatchError(
                f"example {index} has {self.lengths[index]} tokens, more than the row capacity "
                f"packing_capacity={capacity} ({int(over.sum())} examples do). Raise it, truncate "
                "with max_length, or pass oversized='truncate' (and pack with "
                "PackingCollator(overlong='truncate'))."
            )

    def _check_budget(self) -> None:
        if self.max_tokens is None or self.packing_capacity is not None:
            return
        # The longest example that fits the budget alone (the cost grows with the length).
        low, high = 0, self.max_tokens
        while low < high:
            middle = (low + high + 1) // 2
            if self._example_cost(np.array([middle]))[0] <= self.max_tokens:
                low = middle
            else:
                high = middle - 1
        self._longest_fit = low
        # Examples per batch by sort code (at the code's shortest length), for the jitter.
        per_batch = np.floor(self.max_tokens / self._example_cost(code_lower_bounds()))
        if self.batch_size is not None:
            per_batch = np.minimum(per_batch, self.batch_size)
        self._per_batch_by_code = np.maximum(per_batch, 1)
        over = self.lengths > low
        if over.any() and self.oversized == "error":
            index = int(np.flatnonzero(over)[0])
            padded = self._example_cost(self.lengths[index : index + 1])[0]
            raise TextBatchError(
                f"example {index} has {self.lengths[index]} tokens (costing {padded:g} once "
                f"padded), more than max_tokens={self.max_tokens} allows on its own "
                f"({int(over.sum())} examples do). Raise "
                "max_tokens, truncate with max_length, or pass oversized='alone' to give each "
                "such example a batch of its own."
            )

    # ------------------------------------------------------------------ planning
    def _rng(self, epoch: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, stream])

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The whole plan of an epoch (default: the current one), for all ranks; plans are
        cached for the current epoch only."""
        epoch = self.epoch if epoch is None else epoch
        if epoch not in self._plans:
            # The current epoch and the next (which len() reports once an epoch is finished).
            self._plans = {
                e: p for e, p in self._plans.items() if e in (self.epoch, self.epoch + 1)
            }
            self._plans[epoch] = self._make_plan(epoch)
        return self._plans[epoch]

    def _make_plan(self, epoch: int) -> EpochPlan:
        rng = self._rng(epoch, _ORDER) if self.shuffle else None
        if self.weights is not None:
            size = self.num_samples or len(self.lengths)
            items = self._rng(epoch, _DRAWS).choice(len(self.lengths), size=size, p=self.weights)
        else:
            items = None  # every example once
        if self.packing_capacity is not None:
            return self._plan_packed(items, rng)
        if self.max_tokens is None:
            return self._plan_by_size(items, rng)
        return self._plan_by_tokens(items, rng)

    def _plan_packed(self, items: np.ndarray | None, rng: np.random.Generator | None) -> EpochPlan:
        assert self.max_tokens is not None and self.packing_capacity is not None
        if items is None:
            items = np.arange(len(self.lengths), dtype=np.int64)
        order = items[rng.permutation(len(items))] if rng is not None else items
        lengths = np.minimum(self.lengths, self.packing_capacity)  # oversized="truncate"
        # A window of about `packing_window` rows' worth of examples is packed at a time.
        per_row = self.packing_capacity / max(float(lengths[order].mean()), 1.0)
        window = max(1, round(self.packing_window * per_row))
        indices, bounds = plan_packed_batches(
            lengths, order, self.packing_capacity, self.max_tokens // self.packing_capacity,
            window, rng,
        )  # fmt: skip
        return self._balance(indices, bounds, rng)

    def _length_order(
        self, items: np.ndarray | None, rng: np.random.Generator | None, per_batch: np.ndarray
    ) -> np.ndarray:
        """Dataset indices of ``items`` (default: all) sorted by length, ties at random, each
        moved forward by up to ``mix`` batches' worth (``per_batch``: examples per batch by
        sort code)."""
        if self._codes is None:
            self._codes = length_codes(self.lengths)
        if rng is None:
            order = length_order(self._codes if items is None else self._codes[items])
            return order if items is None else items[order]
        reach = self.mix * per_batch if self.mix > 0 else None
        if items is not None:
            return items[length_order(self._codes[items], rng, reach)]
        if self._ties is None:
            # A fixed random order among equal lengths, so that neighbours never follow the
            # dataset's own order; length_order regroups them at random every epoch.
            self._ties = self._rng(0, _TIES).permutation(len(self.lengths))
            self._tied_codes = self._codes[self._ties]
            self._code_counts = np.bincount(self._codes, minlength=NUM_CODES)
        return self._ties[length_order(self._tied_codes, rng, reach, self._code_counts)]

    def _plan_by_size(self, items: np.ndarray | None, rng: np.random.Generator | None) -> EpochPlan:
        assert self.batch_size is not None
        num_items = len(self.lengths) if items is None else len(items)
        sizes, dropped, repeated = batch_size_plan(
            num_items, self.batch_size, self.num_replicas, self.drop_last
        )
        order = self._length_order(items, rng, np.full(NUM_CODES, self.batch_size))
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
        assert self.max_tokens is not None
        order = self._length_order(items, rng, self._per_batch_by_code)
        alone = order[:0]
        if self.lengths.max() > self._longest_fit:  # only with oversized="alone"
            fits = self.lengths[order] <= self._longest_fit
            order, alone = order[fits], order[~fits]  # each of those gets a batch of its own
        bounds = token_budget_bounds(
            self.lengths[order],
            self.max_tokens,
            self.batch_size,
            self.pad_to_multiple_of,
            self.quadratic_length,
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
            order, bounds, self.num_replicas, self.drop_last, picker
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
        num_steps = (len(bounds) - 1) // self.num_replicas
        steps = rng.permutation(num_steps) if rng is not None else np.arange(num_steps)
        if self.longest_first and num_steps > 1:
            sizes = np.diff(bounds)
            widths = np.maximum.reduceat(self.lengths[order], bounds[:-1])
            padded = (sizes * self._example_cost(widths)).reshape(num_steps, -1).max(axis=1)
            first = int(np.argmax(padded))
            steps = np.concatenate([[first], steps[steps != first]])
        return EpochPlan(order, bounds, steps, dropped, repeated)

    # ------------------------------------------------------------------ the Sampler interface
    def __iter__(self) -> Iterator[list[int]]:
        if self._completed:  # a finished pass moves on, for loops that never call set_epoch
            self._just_loaded = False
            self.set_epoch(self.epoch + 1)
        self._just_loaded = False
        plan = self.plan()
        steps = len(plan.steps)
        # Completion is marked with the last batch: loops such as Trainer's never ask for more.
        self._completed = self._position >= steps
        while self._position < steps:
            batch = plan.batch(self._position, self.rank, self.num_replicas)
            self._position += 1
            self._completed = self._position == steps
            yield batch.tolist()

    def __len__(self) -> int:
        """The number of batches the next ``__iter__`` yields (the rest of a resumed epoch)."""
        if self._completed:
            return len(self.plan(self.epoch + 1).steps)
        return len(self.plan().steps) - self._position

    def set_epoch(self, epoch: int) -> None:
        """Plan epoch ``epoch`` next, from its start; setting the epoch of a resumed state again
        keeps its position. Without calls to ``set_epoch``, each finished pass moves to the next
        epoch by itself."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self._position = 0
        elif self._completed and not self._just_loaded:
            self._position = 0
        self._completed = False
        self._just_loaded = False

    @property
    def num_dropped(self) -> int:
        """Examples the current epoch leaves out (``drop_last``), over all ranks."""
        return self.plan().dropped

    @property
    def num_repeated(self) -> int:
        """Examples the current epoch uses twice so that every rank gets a batch (rare)."""
        return self.plan().repeated

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of an epoch (default: the current one, from its start)."""
        plan = self.plan(epoch)
        return [
            plan.batch(k, self.rank, self.num_replicas).tolist() for k in range(len(plan.steps))
        ]

    # ------------------------------------------------------------------ resume
    def _options(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "max_tokens": self.max_tokens,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "drop_last": self.drop_last,
            "num_replicas": self.num_replicas,
            "mix": self.mix,
            "pad_to_multiple_of": self.pad_to_multiple_of,
            "quadratic_length": self.quadratic_length,
            "oversized": self.oversized,
            "num_samples": self.num_samples,
            "longest_first": self.longest_first,
            "packing_capacity": self.packing_capacity,
            "packing_window": self.packing_window,
        }

    def _data_fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.blake2b(self.lengths.tobytes(), digest_size=12)
            if self.weights is not None:
                digest.update(self.weights.tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """Where this epoch stands, as plain data.

        ``position`` is the number of batches consumed in the current epoch; by default the
        number this sampler has yielded. A ``DataLoader`` with workers draws batches ahead of
        the training loop, so pass the count your loop has consumed.
        """
        consumed = self._position if position is None else int(position)
        if not 0 <= consumed <= len(self.plan().steps):
            raise TextBatchError(
                f"position={position} is outside this epoch's {len(self.plan().steps)} batches."
            )
        return {
            "version": self.STATE_VERSION,
            "epoch": self.epoch,
            "position": consumed,  # == the epoch's batches: the epoch is finished
            "num_examples": len(self.lengths),
            "lengths_fingerprint": self._data_fingerprint(),
            "options": self._options(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next ``__iter__`` yields the rest of that epoch.

        Raises if the state was made with other lengths, options or world size.
        """
        expected = {
            "version",
            "epoch",
            "position",
            "num_examples",
            "lengths_fingerprint",
            "options",
        }
        if not isinstance(state, dict) or set(state) != expected:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise TextBatchError(
                f"not a BucketBatchSampler state: keys {keys}, expected {sorted(expected)}."
            )
        if state["version"] != self.STATE_VERSION:
            raise TextBatchError(
                f"sampler state version {state['version']} is not {self.STATE_VERSION}."
            )
        differences = []
        if state["num_examples"] != len(self.lengths):
            differences.append(
                f"{state['num_examples']} examples in the state, {len(self.lengths)} here"
            )
        elif state["lengths_fingerprint"] != self._data_fingerprint():
            differences.append("the lengths (or weights) differ")
        options = self._options()
        for name in sorted(set(options) | set(state["options"])):
            saved, here = state["options"].get(name, "<missing>"), options.get(name, "<missing>")
            if saved != here:
                differences.append(f"{name}={saved!r} in the state, {here!r} here")
        if differences:
            raise TextBatchError(
                "cannot resume: the state was made by a different sampler: "
                + "; ".join(differences)
                + ". Build the sampler with the same data and options."
            )
        self.epoch = int(state["epoch"])
        steps = len(self.plan().steps)
        if not 0 <= state["position"] <= steps:
            raise TextBatchError(
                f"position {state['position']} is outside epoch {self.epoch}'s {steps} batches."
            )
        self._position = int(state["position"])
        # A finished epoch: the next pass moves on, unless set_epoch asks for this epoch again
        # (a loop that resumes by calling set_epoch(epoch) gets the rest of it: nothing).
        self._completed = self._position == steps
        self._just_loaded = True

    def __repr__(self) -> str:
        budget = f"max_tokens={self.max_tokens}, " if self.max_tokens else ""
        size = f"batch_size={self.batch_size}, " if self.batch_size else ""
        return (
            f"BucketBatchSampler({len(self.lengths)} examples, {size}{budget}shuffle="
            f"{self.shuffle}, epoch={self.epoch}, rank={self.rank}/{self.num_replicas})"
        )


def balanced_weights(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-example weights proportional to the inverse frequency of each example's class, so that
    every class is drawn equally often in expectation (as with ``WeightedRandomSampler``)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise TextBatchError("labels must be a non-empty 1-D sequence of class ids.")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]
