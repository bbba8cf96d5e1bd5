"""Text files in the encoding they are written in: check that a file decodes before it is read
(naming the first bad byte, its offset and line), or write a UTF-8 copy of it from another
encoding, replacing undecodable bytes when asked.

Every reader ``datasets`` uses for csv, json and txt files then sees valid UTF-8: pyarrow's JSON
reader does not check it, and would otherwise fail later, on access, with a traceback.
"""

from __future__ import annotations

import codecs
import re
import warnings
from contextlib import ExitStack
from pathlib import Path

from textbatch.errors import TextBatchError, TextBatchWarning
from textbatch.files import atomic_write, write_text

CHUNK_SIZE = 16 << 20  # bytes decoded per step: 16 MiB
ENCODING_ERRORS = ("strict", "replace")
_VALID_MARK = "valid-utf-8"  # beside a file's cached copy: its bytes were checked once


def check_encoding(encoding: str, encoding_errors: str) -> str:
    """The codec's canonical name (``"latin-1"`` -> ``"iso8859-1"``), or an error naming the
    value."""
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise TextBatchError(
            f"encoding={encoding!r} is not an encoding Python knows; use e.g. 'utf-8', "
            "'latin-1', 'cp1252' or 'utf-16'."
        ) from None
    if encoding_errors not in ENCODING_ERRORS:
        raise TextBatchError(
            f"encoding_errors={encoding_errors!r} must be 'strict' (stop at a byte that does not "
            "decode) or 'replace' (replace it with U+FFFD)."
        )
    return name


def utf8_source(path: Path, folder: Path, encoding: str, encoding_errors: str) -> Path:
    """The file to read ``path`` from, as UTF-8: ``path`` itself when it is valid UTF-8 (checked
    once per content: ``folder`` is the cache folder of these bytes), else a UTF-8 copy in
    ``folder`` decoded from ``encoding`` (undecodable bytes replaced with U+FFFD, with a count,
    when ``encoding_errors="replace"``). Raises an error naming the first undecodable byte."""
    name = check_encoding(encoding, encoding_errors)
    if not name.startswith(("utf-16", "utf-32")) and _utf16_marked(path):
        # latin-1 decodes every byte: the marked file came apart into NULs and stray letters
        raise _utf16_error(path, name)
    if name == "utf-8" and encoding_errors == "strict":
        mark = folder / _VALID_MARK
        if not mark.exists():
            _decode(path, name, None)
            folder.mkdir(parents=True, exist_ok=True)
            mark.touch()
        return path
    copy = folder / f"decoded-{name}-{encoding_errors}{path.suffix}"
    # bytes replaced and C1 control characters decoded, written after the copy
    count = copy.with_name(copy.name + ".counts")
    if not count.exists():
        counts = []
        atomic_write(
            copy, lambda tmp: counts.append(_decode(path, name, Path(tmp), encoding_errors))
        )
        write_text(count, " ".join(map(str, counts[0])))
    replaced_bytes, controls = map(int, count.read_text().split())
    if controls:
        warnings.warn(
            f"textbatch decoded {controls:,} bytes of {str(path)!r} in the 0x80-0x9f range as "
            f"{name} control characters, which text almost never holds (a tokenizer drops "
            "them): the file is most likely cp1252 (what Excel writes on Windows), where they "
            "are curly quotes, dashes and the euro sign; pass encoding='cp1252'.",
            TextBatchWarning,
            stacklevel=4,
        )
    if replaced_bytes:
        warnings.warn(
            f"textbatch replaced {replaced_bytes:,} bytes of {str(path)!r} that are not valid "
            f"{name} with U+FFFD (encoding_errors='replace').",
            TextBatchWarning,
            stacklevel=4,
        )
    return copy


# Characters that decode from bytes 0x80-0x9f in latin-1: C1 controls, which text almost never
# holds, where cp1252 (Excel on Windows) has “ ” ‘ ’ – — € and others.
_C1_CONTROLS = re.compile("[\x80-\x9f]")


def _decode(
    path: Path, encoding: str, target: Path | None, errors: str = "strict"
) -> tuple[int, int]:
    """Decode ``path`` chunk by chunk (memory bounded by the chunk), writing UTF-8 to
    ``target`` when given; return how many bytes were replaced, and how many C1 control
    characters latin-1 made (0 for other encodings)."""
    latin = encoding == "iso8859-1"
    controls = 0
    decoder = codecs.getincrementaldecoder(encoding)(
        errors="strict" if errors == "strict" else _COUNTING_REPLACE
    )
    _replaced[0] = 0
    offset = 0  # bytes of the file decoded so far
    with ExitStack() as files:
        f = files.enter_context(open(path, "rb"))
        out = None
        if target is not None:
            out = files.enter_context(open(target, "w", encoding="utf-8", newline=""))
        while True:
            chunk = f.read(CHUNK_SIZE)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                raise _decode_error(path, encoding, offset, chunk, error) from None
            if latin:
                controls += len(_C1_CONTROLS.findall(text))
            if out is not None:
                out.write(text)
            if not chunk:
                break
            offset += len(chunk)
    return _replaced[0], controls


def _count_and_replace(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    _replaced[0] += error.end - error.start
    return "\ufffd", error.end


_COUNTING_REPLACE = "textbatch-counting-replace"
_replaced = [0]  # bytes replaced by the current _decode
codecs.register_error(_COUNTING_REPLACE, _count_and_replace)


def _decode_error(
    path: Path, encoding: str, offset: int, chunk: bytes, error: UnicodeDecodeError
) -> TextBatchError:
    """Where the first undecodable byte is: its file offset and line (1-based)."""
    pending = len(error.object) - len(chunk)  # bytes the decoder carried from the last chunk
    position = offset - pending + error.start
    line = _count_newlines(path, position) + 1
    bad = bytes(error.object[error.start : error.end]).hex(" ")
    if _utf16_marked(path):
        return _utf16_error(path, encoding)
    return TextBatchError(
        f"data file {str(path)!r} is not valid {encoding}: byte {bad} at offset {position:,} "
        f"(line {line:,}) cannot be decoded ({error.reason}). Pass the file's encoding as "
        "encoding=... (e.g. 'cp1252', what Excel writes on Windows, or 'latin-1'), or "
        "encoding_errors='replace' to replace such bytes with U+FFFD."
    )


def _utf16_marked(path: Path) -> bool:
    """Whether ``path`` starts with a UTF-16 byte-order mark."""
    with open(path, "rb") as f:
        return f.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _utf16_error(path: Path, encoding: str) -> TextBatchError:
    return TextBatchError(
        f"data file {str(path)!r} is not {encoding}: it starts with a UTF-16 byte-order mark "
        "(Excel's 'Unicode Text' export, tab-separated). Pass encoding='utf-16'."
    )


def _count_newlines(path: Path, end: int) -> int:
    """Newline bytes in the first ``end`` bytes of ``path``."""
    count = 0
    with open(path, "rb") as f:
        while end > 0:
            chunk = f.read(min(CHUNK_SIZE, end))
            if not chunk:
                break
            count += chunk.count(b"\n")
            end -= len(chunk)
    return count
