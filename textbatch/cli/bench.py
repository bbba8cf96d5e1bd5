"""``textbatch bench`` and ``textbatch stats``: every batching strategy on the same data, and
what batching to use on it."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from textbatch.data.dataset import DEFAULT_MAX_LENGTH, resolve_max_length
from textbatch.errors import TextBatchError
from textbatch.files import write_json, write_text

BENCH_OUTPUTS = ("results.json", "results.csv", "lengths.png", "waste.png", "throughput.png")


def run_bench(
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    text: str = "text",
    text_pair: str | None = None,
    label: str = "label",
    tokenizer: str | os.PathLike | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    max_tokens: int | None = None,
    train_steps: int | None = None,
    train_repeats: int = 3,
    seed: int = 0,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    overwrite: bool = False,
    drop_invalid: bool = False,
) -> dict[str, Any]:
    """Tokenise the data once, compare every strategy on its lengths (the token budget that
    ``textbatch stats`` recommends among them), time the collators (and, with
    ``train_steps``, training, ``train_repeats`` times per strategy, interleaved), and write
    ``results.json``, ``results.csv`` and PNG plots (when matplotlib is installed) under
    ``out``. Results of an earlier run in ``out`` are replaced only with ``overwrite``.
    Returns the results."""
    from textbatch.batching.stats import length_summary
    from textbatch.bench.compare import (
        SCHEMA_VERSION,
        TRAIN_MODEL,
        collate_speed,
        compare_strategies,
        machine,
        recommend,
        train_throughput,
    )
    from textbatch.data.prepare import load_dataset_and_tokenizer

    out = Path(out)
    earlier = [name for name in BENCH_OUTPUTS if (out / name).exists()]
    if earlier and not overwrite:
        raise TextBatchError(
            f"--out {str(out)!r} holds the results of an earlier bench ({', '.join(earlier)}); "
            "pass --overwrite to replace them, or give another --out directory."
        )
    max_tokens = max_tokens or 128 * batch_size
    tokenizer, max_length = tokenizer_and_limit(tokenizer, max_length, pair=text_pair is not None)
    dataset, tok = load_dataset_and_tokenizer(
        data,
        tokenizer,
        text=text,
        text_pair=text_pair,
        label=label if train_steps else None,  # only training reads labels
        max_length=max_length,
        encoding=encoding,
        encoding_errors=encoding_errors,
        drop_invalid=drop_invalid,
    )
    lengths = dataset.lengths
    advice = recommend(lengths, batch_size, max_length, seed)
    budget = advice["max_tokens"]  # None when plain bucketing is recommended
    advice["benched_as"] = "bucket" if budget is None else "recommended"
    results = compare_strategies(
        lengths, batch_size, max_tokens, max_length, seed, recommended_max_tokens=budget
    )
    if train_steps:
        train_throughput(dataset, tok, results, train_steps, max_length, seed, train_repeats)
    report = {
        "schema": SCHEMA_VERSION,
        "source": str(data) if data is not None else "embedded corpus",
        "examples": len(dataset),
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "max_length": max_length,
        "lengths": length_summary(lengths, max_length),
        "recommendation": advice,
        "strategies": [r.as_dict() for r in results],
        "train": None
        if not train_steps
        else {"model": TRAIN_MODEL, "steps": train_steps, "repeats": train_repeats},
        "collate": collate_speed(dataset, tok, batch_size, seed=seed),
        "machine": machine(),
    }
    for name in earlier:  # what this run does not write again must not stand beside it
        (out / name).unlink(missing_ok=True)
    write_json(out / "results.json", report)
    write_text(out / "results.csv", _strategies_csv(report["strategies"]))
    try:
        from textbatch.bench.plots import plot_results

        report["plots"] = [
            str(p) for p in plot_results(out, lengths, results, max_length, report["train"])
        ]
    except ImportError:
        report["plots"] = []
        print(
            "textbatch bench: matplotlib is not installed, so no plots were drawn; "
            "pip install 'textbatch[plot]' for them. The other results are written."
        )
    return report


def _strategies_csv(records: list[dict[str, Any]]) -> str:
    """The strategy records as CSV: options as ``key=value`` pairs, runs joined by ``;``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
    writer.writeheader()
    for record in records:
        options = " ".join(f"{k}={v}" for k, v in record["options"].items())
        runs = record["train_runs"]
        runs = None if runs is None else ";".join(map(str, runs))  # as results.json has them
        writer.writerow({**record, "options": options, "train_runs": runs})
    return buffer.getvalue()


# `stats` counts each example's tokens up to max(STATS_CAP_FACTOR * --max-length, STATS_CAP_MIN)
# and reports longer ones as "> N": a 50 MB line then costs milliseconds, not minutes.
STATS_CAP_FACTOR = 16
STATS_CAP_MIN = 4096


def tokenizer_and_limit(
    tokenizer: Any, max_length: int | None, pair: bool = False
) -> tuple[Any, int]:
    """``tokenizer`` loaded once (None stays None: one is trained on the data), and
    ``max_length``, else the limit ``textbatch train`` would truncate to with it: its
    ``model_max_length`` (a tokenizer trained on the data, as without one: 512)."""
    from textbatch.data.tokenizers import load_tokenizer

    if tokenizer is not None:
        tokenizer = load_tokenizer(tokenizer)
    if max_length is None:
        max_length = (
            DEFAULT_MAX_LENGTH
            if tokenizer is None
            else resolve_max_length(tokenizer, None, pair=pair)
        )
    return tokenizer, max_length


def data_stats(
    data: str | os.PathLike | None = None,
    *,
    text: str = "text",
    text_pair: str | None = None,
    tokenizer: str | os.PathLike | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    drop_invalid: bool = False,
) -> dict[str, Any]:
    """Token lengths of the data (untruncated), how many ``max_length`` would cut, and what
    batching to use on it (``textbatch.bench.compare.recommend``).

    Lengths are counted up to ``cap = max(STATS_CAP_FACTOR * max_length, STATS_CAP_MIN)``
    tokens, so that a huge text costs no more than that: a longer example counts as ``cap + 1``.
    ``lengths["cap"]`` is that cap, ``lengths["over_cap"]`` how many examples are longer, and
    ``lengths["at_least"]`` names the figures that are then only lower bounds (the total, the
    mean, and each percentile that such an example enters); a figure over ``cap`` means "more
    than ``cap``". The count of examples over ``max_length`` stays exact.
    """
    from textbatch.batching.stats import length_summary
    from textbatch.bench.compare import recommend
    from textbatch.data.prepare import load_dataset_and_tokenizer

    tokenizer, max_length = tokenizer_and_limit(tokenizer, max_length, pair=text_pair is not None)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise TextBatchError(f"max_length={max_length!r} must be a positive number of tokens.")
    cap = max(STATS_CAP_FACTOR * max_length, STATS_CAP_MIN)
    dataset, tok = load_dataset_and_tokenizer(
        data,
        tokenizer,
        text=text,
        text_pair=text_pair,
        label=None,
        max_length=cap + 1,
        encoding=encoding,
        encoding_errors=encoding_errors,
        drop_invalid=drop_invalid,
    )
    max_length = resolve_max_length(tok, max_length, pair=text_pair is not None)
    lengths = dataset.lengths  # min(tokens, cap + 1)
    summary = length_summary(lengths)
    summary["truncated"] = int((lengths > max_length).sum())
    over = lengths > cap
    summary["cap"], summary["over_cap"] = cap, int(over.sum())
    summary["at_least"] = []
    if over.any():  # a percentile is a lower bound when it moves with the uncounted tokens
        more = np.where(over, cap + 2, lengths)
        percentiles = [k for k in summary if k[0] == "p" and k[1:].isdigit()]
        moved = [k for k in percentiles if np.percentile(more, int(k[1:])) != summary[k]]
        summary["at_least"] = ["tokens", "mean", *moved, "max"]
    return {
        "source": str(data) if data is not None else "embedded corpus",
        "max_length": max_length,
        "lengths": summary,
        "recommendation": recommend(np.minimum(lengths, max_length), batch_size, max_length, seed),
    }
