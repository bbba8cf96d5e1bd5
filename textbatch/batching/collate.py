"""Collators: lists of unpadded features in, a dict of padded (or packed) tensors out."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import torch

from textbatch.batching.masks import additive_mask, block_diagonal_mask
from textbatch.checks import non_negative_int, positive_int
from textbatch.errors import TextBatchError

Features = Sequence[Mapping[str, Any]]

LABEL_KEYS = ("labels", "label", "label_ids")
# textbatch's streaming dataset adds "length" for the sampler; a model must not see it.
DROPPED_KEYS = ("length",)


def positive_tokens(name: str, value: Any, hint: str) -> int | None:
    """``value`` as a positive int (or None) by :func:`~textbatch.checks.positive_int`, whose
    error gets ``hint`` (what the number counts, what None means) added."""
    try:
        return positive_int(name, value)
    except TextBatchError as error:
        raise TextBatchError(f"{error} {hint}") from None


def check_pad_to_multiple_of(value: int | None) -> int | None:
    """Validate ``pad_to_multiple_of``: None or a positive number of tokens."""
    return positive_tokens(
        "pad_to_multiple_of", value, "Give a number of tokens (e.g. 8), or None for no rounding."
    )


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


def sequence_lengths(sequences: Sequence[Any], key: str = "input_ids") -> np.ndarray:
    """Tokens per sequence as int64."""
    try:
        return np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    except TypeError:
        row = next(i for i, s in enumerate(sequences) if not hasattr(s, "__len__"))
        raise TextBatchError(
            f"example {row}'s {key} is {sequences[row]!r:.80}, not a sequence of token ids."
        ) from None


INT64_LIMIT = 2**63  # the first id that int64 cannot hold


def concatenate(sequences: Sequence[Any], total: int, key: str = "input_ids") -> np.ndarray:
    """All sequences (lists, numpy arrays or tensors) end to end as one int64 array.

    Refuses, naming the example, position and value, anything the conversion would change or
    that is no token id: floats, negative numbers, numbers of 2**63 or more. The check is
    vectorised (dtype, min, max); only a batch that fails it is looked at value by value.
    """
    first = sequences[0]
    flat: np.ndarray | None = None
    try:
        if isinstance(first, np.ndarray):
            flat = np.concatenate(sequences)
        elif isinstance(first, torch.Tensor):
            flat = torch.cat([s.reshape(-1) for s in sequences]).numpy()
        else:  # struct refuses floats and ints beyond int64 (np.fromiter would cast them)
            packed = struct.pack(f"{total}q", *chain.from_iterable(sequences))
            flat = np.frombuffer(packed, dtype=np.int64)
    except (TypeError, ValueError, RuntimeError, OverflowError, struct.error):
        flat = None  # mixed kinds of sequence, floats, huge ints: checked one by one
    if flat is None or flat.shape != (total,) or not exact_ids(flat):
        return checked_concatenate(sequences, key)
    return flat.astype(np.int64, copy=False)


def exact_ids(flat: np.ndarray) -> bool:
    """Whether int64 holds every value of ``flat`` exactly and none is negative."""
    kind = flat.dtype.kind
    if kind == "b":
        return True
    if kind not in "iu":
        return False
    if not flat.size:
        return True
    if kind == "i":
        return bool(flat.min() >= 0)
    return flat.dtype.itemsize < 8 or bool(flat.max() < INT64_LIMIT)


def checked_concatenate(sequences: Sequence[Any], key: str) -> np.ndarray:
    """The slow path of :func:`concatenate`: every value checked in Python, so that the error
    names the first bad one (and values that only numpy's type promotion upset get through)."""
    pieces = []
    for row, values in enumerate(sequences):
        items = values.tolist() if isinstance(values, np.ndarray | torch.Tensor) else list(values)
        for position, value in enumerate(items):
            problem = id_problem(value)
            if problem:
                raise TextBatchError(
                    f"example {row}'s {key} holds {value!r:.60} at position {position}, which "
                    f"is {problem}; {key} must hold integers from 0 to 2**63 - 1 (the collator "
                    "does not round or wrap them). Fix or convert the data before collating."
                )
        pieces.append(np.asarray(items, dtype=np.int64).reshape(-1))
    return np.concatenate(pieces)


def id_problem(value: Any) -> str:
    """Why ``value`` is no token id, or "" when it is one."""
    if isinstance(value, bool | np.bool_):
        return ""
    if not isinstance(value, int | np.integer):
        if isinstance(value, float | np.floating):
            return "a float (give token ids as integers)"
        return "not a number"
    if value < 0:
        return "negative"
    if value >= INT64_LIMIT:
        return "2**63 or more, beyond int64"
    return ""


def check_features(features: Features) -> Mapping[str, Any]:
    """The first feature of a non-empty batch of dicts with ``input_ids`` and the same keys in
    every feature, or a clear error."""
    if not features:
        raise TextBatchError("cannot collate an empty batch; give at least one example.")
    first = features[0]
    if not isinstance(first, Mapping) or "input_ids" not in first:
        raise TextBatchError(f"features must be dicts with an 'input_ids' key, got {first!r:.200}.")
    given = [k for k in LABEL_KEYS if k in first]
    if len(given) > 1:
        raise TextBatchError(f"features carry both {given}; keep one label key.")
    try:  # a key that only later features have; one they lack fails in column()
        same = len(set().union(*features)) == len(first)
    except TypeError:
        same = False
    if not same:
        check_same_keys(features)
    return first


def check_same_keys(features: Features) -> None:
    """Refuse a key that some features have and others lack (but ``DROPPED_KEYS``): padding
    would drop it, or fail on it, depending on which example comes first."""
    keys = set(features[0]) - set(DROPPED_KEYS)
    for row, feature in enumerate(features):
        if not isinstance(feature, Mapping):
            raise TextBatchError(f"example {row} is {feature!r:.100}, not a dict of features.")
        own = set(feature) - set(DROPPED_KEYS)
        if own != keys:
            if own - keys:
                what = f"has {sorted(own - keys)[0]!r}, which example 0 lacks"
            else:
                what = f"has no {sorted(keys - own)[0]!r}, which example 0 has"
            raise TextBatchError(
                f"example {row} {what}; give every example of a batch the same keys (e.g. "
                "labels on all of them, or on none)."
            )


def column(features: Features, key: str) -> list[Any]:
    """``key`` of every feature, or an error naming the first feature without it."""
    try:
        return [f[key] for f in features]
    except KeyError:
        check_same_keys(features)
        raise


def check_aligned(key: str, values: list[Any], lengths: np.ndarray) -> None:
    """Every example's ``key`` must have one value per token of its ``input_ids``."""
    own = sequence_lengths(values, key)
    if not (own == lengths).all():  # both (B,)
        row = int(np.flatnonzero(own != lengths)[0])
        raise TextBatchError(
            f"example {row} has {own[row]} {key} but {lengths[row]} input_ids; every "
            "sequence key of an example must have one value per token."
        )


def numbers(values: list[Any], key: str) -> np.ndarray:
    """One number (or array) per example as a numpy array, refusing Python ints beyond int64,
    which numpy turns into floats when mixed with smaller ones."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged sequences
        array = np.asarray(values, dtype=object)
    kind = array.dtype.kind
    if (kind == "f" and array.size and np.abs(array).max() >= INT64_LIMIT) or kind == "O":
        for row, value in enumerate(values):
            if isinstance(value, int | np.integer) and not -INT64_LIMIT <= value < INT64_LIMIT:
                raise TextBatchError(
                    f"example {row}'s {key} is {value}, beyond int64 (-2**63 to 2**63 - 1); "
                    "give numbers that fit."
                )
    return array


def stack_labels(values: list[Any], key: str) -> torch.Tensor:
    """One label per example as a tensor: int64 for classes, float32 for regression targets.

    Class ids must fit in int64 (below 2**63); the conversion never wraps them."""
    if isinstance(values[0], torch.Tensor):
        try:
            labels = torch.stack([torch.as_tensor(v) for v in values])
        except (TypeError, RuntimeError) as error:
            raise TextBatchError(f"cannot stack the {key!r} of this batch: {error}") from None
        array = labels.numpy() if labels.dtype == torch.uint64 else None
    else:
        array = numbers(values, key)
        if array.dtype.kind not in "biuf" or array.ndim != 1:
            raise TextBatchError(
                f"{key!r} must hold one number per example (class ids), got {values[0]!r}; map "
                "label names to ids first (TextDataset does)."
            )
        labels = torch.from_numpy(array)
    if array is not None and array.dtype == np.uint64 and (array >= INT64_LIMIT).any():
        row = int(np.argmax(array >= INT64_LIMIT))
        raise TextBatchError(
            f"example {row}'s {key} is {int(array[row])}, 2**63 or more, which int64 cannot "
            "hold; give class ids from 0 to the number of classes - 1."
        )
    if labels.dtype.is_floating_point:
        return labels.to(torch.float32)
    return labels.to(torch.int64)


class PaddingCollator:
    """Pad a list of tokenised examples into a dict of tensors, as ``DataCollatorWithPadding`` does.

    Returns ``input_ids`` and ``attention_mask`` (int64 ``[B, T]``, 1 marks a real token),
    ``token_type_ids`` and ``special_tokens_mask`` when the features carry them, and ``labels``
    (``[B]``: int64 class ids, float32 regression targets) from a ``labels``, ``label`` or
    ``label_ids`` key. ``T`` is the longest example (after truncation to ``max_length``
    tokens), rounded up to ``pad_to_multiple_of``. Other numeric keys become tensors too; the
    ``length`` key is dropped. Nothing is rounded, wrapped or dropped without a word: token ids
    must be integers from 0 to 2**63 - 1, class ids must fit in int64, and every feature must
    have the same keys (``TextBatchError`` otherwise).

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
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side
        self.pad_to_multiple_of = check_pad_to_multiple_of(pad_to_multiple_of)
        self.max_length = positive_tokens(
            "max_length", max_length, "Give the most tokens per example, or None to keep all."
        )
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

    def sampler_options(self) -> dict[str, Any]:
        """What a ``BucketBatchSampler`` must know to count this collator's batches right, as
        its keyword arguments: the rounding of the padded width (``pad_to_multiple_of``), so
        that a token budget counts the padded size. ``make_loader`` passes them on.

        Example:
            >>> PaddingCollator(0, pad_to_multiple_of=8).sampler_options()
            {'pad_to_multiple_of': 8}
        """
        return {"pad_to_multiple_of": self.pad_to_multiple_of}

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
        flat = concatenate(values, int(lengths.sum()), key)
        if keep is not None:
            flat = flat[keep]
        out = np.full(real.shape, self.pad_values[key], dtype=np.int64)
        out[real] = flat  # row-major order matches the concatenation, left or right padded
        return torch.from_numpy(out)

    @staticmethod
    def _passthrough(key: str, values: list[Any]) -> torch.Tensor:
        if isinstance(values[0], torch.Tensor):
            return torch.stack(values)
        array = numbers(values, key)
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
# Keys of the features that PackingCollator lays out itself (the rest pass through per sequence).
PACKED_KEYS = ("input_ids", "token_type_ids", "special_tokens_mask", "attention_mask")


class PackingCollator:
    """Pack tokenised examples end to end into rows of ``capacity`` tokens: no padding but the
    unused end of each row. ``capacity=None`` packs everything into one flat row.

    Rows are filled by ``textbatch.batching.packing.pack_rows``: next-fit in the order of the
    features (a new row whenever the next sequence does not fit), unless best-fit decreasing
    needs fewer rows. ``BucketBatchSampler(..., packing_capacity=capacity)`` plans each batch
    as whole rows listed one after another, so next-fit lays it out in at most the rows its plan
    counted on. Returns, for R rows of width W and N sequences (in the order of the features):

    - ``input_ids``, ``token_type_ids`` and ``special_tokens_mask`` (the last two when
      given): int64 (R, W)
    - ``position_ids``: int64 (R, W), restarting at ``position_offset`` for each sequence
    - ``sequence_ids``: int64 (R, W), which sequence each token belongs to (-1: row padding)
    - ``attention_mask``: float32 (R, 1, W, W), block-diagonal and additive: 0 where a token
      may attend, the lowest float32 elsewhere (a Hugging Face encoder takes it as is, with
      sdpa or eager attention; a bool mask, which eager attention adds to the scores, would
      block nothing), only with ``mask=True``: it costs 4 x W x W bytes per row,
      and a model that reads ``sequence_ids`` or ``cu_seqlens`` does not need it
      (``TextClassifier`` and ``BackboneClassifier`` build it themselves when it is missing)
    - ``cu_seqlens``: int32 (N + 1), the sequences' boundaries in packed order over the real
      tokens (``input_ids[sequence_ids >= 0]``), and ``max_seqlen``: int64 scalar, the longest
      sequence's tokens, as variable-length attention kernels take them; ``packed_order``:
      int64 (N), which sequence comes at each place
    - ``labels``: (N), one per sequence (int64 class ids; float32 regression targets);
      ``example_ids``: int64 (N), the feature each sequence came from (they differ only with
      ``overlong="split"``); other numeric keys of the features, one per sequence like
      ``labels``

    ``hf_names=True`` (one flat row, ``capacity=None``) adds the same boundaries under the names
    Hugging Face models read, as ``transformers.DataCollatorWithFlattening(
    return_flash_attn_kwargs=True, return_seq_idx=True)`` gives them: ``cu_seq_lens_q`` and
    ``cu_seq_lens_k`` (int32 (N + 1), equal to ``cu_seqlens``), ``max_length_q`` and
    ``max_length_k`` (Python ints, the longest sequence) and ``seq_idx`` (int32 (1, W), equal
    to ``sequence_ids``); ``input_ids`` and ``position_ids`` are already the same. Two things
    differ from that collator: ``labels`` stays one label per sequence (its ``labels`` are
    token-level language-model targets, -100 at each sequence's first token), and an empty
    example stays an empty sequence (it drops it).

    A given ``attention_mask`` must be all 1s (it is replaced); token ids must be integers
    from 0 to 2**63 - 1, and every feature must have the same keys.

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
        mask: bool = False,
        hf_names: bool = False,
    ) -> None:
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int | np.integer):
            raise TextBatchError(f"pad_token_id={pad_token_id!r} must be an int.")
        for name, value in (("mask", mask), ("hf_names", hf_names)):
            if not isinstance(value, bool):
                raise TextBatchError(f"{name}={value!r} must be True or False.")
        if overlong not in OVERLONG:
            raise TextBatchError(f"overlong={overlong!r} must be one of {', '.join(OVERLONG)}.")
        self.pad_token_id = int(pad_token_id)
        self.capacity = positive_tokens(
            "capacity", capacity, "Give the tokens per row, or None for one flat row."
        )
        if hf_names and self.capacity is not None:
            raise TextBatchError(
                f"hf_names=True gives Hugging Face's names for one flat row, which is what its "
                f"variable-length attention reads; use capacity=None, not {self.capacity} (a "
                "sampler's max_tokens bounds the row), or hf_names=False."
            )
        self.position_offset = non_negative_int("position_offset", position_offset)
        self.overlong = overlong
        self.pad_token_type_id = int(pad_token_type_id)
        self.mask = mask
        self.hf_names = hf_names

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **options: Any) -> PackingCollator:
        """A packing collator with the tokenizer's pad token (and pad token type)."""
        options.setdefault("pad_token_type_id", getattr(tokenizer, "pad_token_type_id", 0))
        return cls(tokenizer_pad_token_id(tokenizer), **options)

    def sampler_options(self) -> dict[str, Any]:
        """What a ``BucketBatchSampler`` must know to plan packed batches that this collator
        lays out as planned, as its keyword arguments: the row capacity (``packing_capacity``)
        and what becomes of longer examples (``oversized``: ``"truncate"`` with
        ``overlong="truncate"``; else ``"error"``, since a plan cannot count split pieces).
        ``make_loader(..., packing_capacity=...)`` passes them on; a sampler that plans padded
        batches needs none of them.

        Example:
            >>> PackingCollator(0, capacity=128, overlong="truncate").sampler_options()
            {'packing_capacity': 128, 'oversized': 'truncate'}
        """
        oversized = "truncate" if self.overlong == "truncate" else "error"
        return {"packing_capacity": self.capacity, "oversized": oversized}

    def _sequences(self, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sequences to pack, split or truncated as asked: the example each comes from,
        its first token within that example, and its length (tokens)."""
        count = len(lengths)
        if self.capacity is None or lengths.max() <= self.capacity:
            return np.arange(count), np.zeros(count, dtype=np.int64), lengths
        if self.overlong == "error":
            row = int(np.argmax(lengths))
            raise TextBatchError(
                f"example {row} has {lengths[row]} tokens, more than the row capacity "
                f"{self.capacity}; raise capacity, truncate the data (max_length), or pass "
                "overlong='truncate' or overlong='split'."
            )
        if self.overlong == "truncate":
            return (
                np.arange(count),
                np.zeros(count, dtype=np.int64),
                np.minimum(lengths, self.capacity),
            )
        # Pieces per example; an empty example keeps one empty sequence, as when none is split.
        pieces = np.maximum(-(-lengths // self.capacity), 1)
        examples = np.repeat(np.arange(count), pieces)
        first_piece = np.repeat(np.cumsum(pieces) - pieces, pieces)
        starts = (np.arange(int(pieces.sum())) - first_piece) * self.capacity
        return examples, starts, np.minimum(lengths[examples] - starts, self.capacity)

    def __call__(self, features: Features) -> dict[str, torch.Tensor]:
        from textbatch.batching.packing import pack_rows

        first = check_features(features)
        example_lengths = sequence_lengths(column(features, "input_ids"))
        examples, starts, lengths = self._sequences(example_lengths)
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
        # Each packed token's place among all the examples' tokens, end to end.
        example_starts = np.cumsum(example_lengths) - example_lengths
        source = np.repeat(example_starts[examples[order]] + starts[order], packed_lengths) + within
        total = int(example_lengths.sum())

        def tokens(key: str) -> np.ndarray:
            values = column(features, key)
            if key != "input_ids":
                check_aligned(key, values, example_lengths)
            return concatenate(values, total, key)

        def layout(key: str, fill: int) -> torch.Tensor:
            out = np.full((len(rows), width), fill, dtype=np.int64)
            out[token_row, token_column] = tokens(key)[source]
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
        for key, fill in (("token_type_ids", self.pad_token_type_id), ("special_tokens_mask", 1)):
            if key in first:
                batch[key] = layout(key, fill)
        if "attention_mask" in first:
            check_all_ones(tokens("attention_mask"), example_lengths)
        if self.mask:
            batch["attention_mask"] = additive_mask(block_diagonal_mask(batch["sequence_ids"]))
        batch["cu_seqlens"] = torch.from_numpy(np.concatenate([[0], ends]).astype(np.int32))
        batch["max_seqlen"] = torch.tensor(int(lengths.max()))
        batch["packed_order"] = torch.from_numpy(order)
        if self.hf_names:
            batch.update(hf_flash_names(batch["cu_seqlens"], batch["sequence_ids"]))
        per_sequence = torch.from_numpy(examples.astype(np.int64))
        batch["example_ids"] = per_sequence
        for key in first:
            if key in LABEL_KEYS:
                batch["labels"] = stack_labels(column(features, key), key)[per_sequence]
            elif key in PACKED_KEYS or key in DROPPED_KEYS:
                continue
            elif key in batch:
                raise TextBatchError(
                    f"feature {key!r} has the name of a tensor that PackingCollator computes; "
                    "rename or remove it before collating."
                )
            else:  # other numbers: one per sequence, as labels
                batch[key] = PaddingCollator._passthrough(key, column(features, key))[per_sequence]
        return batch

    def __repr__(self) -> str:
        return (
            f"PackingCollator(pad_token_id={self.pad_token_id}, capacity={self.capacity}, "
            f"position_offset={self.position_offset}, overlong={self.overlong!r}, "
            f"mask={self.mask}, hf_names={self.hf_names})"
        )


def hf_flash_names(cu_seqlens: torch.Tensor, sequence_ids: torch.Tensor) -> dict[str, Any]:
    """A flat row's boundaries under the keys and types of Hugging Face's
    ``DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_seq_idx=True)``."""
    longest = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())  # tokens
    return {
        "cu_seq_lens_q": cu_seqlens,
        "cu_seq_lens_k": cu_seqlens,
        "max_length_q": longest,
        "max_length_k": longest,
        "seq_idx": sequence_ids.to(torch.int32),  # (1, W)
    }


def check_all_ones(mask: np.ndarray, lengths: np.ndarray) -> None:
    """A given attention mask that PackingCollator replaces must mask nothing."""
    if not (mask == 1).all():
        at = int(np.flatnonzero(mask != 1)[0])
        row = int(np.searchsorted(np.cumsum(lengths), at, side="right"))
        raise TextBatchError(
            f"example {row}'s attention_mask holds {mask[at]} at position "
            f"{at - int(lengths[:row].sum())}; PackingCollator builds its own mask from the "
            "sequences and can only replace a given one that is all 1s. Remove the masked tokens "
            "first, or use PaddingCollator."
        )
