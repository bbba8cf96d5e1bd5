"""From "some data" to a tokenizer and a TextDataset: the shared first step of every command."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from textbatch._version import __version__
from textbatch.data.columns import check_text_column, is_blank, separator_hint
from textbatch.data.corpus import corpus_dataset
from textbatch.data.dataset import (
    TextDataset,
    default_cache_dir,
    load_file,
    unwritable_cache_error,
)
from textbatch.data.hashing import CHECKSUM_SUFFIX, checksum_problem, file_digest, write_checksum
from textbatch.data.tokenizers import load_tokenizer, train_tokenizer
from textbatch.errors import TextBatchError, TextBatchWarning
from textbatch.files import atomic_folder


def load_dataset_and_tokenizer(
    data: str | os.PathLike | None,
    tokenizer: Any = None,
    *,
    text: str = "text",
    text_pair: str | None = None,
    label: str | None = "label",
    max_length: int | None = None,
    label_names: Sequence[str] | None = None,
    drop_invalid: bool = False,
    vocab_size: int = 8000,
    cache_dir: Path | None = None,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
) -> tuple[TextDataset, Any]:
    """A TextDataset of a data file (cached on disk; read in ``encoding``, see
    :func:`~textbatch.data.dataset.load_file`), or of the embedded corpus when ``data`` is None,
    and its tokenizer: ``tokenizer`` loaded, or a WordPiece one trained on the texts."""
    reading = {"encoding": encoding, "encoding_errors": encoding_errors}
    options: dict[str, Any] = {
        "text": text,
        "text_pair": text_pair,
        "label": label,
        "max_length": max_length,
        "label_names": label_names,
        "drop_invalid": drop_invalid,
    }
    raw = corpus_dataset() if data is None else None
    if tokenizer is not None:
        tokenizer = load_tokenizer(tokenizer)
    else:
        if raw is None:
            tokenizer = trained_tokenizer(data, text, text_pair, vocab_size, cache_dir, **reading)
        else:
            tokenizer = train_tokenizer(texts_of(raw, text, text_pair), vocab_size=vocab_size)
    if data is None:
        return TextDataset.from_hf(raw, tokenizer, **options), tokenizer
    dataset = TextDataset.from_file(data, tokenizer, cache_dir=cache_dir, **options, **reading)
    return dataset, tokenizer


def trained_tokenizer(
    data: str | os.PathLike,
    text: str = "text",
    text_pair: str | None = None,
    vocab_size: int = 8000,
    cache_dir: Path | None = None,
    *,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
) -> Any:
    """The WordPiece tokenizer :func:`train_tokenizer` learns from the usable texts of the data
    file ``data``, trained once per data and kept under ``<cache_dir>/tokenizers/``, keyed by
    the hash of the file's bytes, the columns, the reading options, ``vocab_size`` and the
    textbatch version (training 270,000 rows, 74 MB, took 10 s on 2 cores on every ``stats``,
    ``bench`` and fresh ``train`` run). Training gives the same tokenizer for the same texts,
    so a kept one is the one training would give; one that does not match its checksums is
    trained again, with a warning."""
    root = cache_dir if cache_dir is not None else default_cache_dir()
    path = Path(data)
    if not path.is_file():  # load_file says what is wrong
        return _train_on_file(path, text, text_pair, vocab_size, root, encoding, encoding_errors)
    digest = file_digest(path)
    key = json.dumps([__version__, digest, text, text_pair, vocab_size, encoding, encoding_errors])
    folder = root / "tokenizers" / hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
    if folder.is_dir():
        problem = _kept_tokenizer_problem(folder)
        if problem is None:
            return load_tokenizer(folder)
        warnings.warn(
            f"textbatch trains the tokenizer of {str(path)!r} again: its kept copy {folder} is "
            f"damaged ({problem}).",
            TextBatchWarning,
            stacklevel=2,
        )
    tokenizer = _train_on_file(path, text, text_pair, vocab_size, root, encoding, encoding_errors)
    if file_digest(path) != digest:  # rewritten meanwhile: trained on bytes the key does not name
        return tokenizer

    def fill(tmp: Path) -> None:
        tokenizer.save_pretrained(tmp)
        for file in sorted(tmp.iterdir()):
            write_checksum(file)

    try:
        atomic_folder(folder, fill)
    except OSError as error:
        if folder.is_dir():  # another process kept the same tokenizer first
            return load_tokenizer(folder)
        blame = unwritable_cache_error(error, root)
        if blame is not None:
            raise blame from error
        raise
    return load_tokenizer(folder)  # as every later run gets it


def _train_on_file(
    path: Path,
    text: str,
    text_pair: str | None,
    vocab_size: int,
    root: Path,
    encoding: str,
    encoding_errors: str,
) -> Any:
    raw = load_file(path, root, encoding=encoding, encoding_errors=encoding_errors)
    return train_tokenizer(texts_of(raw, text, text_pair), vocab_size=vocab_size)


def _kept_tokenizer_problem(folder: Path) -> str | None:
    """Why the tokenizer kept in ``folder`` cannot be trusted (None when every file matches its
    checksum)."""
    files = [f for f in folder.iterdir() if not f.name.endswith(CHECKSUM_SUFFIX)]
    if not any(f.name == "tokenizer.json" for f in files):
        return "it has no tokenizer.json"
    for file in sorted(files):
        problem = checksum_problem(file)
        if problem is not None:
            return f"{file.name}: {problem}"
    return None


def texts_of(raw: Any, text: str, text_pair: str | None = None) -> Iterator[str]:
    """The usable texts of ``raw`` (both columns of a pair), to train a tokenizer on."""
    for column in (text, text_pair):
        if column is None:
            continue
        if column not in raw.column_names:
            raise TextBatchError(
                f"column {column!r} is not in the data; the columns are {raw.column_names}. "
                f"Pass the text column's name (--text-column).{separator_hint(raw.column_names)}"
            )
        check_text_column(raw, column)
        yield from (t for t in raw[column] if isinstance(t, str) and not is_blank(t))


def corpus_train_eval(
    size: int = 20_000, seed: int = 0, max_length: int | None = None, eval_fraction: float = 0.1
) -> tuple[TextDataset, TextDataset, Any]:
    """The embedded corpus split into training and evaluation sets, tokenised (truncated at
    ``max_length``) with a WordPiece tokenizer trained on the training part:
    ``(train, evaluation, tokenizer)``."""
    raw = corpus_dataset(size, seed).train_test_split(test_size=eval_fraction, seed=seed)
    tokenizer = train_tokenizer(raw["train"]["text"], vocab_size=8000)
    train = TextDataset.from_hf(raw["train"], tokenizer, max_length=max_length)
    evaluation = TextDataset.from_hf(
        raw["test"], tokenizer, max_length=max_length, label_names=train.label_names
    )
    return train, evaluation, tokenizer
