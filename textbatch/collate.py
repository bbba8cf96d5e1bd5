"""Collators: lists of unpadded features in, a dict of padded (or packed) tensors out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import torch

from textbatch.errors import TextBatchError

Features = Sequence[Mapping[str, Any]]

LABEL_KEYS = ("labels", "label", "label_ids")
# textbatch's streaming dataset adds "length" for the sampler; a model must not see it.
DROPPED_KEYS = ("length",)


def check_pad_to_multiple_of(value: int | None) -> int | None:
    """Validate ``pad_to_multiple_of``: None or a positive number of tokens."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise TextBatchError(
            f"pad_to_multiple_of={value!r} must be a positive number of tokens (e.g. 8), "
            "or None for no rounding."
        )
    return int(value)


def tokenizer_pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad token id, or an error that says how to set one."""
    pad_token_id = getattr(tokenizer, "pad_token_id", None)
    if pad_token_id is None:
        raise TextBatchError(
            f"tokenizer {type(tokenizer).__name__} has no pad token, so batches cannot be padded. "
            "Set one first, e.g. tokenizer.pad_token = tokenizer.eos_token, or "
            "tokenizer.add_special_tokens({'pad_token': '[PAD]'}) (then resize the model's "
            "embeddings)."
        )
    return int(pad_token_id)


def round_up(length: int, multiple: int | None) -> int:
    """``length`` rounded up to a multiple of ``multiple`` (unchanged when None)."""
    if not multiple:
        return length
    return -(-length // multiple) * multiple


def sequence_lengths(sequences: Sequence[Any]) -> np.ndarray:
    """Tokens per sequence as int64."""
    return np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))


def concatenate(sequences: Sequence[Any], total: int) -> np.ndarray:
    """All sequences (lists, numpy arrays or tensors) end to end as one int64 array."""
    first = sequences[0]
    try:
        if isinstance(first, np.ndarray):
            flat = np.concatenate(sequences)
        elif isinstance(first, torch.Tensor):
            flat = torch.cat([s.reshape(-1) for s in sequences]).numpy()
        else:
            flat = np.fromiter(chain.from_iterable(sequences), dtype=np.int64, count=total)
    except (TypeError, ValueError, RuntimeError):  # mixed kinds of sequence
        flat = np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences])
    return flat.astype(np.int64, copy=False)


def check_features(features: Features) -> Mapping[str, Any]:
    """The first feature of a non-empty batch of dicts with ``input_ids``, or a clear error."""
    if not features:
        raise TextBatchError("cannot collate an empty batch; give at least one example.")
    first = features[0]
    if not isinstance(first, Mapping) or "input_ids" not in first:
        raise TextBatchError(f"features must be dicts with an 'input_ids' key, got {first!r:.200}.")
    given = [k for k in LABEL_KEYS if k in first]
    if len(given) > 1:
        raise TextBatchError(f"features carry both {given}; keep one label key.")
    return first


def column(features: Features, key: str) -> list[Any]:
    """``key`` of every feature, or an error naming the first feature without it."""
    try:
        return [f[key] for f in features]
    except KeyError:
        row = next(i for i, f in enumerate(features) if key not in f)
        raise TextBatchError(
            f"example {row} has no {key!r}, which example 0 has; give every example the same keys."
        ) from None


def check_aligned(key: str, values: list[Any], lengths: np.ndarray) -> None:
    """Every example's ``key`` must have one value per token of its ``input_ids``."""
    own = sequence_lengths(values)
    if not np.array_equal(own, lengths):
        row = int(np.flatnonzero(own != lengths)[0])
        raise TextBatchError(
            f"example {row} has {own[row]} {key} but {lengths[row]} input_ids; every "
            "sequence key of an example must have one value per token."
        )


def stack_labels(values: list[Any], key: str) -> torch.Tensor:
    """One label per example as a tensor: int64 for classes, float32 for regression targets."""
    if isinstance(values[0], torch.Tensor):
        labels = torch.stack([torch.as_tensor(v) for v in values])
    else:
        array = np.asarray(values)
        if array.dtype.kind not in "biuf" or array.ndim != 1:
            raise TextBatchError(
                f"{key!r} must hold one number per example (class ids), got {values[0]!r}; map "
                "label names to ids first (TextDataset does)."
            )
        labels = torch.from_numpy(array)
    if labels.dtype.is_floating_point:
        return labels.to(torch.float32)
    return labels.to(torch.int64)


class PaddingCollator:
    """Pad a list of tokenised examples into a dict of tensors, as ``DataCollatorWithPadding`` does.

    Returns ``input_ids`` and ``attention_mask`` (int64 ``[B, T]``, 1 marks a real token),
    ``token_type_ids`` and ``special_tokens_mask`` when the features carry them, and ``labels``
    (int64 ``[B]``) from a ``labels``/``label``/``label_ids`` key. ``T`` is the longest example
    (after truncation to ``max_length`` tokens), rounded up to ``pad_to_multiple_of``.
    Other numeric scalar keys become tensors too; the ``length`` key is dropped.

    Example:
        >>> collate = PaddingCollator(pad_token_id=0)
        >>> features = [{"input_ids": [2, 7, 3], "labels": 1}, {"input_ids": [2, 3], "labels": 0}]
        >>> batch = collate(features)
        >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
        ([[2, 7, 3], [2, 3, 0]], [[1, 1, 1], [1, 1, 0]])
    """

    def __init__(
        self,
        pad_token_id: int,
        *,
        padding_side: str = "right",
        pad_to_multiple_of: int | None = None,
        max_length: int | None = None,
        pad_token_type_id: int = 0,
    ) -> None:
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int | np.integer):
            raise TextBatchError(
                f"pad_token_id={pad_token_id!r} must be an int; use "
                "PaddingCollator.from_tokenizer(tokenizer) to take it from a tokenizer."
            )
        if padding_side not in ("right", "left"):
            raise TextBatchError(f"padding_side={padding_side!r} must be 'right' or 'left'.")
        if max_length is not None and (
            isinstance(max_length, bool)
            or not isinstance(max_length, int | np.integer)
            or max_length < 1
        ):
            raise TextBatchError(f"max_length={max_length!r} must be a positive number of tokens.")
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side
        self.pad_to_multiple_of = check_pad_to_multiple_of(pad_to_multiple_of)
        self.max_length = None if max_length is None else int(max_length)
        self.pad_values = {
            "input_ids": self.pad_token_id,
            "token_type_ids": int(pad_token_type_id),
            "attention_mask": 0,
            "special_tokens_mask": 1,
        }

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **options: Any) -> PaddingCollator:
        """A collator with the tokenizer's pad token, pad token type and padding side.

        Only these numbers are kept, not the tokenizer, so the collator is small to pickle into
        ``DataLoader`` worker processes. ``options`` override them and set the rest.
        """
        options.setdefault("padding_side", getattr(tokenizer, "padding_side", "right"))
        options.setdefault("pad_token_type_id", getattr(tokenizer, "pad_token_type_id", 0))
        return cls(tokenizer_pad_token_id(tokenizer), **options)

    def __call__(self, features: Features) -> dict[str, torch.Tensor]:
        first = check_features(features)
        keys = [k for k in first if k not in DROPPED_KEYS]
        lengths = sequence_lengths([f["input_ids"] for f in features])
        kept = lengths if self.max_length is None else np.minimum(lengths, self.max_length)
        width = round_up(int(kept.max()), self.pad_to_multiple_of)
        columns = np.arange(width)
        if self.padding_side == "right":
            real = columns < kept[:, None]  # (B, T)
        else:
            real = columns >= (width - kept)[:, None]
        keep = None if self.max_length is None else self._truncation_mask(lengths)

        batch: dict[str, torch.Tensor] = {}
        for key in keys:
            values = column(features, key)
            if key in self.pad_values:
                batch[key] = self._pad(key, values, lengths, real, keep)
            elif key in LABEL_KEYS:
                batch["labels"] = stack_labels(values, key)
            else:
                batch[key] = self._passthrough(key, values)
        if "attention_mask" not in batch:
            batch["attention_mask"] = torch.from_numpy(real.astype(np.int64))
        return batch

    def _truncation_mask(self, lengths: np.ndarray) -> np.ndarray:
        """Which of the concatenated tokens survive truncation to ``max_length``."""
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        return (np.arange(int(lengths.sum())) - starts) < self.max_length

    def _pad(
        self,
        key: str,
        values: list[Any],
        lengths: np.ndarray,
        real: np.ndarray,
        keep: np.ndarray | None,
    ) -> torch.Tensor:
        if key != "input_ids":
            check_aligned(key, values, lengths)
        flat = concatenate(values, int(lengths.sum()))
        if keep is not None:
            flat = flat[keep]
        out = np.full(real.shape, self.pad_values[key], dtype=np.int64)
        out[real] = flat  # row-major order matches the concatenation, left or right padded
        return torch.from_numpy(out)

    @staticmethod
    def _passthrough(key: str, values: list[Any]) -> torch.Tensor:
        if isinstance(values[0], torch.Tensor):
            return torch.stack(values)
        try:
            array = np.asarray(values)
        except ValueError:  # ragged sequences
            array = np.asarray(values, dtype=object)
        if array.dtype.kind not in "biuf":
            raise TextBatchError(
                f"feature {key!r} holds {values[0]!r:.80}, which PaddingCollator cannot turn "
                "into a tensor; remove that key (e.g. dataset.remove_columns) before collating."
            )
        return torch.from_numpy(array)

    def __repr__(self) -> str:
        return (
            f"PaddingCollator(pad_token_id={self.pad_token_id}, padding_side="
            f"{self.padding_side!r}, pad_to_multiple_of={self.pad_to_multiple_of}, "
            f"max_length={self.max_length})"
        )


OVERLONG = ("error", "truncate", "split")


class PackingCollator:
    """Pack tokenised examples end to end into rows of ``capacity`` tokens: no padding but the
    tail of the last rows. ``capacity=None`` packs everything into one flat row.

    Rows are filled by best-fit decreasing (``textbatch.packing.pack_rows``), the same rule
    ``BucketBatchSampler(..., packing_capacity=capacity)`` plans with. Returns, for R rows of
    width W and N sequences (in the order of the features):

    - ``input_ids``, ``token_type_ids`` (when given, restarting per sequence): int64 (R, W)
    - ``position_ids``: int64 (R, W), restarting at ``position_offset`` for each sequence
    - ``sequence_ids``: int64 (R, W), which sequence each token belongs to (-1: row padding)
    - ``attention_mask``: bool (R, 1, W, W), block-diagonal: True where a token may attend
      (a Hugging Face encoder takes it as is); left out with ``mask=False``
    - ``cu_seqlens``: int32 (N + 1), ``max_seqlen``: the sequences' boundaries in packed order
      over the real tokens (``input_ids[sequence_ids >= 0]``), as variable-length attention
      kernels take them; ``packed_order``: int64 (N), which sequence comes at each place
    - ``labels``: int64 (N), one per sequence; ``example_ids``: int64 (N), the feature each
      sequence came from (they differ only with ``overlong="split"``)

    ``overlong`` decides what happens to an example longer than ``capacity``: ``"error"``
    (default), ``"truncate"`` (keep the first ``capacity`` tokens), or ``"split"`` (cut it into
    sequences of at most ``capacity`` tokens, each with the example's label).
    """

    def __init__(
        self,
        pad_token_id: int = 0,
        *,
        capacity: int | None = None,
        position_offset: int = 0,
        overlong: str = "error",
        pad_token_type_id: int = 0,
        mask: bool = True,
    ) -> None:
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int | np.integer):
            raise TextBatchError(f"pad_token_id={pad_token_id!r} must be an int.")
        if capacity is not None and (
            isinstance(capacity, bool) or not isinstance(capacity, int | np.integer) or capacity < 1
        ):
            raise TextBatchError(
                f"capacity={capacity!r} must be a positive number of tokens per row, or None "
                "for one flat row."
            )
        if overlong not in OVERLONG:
            raise TextBatchError(f"overlong={overlong!r} must be one of {', '.join(OVERLONG)}.")
        self.pad_token_id = int(pad_token_id)
        self.capacity = None if capacity is None else int(capacity)
        self.position_offset = int(position_offset)
        self.overlong = overlong
        self.pad_token_type_id = int(pad_token_type_id)
        self.mask = mask
        self.pad_to_multiple_of = None  # for make_loader: rows are already a fixed width

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **options: Any) -> PackingCollator:
        """A packing collator with the tokenizer's pad token (and pad token type)."""
        options.setdefault("pad_token_type_id", getattr(tokenizer, "pad_token_type_id", 0))
        return cls(tokenizer_pad_token_id(tokenizer), **options)

    def _sequences(
        self, features: Features
    ) -> tuple[list[tuple[int, int, int | None]], np.ndarray, np.ndarray]:
        """The sequences to pack as (example, start, stop) token slices (split or truncated as
        asked; stop None: the whole example), their lengths, and the example of each."""
        lengths = sequence_lengths([f["input_ids"] for f in features])
        if self.capacity is None or lengths.max() <= self.capacity:
            pieces = [(i, 0, None) for i in range(len(features))]
            return pieces, lengths, np.arange(len(features))
        if self.overlong == "error":
            row = int(np.argmax(lengths))
            raise TextBatchError(
                f"example {row} has {lengths[row]} tokens, more than the row capacity "
                f"{self.capacity}; raise capacity, truncate the data (max_length), or pass "
                "overlong='truncate' or overlong='split'."
            )
        pieces: list[tuple[int, int, int | None]] = []
        for i, n in enumerate(lengths.tolist()):
            starts = range(0, n, self.capacity) if self.overlong == "split" else [0]
            pieces.extend((i, start, min(start + self.capacity, n)) for start in starts)
        piece_lengths = np.asarray([stop - start for _, start, stop in pieces], dtype=np.int64)
        return pieces, piece_lengths, np.asarray([i for i, _, _ in pieces], dtype=np.int64)

    def __call__(self, features: Features) -> dict[str, torch.Tensor]:
        from textbatch.packing import pack_rows

        first = check_features(features)
        pieces, lengths, examples = self._sequences(features)
        if self.capacity is None:
            rows = [list(range(len(lengths)))]
            width = int(lengths.sum())
        else:
            rows = pack_rows(lengths, self.capacity)
            width = self.capacity
        order = np.fromiter((s for row in rows for s in row), dtype=np.int64, count=len(lengths))
        row_of = np.repeat(
            np.arange(len(rows)), np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        )
        packed_lengths = lengths[order]
        # Where each sequence starts in its row: a running sum that restarts with every row.
        ends = np.cumsum(packed_lengths)
        row_starts = np.concatenate([[0], ends[:-1]])
        first_in_row = np.flatnonzero(np.concatenate([[True], row_of[1:] != row_of[:-1]]))
        start_column = row_starts - row_starts[first_in_row[row_of]]  # (N,) within its row
        token_row = np.repeat(row_of, packed_lengths)  # (total,)
        within = np.arange(int(ends[-1])) - np.repeat(row_starts, packed_lengths)
        token_column = np.repeat(start_column, packed_lengths) + within

        def layout(key: str, fill: int) -> torch.Tensor:
            values = []
            for example, start, stop in (pieces[s] for s in order.tolist()):
                value = features[example][key]
                values.append(value if stop is None else value[start:stop])
            out = np.full((len(rows), width), fill, dtype=np.int64)
            out[token_row, token_column] = concatenate(values, int(ends[-1]))
            return torch.from_numpy(out)

        sequence_ids = np.full((len(rows), width), -1, dtype=np.int64)
        sequence_ids[token_row, token_column] = np.repeat(order, packed_lengths)
        positions = np.zeros((len(rows), width), dtype=np.int64)
        positions[token_row, token_column] = within + self.position_offset
        batch = {
            "input_ids": layout("input_ids", self.pad_token_id),
            "position_ids": torch.from_numpy(positions),
            "sequence_ids": torch.from_numpy(sequence_ids),
        }
        if "token_type_ids" in first:
            check_aligned(
                "token_type_ids",
                column(features, "token_type_ids"),
                sequence_lengths([f["input_ids"] for f in features]),
            )
            batch["token_type_ids"] = layout("token_type_ids", self.pad_token_type_id)
        if self.mask:
            batch["attention_mask"] = block_diagonal_mask(batch["sequence_ids"])
        batch["cu_seqlens"] = torch.from_numpy(np.concatenate([[0], ends]).astype(np.int32))
        batch["max_seqlen"] = torch.tensor(int(lengths.max()))
        batch["packed_order"] = torch.from_numpy(order)
        batch["example_ids"] = torch.from_numpy(examples.astype(np.int64))
        label_key = next((k for k in LABEL_KEYS if k in first), None)
        if label_key is not None:
            labels = stack_labels(column(features, label_key), label_key)
            batch["labels"] = labels[torch.from_numpy(examples.astype(np.int64))]
        return batch

    def __repr__(self) -> str:
        return (
            f"PackingCollator(pad_token_id={self.pad_token_id}, capacity={self.capacity}, "
            f"position_offset={self.position_offset}, overlong={self.overlong!r})"
        )


def block_diagonal_mask(sequence_ids: torch.Tensor) -> torch.Tensor:
    """(R, 1, W, W) bool: a token may attend to the tokens of its own sequence; row padding
    (sequence id -1) attends only to itself, so that no softmax row is empty."""
    same = sequence_ids[:, :, None] == sequence_ids[:, None, :]  # (R, W, W)
    real = (sequence_ids >= 0)[:, :, None]
    own = torch.eye(sequence_ids.shape[1], dtype=torch.bool, device=sequence_ids.device)
    return ((same & real) | own).unsqueeze(1)
