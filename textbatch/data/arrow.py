"""Zero-copy numpy views of Arrow list columns, for reading token ids without a copy per row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class ListColumn:
    """The rows of an Arrow list column (e.g. ``input_ids``) as numpy views.

    Each chunk's flat values and offsets are taken once as numpy arrays (zero-copy for a
    memory-mapped table), so reading rows is a slice per row and never copies the table.
    """

    def __init__(self, column: Any) -> None:
        self.values: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []
        rows = [0]
        for chunk in column.chunks:
            offsets = np.asarray(chunk.offsets, dtype=np.int64)
            self.values.append(chunk.flatten().to_numpy(zero_copy_only=False))
            self.offsets.append(offsets - offsets[0])
            rows.append(rows[-1] + len(chunk))
        self.chunk_starts = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.chunk_starts[-1])

    def lengths(self) -> np.ndarray:
        """Values per row (int64), from the offsets."""
        if not self.offsets:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.diff(offsets) for offsets in self.offsets])

    def rows(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """The rows at ``indices`` (non-negative), as views into the column's buffers."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(self.values) == 1:
            values, offsets = self.values[0], self.offsets[0]
            starts, ends = offsets[indices].tolist(), offsets[indices + 1].tolist()
            return [values[s:e] for s, e in zip(starts, ends, strict=True)]
        chunks = np.searchsorted(self.chunk_starts, indices, side="right") - 1
        local = (indices - self.chunk_starts[chunks]).tolist()
        out = []
        for c, i in zip(chunks.tolist(), local, strict=True):
            offsets = self.offsets[c]
            out.append(self.values[c][offsets[i] : offsets[i + 1]])
        return out


def row_mapping(hf_dataset: Any) -> np.ndarray | None:
    """The rows of its Arrow table that a ``datasets.Dataset`` presents, in order (int64), as
    ``select``, ``shuffle`` and ``filter`` leave them mapped; None when it presents them all."""
    mapping = hf_dataset._indices
    return None if mapping is None else mapping.column(0).to_numpy().astype(np.int64)
