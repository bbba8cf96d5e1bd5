"""Reading csv, tsv and jsonl files so that a malformed file is an error, never other rows.

pandas (which ``datasets`` reads delimited files with) guesses each column's type per 10,000
rows (labels "1", "01" and "001" became one integer), quietly makes the first field the index
when every row has one field more than the header (an unquoted comma in a text), names a
repeated header ``text.1``, and in a tab-separated file takes a ``"`` at a field's start as a
quote that runs on across tabs and lines, joining rows. Here every cell is read as the text it
is, no column is ever the index, a row with more fields than the header is an error that names
its line, so is a header that names a column twice, and so is a tsv cell that holds a tab and a
line break: only quotes put them there, and both at once is the mark of a quote that was meant
as text and joined rows. A jsonl line with two JSON objects (read as two rows, which shifts the
row numbers of every later line) is an error too.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textbatch.data.columns import is_json_type, is_text_type, separator_hint
from textbatch.errors import TextBatchError, causes

# Cells such as "NA", "None", "null" or "nan" are text, not missing values (pandas' default);
# only an empty cell is missing. No column is ever the index.
CSV_OPTIONS: dict[str, Any] = {"keep_default_na": False, "na_values": [""], "index_col": False}
TSV_OPTIONS: dict[str, Any] = {**CSV_OPTIONS, "sep": "\t"}


def _reader(handle: Any, options: dict[str, Any]) -> Iterator[list[str]]:
    quoting = options.get("quoting", csv.QUOTE_MINIMAL)
    return csv.reader(handle, delimiter=options.get("sep", ","), quoting=quoting)


def as_text(path: Path, options: dict[str, Any], shown: str) -> dict[str, Any]:
    """``options`` for reading the delimited UTF-8 file ``path`` with every column as text,
    as written: pandas would guess types per 10,000 rows, read labels "1", "01" and "001" as
    the same integer, and fail on a column that turns to words after 10,000 numbers. Raises
    when the header names a column twice."""
    import datasets

    with open(path, encoding="utf-8-sig", newline="") as handle:
        header = next(_reader(handle, options), [])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise TextBatchError(
            f"the header of {shown!r} names column {repeated[0]!r} {header.count(repeated[0])} "
            f"times (the header: {header}); give every column its own name."
        )
    # pandas names a column without a header (the index that DataFrame.to_csv writes first)
    # "Unnamed: <position>"; the features must name it the same.
    names = [name or f"Unnamed: {position}" for position, name in enumerate(header)]
    text = datasets.Features({name: datasets.Value("string") for name in names})
    return {**options, "features": text}


@contextmanager
def muted(logger: str) -> Iterator[None]:
    """No records from ``logger`` in the block: ``datasets``' json and csv readers log a parse
    error ("Failed to load JSON from file ...") before raising it, and the error textbatch
    raises says it in one line."""
    import logging

    quiet = logging.getLogger(logger)
    level = quiet.level
    quiet.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        quiet.setLevel(level)


@contextmanager
def strict_rows() -> Iterator[None]:
    """pandas' warning that a row had more fields than the header (and lost them) raised."""
    from pandas.errors import ParserWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=ParserWarning)
        yield


def parse_error(error: BaseException, path: Path, options: dict[str, Any], shown: str) -> str:
    """What went wrong reading ``path``, in pandas' words (the first cause in ``error``'s
    chain), naming the first row with more fields than the header when that is it."""
    from pandas.errors import ParserWarning

    *_, root = causes(error)
    if isinstance(root, ParserWarning):
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = _reader(handle, options)
            header = next(reader, [])
            for index, row in enumerate(reader):
                if len(row) > len(header):
                    return (
                        f"row {index} (line {reader.line_num}) of {shown!r} has {len(row)} "
                        f"fields, more than the header's {len(header)}: a text that holds the "
                        f'separator must be quoted ("...").{separator_hint(header)}'
                    )
        return f"a row of {shown!r} has more fields than the header"
    return f"{type(root).__name__}: {root}"


def check_quotes(path: Path, options: dict[str, Any], shown: str) -> None:
    """Raise where a quoted field's closing ``"`` is followed by more of the field: a ``"``
    that opens a field quotes it up to the next ``"``, across separators and lines, so a stray
    one joined the next rows into one text (with their labels), and pandas reads on without a
    word; a quoted word at a field's start (``"Top" coach``) lost its quotes the same way."""
    for _ in strict_records(path, options, shown):
        pass


def strict_records(path: Path | str, options: dict[str, Any], shown: str) -> Iterator[list[str]]:
    """The records of the delimited UTF-8 file ``path`` as Python's ``csv`` reads them with
    ``strict=True`` (header included); a malformed quote is an error naming its lines."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(
            handle,
            delimiter=options.get("sep", ","),
            quoting=options.get("quoting", csv.QUOTE_MINIMAL),
            strict=True,
        )
        while True:
            first = reader.line_num + 1
            limit = csv.field_size_limit(2**31 - 1)  # a cell may be over csv's 128 KiB
            try:  # the process-wide limit is raised only while a record is read
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                raise _bad_quote(first, reader.line_num, str(error), shown, options) from None
            finally:
                csv.field_size_limit(limit)
            yield record


def _bad_quote(first: int, last: int, problem: str, shown: str, options: dict[str, Any]) -> Any:
    lines = f"line {first}" if first == last else f"lines {first} to {last}"
    tsv = options.get("sep") == "\t"
    fix = (
        "If the file's quotes are text (as in GLUE's tsv files), read it with pandas "
        "(read_csv(path, sep='\\t', quoting=csv.QUOTE_NONE, keep_default_na=False)) and use "
        "TextDataset.from_records or from_hf; else quote that field whole"
        if tsv
        else 'Quote that field whole and double the quotes in it ("""Top"" coach"), or '
        "remove a stray '\"'; a file that escapes quotes with a backslash (\\\") is not csv "
        "pandas reads by default: write it with doubled quotes instead"
    )
    kind = "tsv" if tsv else "csv"
    problem = problem.replace("\t", "\\t")  # csv's "'\t' expected" held a literal tab
    if "end of data" in problem:  # no closing quote: pandas says "EOF inside string"
        return TextBatchError(
            f"{shown!r} is not valid {kind}: the '\"' that opens a field at line {first} is never "
            f"closed (EOF inside string), so it would quote every line after it. {fix}."
        )
    return TextBatchError(
        f"{shown!r} is not valid {kind} at {lines} ({problem}): a '\"' that opens a field "
        "quotes it up to the next '\"', which must end the field; here more text follows it, "
        f"so rows were joined into one text or a quoted word lost its quotes. {fix}."
    )


def check_tsv_cells(dataset: Any, shown: str) -> None:
    """Raise when a string cell of a tsv holds a tab and a line break: only quotes put them
    there, and in a tsv a ``"`` at a field's start is most often text, whose "quote" then ran
    on across the tabs and lines of the next rows and joined them into this cell."""
    import pyarrow.compute as pc

    for name in dataset.column_names:
        column = dataset.data.column(name)
        if not is_text_type(column.type):
            continue
        start = 0
        for chunk in column.chunks:
            tabbed = pc.fill_null(pc.match_substring_regex(chunk, "(?s)\t.*\n|\n.*\t"), False)
            if pc.any(tabbed).as_py():
                row = start + int(pc.index(tabbed, True).as_py())
                raise _joined_rows(row, name, chunk[row - start].as_py(), shown)
            start += len(chunk)


def _joined_rows(row: int, name: str, cell: str, shown: str) -> TextBatchError:
    return TextBatchError(
        f"row {row} of {shown!r}, column {name!r}, holds tabs and {cell.count(chr(10))} line "
        f"breaks ({cell[:60]!r}{'...' if len(cell) > 60 else ''}): a '\"' that opens a field "
        "quotes it up to the next '\"', across tabs and lines, so rows were most likely "
        "joined. If the file's quotes are text (as in GLUE's tsv files), read it with pandas "
        "(read_csv(path, sep='\\t', quoting=csv.QUOTE_NONE, keep_default_na=False)) and use "
        "TextDataset.from_records or from_hf. If that cell is meant to hold tabs and line "
        "breaks (pandas' to_csv quotes such a cell), read it with pandas "
        "(read_csv(path, sep='\\t', keep_default_na=False)) and use TextDataset.from_records, "
        "or write the file as csv or jsonl."
    )


def checked_stream(path: Path, options: dict[str, Any], shown: str) -> Any:
    """A ``datasets.IterableDataset`` that streams the delimited file ``path`` (read with
    ``options``, see :func:`as_text`) with the checks a full read makes, as each row is read:
    a row with more fields than the header, an unreadable row, and in a tsv a cell with tabs
    and line breaks, are errors that name the row, where a plain stream cut the extra fields
    off with a warning, joined rows, or raised pandas' error from inside the loop."""
    import datasets

    return datasets.IterableDataset.from_generator(
        _checked_rows,
        features=options.get("features"),
        # a list in gen_kwargs would be taken for shards: the options travel as one dict
        gen_kwargs={"path": str(path), "options": {"read": options}, "shown": shown},
    )


def _checked_rows(path: str, options: dict[str, Any], shown: str) -> Iterator[dict[str, Any]]:
    import datasets

    read = options["read"]
    tsv = read.get("sep") == "\t"
    stream = datasets.load_dataset("csv", data_files=path, split="train", streaming=True, **read)
    rows = iter(stream)
    # Python's csv, strict, read beside pandas' rows: a malformed quote is an error by the time
    # pandas has read as many rows as csv records before it (at the latest, at the end)
    records = (record for record in strict_records(path, read, shown) if record)
    next(records, None)  # the header
    try:
        for index in itertools.count():
            # pandas' extra-fields warning raised and datasets' log line muted while a row is
            # read, not while the stream waits between rows (both settings are process-wide)
            with strict_rows(), muted("datasets.packaged_modules.csv.csv"):
                row = next(rows, None)
            if row is None:
                break
            next(records, None)
            if tsv:
                for name, cell in row.items():
                    if isinstance(cell, str) and "\t" in cell and "\n" in cell:
                        raise _joined_rows(index, name, cell, shown)
            yield row
        for _ in records:
            pass
    except TextBatchError:
        raise
    except Exception as error:
        for _ in records:  # a malformed quote ahead, which pandas met first: name it, as a
            pass  # full read of the file does
        problem = parse_error(error, Path(path), read, shown)
        raise TextBatchError(f"cannot read {shown!r} as csv: {problem}") from error
    finally:
        rows.close()  # the file, also when the loop stops early or raised


def is_json_lines(path: Path) -> bool:
    """Whether the json file ``path`` (UTF-8) is JSON Lines, one object per line, as ``.jsonl``
    files are and as ``Dataset.to_json`` and pandas' ``lines=True`` write ``.json`` files: its
    first character after white space (and a byte-order mark) is ``{``, not ``[``."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        while chunk := handle.read(1 << 16):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0] == "{"
    return False


def json_columns(path: Path, names: list[str], lines: bool) -> dict[str, list[Any]]:
    """The values of columns ``names`` of every row of the json file ``path`` (None where a row
    lacks one), as Python's ``json`` reads them, in one pass: ``datasets`` reads a column whose
    values are of several kinds as JSON values, and keeps a string that is itself JSON
    (``"123"``, ``"null"``, a quoted ``"great"``) as that JSON, so that ``"123"`` came back as
    123 and ``"null"`` as None."""
    if lines:
        rows: Any = _json_rows(str(path), str(path))
    else:
        with open(path, encoding="utf-8-sig") as handle:
            data = json.load(handle)
        rows = (
            [row if isinstance(row, dict) else {} for row in data] if isinstance(data, list) else []
        )
    values: dict[str, list[Any]] = {name: [] for name in names}
    for row in rows:
        for name in names:
            values[name].append(row.get(name))
    return values


def exact_json_columns(files: list[Path], path: Path, lines: bool) -> None:
    """Rewrite the JSON-typed columns of the Arrow copy ``files`` (in row order) of the json
    file ``path`` with each value as Python's ``json`` reads it (see :func:`json_columns`), so
    that every reader of the copy decodes them exactly. A file without such a column is left
    as it is."""
    import pyarrow as pa

    values: dict[str, list[Any]] | None = None
    start = 0
    for file in files:
        with pa.memory_map(str(file)) as source:
            table = pa.ipc.open_stream(source).read_all()
        fields = [field for field in table.schema if is_json_type(field.type)]
        if not fields:
            return
        if values is None:  # every file has the same columns: the json file is read once
            values = json_columns(path, [field.name for field in fields], lines)
        for field in fields:
            rows = values[field.name][start : start + table.num_rows]
            storage = pa.array(
                [None if v is None else json.dumps(v, ensure_ascii=False) for v in rows],
                field.type.storage_type,
            )
            column = pa.ExtensionArray.from_storage(field.type, storage)
            table = table.set_column(table.schema.get_field_index(field.name), field, column)
        start += table.num_rows
        temporary = file.with_name(f".{file.name}.exact")
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
            out.write_table(table)
        os.replace(temporary, file)


def checked_json_stream(path: Path, shown: str, lines: bool = True) -> Any:
    """A ``datasets.IterableDataset`` of the rows of the JSON Lines file ``path`` (with
    ``lines=False``, of the JSON array of objects it holds) as Python's ``json`` reads them: a
    line with two objects or no JSON is an error naming it (``datasets`` read such a line as
    two rows, or raised from inside the loop), and a column of values of several kinds keeps
    each value as written (``datasets`` read a text ``"123"`` as the number 123 there). An
    array is read whole, as ``datasets`` reads one."""
    import datasets

    rows = _json_rows if lines else _json_array_rows
    return datasets.IterableDataset.from_generator(
        rows, gen_kwargs={"path": str(path), "shown": shown}
    )


def _json_array_rows(path: str, shown: str) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8-sig") as handle:
        try:
            data = json.load(handle, object_pairs_hook=_unique_keys)
        except ValueError as error:
            raise TextBatchError(f"{shown!r} cannot be read as JSON: {error}") from None
    if not isinstance(data, list):
        raise TextBatchError(
            f"{shown!r} holds a JSON {type(data).__name__}, not a list of objects; write one "
            'object per row ([{"text": ..., "label": ...}, ...]) or one per line.'
        )
    for number, row in enumerate(data):
        if not isinstance(row, dict):
            raise TextBatchError(
                f"item {number} of {shown!r} is a {type(row).__name__}, not an object "
                '({"text": ..., "label": ...}).'
            )
        yield row


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row = dict(pairs)
    if len(row) < len(pairs):
        repeated = next(key for key, _ in pairs if sum(k == key for k, _ in pairs) > 1)
        raise ValueError(f"key {repeated!r} is given twice in one object")
    return row


def json_lines_rows(path: Path, shown: str) -> Iterator[dict[str, Any]]:
    """The rows of the JSON Lines file ``path`` as Python's ``json`` reads them, a line that is
    not one object with keys given once an error naming its line of ``shown``."""
    return _json_rows(str(path), shown)


def _json_rows(path: str, shown: str) -> Iterator[dict[str, Any]]:
    decoder = json.JSONDecoder(object_pairs_hook=_unique_keys)  # json keeps the last silently
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                row, end = decoder.raw_decode(text)
            except ValueError as error:
                raise TextBatchError(
                    f"line {number} of {shown!r} cannot be read: {error}"
                ) from None
            if text[end:].strip():
                raise _two_objects(number, text, shown)
            if not isinstance(row, dict):
                raise TextBatchError(
                    f"line {number} of {shown!r} holds a {type(row).__name__}, not an object "
                    '({"text": ..., "label": ...}); write one object per line.'
                )
            yield row


def _two_objects(number: int, text: str, shown: str) -> TextBatchError:
    return TextBatchError(
        f"line {number} of {shown!r} holds more than one JSON object "
        f"({text[:60]!r}{'...' if len(text) > 60 else ''}); a JSON Lines file holds one object "
        "per line: put each on a line of its own."
    )


def check_one_object_per_line(path: Path, rows: int, shown: str) -> None:
    """Raise when a jsonl file has more rows than lines with something on them: a line that
    holds two JSON objects is read as two rows, and every later row's number would no longer
    be its line's (``predict``'s ``row`` column)."""
    with open(path, "rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    if rows <= lines:
        return
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            try:
                _, end = decoder.raw_decode(text)
            except ValueError:
                continue
            if text[end:].strip():
                raise _two_objects(number, text, shown)
    raise TextBatchError(
        f"{shown!r} holds {rows} JSON objects on {lines} lines; a JSON Lines file holds one object "
        "per line: put each on a line of its own."
    )
