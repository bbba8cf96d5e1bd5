"""Building a TextDataset against the Rust tokenizer's own speed, on 1, 2, ... cores.

Two data sets: short texts (the embedded corpus, 60,000 examples) and long texts (6,000 texts of
about 3,000 words, truncated at --max-length 512). A WordPiece tokenizer trained on the corpus.
For each number of cores (1, 2, 4, ... up to ``os.cpu_count()``) a fresh process runs pinned to
that many cores with ``RAYON_NUM_THREADS`` set to it (``TOKENIZERS_PARALLELISM=false`` for one
core), so that the Rust thread pool starts with that size, and times, in interleaved rounds:

- ``encode_batch``: the floor. ``tokenizer.backend_tokenizer.encode_batch(texts)`` in one call,
  truncating at max_length (as ``__call__`` sets it), returning the Rust encodings;
- ``encode_batch_fast``: the same without character offsets (what textbatch calls);
- ``encode_batch_cut`` (long texts): ``encode_batch`` on the prefixes textbatch cuts the long
  texts to, the least tokenising a build that reads every text must do;
- ``__call__``: ``tokenizer(texts, truncation=True, max_length=..., return_attention_mask=False)``,
  the ids as Python lists;
- ``from_records``: ``TextDataset.from_records(records, tokenizer, max_length=...)``;
- ``from_file_cold``: ``TextDataset.from_file`` of a csv with an empty cache (reading the csv
  into Arrow included); ``from_file_tokenise``: the same with the csv's Arrow copy cached but
  not the tokenised file (what tokenising costs within ``from_file``);
- ``from_file_cached``: the reload that finds the tokenised cache (checksums checked).

Ratios are medians of each method over the median of ``encode_batch`` in the same process.
Run: python benchmarks/tokenizing.py [--repeats 5] [--long-repeats 3] [--cores 1 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SHORT, LONG, LONG_WORDS, MAX_LENGTH = 60_000, 6_000, 3_000, 512


def long_records(n: int, words: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` labelled texts of ``words`` words, cut from the embedded corpus run together."""
    from textbatch.data.corpus import make_corpus

    records = make_corpus(20_000, seed=seed)
    pool = " ".join(r["text"] for r in records).split()
    out = []
    for i in range(n):
        start = (i * 7919) % (len(pool) - words)
        out.append({"text": " ".join(pool[start : start + words]), "label": records[i]["label"]})
    return out


def write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(records)


def cut_prefixes(tokenizer: Any, texts: list[str], max_length: int) -> list[str]:
    """The prefixes textbatch's first cut keeps of each text (the whole of a short one)."""
    from textbatch.data import truncation

    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    first = max(truncation.CHARS_PER_TOKEN * budget, truncation.MIN_CUT)
    return [t[: truncation.cut_point(t, first)] if len(t) > 2 * first else t for t in texts]


def methods(tokenizer: Any, records: list, csv_path: Path, work: Path, max_length: int) -> dict:
    """What to time on one data set: name -> (set-up before each run, the timed call)."""
    from textbatch import TextDataset

    texts = [r["text"] for r in records]
    backend = tokenizer.backend_tokenizer
    prefixes = cut_prefixes(tokenizer, texts, max_length)

    def truncating() -> None:  # what __call__ leaves set on the backend
        backend.enable_truncation(max_length, stride=0, strategy="longest_first")

    def empty_cache() -> None:
        shutil.rmtree(work / "cold", ignore_errors=True)

    def tokenised_cache_gone() -> None:
        for path in (work / "warm").glob("tokenized-*"):
            path.unlink()

    def from_file(folder: str) -> Callable[[], Any]:
        return lambda: TextDataset.from_file(
            csv_path, tokenizer, max_length=max_length, cache_dir=work / folder
        )

    def none() -> None:
        return None

    table: dict[str, tuple[Callable[[], None], Callable[[], Any]]] = {
        "encode_batch": (truncating, lambda: backend.encode_batch(texts)),
        "encode_batch_fast": (truncating, lambda: backend.encode_batch_fast(texts)),
        "__call__": (
            none,
            lambda: tokenizer(
                texts, truncation=True, max_length=max_length, return_attention_mask=False
            ),
        ),
        "from_records": (
            none,
            lambda: TextDataset.from_records(records, tokenizer, max_length=max_length),
        ),
        "from_file_cold": (empty_cache, from_file("cold")),
        "from_file_tokenise": (tokenised_cache_gone, from_file("warm")),
        "from_file_cached": (none, from_file("warm")),
    }
    if prefixes != texts:
        table["encode_batch_cut"] = (truncating, lambda: backend.encode_batch(prefixes))
    return table


def worker(args: argparse.Namespace) -> None:
    """Time every method on both data sets in this process; print JSON."""
    import datasets

    from textbatch import load_tokenizer

    datasets.disable_progress_bars()
    tokenizer = load_tokenizer(args.tokenizer)
    out: dict[str, Any] = {"affinity": sorted(os.sched_getaffinity(0))}
    for name in args.sets:
        csv_path = Path(args.data) / f"{name}.csv"
        records = json.loads((Path(args.data) / f"{name}.json").read_text(encoding="utf-8"))
        work = Path(tempfile.mkdtemp(prefix=f"tokenize-{name}-", dir=args.data))
        table = methods(tokenizer, records, csv_path, work, args.max_length)
        table["from_file_tokenise"][1]()  # the csv's Arrow copy, for from_file_tokenise
        repeats = args.repeats if name == "short" else args.long_repeats
        times: dict[str, list[float]] = {method: [] for method in table}
        load = [os.getloadavg()[0]]
        for _ in range(repeats):  # interleaved rounds: a busy moment hits every method
            for method, (set_up, run) in table.items():
                set_up()
                start = time.perf_counter()
                result = run()
                times[method].append(time.perf_counter() - start)
                if method == "from_records":
                    tokens_kept = int(result.lengths.sum())
                del result
            load.append(os.getloadavg()[0])
        shutil.rmtree(work, ignore_errors=True)
        out[name] = {
            "examples": len(records),
            "tokens_kept": tokens_kept,
            "seconds": times,
            "load_1min": load,
        }
    print(json.dumps(out))


def summarise(seconds: dict[str, list[float]]) -> dict[str, Any]:
    """Median, spread (min, max) and ratio to the floor's median, per method."""
    floor = float(np.median(seconds["encode_batch"]))
    return {
        method: {
            "median_s": round(float(np.median(values)), 4),
            "min_s": round(min(values), 4),
            "max_s": round(max(values), 4),
            "vs_encode_batch": round(float(np.median(values)) / floor, 3),
        }
        for method, values in seconds.items()
    }


def core_counts(requested: list[int] | None) -> list[int]:
    available = len(os.sched_getaffinity(0))
    if requested:
        return [c for c in requested if c <= available]
    counts, c = [], 1
    while c < available:
        counts.append(c)
        c *= 2
    return [*counts, available]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=SHORT, help="short texts (corpus)")
    parser.add_argument("--long", type=int, default=LONG, help="long texts")
    parser.add_argument("--long-words", type=int, default=LONG_WORDS)
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH, help="tokens")
    parser.add_argument("--repeats", type=int, default=5, help="rounds on the short texts")
    parser.add_argument("--long-repeats", type=int, default=3, help="rounds on the long texts")
    parser.add_argument("--cores", type=int, nargs="*", help="default: 1, 2, 4, ... all")
    parser.add_argument("--sets", nargs="+", default=["short", "long"], choices=["short", "long"])
    parser.add_argument("--out", help="default: benchmarks/results/tokenize.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from _common import save

    from textbatch import train_tokenizer
    from textbatch.data.corpus import make_corpus

    data = Path(tempfile.mkdtemp(prefix="textbatch-tokenize-bench-"))
    try:
        short = make_corpus(args.short, seed=0)
        long = long_records(args.long, args.long_words) if "long" in args.sets else []
        for name, records in (("short", short), ("long", long)):
            (data / f"{name}.json").write_text(json.dumps(records), encoding="utf-8")
            write_csv(data / f"{name}.csv", records)
        train_tokenizer([r["text"] for r in short], vocab_size=8000).save_pretrained(
            data / "tokenizer"
        )
        runs = {}
        for cores in core_counts(args.cores):
            env = {
                **os.environ,
                "RAYON_NUM_THREADS": str(cores),
                "TOKENIZERS_PARALLELISM": "true" if cores > 1 else "false",
            }
            command = [
                sys.executable, __file__, "--worker", "--data", str(data),
                "--tokenizer", str(data / "tokenizer"), "--max-length", str(args.max_length),
                "--repeats", str(args.repeats), "--long-repeats", str(args.long_repeats),
                "--sets", *args.sets,
            ]  # fmt: skip
            pinned = sorted(os.sched_getaffinity(0))[:cores]
            print(f"{cores} core(s): cpus {pinned} ...", flush=True)
            result = subprocess.run(
                command,
                env=env,
                check=True,
                capture_output=True,
                text=True,
                preexec_fn=lambda pinned=pinned: os.sched_setaffinity(0, pinned),
            )
            runs[cores] = json.loads(result.stdout.strip().splitlines()[-1])
            for name in args.sets:
                runs[cores][name]["summary"] = summarise(runs[cores][name]["seconds"])
                show(cores, name, runs[cores][name])
    finally:
        shutil.rmtree(data, ignore_errors=True)
    scaling = {
        name: {
            method: {str(cores): runs[cores][name]["summary"][method]["median_s"] for cores in runs}
            for method in runs[min(runs)][name]["summary"]
        }
        for name in args.sets
    }
    print("\nScaling (median seconds by cores):")
    for name, table in scaling.items():
        print(f"  {name}: " + "; ".join(f"{m} {v}" for m, v in table.items()))
    save(
        "tokenize",
        {
            "options": {
                "short": args.short,
                "long": args.long,
                "long_words": args.long_words,
                "max_length": args.max_length,
                "repeats": args.repeats,
                "long_repeats": args.long_repeats,
                "sets": args.sets,
            },
            "runs": {str(cores): run for cores, run in runs.items()},
            "scaling": scaling,
        },
        args.out,
    )


def show(cores: int, name: str, run: dict[str, Any]) -> None:
    load = ", ".join(f"{x:.1f}" for x in run["load_1min"])
    print(f"  {name} ({run['examples']:,} texts, {run['tokens_kept']:,} tokens kept; load {load})")
    for method, row in run["summary"].items():
        print(
            f"    {method:20s} {row['median_s']:8.3f} s  [{row['min_s']:.3f}-{row['max_s']:.3f}]"
            f"  {row['vs_encode_batch']:5.2f}x encode_batch"
        )


if __name__ == "__main__":
    main()
