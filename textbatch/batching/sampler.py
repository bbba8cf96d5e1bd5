"""BucketBatchSampler: batches of similar length, by batch size or token budget, reshuffled each
epoch, with an exact ``len``, resumable mid-epoch and sharded across ``torch.distributed`` ranks.

The sampler is a thin iterator over ``textbatch.batching.epochs``: ``SamplerOptions`` (checked
once), ``plan_epoch`` (a pure function of lengths, options and epoch), and the little state it
owns itself: the epoch, the position in it, and whether the next pass resumes a saved position.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from textbatch.batching.epochs import EpochPlan, EpochPlanner, SamplerOptions
from textbatch.checks import non_negative_int, positive_int
from textbatch.distributed import resolve_rank
from textbatch.errors import TextBatchError

_OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(SamplerOptions))


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
            epoch and pad a little more. Default 1. With ``max_tokens``, whose batches can hold
            thousands of short examples, no further than ``mix`` batches of 32; there a batch
            holds whole runs of one short length, which regroup only among the batches a run
            spans: a larger ``mix`` regroups the long tail, hardly those runs.
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

    # 2: ties scattered arithmetically, token budgets cut where they pad least (issue 13).
    # 3: the random groups among equal keys drawn in the dataset's order (one record sort). A
    # state of another version would point at other batches of the same epoch.
    STATE_VERSION = 3

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
        self.rank, replicas = resolve_rank(num_replicas, rank)
        self.options = SamplerOptions(
            batch_size=batch_size,
            max_tokens=max_tokens,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            num_replicas=replicas,
            mix=mix,
            pad_to_multiple_of=pad_to_multiple_of,
            quadratic_length=quadratic_length,
            oversized=oversized,
            num_samples=num_samples,
            longest_first=longest_first,
            packing_capacity=packing_capacity,
            packing_window=packing_window,
        )
        self.planner = EpochPlanner(lengths, self.options, weights)
        self.lengths = self.planner.lengths
        self.weights = self.planner.weights
        # Iteration state. Every fresh __iter__ is a whole epoch from its first batch; only the
        # first __iter__ after load_state_dict continues a saved position (lhotse's rule), so a
        # peek or a `break` never costs the next pass anything.
        self.epoch = 0
        self._position = 0  # batches of the current epoch yielded by the latest pass
        self._resume_at: int | None = None  # where the next pass starts (load_state_dict)
        self._finished = False  # the latest pass yielded the epoch's last batch: move on
        self._plans: dict[int, EpochPlan] = {}  # this epoch's and the next one's
        self._fingerprint: str | None = None
        if self.options.drop_last:
            self.plan(0)  # an empty epoch is an error (_planned)

    def __getattr__(self, name: str) -> Any:
        """The options read as attributes (``sampler.batch_size``, ``sampler.num_replicas``)."""
        if name in _OPTION_NAMES and "options" in self.__dict__:
            return getattr(self.options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The whole plan of an epoch (default: the current one), for all ranks; the current
        epoch's and the next one's plans are kept."""
        epoch = self.epoch if epoch is None else epoch
        if epoch not in self._plans:
            # The current epoch and the next (which len() reports once an epoch is finished).
            self._plans = {
                e: p for e, p in self._plans.items() if e in (self.epoch, self.epoch + 1)
            }
            self._plans[epoch] = self._planned(epoch)
        return self._plans[epoch]

    def _planned(self, epoch: int) -> EpochPlan:
        """Epoch ``epoch`` planned; with ``drop_last``, an error if it holds no batch: under a
        token budget an epoch's batch count depends on its shuffle, so a later epoch could be
        empty where epoch 0 was not (a loop then trained on nothing that epoch)."""
        plan = self.planner.plan(epoch)
        if self.options.drop_last and len(plan.steps) == 0:
            replicas = self.options.num_replicas
            examples = self.options.num_samples or len(self.lengths)
            what = (
                f"one batch of {self.options.batch_size}"
                if self.options.max_tokens is None
                else f"{replicas} batches of {self.options.max_tokens} tokens"
            )
            raise TextBatchError(
                f"with drop_last=True an epoch would be empty (epoch {epoch}): {examples} "
                f"examples do not make {what} per rank ({replicas} ranks). Use "
                "drop_last=False, smaller batches or fewer ranks."
            )
        return plan

    # ------------------------------------------------------------------ the Sampler interface
    def __iter__(self) -> Iterator[list[int]]:
        """This rank's batches of one whole epoch; after ``load_state_dict``, the rest of the
        saved epoch. A pass that yielded the epoch's last batch moves the next pass on to the
        next epoch, for loops that never call ``set_epoch``."""
        if self._finished:
            self.epoch += 1
            start = 0
        else:
            start = self._resume_at or 0
        self._resume_at = None
        self._finished = False
        plan = self.plan()
        steps = len(plan.steps)
        self._position = start
        # Completion is marked with the last batch: loops such as Trainer's never ask for more.
        self._finished = start >= steps
        items = plan.items
        starts, ends = plan.rank_bounds(self.rank, self.options.num_replicas)
        for position in range(start, steps):
            batch = items[starts[position] : ends[position]].tolist()
            self._position = position + 1
            self._finished = self._position == steps
            yield batch

    def __len__(self) -> int:
        """The number of batches the next ``__iter__`` yields: a whole epoch, or the rest of
        a resumed one."""
        if self._finished:
            return len(self.plan(self.epoch + 1).steps)
        return len(self.plan().steps) - (self._resume_at or 0)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch``, from its start; right after ``load_state_dict``,
        setting the saved epoch again keeps the saved position."""
        epoch = non_negative_int("epoch", epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self._resume_at = None
        # Nothing of the next pass is consumed yet: a state_dict() now says where it starts.
        self._position = self._resume_at or 0
        self._finished = False

    def epoch_lengths(self, epochs: int) -> list[int]:
        """This rank's number of batches in each of epochs 0 .. ``epochs`` - 1. By batch size
        every epoch has as many; under a token budget (or packing) the count depends on the
        epoch's shuffle, so each epoch is planned (about 1 s an epoch for 10 million
        examples). A learning-rate schedule sized from one epoch would end early or late."""
        epochs = positive_int("epochs", epochs, allow_none=False)
        if self.options.max_tokens is None:
            return [len(self.plan().steps)] * epochs
        kept = (self.epoch, self.epoch + 1)  # plan() keeps these; others are planned and let go
        return [len((self.plan(e) if e in kept else self._planned(e)).steps) for e in range(epochs)]

    def first_uses(self, epoch: int | None = None) -> list[np.ndarray]:
        """For each of this rank's batches of an epoch (default: the current one), True where
        the example is used for the first time in the epoch over all ranks: False marks the
        repeats that keep every rank's batch count even, so that evaluation counts each example
        once. With ``weights``, every draw counts (all True)."""
        plan = self.plan(epoch)
        if self.weights is not None:
            return [np.ones(len(plan.batch(k, self.rank, self.options.num_replicas)), dtype=bool)
                    for k in range(len(plan.steps))]  # fmt: skip
        return plan.first_uses(self.rank, self.options.num_replicas)

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
        starts, ends = plan.rank_bounds(self.rank, self.options.num_replicas)
        return [plan.items[a:b].tolist() for a, b in zip(starts, ends, strict=True)]

    def typical_batch(self, epoch: int | None = None) -> list[int]:
        """This rank's batch of an epoch (default: the current one) whose padded tokens
        (examples x the batch's longest length) are nearest the epoch's mean: where a batch's
        time grows about linearly with its padded tokens, this batch's time is the epoch's
        mean batch time. ``fit`` times it to choose a thread count; the first batch, in a
        long-tailed corpus, may be a tenth or ten times that size."""
        plan = self.plan(epoch)
        replicas = self.options.num_replicas
        widths = np.maximum.reduceat(self.lengths[plan.items], plan.bounds[:-1])
        padded = (np.diff(plan.bounds) * widths)[plan.steps * replicas + self.rank]
        nearest = int(np.argmin(np.abs(padded - padded.mean())))  # a step of this rank
        return plan.batch(nearest, self.rank, replicas).tolist()

    # ------------------------------------------------------------------ resume
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
        consumed = self._position if position is None else non_negative_int("position", position)
        if consumed > len(self.plan().steps):
            raise TextBatchError(
                f"position={position} is outside this epoch's {len(self.plan().steps)} batches."
            )
        return {
            "version": self.STATE_VERSION,
            "epoch": self.epoch,
            "position": consumed,  # == the epoch's batches: the epoch is finished
            "num_examples": len(self.lengths),
            "lengths_fingerprint": self._data_fingerprint(),
            "options": self.options.as_dict(),
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
                f"sampler state version {state['version']} is not {self.STATE_VERSION}: it was "
                "saved by a textbatch that plans epochs differently, so its position would point "
                "at other batches. Resume with the textbatch that saved it, or start a new run."
            )
        differences = []
        if state["num_examples"] != len(self.lengths):
            differences.append(
                f"{state['num_examples']} examples in the state, {len(self.lengths)} here"
            )
        elif state["lengths_fingerprint"] != self._data_fingerprint():
            differences.append("the lengths (or weights) differ")
        options = self.options.as_dict()
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
        epoch = non_negative_int("epoch", state["epoch"])
        position = non_negative_int("position", state["position"])
        steps = len(self.plan(epoch).steps)
        if position > steps:
            raise TextBatchError(f"position {position} is outside epoch {epoch}'s {steps} batches.")
        self.epoch = epoch
        self._position = self._resume_at = position
        # A finished epoch: the next pass moves on, unless set_epoch asks for this epoch again
        # (a loop that resumes by calling set_epoch(epoch) gets the rest of it: nothing).
        self._finished = position == steps

    def __repr__(self) -> str:
        budget = f"max_tokens={self.options.max_tokens}, " if self.options.max_tokens else ""
        size = f"batch_size={self.options.batch_size}, " if self.options.batch_size else ""
        return (
            f"BucketBatchSampler({len(self.lengths)} examples, {size}{budget}shuffle="
            f"{self.options.shuffle}, epoch={self.epoch}, "
            f"rank={self.rank}/{self.options.num_replicas})"
        )


def balanced_weights(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-example weights proportional to the inverse frequency of each example's class, so that
    every class is drawn equally often in expectation (as with ``WeightedRandomSampler``)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise TextBatchError("labels must be a non-empty 1-D sequence of class ids.")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]
