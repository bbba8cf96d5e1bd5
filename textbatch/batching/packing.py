"""Packing: sequences laid end to end in rows of a fixed capacity, so that nothing is padding.

``pack_rows`` is the layout rule of ``PackingCollator``: next-fit in the given order, unless
best-fit decreasing needs fewer rows. The sampler plans an epoch's rows by best-fit decreasing
(``plan_packed_batches``) and lists each batch's rows one after another; next-fit reproduces
such rows and never needs more of them, so a batch is laid out in at most the rows its plan
counted on. Best-fit decreasing takes over for batches that no plan made, which it packs well.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence

import numpy as np

from textbatch.errors import TextBatchError


def _check(lengths: Sequence[int] | np.ndarray, capacity: int) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and lengths.max() > capacity:
        position = int(np.argmax(lengths))
        raise TextBatchError(
            f"sequence {position} has {lengths[position]} tokens, more than the row capacity "
            f"{capacity}; raise the capacity, or truncate or split such sequences."
        )
    return lengths


def best_fit_decreasing(lengths: Sequence[int] | np.ndarray, capacity: int) -> list[list[int]]:
    """Positions of ``lengths`` grouped into rows of at most ``capacity`` tokens: longest first,
    each into the fullest row with room. At most 11/9 of the optimal number of rows (plus one);
    on text, where most sequences are short, it leaves almost no space unused."""
    lengths = _check(lengths, capacity)
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, row), sorted
    for position in np.argsort(-lengths, kind="stable").tolist():
        size = int(lengths[position])
        slot = bisect_left(free, (size, -1))
        if slot == len(free):  # no row has room: open one
            rows.append([position])
            insort(free, (capacity - size, len(rows) - 1))
        else:
            space, row = free.pop(slot)
            rows[row].append(position)
            insort(free, (space - size, row))
    return rows


def next_fit(lengths: Sequence[int] | np.ndarray, capacity: int) -> list[list[int]]:
    """Positions of ``lengths`` in the given order, a new row whenever the next one does not
    fit. Given rows that each fit, listed one after another, it never needs more rows."""
    lengths = _check(lengths, capacity)
    rows: list[list[int]] = []
    used = capacity
    for position, size in enumerate(lengths.tolist()):
        if not rows or used + size > capacity:
            rows.append([])
            used = 0
        rows[-1].append(position)
        used += size
    return rows


def pack_rows(lengths: Sequence[int] | np.ndarray, capacity: int) -> list[list[int]]:
    """The rows ``PackingCollator`` lays out: next-fit in the given order, unless best-fit
    decreasing needs fewer rows (on a tie, next-fit). Deterministic."""
    ordered = next_fit(lengths, capacity)
    best = best_fit_decreasing(lengths, capacity)
    return best if len(best) < len(ordered) else ordered


def plan_packed_batches(
    lengths: np.ndarray,
    order: np.ndarray,
    capacity: int,
    rows_per_batch: int,
    window: int,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``order`` (dataset indices, already shuffled) into batches of whole packed rows.

    Each window of ``window`` indices is packed by best-fit decreasing; the rows of all windows
    (shuffled with ``rng``) are grouped ``rows_per_batch`` at a time, and each batch lists its
    rows one after another, so that :func:`pack_rows` lays it out in at most
    ``rows_per_batch`` rows (and so does any part of it). Returns ``(indices in batch order,
    batch bounds)``.
    """
    rows: list[np.ndarray] = []
    for start in range(0, len(order), window):
        part = order[start : start + window]
        rows.extend(part[np.asarray(row)] for row in best_fit_decreasing(lengths[part], capacity))
    if rng is not None:
        rows = [rows[i] for i in rng.permutation(len(rows))]
    sizes = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    row_bounds = np.concatenate([[0], np.cumsum(sizes)])
    indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    bounds = row_bounds[::rows_per_batch]  # every rows_per_batch-th row starts a batch
    if bounds[-1] != row_bounds[-1]:
        bounds = np.append(bounds, row_bounds[-1])
    return indices, bounds
