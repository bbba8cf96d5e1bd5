"""Batches of texts tokenised into Arrow columns, the tokenising and the reading overlapped.

The Rust tokenizer runs on every core (its own thread pool) and releases the GIL; reading its
encodings into numpy arrays is Python work on one thread. :class:`TableTokenizer` cuts a batch
into chunks and tokenises the next chunk on a worker thread while it reads the last one, so the
reading costs little beyond the tokenising, however many cores tokenise.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from textbatch.data.backend import single_type_ids_are_zero, token_arrays
from textbatch.data.truncation import cuts_are_exact, encodings_truncated

CHUNK_ROWS = 256  # rows per Rust call: enough for every core, small enough to overlap


class TableTokenizer:
    """Texts (or pairs) to a ``pyarrow.Table`` of ``input_ids`` (list of int32) and, with
    ``type_ids``, ``token_type_ids`` (list of int8): exactly ``tokenizer(texts, pairs,
    truncation=True, max_length=max_length)``'s, one row per text, long texts cut before
    tokenising (see :func:`~textbatch.data.truncation.encodings_truncated`).

    What it needs to know about the tokenizer (whether cuts are exact, whether single texts
    have token type 0) is read from its tokenizer.json once, here: about 20 ms each for a
    vocabulary of 30,000 tokens, too much to pay per batch."""

    def __init__(
        self, tokenizer: Any, *, max_length: int, type_ids: bool, chunk_rows: int = CHUNK_ROWS
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.type_ids = type_ids
        self.chunk_rows = max(int(chunk_rows), 1)
        self.cuts_exact = cuts_are_exact(tokenizer)
        self.zero_single_types = type_ids and single_type_ids_are_zero(tokenizer)

    def __call__(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> Any:
        import pyarrow as pa

        zero_types = self.zero_single_types and pairs is None
        starts = range(0, len(texts), self.chunk_rows)
        chunks = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="textbatch-tokenize") as pool:
            pending = pool.submit(self._encode, texts, pairs, starts[0]) if starts else None
            for k in range(len(starts)):
                encodings = pending.result()
                if k + 1 < len(starts):  # the Rust tokenizer works on while we read
                    pending = pool.submit(self._encode, texts, pairs, starts[k + 1])
                chunks.append(
                    token_arrays(encodings, type_ids=self.type_ids, zero_types=zero_types)
                )
        if not chunks:
            chunks.append(token_arrays([], type_ids=self.type_ids, zero_types=zero_types))
        return pa.table({name: pa.chunked_array([c[name] for c in chunks]) for name in chunks[0]})

    def _encode(self, texts: Sequence[str], pairs: Sequence[str] | None, start: int) -> list[Any]:
        end = start + self.chunk_rows
        return encodings_truncated(
            self.tokenizer,
            texts[start:end],
            None if pairs is None else pairs[start:end],
            max_length=self.max_length,
            type_ids=self.type_ids,
            cuts_exact=self.cuts_exact,
        )


def tokenize_table(
    tokenizer: Any,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    *,
    max_length: int,
    type_ids: bool,
    chunk_rows: int = CHUNK_ROWS,
) -> Any:
    """One batch through a :class:`TableTokenizer`."""
    table_tokenizer = TableTokenizer(
        tokenizer, max_length=max_length, type_ids=type_ids, chunk_rows=chunk_rows
    )
    return table_tokenizer(texts, pairs)
