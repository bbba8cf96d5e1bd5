"""Labelled text, tokenised once into Arrow, with token lengths as a numpy array.

``TextDataset`` is a map-style PyTorch dataset over a Hugging Face ``datasets.Dataset`` whose rows
hold ``input_ids`` (and ``token_type_ids`` where the tokenizer makes them) and ``labels``.
Construction checks the raw columns, maps labels to ids, and tokenises through the fast tokenizer in
batches with ``Dataset.map``; for files the tokenised result is cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textbatch._version import __version__
from textbatch.data.arrow import ListColumn, row_mapping
from textbatch.data.backend import calls_backend_directly
from textbatch.data.columns import (
    LabelSpec,
    check_text_column,
    invalid_text_rows,
    is_blank,
    label_text,
    plain_text_columns,
    resolve_labels,
    separator_hint,
)
from textbatch.data.delimited import (
    CSV_OPTIONS,
    TSV_OPTIONS,
    as_text,
    check_one_object_per_line,
    check_quotes,
    check_tsv_cells,
    checked_json_stream,
    checked_stream,
    exact_json_columns,
    is_json_lines,
    json_lines_rows,
    muted,
    parse_error,
    strict_rows,
)
from textbatch.data.encoding import check_encoding, utf8_source
from textbatch.data.hashing import checksum_path, checksum_problem, file_digest, write_checksum
from textbatch.data.tokenize import TableTokenizer
from textbatch.data.tokenizers import makes_token_types
from textbatch.errors import TextBatchError, TextBatchWarning, causes
from textbatch.files import atomic_write, remove_stale_temporaries

Example = dict[str, Any]
Transform = Callable[[Example], Example]

DEFAULT_MAX_LENGTH = 512
FILE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", CSV_OPTIONS),
    ".tsv": ("csv", TSV_OPTIONS),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    # a byte-order mark is not text (csv and json readers drop it too; it stayed in the first
    # line, and byte-level BPE made tokens of it)
    ".txt": ("text", {"encoding": "utf-8-sig"}),
}
# Rows per Dataset.map call: tokenised a chunk at a time, the next chunk while the last is read.
_MAP_BATCH_ROWS = 4096
# Cached files carry this in their names; bump it when the stored layout changes.
_CACHE_LAYOUT = "3"


def default_cache_dir() -> Path:
    """Where data files are cached (as Arrow, and tokenised): ``$TEXTBATCH_CACHE`` or
    ``~/.cache/textbatch``."""
    return Path(os.environ.get("TEXTBATCH_CACHE", Path.home() / ".cache" / "textbatch"))


class TextDataset(torch.utils.data.Dataset):
    """A tokenised, labelled text dataset stored in Arrow.

    Build one with :meth:`from_hf`, :meth:`from_file` or :meth:`from_records`. ``ds[i]`` is a dict
    of unpadded lists (``input_ids``, ``token_type_ids`` when present, ``labels`` when labelled);
    ``ds.__getitems__(indices)`` reads a whole batch in one Arrow ``take`` and returns the same
    dicts with numpy arrays, which is what ``DataLoader`` calls when a batch sampler is used.
    ``ds.lengths`` holds the tokens per example (special tokens included, after truncation).
    """

    def __init__(
        self,
        hf_dataset: Any,
        *,
        label_names: list[str] | None,
        transform: Transform | None = None,
        num_dropped: int = 0,
        from_cache: bool = False,
    ) -> None:
        if "input_ids" not in hf_dataset.column_names:
            raise TextBatchError(
                f"the dataset has no input_ids column (columns: {hf_dataset.column_names}); "
                "build a TextDataset with TextDataset.from_hf/from_file/from_records."
            )
        self.hf = hf_dataset
        self.label_names = label_names
        self.transform = transform
        self.num_dropped = num_dropped
        self.from_cache = from_cache
        self._lengths: np.ndarray | None = None
        self._read_columns(hf_dataset)

    def _read_columns(self, hf_dataset: Any) -> None:
        """Numpy views of the token columns, the rows of them that are this dataset's (None:
        all, in order), and the labels. A dataset selected, shuffled or filtered maps rows of
        the table it was taken from: ``flatten_indices`` copied them into a file of
        ``datasets``' own in the cache, which no checksum covered."""
        table = hf_dataset.data.table
        self._columns = {
            name: ListColumn(table.column(name))
            for name in ("input_ids", "token_type_ids")
            if name in hf_dataset.column_names
        }
        self._rows = row_mapping(hf_dataset)
        self._labels = (
            self._table_rows(table.column("labels").to_numpy())
            if "labels" in hf_dataset.column_names
            else None
        )

    def _table_rows(self, per_table_row: np.ndarray) -> np.ndarray:
        """This dataset's rows of an array with one value per row of the table."""
        return per_table_row if self._rows is None else per_table_row[self._rows]

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_hf(
        cls,
        hf_dataset: Any,
        tokenizer: Any,
        text: str = "text",
        text_pair: str | None = None,
        label: str | None = "label",
        max_length: int | None = None,
        label_names: Sequence[Any] | None = None,
        *,
        drop_invalid: bool = False,
        transform: Transform | None = None,
        cache_dir: str | os.PathLike | None = None,
        _source: dict[str, Any] | None = None,
    ) -> TextDataset:
        """Tokenise a ``datasets.Dataset`` with columns ``text`` (and ``text_pair``) and ``label``.

        ``label`` may hold strings or integers; the default ``"label"`` is optional (without such a
        column the dataset is unlabelled), any other name must exist. ``label_names`` fixes the
        label order (share it between train and eval); otherwise labels are sorted.
        ``max_length`` (tokens) defaults to the tokenizer's ``model_max_length``, or 512 when the
        tokenizer sets none. ``drop_invalid=True`` drops rows whose text or label is missing or
        empty instead of raising, and reports how many in ``num_dropped``. With ``cache_dir``,
        the tokenised result is cached there, keyed by the data's fingerprint and the content
        hash of the Arrow files it maps, the tokenizer and the options, and checked against its
        checksum when read back (``ds.from_cache``).
        """
        import datasets

        from textbatch.data.tokenizers import load_tokenizer

        if isinstance(hf_dataset, datasets.DatasetDict):
            raise TextBatchError(
                f"got a DatasetDict with splits {list(hf_dataset)}; pass one split, "
                "e.g. dataset['train']."
            )
        if not isinstance(hf_dataset, datasets.Dataset):
            raise TextBatchError(
                f"from_hf needs a datasets.Dataset, got {type(hf_dataset).__name__}; for a "
                "datasets.IterableDataset use StreamingTextDataset.from_hf."
            )
        if hf_dataset.format.get("type") == "custom":
            raise TextBatchError(
                "the dataset has a transform (set_transform or with_transform), which from_hf "
                "would apply to its texts but not to its labels, read from the Arrow columns; "
                "apply it with dataset.map(...) first, or pass transform=... for one applied "
                "to each tokenised example."
            )
        tokenizer = load_tokenizer(tokenizer)
        max_length = resolve_max_length(tokenizer, max_length, pair=text_pair is not None)
        if len(hf_dataset) == 0:
            raise TextBatchError("the dataset is empty (0 rows); give it at least one example.")
        label = _check_columns(hf_dataset.column_names, text, text_pair, label)
        for name in (text, text_pair):
            if name is not None:
                check_text_column(hf_dataset, name)

        text_columns = [text] if text_pair is None else [text, text_pair]
        bad_text = invalid_text_rows(hf_dataset, text_columns)
        label_spec: LabelSpec | None = None
        bad = bad_text
        if label is not None:
            label_spec = resolve_labels(hf_dataset, label, label_names)
            bad = bad_text | label_spec.missing
        num_dropped = int(bad.sum())
        if num_dropped:
            if not drop_invalid:
                raise _invalid_row_error(hf_dataset, text_columns, label, bad, bad_text)
            keep = np.flatnonzero(~bad)
            if len(keep) == 0:
                raise TextBatchError(
                    f"all {len(bad)} rows have missing or empty text or labels; nothing is left "
                    "after drop_invalid=True."
                )
            warnings.warn(
                f"textbatch dropped {num_dropped} of {len(bad)} rows with missing, non-string "
                "or empty text or label (drop_invalid=True).",
                TextBatchWarning,
                stacklevel=2,
            )
            hf_dataset = hf_dataset.select(keep)
            if label_spec is not None:
                label_spec = label_spec.select(keep)
            if _source is not None:  # the cache key names the rows that survive
                kept = hashlib.blake2b(keep.astype(np.int64).tobytes(), digest_size=16)
                _source = {**_source, "kept": kept.hexdigest()}

        hf_dataset = plain_text_columns(hf_dataset, text_columns)  # every text is a string now
        tokenized, from_cache = _tokenize(
            hf_dataset, tokenizer, text, text_pair, max_length, cache_dir, _source
        )
        if label_spec is not None:
            tokenized = tokenized.add_column("labels", label_spec.ids)
        return cls(
            tokenized,
            label_names=None if label_spec is None else label_spec.names,
            transform=transform,
            num_dropped=num_dropped,
            from_cache=from_cache,
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        tokenizer: Any,
        text: str = "text",
        text_pair: str | None = None,
        label: str | None = "label",
        max_length: int | None = None,
        label_names: Sequence[Any] | None = None,
        *,
        drop_invalid: bool = False,
        transform: Transform | None = None,
        cache_dir: str | os.PathLike | None = None,
        encoding: str = "utf-8",
        encoding_errors: str = "strict",
    ) -> TextDataset:
        """Read a csv, tsv, json, jsonl, parquet or txt (one text per line) file and tokenise it.

        The tokenised result is cached under ``cache_dir`` (default :func:`default_cache_dir`),
        keyed by a hash of the file's bytes (never its path, size or mtime), the tokenizer and
        the options: building the dataset again from a file with the same contents reads the
        cache instead of tokenising (``ds.from_cache`` is then True). A cache file that does not
        match the checksum written with it is rebuilt, with a warning.
        Text files are read in ``encoding``; bytes that do not decode are an error naming where,
        or U+FFFD with ``encoding_errors="replace"`` (see :func:`load_file`).
        Other arguments are as in :meth:`from_hf`.
        """
        from textbatch.data.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
        cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        if cache_root.is_dir():  # what a killed tokenisation left
            remove_stale_temporaries(cache_root)
        hf_dataset, digest = _read_file(
            Path(path), cache_root, encoding=encoding, encoding_errors=encoding_errors
        )
        source = {
            "file": digest,
            "format": file_format(Path(path)),
            "encoding": [check_encoding(encoding, encoding_errors), encoding_errors],
        }
        try:
            return cls.from_hf(
                hf_dataset,
                tokenizer,
                text=text,
                text_pair=text_pair,
                label=label,
                max_length=max_length,
                label_names=label_names,
                drop_invalid=drop_invalid,
                transform=transform,
                cache_dir=cache_root,
                _source=source,
            )
        except OSError as error:
            blame_cache = unwritable_cache_error(error, cache_root)
            if blame_cache is None:
                raise
            raise blame_cache from error

    @classmethod
    def from_records(
        cls,
        records: Sequence[Mapping[str, Any]],
        tokenizer: Any,
        text: str = "text",
        text_pair: str | None = None,
        label: str | None = "label",
        max_length: int | None = None,
        label_names: Sequence[Any] | None = None,
        *,
        drop_invalid: bool = False,
        transform: Transform | None = None,
    ) -> TextDataset:
        """Tokenise a list of dicts such as ``[{"text": "...", "label": "pos"}, ...]``.

        Arguments are as in :meth:`from_hf`.
        """
        import datasets

        columns = records_to_columns(records, text, text_pair, label, drop_invalid=drop_invalid)
        return cls.from_hf(
            datasets.Dataset.from_dict(columns),
            tokenizer,
            text=text,
            text_pair=text_pair,
            label=label if label in columns else None,
            max_length=max_length,
            label_names=label_names,
            drop_invalid=drop_invalid,
            transform=transform,
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._columns["input_ids"]) if self._rows is None else len(self._rows)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per example (int64), read from the Arrow list offsets of ``input_ids``."""
        if self._lengths is None:
            self._lengths = self._table_rows(self._columns["input_ids"].lengths())
        return self._lengths

    def content_digest(self) -> str:
        """An XXH3-128 digest of the examples as the model sees them (token ids, token types,
        labels and label names, in order): equal for equal data however it was read or cached.
        A resume compares it to refuse other data. Reads the Arrow buffers in place (about
        0.1 s per 100 million tokens)."""
        import xxhash

        digest = xxhash.xxh3_128()
        for name, column in sorted(self._columns.items()):
            digest.update(name.encode())
            digest.update(self._table_rows(column.lengths()).tobytes())
            if column.values:
                digest.update(str(column.values[0].dtype).encode())
            for values in self._values(column):
                digest.update(np.ascontiguousarray(values).data)
        if self._labels is not None:
            digest.update(np.asarray(self._labels, dtype=np.int64).tobytes())
        digest.update(json.dumps(self.label_names).encode())
        return digest.hexdigest()

    def _values(self, column: ListColumn, rows_per_block: int = 65_536) -> Iterator[np.ndarray]:
        """The values of this dataset's rows of ``column``, in row order: the column's buffers
        as they are, or the mapped rows gathered a block at a time."""
        if self._rows is None:
            yield from column.values
            return
        for start in range(0, len(self._rows), rows_per_block):
            block = column.rows(self._rows[start : start + rows_per_block])
            if block:
                yield np.concatenate(block)

    @property
    def has_labels(self) -> bool:
        """Whether examples carry ``labels`` (False for a dataset built for prediction)."""
        return self._labels is not None

    @property
    def num_labels(self) -> int:
        """How many label names there are (0 when unlabelled)."""
        return 0 if self.label_names is None else len(self.label_names)

    def __getitem__(self, index: int) -> Example:
        """One example as a dict of unpadded Python lists (and an int label)."""
        n = len(self)
        position = int(index)
        if not -n <= position < n:
            raise IndexError(f"index {index} is out of range for a dataset of {n} examples")
        example = _as_lists(self._read([position % n])[0])
        return self.transform(example) if self.transform is not None else example

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        """Examples at ``indices`` as dicts of numpy arrays: views of the Arrow buffers, sliced
        without a copy per row (what ``DataLoader`` calls for a whole batch). A transform gets
        each example as ``self[i]`` gives it, Python lists, on this path too (numpy arrays
        would make ``ids + [4]`` add 4 to every id where ``self[i]`` appended it)."""
        examples = self._read(indices)
        if self.transform is not None:
            examples = [self.transform(_as_lists(example)) for example in examples]
        return examples

    def _read(self, indices: Sequence[int]) -> list[Example]:
        rows = np.asarray(indices, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            bad = int(rows[(rows < 0) | (rows >= len(self))][0])
            raise IndexError(f"index {bad} is out of range for a dataset of {len(self)} examples")
        table_rows = rows if self._rows is None else self._rows[rows]
        columns = {name: column.rows(table_rows) for name, column in self._columns.items()}
        examples = [
            dict(zip(columns, values, strict=True))
            for values in zip(*columns.values(), strict=True)
        ]
        if self._labels is not None:
            for example, label in zip(examples, self._labels[rows].tolist(), strict=True):
                example["labels"] = label
        return examples

    def select(self, indices: Sequence[int] | np.ndarray) -> TextDataset:
        """A new dataset of the examples at ``indices`` (or where a boolean mask is True),
        sharing label names and transform."""
        indices = np.asarray(indices)
        if indices.dtype == bool:
            if indices.shape != (len(self),):
                raise TextBatchError(
                    f"a boolean mask must have one value per example ({len(self)}), "
                    f"not {indices.shape}."
                )
            indices = np.flatnonzero(indices)
        subset = self.hf.select(indices.astype(np.int64))
        return TextDataset(subset, label_names=self.label_names, transform=self.transform)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the Arrow-backed ``hf`` dataset (memory-mapped files pickle as their paths),
        not the numpy views into it: DataLoader workers map the same files."""
        state = self.__dict__.copy()
        for key in ("_columns", "_rows", "_labels", "_lengths"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lengths = None
        self._read_columns(self.hf)

    def __repr__(self) -> str:
        labels = f"{self.num_labels} labels" if self.has_labels else "unlabelled"
        return f"TextDataset({len(self)} examples, {labels}, columns={self.hf.column_names})"


# ---------------------------------------------------------------------- helpers


def resolve_max_length(tokenizer: Any, max_length: int | None, pair: bool = False) -> int:
    """The truncation length in tokens: ``max_length``, else the tokenizer's, else 512.

    It must leave room for one real token (of each text, with ``pair``) besides the special
    tokens the tokenizer adds: below that, fast tokenizers keep a text whole (with a logged
    warning) or drop one text of a pair entirely.
    """
    given = max_length is not None
    if max_length is None:
        model_max = getattr(tokenizer, "model_max_length", None)
        max_length = int(model_max) if model_max and model_max < 1_000_000 else DEFAULT_MAX_LENGTH
    if (
        isinstance(max_length, bool)
        or not isinstance(max_length, int | np.integer)
        or max_length < 1
    ):
        raise TextBatchError(f"max_length={max_length!r} must be a positive number of tokens.")
    special = tokenizer.num_special_tokens_to_add(pair=pair)
    minimum = special + (2 if pair else 1)
    if max_length < minimum:
        texts, per_text = ("each pair of texts", " per text") if pair else ("each text", "")
        fix = "Pass a larger max_length, or leave it out for the tokenizer's own limit."
        if not given:
            fix = "Pass a larger max_length (the tokenizer's model_max_length is too small)."
        raise TextBatchError(
            f"max_length={max_length} leaves no room for text: the tokenizer adds {special} "
            f"special tokens to {texts}, so max_length must be at least {minimum} (one real "
            f"token{per_text}). {fix}"
        )
    return int(max_length)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything about ``tokenizer`` that changes the ids it produces."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    # Truncation and padding settings change with every call (and we set them per call).
    backend.pop("truncation", None)
    backend.pop("padding", None)
    kind = type(tokenizer)
    state = {
        "backend": backend,
        "truncation_side": tokenizer.truncation_side,
        "model_input_names": list(tokenizer.model_input_names),
        # Set on the Rust tokenizer per call (not in its JSON): "[SEP]" in a text is a special
        # token, or the characters [, sep, ].
        "split_special_tokens": bool(getattr(tokenizer, "split_special_tokens", False)),
        # A class that changes __call__ is called through it, and may encode its own way.
        "class": None
        if calls_backend_directly(tokenizer)
        else f"{kind.__module__}.{kind.__qualname__}",
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def _hf_identity(hf_dataset: Any) -> dict[str, Any] | None:
    """What decides a ``datasets.Dataset``'s rows, for from_hf's cache key: its fingerprint
    (the operations that made it) and the content hashes of the Arrow files it maps. Its
    fingerprint alone names a mapped file by path and time: a file replaced by other rows at
    the same mtime (``cp -p``, ``rsync -a``, ``tar x``) got the old token ids with the new
    labels. Hashing reads each file once (about 0.2 s per GB, ``file_digest``)."""
    files = sorted({entry["filename"] for entry in hf_dataset.cache_files})
    try:
        digests = [file_digest(name) for name in files]
    except OSError:  # a mapped file deleted (or unreadable) since: its rows cannot be named
        return None
    return {"fingerprint": hf_dataset._fingerprint, "files": digests}


def _cache_key(**parts: Any) -> str:
    parts["layout"] = _CACHE_LAYOUT
    parts["textbatch"] = __version__
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def load_file(
    path: str | os.PathLike,
    cache_root: Path | None = None,
    *,
    streaming: bool = False,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
) -> Any:
    """Read a data file into a ``datasets.Dataset``, or with ``streaming=True`` into a
    ``datasets.IterableDataset`` that reads the file as it is iterated (nothing cached).

    The Arrow copy ``datasets`` makes is cached under ``<cache_root>/datasets/<hash of the file's
    bytes>`` (``cache_root`` defaults to :func:`default_cache_dir`), so a replaced file is never
    read back from the cache, whatever its size and mtime; it is checked against its checksum
    when reused, and rebuilt with a warning when damaged.

    Text files (csv, tsv, json, jsonl, txt) are read in ``encoding``; a byte that does not
    decode is an error that names its offset and line, or with ``encoding_errors="replace"``
    becomes U+FFFD (with a warning that counts them). Other encodings than UTF-8 are read from
    a UTF-8 copy in the cache. Streams read UTF-8 only.
    """
    return _read_file(
        Path(path),
        cache_root,
        streaming=streaming,
        encoding=encoding,
        encoding_errors=encoding_errors,
    )[0]


def arrow_copy(
    path: str | os.PathLike,
    cache_root: Path | None = None,
    *,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
) -> ArrowCopy:
    """The cached Arrow copy of a data file, as :func:`load_file` makes and checks it, without
    memory-mapping it: for a reader that goes through the rows once, record batch by record
    batch, and should not keep the pages it read resident (``textbatch predict``)."""
    return _read_file(
        Path(path), cache_root, encoding=encoding, encoding_errors=encoding_errors, as_copy=True
    )[0]


@dataclass(frozen=True)
class ArrowCopy:
    """The Arrow IPC stream files that hold a data file's rows, in order, and their
    ``datasets`` features and row count."""

    files: list[Path]
    features: Any
    num_rows: int

    @property
    def column_names(self) -> list[str]:
        return list(self.features)


def _read_file(
    path: Path,
    cache_root: Path | None,
    *,
    streaming: bool = False,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    as_copy: bool = False,
) -> tuple[Any, str | None]:
    """:func:`load_file` (or with ``as_copy``, :func:`arrow_copy`), and the hash of the bytes
    it read (None when streaming)."""
    import datasets

    builder, options = file_format(path)
    if not path.is_file():
        raise TextBatchError(f"data file {str(path)!r} does not exist; check the path.")
    if path.stat().st_size == 0:
        raise TextBatchError(f"data file {str(path)!r} is empty; give it at least one example.")
    root = cache_root if cache_root is not None else default_cache_dir()
    if streaming and (check_encoding(encoding, encoding_errors), encoding_errors) != (
        "utf-8",
        "strict",
    ):
        raise TextBatchError(
            f"streams read UTF-8 files only, not encoding={encoding!r}, "
            f"encoding_errors={encoding_errors!r}; convert {str(path)!r} to UTF-8 first (e.g. "
            "with iconv), or read it without streaming."
        )
    source = path  # what is read: the file, or its UTF-8 copy in the cache
    try:
        if streaming:
            if builder == "csv":
                return checked_stream(path, as_text(path, options, str(path)), str(path)), None
            if builder == "json":  # read as Python's json reads it, each value as written
                return checked_json_stream(path, str(path), lines=is_json_lines(path)), None
            stream = datasets.load_dataset(
                builder, data_files=str(path), split="train", streaming=True, **options
            )
            return stream, None
        before = _file_state(path)
        digest = file_digest(path)
        folder = root / "datasets" / digest
        if builder != "parquet":  # parquet stores UTF-8 by definition
            source = utf8_source(path, folder, encoding, encoding_errors)
        if builder == "csv":
            options = as_text(source, options, str(path))
        compact = _compact_name(source, path, folder)
        if builder == "json" and compact.exists():  # made by an earlier read of these bytes
            source = compact
        try:
            dataset = _load_checked(builder, source, folder, options, str(path), as_copy=as_copy)
        except Exception as error:
            if not (builder == "json" and _without_blank_lines(error, source, compact, path)):
                raise
            dataset = _load_checked(builder, compact, folder, options, str(path), as_copy=as_copy)
        if _file_state(path) != before:  # the cache may hold other bytes than the digest's
            shutil.rmtree(folder, ignore_errors=True)
            raise TextBatchError(
                f"data file {str(path)!r} changed while it was being read; read it again once "
                "it is completely written."
            )
        return dataset, digest
    except TextBatchError:
        raise
    except Exception as error:
        blame_cache = unwritable_cache_error(error, root)
        if blame_cache is not None:
            raise blame_cache from error
        if "corresponds to no data" in str(error):  # datasets' words for a file with no rows
            raise TextBatchError(
                f"data file {str(path)!r} has no rows (a header only?); give it at least one "
                "example."
            ) from None
        if builder == "csv":
            problem = parse_error(error, source, options, str(path))
        else:
            problem = _json_problem(error, source) or f"{type(error).__name__}: {error}"
        raise TextBatchError(f"cannot read {str(path)!r} as {builder}: {problem}") from error


def _compact_name(source: Path, path: Path, folder: Path) -> Path:
    """Where :func:`_without_blank_lines` writes the copy of ``source`` (the data file
    ``path``, or its UTF-8 copy) in the cache folder ``folder``."""
    return folder / f"{'lines' if source == path else source.stem}.no-blank-lines{source.suffix}"


def _without_blank_lines(error: BaseException, source: Path, copy: Path, path: Path) -> bool:
    """Write ``copy``, the JSON Lines file ``source`` without its blank lines, and say True,
    when ``error`` is ``datasets``' failure on a column of values of several kinds in a file
    with blank lines: ``datasets`` 5 reads such a column as JSON values, but not with a blank
    line in the file, and said "changed from string to number" for a file whose one row with
    a number for a text is invalid alone. Blank lines are not records: the rows are the same.
    False (nothing written) for any other error or file. A line Python's ``json`` reads but
    textbatch refuses (a key given twice) is an error naming its line of ``path``, the user's
    file, not of the copy."""
    if not any(") changed from" in str(seen) for seen in causes(error)):
        return False
    if not is_json_lines(source):
        return False
    with open(source, encoding="utf-8-sig") as lines:  # a plain read before any JSON is decoded
        if all(line.strip() for line in lines):
            return False
    if _bad_json_line(source) is not None:  # the error names it, in Python's words
        return False
    for _ in json_lines_rows(source, str(path)):  # every line checked, numbered as written
        pass

    def write(tmp: str) -> None:
        with open(source, encoding="utf-8-sig") as lines, open(tmp, "w", encoding="utf-8") as out:
            out.writelines(line for line in lines if line.strip())

    atomic_write(copy, write)
    return True


def _json_problem(error: BaseException, path: Path) -> str | None:
    """What is wrong with a json file, from pyarrow's words in ``error``'s chain: a line that
    is not one JSON object (named, in Python's words), a key given twice, or a column that
    changes kind (``datasets`` before 5.0 reads no such file; later ones read the column as
    JSON values)."""
    for seen in causes(error):
        if "JSON parse error" in str(seen) and "specified twice" in str(seen):
            return f"{seen}; give each key once in an object"
        if "JSON parse error" in str(seen):
            bad = _bad_json_line(path)
            if bad is not None:
                return bad
            return (
                f"{seen}; a column's values must all be of one kind: write every text as a "
                "string, and every label as a string or every one as an integer"
            )
    return None


def _bad_json_line(path: Path) -> str | None:
    """The first line of a JSON Lines file that is not one JSON object, in Python's words (None
    when every line is one, or the file is a JSON document rather than lines)."""
    if not is_json_lines(path):
        return None
    with open(path, encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as error:
                return (
                    f"line {number} is not valid JSON ({error.msg} at column {error.colno}); "
                    "write one JSON object per line (no comma between lines, every {...} closed)"
                )
            if not isinstance(value, dict):
                return f"line {number} holds a JSON {type(value).__name__}, not an object"
    return None


def unwritable_cache_error(error: BaseException, root: Path) -> TextBatchError | None:
    """An error that blames the cache folder ``root`` when ``error`` (or what caused it) is a
    file operation that failed under it (read-only, not a folder, full), else None."""
    for seen in causes(error):
        where = getattr(seen, "filename", None)
        inside = where is not None and os.path.abspath(os.fspath(where)).startswith(
            os.path.abspath(root)
        )
        if isinstance(seen, OSError) and inside:
            return TextBatchError(
                f"cannot write to the cache folder {str(root)!r} ({seen.strerror}: {where}); "
                "make it writable, or point the TEXTBATCH_CACHE environment variable at a "
                "folder you can write."
            )
    return None


def _file_state(path: Path) -> tuple[int, ...]:
    """What changes when a file is written or replaced (ctime included, which ``touch -r``
    cannot set back). Only to notice a change while the file is read: never a cache key."""
    stat = path.stat()
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _load_checked(
    builder: str,
    path: Path,
    folder: Path,
    options: dict[str, Any],
    shown: str,
    as_copy: bool = False,
) -> Any:
    """``datasets.load_dataset`` of ``path`` (named ``shown`` in messages) with its Arrow copy
    under ``folder``: Arrow files that do not match their checksums are built again (with a
    warning); new ones get checksums. With ``as_copy``, an :class:`ArrowCopy` of those files
    instead of the loaded dataset."""
    import datasets

    loader = datasets.load_dataset_builder(
        builder, data_files=str(path), cache_dir=str(folder), **options
    )
    prepared = Path(loader.cache_dir)
    if prepared.is_dir():
        for arrow_file in sorted(prepared.glob("*.arrow")):
            problem = checksum_problem(arrow_file)
            if problem is not None:
                warnings.warn(
                    f"textbatch rebuilds the cached copy of {str(path)!r}: {arrow_file} is "
                    f"damaged ({problem}).",
                    TextBatchWarning,
                    stacklevel=2,
                )
                shutil.rmtree(prepared)
                break
    fresh = not prepared.is_dir()
    if fresh and builder == "csv":  # a stray quote joined rows, and pandas read on
        check_quotes(path, options, shown)
    if builder == "csv":
        with strict_rows():  # a row with more fields than the header is an error
            loader.download_and_prepare()
    else:
        with muted("datasets.packaged_modules.json.json"):  # its log line beside our error
            loader.download_and_prepare()
    tsv = options.get("sep") == TSV_OPTIONS["sep"]
    # .jsonl, .JSONL, or .json so written: looked at once, when the copy is made
    jsonl = fresh and builder == "json" and is_json_lines(path)
    split = loader.info.splits["train"]
    files = [prepared / Path(name).name for name in _split_files(loader, split)]
    if fresh and (tsv or jsonl):  # rows the reader built wrongly (see delimited.py)
        try:
            table = loader.as_dataset(split="train")
            if tsv:
                check_tsv_cells(table, shown)
            else:
                check_one_object_per_line(path, table.num_rows, shown)
        except TextBatchError:
            shutil.rmtree(prepared, ignore_errors=True)  # the next read raises again
            raise
    if fresh and builder == "json":  # values of several kinds in a column: read them exactly
        exact_json_columns(files, path, lines=jsonl)
    if fresh:
        for arrow_file in prepared.glob("*.arrow"):
            write_checksum(arrow_file)
    if as_copy:
        return ArrowCopy(files, loader.info.features, int(split.num_examples))
    return loader.as_dataset(split="train")


def _split_files(loader: Any, split: Any) -> list[str]:
    """The Arrow files of a prepared split, in row order (one file, or numbered shards)."""
    from datasets.naming import filenames_for_dataset_split

    return filenames_for_dataset_split(
        loader.cache_dir,
        loader.dataset_name,
        split.name,
        filetype_suffix="arrow",
        shard_lengths=split.shard_lengths,
    )


def file_format(path: Path) -> tuple[str, dict[str, Any]]:
    """The ``datasets`` builder and its options for a file, from its suffix."""
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise TextBatchError(
            f"unsupported file type {suffix or '(no suffix)'!r} for {str(path)!r}; use one of "
            f"{', '.join(FILE_FORMATS)}, or load it yourself and use TextDataset.from_hf."
        )
    return FILE_FORMATS[suffix]


def _check_columns(
    columns: list[str], text: str, text_pair: str | None, label: str | None
) -> str | None:
    """Raise for a missing column; return the label column to use (None: unlabelled)."""
    for name in (text, text_pair):
        if name is not None and name not in columns:
            raise TextBatchError(
                f"column {name!r} is not in the data; the columns are {columns}. Pass the name "
                f"of the text column as text=... (and text_pair=...).{separator_hint(columns)}"
            )
    if label is not None and label not in columns:
        if label == "label":
            return None  # the default label column is optional: unlabelled data
        raise TextBatchError(
            f"label column {label!r} is not in the data; the columns are {columns}. Pass "
            f"label=<name>, or label=None for unlabelled data.{separator_hint(columns)}"
        )
    return label


def _tokenize(
    hf_dataset: Any,
    tokenizer: Any,
    text: str,
    text_pair: str | None,
    max_length: int,
    cache_dir: str | os.PathLike | None,
    source: dict[str, Any] | None,
) -> tuple[Any, bool]:
    """Tokenise in batches with ``Dataset.map``; return the dataset and whether it came from the
    cache. The cache file is named by a key of everything that decides its contents: the rows
    (``source``, the hash of the file and the rows kept, or else the data's fingerprint), the
    tokenizer and the options. It is read only when it matches its checksum (bytes, size and
    the number of rows), else tokenised again with a warning."""
    import datasets

    keep_types = makes_token_types(tokenizer)
    features = {"input_ids": datasets.List(datasets.Value("int32"))}
    if keep_types:
        features["token_type_ids"] = datasets.List(datasets.Value("int8"))
    identity = _hf_identity(hf_dataset) if source is None else source
    if identity is None:
        cache_dir = None  # nothing to key a cache on: tokenised in memory
    fingerprint = _cache_key(
        data=identity,
        tokenizer=tokenizer_fingerprint(tokenizer),
        text=text,
        text_pair=text_pair,
        max_length=max_length,
        keep_types=keep_types,
    )
    cache_file = None if cache_dir is None else Path(cache_dir) / f"tokenized-{fingerprint}.arrow"
    from_cache = False
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        if cache_file.exists():
            problem = checksum_problem(cache_file, rows=len(hf_dataset))
            from_cache = problem is None
            if problem is not None:
                warnings.warn(
                    f"textbatch tokenises again: the cache file {cache_file} is damaged "
                    f"({problem}).",
                    TextBatchWarning,
                    stacklevel=2,
                )
                checksum_path(cache_file).unlink(missing_ok=True)

    tokenized = hf_dataset.map(
        _TokenizeBatch(tokenizer, text, text_pair, max_length, keep_types),
        batched=True,
        batch_size=_MAP_BATCH_ROWS,
        remove_columns=hf_dataset.column_names,
        features=datasets.Features(features),
        cache_file_name=None if cache_file is None else str(cache_file),
        load_from_cache_file=from_cache,
        new_fingerprint=fingerprint,
        desc="Tokenizing",
    )
    if cache_file is not None and not from_cache and cache_file.is_file():
        write_checksum(cache_file, rows=len(tokenized))
    return tokenized, from_cache


class _TokenizeBatch:
    """The ``Dataset.map`` function: a batch of texts to a ``pyarrow.Table`` of token ids, the
    fast tokenizer called on every core (see :class:`~textbatch.data.tokenize.TableTokenizer`,
    made at the first batch: a build read from the cache never needs it)."""

    def __init__(
        self,
        tokenizer: Any,
        text: str,
        text_pair: str | None,
        max_length: int,
        keep_types: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.text = text
        self.text_pair = text_pair
        self.max_length = max_length
        self.keep_types = keep_types
        self._table_tokenizer: TableTokenizer | None = None

    def __call__(self, batch: dict[str, list[Any]]) -> Any:
        if self._table_tokenizer is None:
            self._table_tokenizer = TableTokenizer(
                self.tokenizer, max_length=self.max_length, type_ids=self.keep_types
            )
        # truncation=True's ids, from only as much of each long text as truncation keeps, read
        # from the Rust encodings into Arrow in bulk
        return self._table_tokenizer(
            batch[self.text], batch[self.text_pair] if self.text_pair is not None else None
        )


def _invalid_row_error(
    hf_dataset: Any,
    text_columns: list[str],
    label: str | None,
    bad: np.ndarray,
    bad_text: np.ndarray,
) -> TextBatchError:
    row = int(np.flatnonzero(bad)[0])
    if bad_text[row]:
        values = hf_dataset[row]
        column = next(
            c for c in text_columns if not isinstance(values[c], str) or is_blank(values[c])
        )
        value = values[column]
        if value is None:
            what = "missing"
        elif isinstance(value, str) and not value.strip():
            what = f"empty ({value!r})"
        elif isinstance(value, str):
            what = f"empty ({value!r}: whitespace and invisible characters only)"
        else:
            what = f"{type(value).__name__} {value!r}, not a string"
    else:
        column, what = label, "missing"
    return TextBatchError(
        f"row {row}, column {column!r} is {what}; {int(bad.sum())} of {len(bad)} rows have "
        "missing, non-string or empty text or labels. Fix the data, or pass drop_invalid=True to "
        "drop such rows (num_dropped reports how many)."
    )


def records_to_columns(
    records: Sequence[Mapping[str, Any]],
    text: str,
    text_pair: str | None,
    label: str | None,
    *,
    drop_invalid: bool,
) -> dict[str, list[Any]]:
    """Turn records into columns, checking types first (Arrow would reject mixed types)."""
    if isinstance(records, Mapping | str):
        raise TextBatchError(
            f"records must be a list of dicts, got {type(records).__name__}; for columns use "
            "datasets.Dataset.from_dict(...) and TextDataset.from_hf."
        )
    records = list(records)
    if not records:
        raise TextBatchError("records is empty; give at least one example.")
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TextBatchError(
                f"record {i} is {type(record).__name__} {record!r}, not a dict; pass "
                "records like {'text': ..., 'label': ...}."
            )
    keys = list(dict.fromkeys(key for record in records for key in record))
    _check_columns(keys, text, text_pair, label)
    columns: dict[str, list[Any]] = {}
    for name in (text, text_pair):
        if name is None:
            continue
        values = [record.get(name) for record in records]
        for i, value in enumerate(values):
            if value is not None and not isinstance(value, str):
                if not drop_invalid:
                    raise TextBatchError(
                        f"row {i}, column {name!r} is {type(value).__name__} {value!r}, not a "
                        "string. Convert it to text, or pass drop_invalid=True to drop such "
                        "rows (num_dropped reports how many)."
                    )
                values[i] = None  # dropped with the other invalid rows
        columns[name] = values
    if label is not None and label in keys:
        values = [record.get(label) for record in records]
        # a str is its own label (what _plain_label returns for it): most labels skip the call
        values = [v if type(v) is str else _plain_label(v) for v in values]
        kinds = {_label_kind(v) for v in values if v is not None}
        if len(kinds) > 1:
            raise TextBatchError(
                f"label column {label!r} mixes {' and '.join(sorted(kinds))} labels; make every "
                "label a string or every label an int."
            )
        columns[label] = values
    return columns


def _plain_label(value: Any) -> Any:
    """A record's label as a plain Python value Arrow accepts: None for missing (NaN too),
    Python ints for numpy and whole-float integers."""
    text = label_text(value)  # raises for unusable values
    if text is None:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    number = int(text)
    if not -(2**63) <= number < 2**63:
        raise TextBatchError(
            f"label {number} does not fit a 64-bit integer; write such labels as strings."
        )
    return number


_LABEL_KINDS = {bool: "boolean", int: "int", str: "string"}


def _label_kind(value: Any) -> str:
    """What kind of label a plain value (from ``_plain_label``) is."""
    return _LABEL_KINDS[type(value)]


def _as_lists(example: Example) -> Example:
    """``example`` with its numpy arrays as Python lists (what ``TextDataset[i]`` gives)."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in example.items()}
