"""Atomic file writes: a crash never leaves a half-written checkpoint or results file behind."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # What a killed writer of this path left (a SIGKILLed predict's output, 0600).
    remove_stale_temporaries(path.parent, f".{glob.escape(path.name)}.*.tmp")
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)  # some writers (safetensors) create the file anew, with their own mode
        default_mode(tmp)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_folder(final: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Call ``fill(tmp)`` on a new folder beside ``final``, then put it in ``final``'s place
    (an existing ``final`` is replaced). Leftovers of a killed call start with
    ``.<final's name>.``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(final.parent, prefix=f".{final.name}.")
    aside = tmp.with_name(tmp.name + ".old")
    try:
        fill(tmp)
        if final.exists():
            final.rename(aside)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed into place
        shutil.rmtree(aside, ignore_errors=True)
    return final


def temporary_folder(parent: str | os.PathLike, prefix: str) -> Path:
    """A new folder under ``parent`` to fill and then rename into place, with the mode
    ``mkdir`` would give it (``tempfile.mkdtemp`` makes 0700 whatever the umask)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    default_mode(folder)
    return folder


def default_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the mode ``open()`` (a file) or ``mkdir`` (a folder) would under the
    current umask, for writers that pick their own (``mkstemp``, ``mkdtemp``, safetensors)."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")

    return atomic_write(path, write)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8), atomically."""

    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    return atomic_write(path, write)


STALE_SECONDS = 600.0  # a temporary file untouched this long has no live writer


def remove_stale_temporaries(folder: str | os.PathLike, pattern: str = "tmp*") -> list[Path]:
    """Delete the files matching ``pattern`` in ``folder`` that nobody has written to for
    :data:`STALE_SECONDS` (left by a killed writer: ``datasets`` tokenises into ``tmpXXXX``
    files beside the cache file); a file still being written is younger and kept. Returns what
    was deleted."""
    now = time.time()
    removed = []
    for path in Path(folder).glob(pattern):
        try:
            if path.is_file() and now - path.stat().st_mtime > STALE_SECONDS:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # removed by another process meanwhile
            continue
    return removed
