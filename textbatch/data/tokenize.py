"""A batch of texts tokenised into Arrow columns, the tokenising and the reading overlapped.

The Rust tokenizer runs on every core (its own thread pool) and releases the GIL; reading its
encodings into numpy arrays is Python work on one thread. :func:`tokenize_table` cuts a batch
into chunks and tokenises the next chunk on a worker thread while it reads the last one, so the
reading costs little beyond the tokenising, however many cores tokenise.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from textbatch.data.backend import single_type_ids_are_zero, token_arrays
from textbatch.data.truncation import encodings_truncated

CHUNK_ROWS = 256  # rows per Rust call: enough for every core, small enough to overlap


def tokenize_table(
    tokenizer: Any,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    *,
    max_length: int,
    type_ids: bool,
    chunk_rows: int = CHUNK_ROWS,
) -> Any:
    """A ``pyarrow.Table`` of ``input_ids`` (list of int32) and, with ``type_ids``,
    ``token_type_ids`` (list of int8): exactly ``tokenizer(texts, pairs, truncation=True,
    max_length=max_length)``'s, one row per text (or pair), long texts cut before tokenising
    (see :func:`~textbatch.data.truncation.encodings_truncated`)."""
    import pyarrow as pa

    zero_types = type_ids and pairs is None and single_type_ids_are_zero(tokenizer)
    starts = range(0, len(texts), max(int(chunk_rows), 1))

    def encode(start: int) -> list[Any]:
        end = start + chunk_rows
        return encodings_truncated(
            tokenizer,
            texts[start:end],
            None if pairs is None else pairs[start:end],
            max_length=max_length,
            type_ids=type_ids,
        )

    chunks = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="textbatch-tokenize") as pool:
        pending = pool.submit(encode, starts[0]) if starts else None
        for k in range(len(starts)):
            encodings = pending.result()
            if k + 1 < len(starts):  # the Rust tokenizer works on while we read
                pending = pool.submit(encode, starts[k + 1])
            chunks.append(token_arrays(encodings, type_ids=type_ids, zero_types=zero_types))
    if not chunks:
        chunks.append(token_arrays([], type_ids=type_ids, zero_types=zero_types))
    return pa.table({name: pa.chunked_array([c[name] for c in chunks]) for name in chunks[0]})
