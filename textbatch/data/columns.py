"""Checks and conversions of raw columns, done in Arrow: invalid texts, and label vocabularies."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from textbatch.errors import TextBatchError

# A text is blank when it holds nothing but whitespace (Unicode separators, and control
# characters such as tabs and line breaks) and invisible format characters (zero-width space,
# byte-order mark, soft hyphen): a BERT-like tokenizer makes no tokens of it at all, so it
# would train as [CLS][SEP], and others make tokens of nothing a reader sees.
_BLANK_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
_BLANK_PATTERN = r"^[\p{Z}\p{Cc}\p{Cf}]*$"  # the same characters, for Arrow (RE2)


def is_blank(text: str) -> bool:
    """Whether ``text`` holds nothing but whitespace and invisible format characters."""
    return all(unicodedata.category(char) in _BLANK_CATEGORIES for char in text)


def blank_strings(strings: Any) -> Any:
    """:func:`is_blank` of each string of an Arrow string array (null where missing)."""
    import pyarrow.compute as pc

    return pc.match_substring_regex(strings, _BLANK_PATTERN)


def _column(hf_dataset: Any, name: str) -> Any:
    """One column as a ``pyarrow.ChunkedArray`` (row order as the dataset presents it); a
    ``string_view`` column (a parquet file written by recent pyarrow) as ``string``: not every
    compute function takes it (``take``, ``index_in``)."""
    import pyarrow as pa

    column = hf_dataset.with_format("arrow")[name]
    if getattr(pa.types, "is_string_view", lambda _: False)(column.type):  # pyarrow >= 16
        column = column.cast(pa.string())
    return column


def is_text_type(arrow_type: Any) -> bool:
    """Whether an Arrow type holds strings (string or large_string)."""
    import pyarrow as pa

    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def separator_hint(header: Sequence[str]) -> str:
    """A sentence for errors about a delimited file whose header holds a ``;`` (what Excel
    writes as "CSV" where the decimal mark is a comma), else ""."""
    if not any(";" in name for name in header):
        return ""
    return (
        " The header holds ';': a semicolon-separated file (Excel's csv in many European "
        "locales)? textbatch reads commas (.csv) and tabs (.tsv): save it with one of those."
    )


def check_text_column(hf_dataset: Any, name: str) -> None:
    """Raise when column ``name`` holds no text at all (neither strings, nor JSON values that may
    be strings, nor only nulls), saying how such a file comes about and how to write it: it
    ended in "train_tokenizer got no texts", or one row's error."""
    import pyarrow as pa

    kind = _column(hf_dataset, name).type
    if is_text_type(kind) or is_json_type(kind) or pa.types.is_null(kind):
        return
    if pa.types.is_struct(kind) or pa.types.is_map(kind):
        how = (
            "pandas' DataFrame.to_json() writes one object per column, not per row: write the "
            "file with to_json(path, orient='records', lines=True)"
        )
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        how = (
            "bytes, as some writers store strings without marking them UTF-8: decode them to "
            "strings before writing (pandas: df[column].str.decode('utf-8'))"
        )
    else:
        how = "write every text as a string"
    raise TextBatchError(f"column {name!r} holds {kind} values, not text; {how}.")


def is_json_type(arrow_type: Any) -> bool:
    """A column ``datasets`` (5 and later) reads as JSON values: a jsonl column whose values
    are of several kinds (strings and a number)."""
    return getattr(arrow_type, "extension_name", None) == "arrow.json"


def _json_values(values: Any) -> Iterator[Any]:
    """The decoded values of a JSON column (array or chunked array), None where missing."""
    for chunk in getattr(values, "chunks", [values]):
        for text in chunk.storage.to_pylist():
            yield None if text is None else json.loads(text)


def invalid_text_rows(hf_dataset: Any, columns: Sequence[str]) -> np.ndarray:
    """A boolean mask of rows whose text in any of ``columns`` is missing, non-string or blank."""
    import pyarrow.compute as pc

    bad = np.zeros(len(hf_dataset), dtype=bool)
    for name in columns:
        start = 0
        for chunk in _column(hf_dataset, name).chunks:  # the trimmed copy never holds a column
            strings, other = as_strings(chunk)
            blank = blank_strings(strings)
            bad[start : start + len(chunk)] |= other | pc.fill_null(blank, True).to_numpy(
                zero_copy_only=False
            )
            start += len(chunk)
    return bad


def invalid_text_reasons(
    hf_dataset: Any, columns: Sequence[str], rows: Sequence[int] | np.ndarray
) -> list[str]:
    """Why each of ``rows`` (as ``invalid_text_rows`` flags them) is invalid, in the words of
    ``textbatch predict``'s reason column: ``"missing text"``, ``"empty text"`` (blank) or
    ``"text is not a string"``; "text pair" instead of "text" for the second of ``columns``."""
    import pyarrow.compute as pc

    rows = np.asarray(rows, dtype=np.int64)
    reasons = np.full(len(rows), "", dtype=object)
    for name, what in zip(columns, ("text", "text pair"), strict=False):
        strings, other = as_strings(_take(_column(hf_dataset, name), rows))
        missing = strings.is_null().to_numpy(zero_copy_only=False) & ~other
        blank = pc.fill_null(blank_strings(strings), False).to_numpy(zero_copy_only=False)
        reasons[(reasons == "") & missing] = f"missing {what}"
        reasons[(reasons == "") & other] = f"{what} is not a string"
        reasons[(reasons == "") & blank] = f"empty {what}"
    return reasons.tolist()


def as_strings(values: Any) -> tuple[Any, np.ndarray]:
    """An Arrow array of texts as a string array, and a mask of the values that are present but
    not strings (null in the strings). A jsonl column whose values are of several kinds (a text
    that is a number) comes from ``datasets`` as JSON; its strings are decoded here."""
    import pyarrow as pa

    if is_text_type(values.type):
        return values, np.zeros(len(values), dtype=bool)
    if is_json_type(values.type):
        decoded = list(_json_values(values))
        strings = pa.array([v if isinstance(v, str) else None for v in decoded], pa.string())
        other = [v is not None and not isinstance(v, str) for v in decoded]
        return strings, np.array(other, dtype=bool)  # bool also when empty (float otherwise)
    present = ~values.is_null().to_numpy(zero_copy_only=False)
    return pa.nulls(len(values), pa.string()), present


def plain_text_columns(hf_dataset: Any, columns: Sequence[str]) -> Any:
    """``hf_dataset`` with any JSON-typed text column (see :func:`as_strings`) as plain
    strings, for the tokenizer; call it once every row's text is a string."""
    import pyarrow as pa

    json_columns = [name for name in columns if is_json_type(_column(hf_dataset, name).type)]
    if not json_columns:
        return hf_dataset
    return replace_columns(
        hf_dataset,
        {
            name: pa.chunked_array(
                [as_strings(chunk)[0] for chunk in _column(hf_dataset, name).chunks], pa.string()
            )
            for name in json_columns
        },
    )


def replace_columns(hf_dataset: Any, new: dict[str, Any]) -> Any:
    """``hf_dataset`` (its rows as it presents them) with the columns named in ``new`` replaced,
    in their places, as a dataset in memory: ``remove_columns`` then ``add_column`` failed on
    a dataset of one column, and ``flatten_indices`` wrote a cache file into the folder of a
    file's Arrow copy, whose checksum check then took it for damaged."""
    import datasets
    from datasets.table import InMemoryTable

    table = hf_dataset.with_format("arrow")[:]  # the presented rows, indices applied
    features = hf_dataset.features.copy()
    for name, column in new.items():
        position = table.column_names.index(name)
        table = table.set_column(position, name, column)
        features[name] = datasets.Features.from_arrow_schema(table.select([name]).schema)[name]
    # the same input and columns, the same fingerprint: from_hf's cache keys on it
    fingerprint = hashlib.blake2b(
        f"{hf_dataset._fingerprint} replace {sorted(new)}".encode(), digest_size=8
    ).hexdigest()
    info = datasets.DatasetInfo(features=features)
    return datasets.Dataset(InMemoryTable(table), info=info, fingerprint=fingerprint)


def _take(column: Any, rows: np.ndarray) -> Any:
    """``column[rows]`` as one Arrow array, taken chunk by chunk: ``pc.take`` on a chunked
    array first joins its chunks, a copy of the whole column."""
    import pyarrow as pa

    starts = np.cumsum([0, *(len(chunk) for chunk in column.chunks)])
    order = np.argsort(rows, kind="stable")
    chunk_of = np.searchsorted(starts, rows[order], side="right") - 1
    pieces = [
        column.chunk(c).take(pa.array(rows[order][chunk_of == c] - starts[c]))
        for c in np.unique(chunk_of).tolist()
    ]
    taken = pa.concat_arrays(pieces) if pieces else pa.array([], column.type)
    return taken.take(pa.array(np.argsort(order, kind="stable")))  # back in the order asked


def label_text(value: Any) -> str | None:
    """The name a label value goes by, the same for Arrow columns, records and streams: strings
    as they are, booleans as ``"true"``/``"false"``, integers (and whole floats) as digits;
    None and NaN are missing (None)."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if math.isnan(value):
            return None
        if not math.isfinite(value) or value != int(value):
            raise TextBatchError(
                f"label {value!r} is not a whole number; textbatch classifies into discrete "
                "labels: use strings or integers."
            )
        return str(int(value))
    if isinstance(value, str):
        return str(value)
    raise TextBatchError(
        f"label {value!r} is a {type(value).__name__}; labels must be strings or integers."
    )


@dataclass(frozen=True)
class LabelSpec:
    """Label ids per row (``-1`` where the label is missing) and the names they index."""

    names: list[str]
    ids: np.ndarray
    missing: np.ndarray

    def select(self, rows: np.ndarray) -> LabelSpec:
        """The same labels for a subset of rows."""
        return LabelSpec(self.names, self.ids[rows], self.missing[rows])


def _mixed_json(column: Any) -> str:
    """For a column that ``datasets`` read as JSON values of mixed kinds (a jsonl whose labels
    are ints on some rows and strings on others), which kinds and where each first occurs."""
    if not is_json_type(column.type):
        return ""
    first: dict[str, tuple[int, Any]] = {}
    for row, value in enumerate(_json_values(column)):
        if value is not None:
            first.setdefault(type(value).__name__, (row, value))
        if len(first) == 2:
            break
    shown = " and ".join(f"{kind} at row {row} ({value!r})" for kind, (row, value) in first.items())
    return f", values of several kinds ({shown})"


def resolve_labels(
    hf_dataset: Any, label: str, label_names: Sequence[Any] | None = None
) -> LabelSpec:
    """Map the ``label`` column to ids over ``label_names`` (default: the sorted unique labels).

    Labels are matched by their string form, so ``1`` and ``"1"`` are the same label. A
    ``ClassLabel`` column is read through its names. An integer label column is sorted
    numerically. A label that is not in ``label_names`` raises; a missing label is reported in
    ``missing`` for the caller to reject or drop.
    """
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    column = _column(hf_dataset, label)
    feature = hf_dataset.features.get(label)
    numeric = False
    if isinstance(feature, datasets.ClassLabel):
        ids = pc.if_else(pc.less(column, 0), None, column)  # -1 means "no label" in ClassLabel
        strings = pc.take(pa.array(feature.names, pa.string()), ids)
        if label_names is None:
            label_names = list(feature.names)
    elif is_text_type(column.type):
        strings = pc.cast(column, pa.string())
        strings = pc.if_else(blank_strings(strings), None, strings)
    elif pa.types.is_integer(column.type):
        strings = pc.cast(column, pa.string())
        numeric = True
    elif pa.types.is_boolean(column.type):
        strings = pc.cast(column, pa.string())  # "false", "true"
    elif pa.types.is_floating(column.type):
        values = column.to_numpy(zero_copy_only=False)
        present = ~np.isnan(values)  # NaN: a missing label, as pandas writes it
        wrong = present & ~(np.isfinite(values) & (values == np.round(values)))
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise TextBatchError(
                f"label column {label!r} holds a non-integer number {float(values[row])!r} "
                f"(row {row}); textbatch classifies into discrete labels: use strings or integers."
            )
        huge = present & ~((values >= -(2.0**63)) & (values < 2.0**63))  # astype wraps these
        if huge.any():
            row = int(np.flatnonzero(huge)[0])
            raise TextBatchError(
                f"label column {label!r} holds {float(values[row])!r} (row {row}), which does not "
                "fit a 64-bit integer; write such labels as strings."
            )
        whole = pa.array(np.where(present, values, 0).astype(np.int64), mask=~present)
        strings = pc.cast(whole, pa.string())
        numeric = True
    elif pa.types.is_null(column.type):
        strings = pa.nulls(len(column), pa.string())
    else:
        raise TextBatchError(
            f"label column {label!r} has type {column.type}{_mixed_json(column)}; labels must "
            "be strings or integers, every label of one kind."
        )
    strings = strings.combine_chunks() if hasattr(strings, "combine_chunks") else strings
    missing = strings.is_null().to_numpy(zero_copy_only=False)

    derived = label_names is None
    names = _label_names(strings, label_names, numeric)
    if derived:
        _check_whitespace_twins(strings, names, label)
    ids_array = pc.index_in(strings, value_set=pa.array(names, pa.string()))
    unknown = ids_array.is_null().to_numpy(zero_copy_only=False) & ~missing
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        value = strings[row].as_py()
        values = sorted(set(pc.filter(strings, pa.array(unknown)).to_pylist()))
        every = (
            " None of its labels is known: are they written another way (1.0 for 1, True for "
            "true, a ClassLabel's integer ids for its names)?"
            if unknown.sum() == (~missing).sum() and unknown.sum() > 1
            else ""
        )
        raise TextBatchError(
            f"label {value!r} (row {row}, column {label!r}) is not in label_names {names}; "
            f"{int(unknown.sum())} rows have unknown labels {values[:10]}. Add them to "
            f"label_names, or remove those rows.{every}"
        )
    ids = pc.fill_null(ids_array, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return LabelSpec(names=names, ids=ids, missing=missing)


def _check_whitespace_twins(strings: Any, names: list[str], label: str) -> None:
    """Raise when two labels of the data differ only by whitespace around them (``"business"``
    and ``"business "``): they would be two classes, and the model would learn to tell apart
    what the data's writer meant as one (a csv with every 7th label so written trained 16
    classes for 8, macro-F1 0.42 against 0.92)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    seen: dict[str, str] = {}
    for name in names:
        twin = seen.setdefault(name.strip(), name)
        if twin != name:
            rows = pc.index_in(strings, value_set=pa.array([twin, name], pa.string()))
            rows = rows.to_numpy(zero_copy_only=False)
            first = [int(np.flatnonzero(rows == k)[0]) for k in (0, 1)]
            raise TextBatchError(
                f"labels {twin!r} (row {first[0]}) and {name!r} (row {first[1]}) of column "
                f"{label!r} differ only by the spaces around them, so they would be two "
                "classes; write each label the same way in every row (strip the spaces)."
            )


def check_label_names(label_names: Sequence[Any]) -> list[str]:
    """Given label names as the names labels go by (``label_text``), or a clear error."""
    if isinstance(label_names, str):
        raise TextBatchError(
            f"label_names={label_names!r} is one string; pass a list of label names."
        )
    names = [label_text(name) for name in label_names]
    if None in names:
        raise TextBatchError(f"label_names={list(label_names)!r} holds a missing value.")
    if not names:
        raise TextBatchError("label_names is empty; give at least one label name.")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TextBatchError(f"label_names repeats {duplicates}; give each label name once.")
    return names


def _label_names(strings: Any, label_names: Sequence[Any] | None, numeric: bool) -> list[str]:
    import pyarrow.compute as pc

    if label_names is not None:
        return check_label_names(label_names)
    present = [value for value in pc.unique(strings).to_pylist() if value is not None]
    if not present:
        raise TextBatchError("every label is missing; fill the label column or pass label=None.")
    if numeric or all(_INTEGER.fullmatch(value) for value in present):
        # Integers, and labels written as integers (a csv's cells are read as text): 2 before
        # 10, and "01" beside "1" but not the same label.
        return sorted(present, key=lambda value: (int(value), value))
    return sorted(present)


_INTEGER = re.compile(r"[+-]?[0-9]+")
