"""Token lengths of a dataset for the sampler, without reading its rows one by one."""

from __future__ import annotations

from typing import Any

import numpy as np

from textbatch.data.arrow import ListColumn, row_mapping
from textbatch.errors import TextBatchError


def token_lengths(dataset: Any, column: str = "input_ids") -> np.ndarray:
    """Tokens per example (int64, one per row, in the dataset's order).

    A ``TextDataset`` (or anything with a ``lengths`` array) gives its ``lengths``. A tokenised
    Hugging Face ``datasets.Dataset`` gives the lengths of its ``column`` from the Arrow list
    offsets (no row is decoded), through its indices mapping after ``select``/``shuffle``.
    """
    lengths = getattr(dataset, "lengths", None)
    if lengths is not None and not callable(lengths):
        return np.asarray(lengths, dtype=np.int64)
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        datasets = None
    if datasets is None or not isinstance(dataset, datasets.Dataset):
        raise TextBatchError(
            f"cannot tell the token lengths of a {type(dataset).__name__}: give a TextDataset, a "
            "tokenised datasets.Dataset, or the lengths themselves (lengths=...)."
        )
    if column not in dataset.column_names:
        raise TextBatchError(
            f"the dataset has no {column!r} column (it has {dataset.column_names}); tokenise it "
            "first (dataset.map(tokenize, batched=True)) or name the token column."
        )
    import pyarrow as pa

    arrow = dataset.data.column(column)
    kind = arrow.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise TextBatchError(
            f"column {column!r} holds {kind}, not variable-length lists of token ids; tokenise "
            "without padding (padding is the collator's job) so that the lengths differ."
        )
    lengths = ListColumn(arrow).lengths()
    rows = row_mapping(dataset)
    return lengths if rows is None else lengths[rows]
