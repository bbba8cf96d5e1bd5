"""``textbatch predict``: one output row per input row, in input order, streamed a chunk at a time.

The data file is read (as ``from_file`` reads it: its cached Arrow copy) a chunk of rows at a
time, without memory-mapping the whole copy; each chunk is checked, tokenised exactly as
``TextDataset.from_hf`` tokenises, predicted in batches of similar length and written out, so
memory stays flat however many rows the file holds.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textbatch.batching.collate import PaddingCollator
from textbatch.batching.loaders import make_loader
from textbatch.checks import positive_int
from textbatch.cli.recipes import INPUTS_FILE
from textbatch.data.columns import invalid_text_reasons, invalid_text_rows
from textbatch.data.dataset import ArrowCopy, TextDataset, arrow_copy
from textbatch.data.tokenizers import load_tokenizer
from textbatch.errors import TextBatchError
from textbatch.files import atomic_write
from textbatch.models.classifiers import CONFIG_FILE, load_model
from textbatch.training.loop import predict_proba, resolve_device

PREDICTION_COLUMNS = ("row", "label", "probability", "reason")
PREDICT_CHUNK_ROWS = 8_192  # input rows read, predicted, then written, at a time


@dataclass(frozen=True)
class PredictSummary:
    """What ``predict_file`` wrote: ``rows`` output rows, one per input row, of which
    ``not_predicted`` (rows per reason, most frequent first) have no prediction."""

    rows: int
    not_predicted: dict[str, int] = field(default_factory=dict)

    @property
    def predicted(self) -> int:
        return self.rows - sum(self.not_predicted.values())

    def describe_not_predicted(self) -> str:
        """One line on the rows not predicted, for the user."""
        return (
            f"{self.rows - self.predicted:,} of {self.rows:,} rows could not be predicted "
            f"({count_reasons(self.not_predicted)}); see the reason column"
        )


def predict_file(
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    text: str = "text",
    text_pair: str | None = None,
    batch_size: int | None = 64,
    max_tokens: int | None = None,
    device: str = "auto",
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    overwrite: bool = False,
    progress: bool = False,
    chunk_rows: int = PREDICT_CHUNK_ROWS,
) -> PredictSummary:
    """Write one output row per row of ``data``, in input order, to ``out`` (``.csv`` or
    ``.jsonl``): ``row``, ``label``, ``probability`` and ``reason``.

    A row whose text is missing, blank or not a string cannot be predicted: its label and
    probability are empty (null in JSON Lines) and ``reason`` says why (``"empty text"``); the
    other rows' reason is empty. Raises when no row at all can be predicted. Rows are read,
    tokenised (truncated to the length the model was trained with), predicted and written
    ``chunk_rows`` at a time, into a temporary file that takes ``out``'s place at the end:
    memory does not grow with the file, and a failed run leaves no partial output behind. An
    existing ``out`` is replaced only with ``overwrite``; the data file never is.
    """
    out = Path(out)
    if out.suffix not in (".csv", ".jsonl"):
        raise TextBatchError(f"--out {str(out)!r} must end in .csv or .jsonl.")
    if out.exists() and out.resolve() == Path(data).resolve():
        raise TextBatchError(
            f"--out {str(out)!r} is the --data file; write the predictions to another file."
        )
    if out.exists() and not overwrite:
        raise TextBatchError(
            f"--out {str(out)!r} exists; pass --overwrite to replace it, or give another file."
        )
    chunk_rows = positive_int("chunk_rows", chunk_rows, allow_none=False)
    _check_inputs(Path(model_dir), text_pair)  # before the model is loaded
    model, tok = model_and_tokenizer(Path(model_dir))
    names = model.config.get("label_names") or [str(i) for i in range(model.num_labels)]
    columns = [text] if text_pair is None else [text, text_pair]
    raw = arrow_copy(data, encoding=encoding, encoding_errors=encoding_errors)
    for name in columns:  # from_hf's own check, before anything is written
        if name not in raw.column_names:
            raise TextBatchError(
                f"column {name!r} is not in {str(data)!r}; the columns are {raw.column_names}. "
                "Name the text column with --text-column (and --text-pair-column)."
            )
    total = raw.num_rows
    predictor = _ChunkPredictor(
        model, tok, text, text_pair, batch_size, max_tokens, resolve_device(device)
    )
    reasons: Counter[str] = Counter()

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f, _progress(total, progress) as bar:
            if out.suffix == ".csv":
                csv.writer(f).writerow(PREDICTION_COLUMNS)
            start = 0
            for chunk in _chunks(raw, chunk_rows):
                rows, why = predictor.rows(chunk, start, names, columns)
                write_rows(f, out.suffix, rows)
                reasons.update(why)
                start += len(chunk)
                bar.update(len(chunk))
        if sum(reasons.values()) == total:
            raise TextBatchError(
                f"no row of {str(data)!r} can be predicted: each of its {total:,} rows has "
                f"missing, empty or non-string text in column {' or '.join(map(repr, columns))} "
                f"({count_reasons(reasons)}). Check --text-column, or give rows with text."
            )

    atomic_write(out, write)
    return PredictSummary(total, dict(reasons.most_common()))


# What a saved tokenizer folder holds (either file).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# The folders `textbatch train --out run` writes a model to, beside run/tokenizer/.
TRAINED_MODEL_FOLDERS = ("model", "model-last")


def model_folder(directory: Path) -> Path:
    """The model folder of a ``train`` output directory (its ``model/``), or ``directory``."""
    return directory / "model" if (directory / "model").is_dir() else directory


def model_and_tokenizer(directory: Path) -> tuple[torch.nn.Module, Any]:
    """The model and tokenizer of a ``train`` output directory (``model/`` and
    ``tokenizer/``), of its ``model/`` or ``model-last/`` folder (the tokenizer beside it), or of
    a model directory that holds its tokenizer."""
    model_dir = model_folder(directory)
    if not (model_dir / CONFIG_FILE).is_file():
        raise TextBatchError(
            f"--model {str(directory)!r} is not a model folder: it has no model/{CONFIG_FILE}. "
            "Pass the --out directory of `textbatch train`."
        )
    candidates = [directory / "tokenizer", model_dir / "tokenizer"]
    if model_dir.name in TRAINED_MODEL_FOLDERS:  # e.g. run/model-last: run/tokenizer beside it
        candidates.append(model_dir.parent / "tokenizer")
    candidates.append(model_dir / "backbone")  # a backbone saved with its tokenizer
    for candidate in candidates:
        if any((candidate / name).is_file() for name in TOKENIZER_FILES):
            return load_model(model_dir), load_tokenizer(candidate)
    raise TextBatchError(
        f"no tokenizer found with the model in {str(directory)!r}; pass the directory that "
        "`textbatch train --out` wrote (its tokenizer/ folder is missing)."
    )


def _check_inputs(directory: Path, text_pair: str | None) -> None:
    """Refuse a text pair column for a model trained on single texts, and its absence for one
    trained on pairs: either way it would predict, confidently, from what it never learnt on.
    (Models saved before textbatch recorded this are not checked.)"""
    model_dir = model_folder(directory)
    if not (model_dir / INPUTS_FILE).is_file():
        return
    pairs = bool(json.loads((model_dir / INPUTS_FILE).read_text())["text_pair"])
    if pairs and text_pair is None:
        raise TextBatchError(
            f"the model in {str(directory)!r} was trained on text pairs; name the data's second "
            "text column with --text-pair-column."
        )
    if not pairs and text_pair is not None:
        raise TextBatchError(
            f"the model in {str(directory)!r} was trained on single texts, not pairs; leave out "
            f"--text-pair-column {text_pair}."
        )


def _chunks(raw: ArrowCopy, rows: int) -> Iterator[Any]:
    """The rows of an Arrow copy as in-memory ``datasets.Dataset``s of ``rows`` rows (the last
    one shorter), read from disk record batch by record batch rather than memory-mapped, so
    that memory holds about one chunk whatever the size of the file."""
    import datasets
    import pyarrow as pa

    pending: list[Any] = []
    count = 0
    info = datasets.DatasetInfo(features=raw.features)
    for name in raw.files:
        with pa.OSFile(str(name)) as source:
            reader = pa.ipc.open_stream(source)
            for batch in reader:
                pending.append(batch)
                count += batch.num_rows
                while count >= rows:
                    table = pa.Table.from_batches(pending, schema=reader.schema)
                    yield datasets.Dataset(table.slice(0, rows), info=info)
                    rest = table.slice(rows)
                    pending, count = rest.to_batches(), rest.num_rows
            schema = reader.schema
    if count:
        yield datasets.Dataset(pa.Table.from_batches(pending, schema=schema), info=info)


class _ChunkPredictor:
    """Predicts the rows of one chunk: its rows with text tokenised as ``from_hf`` does, in
    batches of similar length (a full sort by length, as evaluation uses)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tok: Any,
        text: str,
        text_pair: str | None,
        batch_size: int | None,
        max_tokens: int | None,
        device: torch.device,
    ) -> None:
        self.model, self.tok, self.text, self.text_pair = model, tok, text, text_pair
        self.batch_size, self.max_tokens, self.device = batch_size, max_tokens, device
        self.collate = PaddingCollator.from_tokenizer(tok)
        self.max_length = model.config.get("max_length")  # what the model was trained with

    def rows(
        self, chunk: Any, start: int, names: list[str], columns: list[str]
    ) -> tuple[list[tuple[Any, ...]], list[str]]:
        """Output rows for the chunk's input rows (numbered from ``start``), and the reason of
        each row that could not be predicted."""
        bad = invalid_text_rows(chunk, columns)  # the rows from_hf's drop_invalid drops
        reasons = invalid_text_reasons(chunk, columns, np.flatnonzero(bad))
        best = np.zeros(int((~bad).sum()), dtype=np.int64)
        probability = np.zeros(len(best), dtype=np.float32)
        if len(best):
            keep = np.flatnonzero(~bad)
            dataset = self._tokenize(chunk if len(keep) == len(chunk) else chunk.select(keep))
            self._check_budget(dataset.lengths, keep, start, len(chunk))
            best, probability = predict_rows(
                self.model, dataset, self.collate, self.batch_size, self.max_tokens, self.device
            )
        return prediction_rows(start, bad, names, best, probability, reasons), reasons

    def _check_budget(self, lengths: np.ndarray, keep: np.ndarray, start: int, rows: int) -> None:
        """Raise, naming the file's row, when an example is longer than ``--max-tokens``: the
        sampler's own error numbered it among the chunk's rows with text."""
        if self.max_tokens is None:
            return
        over = np.flatnonzero(lengths > self.max_tokens)
        if len(over):
            raise TextBatchError(
                f"row {start + int(keep[over[0]])} has {int(lengths[over[0]])} tokens, more "
                f"than --max-tokens {self.max_tokens} ({len(over)} of rows {start} to "
                f"{start + rows - 1} have more). Raise --max-tokens to at least the longest "
                "example."
            )

    def _tokenize(self, chunk: Any) -> TextDataset:
        with _quiet_datasets():  # one progress bar for the whole file instead
            return TextDataset.from_hf(
                chunk,
                self.tok,
                text=self.text,
                text_pair=self.text_pair,
                label=None,
                max_length=self.max_length,
            )


def predict_rows(
    model: torch.nn.Module,
    dataset: Any,
    collate: Any,
    batch_size: int | None,
    max_tokens: int | None,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """The most probable label of each example of ``dataset`` and its probability, predicted
    in batches of similar length (a full sort by length, as evaluation uses)."""
    best = np.zeros(len(dataset), dtype=np.int64)
    probability = np.zeros(len(dataset), dtype=np.float32)
    loader = make_loader(
        dataset, collate, batch_size=batch_size, max_tokens=max_tokens, shuffle=False, device=device
    )
    batches = loader.batch_sampler.batches()
    for indices, probs in zip(batches, predict_proba(model, loader, device), strict=True):
        probs = probs.numpy()
        labels = probs.argmax(1)
        best[indices] = labels
        probability[indices] = probs[np.arange(len(labels)), labels]
    return best, probability


def prediction_rows(
    start: int,
    failed: np.ndarray,
    names: list[str],
    best: np.ndarray,
    probability: np.ndarray,
    reasons: list[str],
) -> list[tuple[Any, ...]]:
    """Output rows (``PREDICTION_COLUMNS``) for input rows ``start`` on: a prediction for each
    row that is not ``failed``, the next of ``reasons`` (with no label) for each that is."""
    predictions = iter(zip(best.tolist(), probability.tolist(), strict=True))
    why = iter(reasons)
    rows: list[tuple[Any, ...]] = []
    for row, no_text in enumerate(failed.tolist(), start):
        if no_text:
            rows.append((row, None, None, next(why)))
        else:
            label, p = next(predictions)
            rows.append((row, names[label], round(p, 6), None))
    return rows


def write_rows(f: Any, suffix: str, rows: list[tuple[Any, ...]]) -> None:
    """Rows as CSV (None as an empty cell) or JSON Lines (None as null)."""
    if suffix == ".csv":
        csv.writer(f).writerows(rows)
    else:
        f.write(
            "".join(json.dumps(dict(zip(PREDICTION_COLUMNS, r, strict=True))) + "\n" for r in rows)
        )


def count_reasons(reasons: dict[str, int]) -> str:
    """``"empty text"`` for one reason, ``"2 empty text, 1 missing text"`` for several."""
    if len(reasons) == 1:
        return next(iter(reasons))
    counts = sorted(reasons.items(), key=lambda item: -item[1])
    return ", ".join(f"{count:,} {reason}" for reason, count in counts)


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No ``datasets`` progress bars inside the block (restored after it)."""
    import datasets

    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


@contextmanager
def _progress(total: int, show: bool) -> Iterator[Any]:
    """A progress bar over the input rows (a silent stand-in when ``show`` is False)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="Predicting", unit=" rows", disable=not show)
    try:
        yield bar
    finally:
        bar.close()
