"""Length bucketing for streams: a shuffle buffer, sorted and cut into batches of similar length.

``BucketedStream`` reads ``buffer_size`` examples, orders them by length (random ties, jittered as
in ``BucketBatchSampler``), cuts them into batches by batch size or token budget, and yields those
batches in random order. The last, incomplete batch of a buffer is carried into the next one, so
only the very end of the stream yields an incomplete batch.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from textbatch.batching import (
    NUM_CODES,
    batch_cost,
    code_lower_bounds,
    length_codes,
    length_order,
    token_budget_bounds,
)
from textbatch.collate import check_pad_to_multiple_of
from textbatch.distributed import resolve_rank
from textbatch.errors import TextBatchError

Example = Mapping[str, Any]


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


class BucketedStream(torch.utils.data.IterableDataset):
    """Batches of similar length from a stream of tokenised examples.

    Use it as ``DataLoader(BucketedStream(stream, batch_size=32), batch_size=None,
    collate_fn=collator)``: each item is a whole batch (a list of examples).

    Args:
        source: an iterable of examples with ``input_ids`` (and optionally ``length``), e.g. a
            ``StreamingTextDataset``, which splits itself between ranks and workers; any other
            iterable is split here, round-robin by position, so that no example is seen twice.
        batch_size, max_tokens: as in ``BucketBatchSampler`` (either or both).
        buffer_size: examples held and sorted at a time (more: less padding, more memory).
        seed, mix, pad_to_multiple_of, quadratic_length: as in ``BucketBatchSampler``.
        drop_last: drop the stream's final batch if it is incomplete (fewer than
            ``batch_size`` examples; with a token budget the final batch always counts as
            incomplete, since it gathers the leftovers).
        num_replicas, rank: ranks to split a plain iterable between (default: from
            ``torch.distributed``). Ranks may yield different numbers of batches from a stream.
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
        for name, value in (
            ("batch_size", batch_size),
            ("max_tokens", max_tokens),
            ("buffer_size", buffer_size),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise TextBatchError(f"{name}={value!r} must be a positive int.")
        if batch_size is not None and buffer_size < batch_size:
            raise TextBatchError(
                f"buffer_size={buffer_size} must hold at least one batch (batch_size="
                f"{batch_size}); a few hundred batches' worth pads least."
            )
        if mix < 0:
            raise TextBatchError(f"mix={mix!r} must be >= 0.")
        self.source = source
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.buffer_size = buffer_size
        self.seed = seed
        self.mix = mix
        self.drop_last = drop_last
        self.pad_to_multiple_of = check_pad_to_multiple_of(pad_to_multiple_of)
        self.quadratic_length = quadratic_length
        self.rank, self.num_replicas = resolve_rank(num_replicas, rank)
        # Examples per batch by sort code, how far `mix` lets an example move.
        if max_tokens is None:
            self._per_batch = np.full(NUM_CODES, float(batch_size))
        else:
            cost = batch_cost(code_lower_bounds(), self.pad_to_multiple_of, quadratic_length)
            self._per_batch = np.maximum(np.floor(max_tokens / cost), 1)
            if batch_size is not None:
                self._per_batch = np.minimum(self._per_batch, batch_size)
        self.epoch = 0
        self._state = {"buffer": 0, "done": 0, "carry": [], "source": None}
        self._resume: dict[str, Any] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use a different random order for epoch ``epoch`` (and tell the source, if it cares)."""
        self.epoch = int(epoch)
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    # ------------------------------------------------------------------ iteration
    def _examples(self) -> Iterator[Example]:
        if getattr(self.source, "shards_itself", False):
            yield from self.source
            return
        info = torch.utils.data.get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        if info is not None:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        stride, offset = self.num_replicas * workers, self.rank * workers + worker
        for position, example in enumerate(self.source):
            if position % stride == offset:
                yield example

    def _source_state(self) -> Any:
        return self.source.state_dict() if hasattr(self.source, "state_dict") else None

    def __iter__(self) -> Iterator[list[Example]]:
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        resume, self._resume = self._resume, None
        buffer_index, skip = (0, 0) if resume is None else (resume["buffer"], resume["done"])
        buffer: list[Example] = [] if resume is None else list(resume["carry"])
        self._state = {
            "buffer": buffer_index,
            "done": 0,
            "carry": list(buffer),
            "source": self._source_state(),
        }
        examples = self._examples()
        while True:
            for example in examples:
                buffer.append(example)
                if len(buffer) >= self.buffer_size:
                    break
            final = len(buffer) < self.buffer_size  # the source ran dry
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, buffer_index])
            batches, carry = self._bucket(buffer, rng, final)
            source_after = self._source_state()
            for k, batch in enumerate(batches):
                if k < skip:
                    continue
                self._state["done"] = k + 1
                yield batch
            skip = 0
            if final:
                return
            buffer_index += 1
            buffer = carry
            self._state = {
                "buffer": buffer_index,
                "done": 0,
                "carry": list(carry),
                "source": source_after,
            }

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
        reach = self.mix * self._per_batch if self.mix > 0 else None
        order = length_order(length_codes(lengths), rng, reach)
        if self.max_tokens is None:
            bounds = [*range(0, len(order), self.batch_size), len(order)]
        else:
            bounds = token_budget_bounds(
                lengths[order],
                self.max_tokens,
                self.batch_size,
                self.pad_to_multiple_of,
                self.quadratic_length,
            ).tolist()
        batches = [order[a:b] for a, b in itertools.pairwise(bounds)]
        carry: list[Example] = []
        if not final:  # the last (longest, maybe part-filled) batch waits for more examples
            carry = [buffer[i] for i in batches.pop()]
        elif self.drop_last and (
            self.max_tokens is not None or len(batches[-1]) < (self.batch_size or 0)
        ):
            batches.pop()
        return [[buffer[i] for i in batches[j]] for j in rng.permutation(len(batches))], carry

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands: the source's state when the current buffer began, the
        examples carried into it, and how many of its batches were yielded."""
        carry = [
            {k: v.tolist() if hasattr(v, "tolist") else v for k, v in example.items()}
            for example in self._state["carry"]
        ]
        return {"epoch": self.epoch, **self._state, "carry": carry}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the last batch yielded before ``state`` was taken; the source must be
        resumable (have ``load_state_dict``), e.g. a ``StreamingTextDataset``."""
        expected = {"epoch", "buffer", "done", "carry", "source"}
        if not isinstance(state, dict) or set(state) != expected:
            raise TextBatchError(f"not a BucketedStream state; expected keys {sorted(expected)}.")
        if state["source"] is not None:
            if not hasattr(self.source, "load_state_dict"):
                raise TextBatchError(
                    f"the source {type(self.source).__name__} cannot resume (it has no "
                    "load_state_dict); use a resumable source such as StreamingTextDataset."
                )
            self.source.load_state_dict(state["source"])
        self.epoch = int(state["epoch"])
        self._resume = {"buffer": state["buffer"], "done": state["done"], "carry": state["carry"]}
