"""Padding diagnostics: the numbers behind every benchmark, computed with numpy, never per token."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from textbatch.batching.collate import check_pad_to_multiple_of
from textbatch.errors import TextBatchError


@dataclass(frozen=True)
class PaddingStats:
    """How much of a set of padded batches is padding. Token counts are in tokens.

    ``waste`` is padding tokens over all tokens in the padded batches (0 = no padding).
    ``max_batch_tokens`` is the largest padded batch (examples x padded width). ``fill`` is the
    mean padded batch over the token budget, when one was given (else None).
    """

    real_tokens: int
    padded_tokens: int
    waste: float
    num_batches: int
    num_examples: int
    batch_size_mean: float
    batch_size_min: int
    batch_size_max: int
    max_batch_tokens: int
    fill: float | None = None

    @property
    def padding_tokens(self) -> int:
        """Padding tokens in all batches."""
        return self.padded_tokens - self.real_tokens

    def as_dict(self) -> dict[str, float | int]:
        """A plain dict, for JSON."""
        return asdict(self)


def as_lengths(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """``lengths`` as a 1-D int64 array of positive token counts, or a clear error."""
    array = np.asarray(lengths)
    if array.ndim != 1:
        raise TextBatchError(
            f"lengths must be a 1-D sequence of token counts, got shape {array.shape}."
        )
    if array.size and array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise TextBatchError(f"lengths must be integers (tokens), got dtype {array.dtype}.")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 1:
        row = int(np.argmin(array))
        raise TextBatchError(
            f"lengths[{row}] = {array[row]}: every example needs at least one token."
        )
    return array


def summarise_batches(
    real_tokens: int,
    sizes: np.ndarray,
    batch_tokens: np.ndarray,
    max_tokens: int | None = None,
) -> PaddingStats:
    """PaddingStats from the real tokens, the examples per batch and the tokens each batch
    takes once laid out (padded or packed)."""
    padded = int(batch_tokens.sum())
    return PaddingStats(
        real_tokens=int(real_tokens),
        padded_tokens=padded,
        waste=(padded - real_tokens) / padded,
        num_batches=len(sizes),
        num_examples=int(sizes.sum()),
        batch_size_mean=float(sizes.mean()),
        batch_size_min=int(sizes.min()),
        batch_size_max=int(sizes.max()),
        max_batch_tokens=int(batch_tokens.max()),
        fill=None if max_tokens is None else float(batch_tokens.mean() / max_tokens),
    )


def padding_stats(
    lengths: Sequence[int] | np.ndarray,
    batches: Iterable[Sequence[int]],
    pad_to_multiple_of: int | None = None,
    max_tokens: int | None = None,
) -> PaddingStats:
    """Padding in ``batches`` (lists of indices into ``lengths``; a batch sampler gives one
    epoch) when each batch is padded to its longest example, rounded up to
    ``pad_to_multiple_of`` tokens; with ``max_tokens``, also how well the batches fill that
    budget."""
    lengths = as_lengths(lengths)
    multiple = check_pad_to_multiple_of(pad_to_multiple_of)
    sizes, flat = _index_batches(batches, len(lengths), "padding_stats")
    batch_lengths = lengths[flat]
    starts = np.cumsum(sizes) - sizes
    widths = np.maximum.reduceat(batch_lengths, starts)
    if multiple:
        widths = -(-widths // multiple) * multiple
    return summarise_batches(int(batch_lengths.sum()), sizes, widths * sizes, max_tokens)


def packing_stats(
    lengths: Sequence[int] | np.ndarray, batches: Iterable[Sequence[int]], capacity: int
) -> PaddingStats:
    """The same numbers for packed batches: each batch takes rows x ``capacity`` tokens, its rows
    laid out as ``PackingCollator(capacity=capacity)`` lays them out (sequences longer than
    the capacity counted as truncated to it)."""
    from textbatch.batching.packing import pack_rows

    lengths = np.minimum(as_lengths(lengths), capacity)
    sizes, flat = _index_batches(batches, len(lengths), "packing_stats")
    parts = np.split(lengths[flat], np.cumsum(sizes)[:-1])
    rows = np.array([len(pack_rows(part, capacity)) for part in parts])
    return summarise_batches(int(lengths[flat].sum()), sizes, rows * capacity)


def _index_batches(
    batches: Iterable[Sequence[int]], examples: int, caller: str
) -> tuple[np.ndarray, np.ndarray]:
    """(examples per batch, every batch's indices in one array), from one pass over
    ``batches`` (a batch sampler moves to its next epoch after a pass); a clear error for no
    batch, an empty batch or an index outside ``range(examples)`` (a negative index would
    silently take an example from the end)."""
    arrays = [np.asarray(batch) for batch in batches]
    if not arrays:
        raise TextBatchError(f"batches is empty; {caller} needs at least one batch.")
    for k, array in enumerate(arrays):
        if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
            raise TextBatchError(
                f"batch {k} is not a list of integer indices ({array.dtype}, shape "
                f"{array.shape}); each batch lists the examples it holds."
            )
    arrays = [array.astype(np.int64, copy=False) for array in arrays]
    sizes = np.array([len(array) for array in arrays], dtype=np.int64)
    if sizes.min() == 0:
        raise TextBatchError(f"batch {int(np.argmin(sizes))} is empty; every batch needs an index.")
    flat = np.concatenate(arrays)
    outside = (flat < 0) | (flat >= examples)
    if outside.any():
        bad = int(flat[outside][0])
        raise TextBatchError(f"index {bad} is out of range for {examples} lengths.")
    return sizes, flat


def length_summary(
    lengths: Sequence[int] | np.ndarray, max_length: int | None = None
) -> dict[str, float | int]:
    """Count, mean and percentiles of token lengths, and how many reach ``max_length``.

    Lengths are after truncation, so an example at exactly ``max_length`` tokens was (most
    likely) truncated; ``at_max_length`` counts those.
    """
    lengths = as_lengths(lengths)
    if lengths.size == 0:
        raise TextBatchError("lengths is empty; there is nothing to summarise.")
    summary: dict[str, float | int] = {
        "examples": int(lengths.size),
        "tokens": int(lengths.sum()),
        "mean": float(lengths.mean()),
        "min": int(lengths.min()),
    }
    for q in (50, 90, 95, 99):
        summary[f"p{q}"] = float(np.percentile(lengths, q))
    summary["max"] = int(lengths.max())
    if max_length is not None:
        summary["at_max_length"] = int((lengths >= max_length).sum())
    return summary
