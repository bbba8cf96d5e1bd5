"""Length bucketing for streams: a shuffle buffer, sorted and cut into batches of similar length.

``BucketedStream`` reads ``buffer_size`` examples, orders them by length (random ties, jittered as
in ``BucketBatchSampler``), cuts them into batches by batch size or token budget, and yields those
batches in random order. A token budget is cut as ``BucketBatchSampler`` cuts one: examples move
at most ``TOKEN_REACH`` places, and the boundaries are placed where they pad least
(``least_padding_bounds``). A buffer's incomplete batches (fewer than ``batch_size`` examples
and, with a token budget, padded to under half of ``max_tokens``) wait for the next buffer, as
long as a complete one goes out; so an incomplete batch comes only at the end of the stream, or
from a buffer too small to make a complete batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from textbatch.batching.collate import check_pad_to_multiple_of
from textbatch.batching.planning import (
    NUM_CODES,
    TOKEN_REACH,
    TOKEN_STILL_RUNS,
    batch_cost,
    code_lower_bounds,
    least_padding_bounds,
    length_codes,
    length_order,
    per_batch_by_code,
)
from textbatch.checks import non_negative_int, positive_int
from textbatch.distributed import (
    dataloader_worker,
    hf_rank_share,
    is_hf_iterable,
    resolve_rank,
    shard_records,
)
from textbatch.errors import TextBatchError

Example = Mapping[str, Any]
_END = object()  # the end of the source


def example_length(example: Example) -> int:
    """Tokens in an example: its ``length`` key, else the length of its ``input_ids``."""
    if "length" in example:
        return int(example["length"])
    if "input_ids" in example:
        return len(example["input_ids"])
    raise TextBatchError(
        f"example has neither 'length' nor 'input_ids' (keys: {list(example)}); the stream "
        "needs token counts to bucket by length."
    )


def _ranks(source: Any, num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(rank, num_replicas)`` of the stream: those of a source that splits itself between
    ranks (``shards_itself``), which ranks given here must agree with (else they would be
    ignored and every rank would read every example); else the given ones or the process
    group's."""
    if not getattr(source, "shards_itself", False):
        return resolve_rank(num_replicas, rank)
    theirs = resolve_rank(getattr(source, "num_replicas", None), getattr(source, "rank", None))
    given = resolve_rank(num_replicas if num_replicas is not None else theirs[1],
                         rank if rank is not None else theirs[0])  # fmt: skip
    if given != theirs:
        raise TextBatchError(
            f"the source ({type(source).__name__}) splits itself as rank {theirs[0]} of "
            f"{theirs[1]}, but BucketedStream was given rank {given[0]} of {given[1]}: give "
            "num_replicas and rank to the source, which splits the stream (BucketedStream "
            "then needs neither)."
        )
    return theirs


class BucketedStream(torch.utils.data.IterableDataset):
    """Batches of similar length from a stream of tokenised examples.

    Use it as ``DataLoader(BucketedStream(stream, batch_size=32), batch_size=None,
    collate_fn=collator)``: each item is a whole batch (a list of examples).

    Args:
        source: an iterable of examples with ``input_ids`` (and optionally ``length``), e.g. a
            ``StreamingTextDataset``, which splits itself between ranks and workers (it says so
            with ``shards_itself = True``). A ``datasets.IterableDataset`` splits itself between
            workers (by its shards: give it at least as many as workers) and is split here
            between ranks with ``split_dataset_by_node`` (unless it was split so already); any
            other iterable is split here, round-robin by position between ranks and their
            workers, so that no example is seen twice.
        batch_size, max_tokens: as in ``BucketBatchSampler`` (either or both).
        buffer_size: examples held and sorted at a time (more: less padding, more memory).
        seed, mix, pad_to_multiple_of, quadratic_length: as in ``BucketBatchSampler``.
        drop_last: drop the incomplete batches at the end of the stream (of each rank and
            worker): fewer than ``batch_size`` examples and, with a token budget, padded to
            under half of ``max_tokens``. Usually there is one at most.
        num_replicas, rank: ranks to split a plain iterable between, with each rank's
            ``DataLoader`` workers (default: from ``torch.distributed``). Ranks and workers may
            yield different numbers of batches from a stream. A source that splits itself
            takes them itself; given here too, they must agree with it (else an error).
    """

    def __init__(
        self,
        source: Iterable[Example],
        batch_size: int | None = None,
        max_tokens: int | None = None,
        *,
        buffer_size: int = 10_000,
        seed: int = 0,
        mix: float = 1.0,
        drop_last: bool = False,
        pad_to_multiple_of: int | None = None,
        quadratic_length: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size is None and max_tokens is None:
            raise TextBatchError("give batch_size (examples per batch), max_tokens, or both.")
        batch_size = positive_int("batch_size", batch_size)
        max_tokens = positive_int("max_tokens", max_tokens)
        buffer_size = positive_int("buffer_size", buffer_size, allow_none=False)
        quadratic_length = positive_int("quadratic_length", quadratic_length)
        seed = non_negative_int("seed", seed)
        if batch_size is not None and buffer_size < batch_size:
            raise TextBatchError(
                f"buffer_size={buffer_size} must hold at least one batch (batch_size="
                f"{batch_size}); a few hundred batches' worth pads least."
            )
        if isinstance(mix, bool) or not isinstance(mix, int | float) or not 0 <= mix <= 1000:
            raise TextBatchError(
                f"mix={mix!r} must be a number of batches from 0 to 1000 (default 1)."
            )
        self.source = source
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.buffer_size = buffer_size
        self.seed = seed
        self.mix = mix
        self.drop_last = drop_last
        self.pad_to_multiple_of = check_pad_to_multiple_of(pad_to_multiple_of)
        self.quadratic_length = quadratic_length
        self.rank, self.num_replicas = _ranks(source, num_replicas, rank)
        # What is read: a datasets.IterableDataset splits itself between workers, and is split
        # here between ranks (a copy, which follows the epoch the source is set to)
        self._read_from = (
            hf_rank_share(source, self.num_replicas, self.rank)
            if is_hf_iterable(source)
            else source
        )
        # Places an example may move per unit of `mix`, by sort code: a batch's worth of
        # examples, at most TOKEN_REACH under a token budget (as in BucketBatchSampler).
        if max_tokens is None:
            self._reach = np.full(NUM_CODES, float(batch_size))
        else:
            cost = batch_cost(code_lower_bounds(), self.pad_to_multiple_of, quadratic_length)
            self._reach = np.minimum(per_batch_by_code(cost, max_tokens, batch_size), TOKEN_REACH)
        self.epoch = 0
        self._state = self._fresh_state()
        self._resume: dict[str, Any] | None = None
        self._read = 0

    def set_epoch(self, epoch: int) -> None:
        """Use a different random order for epoch ``epoch`` (and tell the source, if it cares)."""
        self.epoch = non_negative_int("epoch", epoch)
        self._state = self._fresh_state()
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)  # a rank's copy takes it from the source at __iter__

    @staticmethod
    def _fresh_state() -> dict[str, Any]:
        """Where a pass starts: buffer 0, nothing carried, the source from its beginning."""
        return {"buffer": 0, "done": 0, "carry": [], "source": None, "read": 0}

    # ------------------------------------------------------------------ iteration
    def _examples(self, records: Iterator[Example], start: int) -> Iterator[Example]:
        """This rank's and worker's share of ``records``, whose first is at ``start``; counts
        in ``_read`` the records taken from the source up to the last one yielded."""
        if getattr(self.source, "shards_itself", False) or is_hf_iterable(self.source):
            yield from records  # split already (a datasets.IterableDataset: between workers)
            return
        for position, example in shard_records(records, self.num_replicas, self.rank, start):
            self._read = position + 1
            yield example

    def _source_state(self) -> Any:
        source = self._read_from
        return source.state_dict() if hasattr(source, "state_dict") else None

    def __iter__(self) -> Iterator[list[Example]]:
        worker, _ = dataloader_worker()
        start, self._resume = self._resume or self._fresh_state(), None
        buffer_index, skip = start["buffer"], start["done"]
        buffer: list[Example] = list(start["carry"])
        self._read = start["read"]  # records taken from the source so far (all ranks')
        if self._read_from is not self.source:  # the epoch the user set on the source itself
            self._read_from.set_epoch(self.source.epoch)
        examples = self._examples(iter(self._read_from), self._read)  # the source starts now
        exhausted = False
        while not exhausted:
            self._state = {
                "buffer": buffer_index,
                "done": 0,
                "carry": list(buffer),
                "source": self._source_state(),
                "read": self._read,
            }
            while len(buffer) < self.buffer_size:
                example = next(examples, _END)
                if example is _END:
                    exhausted = True
                    break
                buffer.append(example)
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, buffer_index])
            batches, buffer = self._bucket(buffer, rng, final=exhausted)
            for k, batch in enumerate(batches):
                if k >= skip:
                    self._state["done"] = k + 1
                    yield batch
            skip = 0
            buffer_index += 1

    def _bucket(
        self, buffer: list[Example], rng: np.random.Generator, final: bool
    ) -> tuple[list[list[Example]], list[Example]]:
        """Cut a buffer into batches (random order) and the examples carried to the next one."""
        if not buffer:
            return [], []
        lengths = np.fromiter(map(example_length, buffer), dtype=np.int64, count=len(buffer))
        if self.max_tokens is not None:
            cost = batch_cost(lengths, self.pad_to_multiple_of, self.quadratic_length)
            if cost.max() > self.max_tokens:
                index = int(np.argmax(cost))
                raise TextBatchError(
                    f"a streamed example has {lengths[index]} tokens, more than max_tokens="
                    f"{self.max_tokens} allows on its own; raise max_tokens or truncate with "
                    "max_length."
                )
        reach = self.mix * self._reach if self.mix > 0 else None
        codes = length_codes(lengths)
        if self.max_tokens is None:
            order = length_order(codes, rng, reach)
            bounds = [*range(0, len(order), self.batch_size), len(order)]
        else:  # as BucketBatchSampler cuts a token budget: short moves, least padding
            order = length_order(codes, rng, reach, still_runs=TOKEN_STILL_RUNS)
            bounds = least_padding_bounds(
                lengths[order],
                self.max_tokens,
                self.batch_size,
                self.pad_to_multiple_of,
                self.quadratic_length,
                rng=rng,
            ).tolist()
        batches = [order[a:b] for a, b in itertools.pairwise(bounds)]
        short = [self._incomplete(batch, lengths) for batch in batches]
        complete = [batch for batch, part in zip(batches, short, strict=True) if not part]
        carry: list[Example] = []
        if not final and complete:  # part-filled batches wait, as long as a complete one goes
            carry = [buffer[i] for b, part in zip(batches, short, strict=True) if part for i in b]
            batches = complete
        elif final and self.drop_last:
            batches = complete
        return [[buffer[i] for i in batches[j]] for j in rng.permutation(len(batches))], carry

    def _incomplete(self, batch: np.ndarray, lengths: np.ndarray) -> bool:
        """Fewer than ``batch_size`` examples and, with a token budget, padded to under half of
        it. A batch of ``batch_size`` examples is complete, however few tokens it holds."""
        if self.batch_size is not None and len(batch) >= self.batch_size:
            return False
        if self.max_tokens is None:
            return True
        width = batch_cost(lengths[batch].max(), self.pad_to_multiple_of, self.quadratic_length)
        return len(batch) * width < self.max_tokens / 2

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands: the source's state when the current buffer began, the
        examples carried into it, how many source records were read before it, and how many of
        its batches were yielded."""
        carry = [
            {k: v.tolist() if hasattr(v, "tolist") else v for k, v in example.items()}
            for example in self._state["carry"]
        ]
        return {"epoch": self.epoch, **self._state, "carry": carry}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the last batch yielded before ``state`` was taken. Past an epoch's
        start, the source must be resumable (have ``state_dict``/``load_state_dict``), e.g. a
        ``StreamingTextDataset``."""
        expected = {"epoch", "buffer", "done", "carry", "source", "read"}
        if not isinstance(state, dict) or set(state) != expected:
            raise TextBatchError(f"not a BucketedStream state; expected keys {sorted(expected)}.")
        for key in ("epoch", "buffer", "done", "read"):
            non_negative_int(key, state[key])
        started = state["buffer"] > 0 or state["done"] > 0
        if started and (state["source"] is None or not hasattr(self._read_from, "load_state_dict")):
            raise TextBatchError(
                f"the source {type(self.source).__name__} cannot resume (it has no "
                "state_dict/load_state_dict); use a resumable source such as "
                "StreamingTextDataset, or start the epoch again."
            )
        if state["source"] is not None:
            self._read_from.load_state_dict(state["source"])
        self.epoch = int(state["epoch"])
        self._resume = {k: state[k] for k in ("buffer", "done", "carry", "read")}
        self._state = {**self._resume, "source": state["source"]}
