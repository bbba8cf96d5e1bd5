"""Streaming text: tokenise records on the fly, for data too large (or too live) to store first."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from textbatch.checks import non_negative_int, positive_int
from textbatch.data.columns import check_label_names, is_blank, label_text
from textbatch.data.dataset import Example, Transform, file_format, load_file, resolve_max_length
from textbatch.data.tokenizers import makes_token_types
from textbatch.data.truncation import encode_truncated
from textbatch.distributed import (
    dataloader_worker,
    hf_rank_share,
    is_hf_iterable,
    resolve_rank,
    shard_records,
)
from textbatch.errors import TextBatchError, TextBatchWarning


class StreamingTextDataset(torch.utils.data.IterableDataset):
    """Tokenise records as they stream in; yield ``TextDataset``'s features plus ``length``.

    ``source`` is a ``datasets.IterableDataset`` or any re-iterable collection of dicts. Examples
    are split between ``torch.distributed`` ranks (``num_replicas``/``rank``, taken from the
    process group when it is initialised) and between ``DataLoader`` workers, without overlap:
    a plain iterable is split round-robin by position; a ``datasets.IterableDataset`` is split by
    ``datasets.distributed.split_dataset_by_node`` across ranks and by its own shards across
    workers (give it at least as many shards as workers to keep every worker busy).
    Labelled streams need ``label_names`` (a ``ClassLabel`` feature provides them).
    """

    def __init__(
        self,
        source: Iterable[Mapping[str, Any]],
        tokenizer: Any,
        text: str = "text",
        text_pair: str | None = None,
        label: str | None = "label",
        max_length: int | None = None,
        label_names: Sequence[Any] | None = None,
        *,
        drop_invalid: bool = False,
        transform: Transform | None = None,
        tokenize_batch_size: int = 256,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        from textbatch.data.tokenizers import load_tokenizer

        if isinstance(source, str | bytes | Mapping) or not isinstance(source, Iterable):
            raise TextBatchError(
                f"source must be an iterable of dicts or a datasets.IterableDataset, got "
                f"{type(source).__name__}; for a file use StreamingTextDataset.from_file(path)."
            )
        tokenize_batch_size = positive_int(
            "tokenize_batch_size", tokenize_batch_size, allow_none=False
        )
        self.tokenizer = load_tokenizer(tokenizer)
        self.text = text
        self.text_pair = text_pair
        self.label = label
        self.max_length = resolve_max_length(self.tokenizer, max_length, text_pair is not None)
        self.drop_invalid = drop_invalid
        self.transform = transform
        self.tokenize_batch_size = tokenize_batch_size
        self.keep_types = makes_token_types(self.tokenizer)
        self.rank, self.num_replicas = resolve_rank(num_replicas, rank)
        # A ClassLabel feature streams label ids: these are its names, in id order.
        self._streamed_names = self._class_label_names(source, label)
        self.label_names = self._label_names(label, label_names, self._streamed_names)
        self._label_ids = (
            None if self.label_names is None else {n: i for i, n in enumerate(self.label_names)}
        )
        self.source = source
        self.num_dropped = 0
        self._next_position = 0  # source position after the last example yielded
        self._resume_from = 0  # skip source records before this position (load_state_dict)

    @classmethod
    def from_hf(cls, iterable_dataset: Any, tokenizer: Any, **options: Any) -> StreamingTextDataset:
        """Stream a ``datasets.IterableDataset`` (or ``Dataset``, made iterable)."""
        import datasets

        if isinstance(iterable_dataset, datasets.Dataset):
            iterable_dataset = iterable_dataset.to_iterable_dataset()
        if not isinstance(iterable_dataset, datasets.IterableDataset):
            raise TextBatchError(
                f"from_hf needs a datasets.IterableDataset, got {type(iterable_dataset).__name__}."
            )
        return cls(iterable_dataset, tokenizer, **options)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, tokenizer: Any, **options: Any
    ) -> StreamingTextDataset:
        """Stream a csv, tsv, json, jsonl, parquet or txt file without loading it whole."""
        from pathlib import Path

        file_format(Path(path))  # rejects unsupported types before anything is read
        return cls(load_file(path, streaming=True), tokenizer, **options)

    @staticmethod
    def _class_label_names(source: Any, label: str | None) -> list[str] | None:
        features = getattr(source, "features", None) if is_hf_iterable(source) else None
        feature = features.get(label) if features and label else None
        names = getattr(feature, "names", None)
        return list(names) if names else None

    @staticmethod
    def _label_names(
        label: str | None, label_names: Sequence[Any] | None, streamed: list[str] | None
    ) -> list[str] | None:
        if label is None:
            return None
        if label_names is not None:
            return check_label_names(label_names)
        return streamed  # else decided on the first record: unlabelled if it has no label

    # This dataset splits itself between ranks and workers (see BucketedStream).
    shards_itself = True

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, int]:
        """Where the stream stands: the source position after the last example yielded."""
        return {"position": self._next_position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after the last example yielded before ``state`` was taken. Earlier records
        are read again but not tokenised. Works per process: with ``DataLoader`` workers, use a
        loader that saves each worker's state (e.g. torchdata's ``StatefulDataLoader``)."""
        if not isinstance(state, dict) or set(state) != {"position"}:
            raise TextBatchError(
                f"not a StreamingTextDataset state: {state!r:.100}; expected {{'position': int}}."
            )
        self._resume_from = non_negative_int("position", state["position"])
        self._next_position = self._resume_from

    # ------------------------------------------------------------------ iteration
    def _records(self, skip: int) -> Iterator[tuple[int, Mapping[str, Any]]]:
        """This worker's share of ``(position, record)`` pairs, from position ``skip`` on."""
        for position, record in self._all_records():
            if position >= skip:
                yield position, record

    def _all_records(self) -> Iterator[tuple[int, Mapping[str, Any]]]:
        """This rank's and worker's ``(position, record)`` pairs. A plain iterable is split
        round-robin and positions count the whole stream; a ``datasets.IterableDataset`` is
        split by ``datasets`` and positions count what this process reads."""
        if not is_hf_iterable(self.source):
            yield from shard_records(self.source, self.num_replicas, self.rank)
            return
        dataloader_worker()  # in a worker: the tokenizer runs serially
        source = hf_rank_share(self.source, self.num_replicas, self.rank)
        yield from enumerate(source)  # datasets splits its shards between workers itself

    def __iter__(self) -> Iterator[Example]:
        # Set up eagerly, so that state_dict() describes this pass as soon as it is asked for.
        skip, self._resume_from = self._resume_from, 0
        self._next_position = skip
        self.num_dropped = 0  # per pass (and per worker process)
        return self._examples(skip)

    def _examples(self, skip: int) -> Iterator[Example]:
        chunk: list[tuple[int, Mapping[str, Any]]] = []
        for position, record in self._records(skip):
            chunk.append((position, record))
            if len(chunk) == self.tokenize_batch_size:
                yield from self._encode(chunk)
                chunk = []
        if chunk:
            yield from self._encode(chunk)
        self._next_position = 0  # a finished pass: the next one starts from the beginning
        if self.num_dropped:
            warnings.warn(
                f"textbatch dropped {self.num_dropped} streamed records with missing, non-string "
                "or empty text or label (drop_invalid=True).",
                TextBatchWarning,
                stacklevel=2,
            )

    def _encode(self, chunk: list[tuple[int, Mapping[str, Any]]]) -> Iterator[Example]:
        records = [
            (position, record) for position, record in chunk if self._valid(position, record)
        ]
        if not records:
            return
        texts = [record[self.text] for _, record in records]
        pairs = None if self.text_pair is None else [r[self.text_pair] for _, r in records]
        encoded = encode_truncated(  # reads only as much of a long text as truncation keeps
            self.tokenizer,
            texts,
            pairs,
            max_length=self.max_length,
            return_token_type_ids=self.keep_types,
        )
        for j, (position, record) in enumerate(records):
            example: Example = {"input_ids": encoded["input_ids"][j]}
            if self.keep_types:
                example["token_type_ids"] = encoded["token_type_ids"][j]
            if self._label_ids is not None:
                example["labels"] = self._label_id(position, record[self.label])
            if self.transform is not None:
                example = self.transform(example)
            example["length"] = len(example["input_ids"])  # after the transform: what is left
            self._next_position = position + 1
            yield example

    def _valid(self, position: int, record: Mapping[str, Any]) -> bool:
        if not isinstance(record, Mapping):
            raise TextBatchError(f"record {position} is {type(record).__name__}, not a dict.")
        if self.label is not None and self._label_ids is None:
            self._decide_labels(record)
        columns = [self.text] + ([self.text_pair] if self.text_pair else [])
        for column in columns:
            if column not in record:
                raise TextBatchError(
                    f"record {position} has no column {column!r}; its columns are "
                    f"{list(record)}. Pass text=... (and text_pair=...)."
                )
            value = record[column]
            if not isinstance(value, str) or is_blank(value):
                return self._reject(position, column, value)
        if self._label_ids is not None:
            value = record.get(self.label)
            if self._label_name(value) is None:
                return self._reject(position, self.label, value)
        return True

    def _label_name(self, value: Any) -> str | None:
        """The name of a streamed label value (None: missing)."""
        names = self._streamed_names
        if names is not None and isinstance(value, int | np.integer) and value < len(names):
            return names[value] if value >= 0 else None  # ClassLabel: -1 means no label
        text = label_text(value)
        return None if text is None or is_blank(text) else text

    def _decide_labels(self, record: Mapping[str, Any]) -> None:
        if self.label not in record:
            if self.label == "label":
                self.label = None  # the default label column is optional
                return
            raise TextBatchError(
                f"label column {self.label!r} is not in the records; their columns are "
                f"{list(record)}. Pass label=<name>, or label=None for unlabelled data."
            )
        raise TextBatchError(
            f"streamed records carry labels ({self.label!r}) but no label_names were given; "
            "a stream cannot be scanned for its labels first, so pass label_names=[...] "
            "(e.g. train_dataset.label_names)."
        )

    def _reject(self, position: int, column: str, value: Any) -> bool:
        if not self.drop_invalid:
            what = "missing" if value is None else f"{type(value).__name__} {value!r:.60}"
            raise TextBatchError(
                f"record {position}, column {column!r} is {what}: text must be a non-empty "
                "string and the label present. Fix the data, or pass drop_invalid=True to drop "
                "such records (num_dropped reports how many)."
            )
        self.num_dropped += 1
        return False

    def _label_id(self, position: int, value: Any) -> int:
        assert self._label_ids is not None
        label_id = self._label_ids.get(self._label_name(value))
        if label_id is None:
            raise TextBatchError(
                f"label {value!r} (record {position}, column {self.label!r}) is not in "
                f"label_names {self.label_names}; add it to label_names, or remove those records."
            )
        return label_id
