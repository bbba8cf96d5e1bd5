"""Compare batching strategies on the same lengths: padding, batches, planning time, collate
time and (optionally) training throughput. The numbers behind ``textbatch bench`` and
``textbatch stats``; the command line only prints and saves them.

``results.json`` schema (version 2)::

    {
      "schema": 2,
      "source": str, "examples": int, "batch_size": int, "max_tokens": int, "max_length": int,
      "lengths": {examples, tokens, mean, min, p50, p90, p95, p99, max, at_max_length},
      "recommendation": {strategy, batch_size, max_tokens, expected_padding, ...,
                         "benched_as": str},  # the strategies record that runs it
      "strategies": [
        {"name": str,             # pad_to_max_length, random, hf_length_grouped, sorted,
                                  # bucket, token_budget, packing, and recommended (the token
                                  # budget `textbatch stats` recommends, when it recommends one)
         "options": {...},        # batch_size, max_tokens or row capacity of the plan
         "waste": float,          # padding tokens / all tokens in the padded batches
         "real_tokens": int, "padded_tokens": int, "batches": int,
         "plan_seconds": float,   # time to plan one epoch
         "batch_size_mean": float, "max_batch_tokens": int,
         # with --train-steps N (else null): real tokens per second of the small Transformer
         # classifier over N batches of the plan, each run repeated (interleaved with the
         # other strategies); the median, every run, (max - min) / median, and whether its
         # range of runs overlaps the fastest strategy's (too close to call)
         "train_tokens_per_second": float | null, "train_runs": [float] | null,
         "train_spread": float | null, "train_within_noise_of_fastest": bool | null,
         "train_steps": int | null}  # batches each run trained: N, or all of a shorter plan
      ],
      "train": {"model": str, "steps": int, "repeats": int} | null,
      "collate": {"batch_size": int, "batches": int, "textbatch_seconds": float,
                  "hf_seconds": float, "speedup": float},
      "machine": {...}
    }
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from textbatch.batching.stats import (
    PaddingStats,
    as_lengths,
    packing_stats,
    padding_stats,
    summarise_batches,
)
from textbatch.errors import TextBatchError

SCHEMA_VERSION = 2
STRATEGIES = (
    "pad_to_max_length",
    "random",
    "hf_length_grouped",
    "sorted",
    "bucket",
    "token_budget",
    "packing",
    "recommended",
)
# The model whose training throughput --train-steps measures.
TRAIN_MODEL = "small Transformer classifier (1 layer, width 64)"


@dataclass
class StrategyResult:
    """One strategy's numbers on one epoch of the lengths."""

    name: str
    waste: float
    real_tokens: int
    padded_tokens: int
    batches: int
    plan_seconds: float
    batch_size_mean: float
    max_batch_tokens: int
    options: dict[str, int] = field(default_factory=dict)
    train_tokens_per_second: float | None = None
    train_runs: list[float] | None = None
    train_spread: float | None = None
    train_within_noise_of_fastest: bool | None = None
    train_steps: int | None = None
    plan: list[list[int]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The JSON record (without the plan itself)."""
        record = asdict(self)
        record.pop("plan")
        return record


def timed(plan: Callable[[], Any], repeats: int = 1) -> tuple[Any, float]:
    """The result of ``plan()`` and its best time in seconds over ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = plan()
        best = min(best, time.perf_counter() - start)
    return result, best


def _result(
    name: str, stats: PaddingStats, seconds: float, plan: list, options: dict[str, int]
) -> StrategyResult:
    return StrategyResult(
        name=name,
        options=options,
        waste=stats.waste,
        real_tokens=stats.real_tokens,
        padded_tokens=stats.padded_tokens,
        batches=stats.num_batches,
        plan_seconds=seconds,
        batch_size_mean=stats.batch_size_mean,
        max_batch_tokens=stats.max_batch_tokens,
        plan=plan,
    )


def _padded_to(width: int, lengths: np.ndarray, plan: list[list[int]]) -> PaddingStats:
    """Padding when every batch is padded to ``width`` tokens, whatever it holds."""
    sizes = np.fromiter(map(len, plan), dtype=np.int64, count=len(plan))
    return summarise_batches(int(lengths.sum()), sizes, sizes * width)


def compare_strategies(
    lengths: np.ndarray,
    batch_size: int,
    max_tokens: int,
    max_length: int,
    seed: int = 0,
    strategies: tuple[str, ...] | None = None,
    recommended_max_tokens: int | None = None,
) -> list[StrategyResult]:
    """Plan one epoch of ``lengths`` (tokens, already truncated to ``max_length``) with each
    strategy and measure its padding. ``max_tokens`` is the token budget of ``token_budget``
    and ``packing`` (whose rows are ``max_length`` tokens); ``recommended`` is a token budget
    of ``recommended_max_tokens`` (run only when that is given). ``strategies`` defaults to
    all of them."""
    from textbatch.batching.sampler import BucketBatchSampler
    from textbatch.bench.baselines import hf_length_grouped_batches, random_batches, sorted_batches

    lengths = as_lengths(lengths)
    if lengths.size == 0:
        raise TextBatchError("there are no lengths to compare strategies on.")
    if lengths.max() > max_length:
        raise TextBatchError(
            f"a length of {lengths.max()} exceeds max_length={max_length}; truncate first."
        )
    if strategies is None:
        strategies = tuple(
            n for n in STRATEGIES if n != "recommended" or recommended_max_tokens is not None
        )
    if "recommended" in strategies and recommended_max_tokens is None:
        raise TextBatchError("the recommended strategy needs recommended_max_tokens.")
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise TextBatchError(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}.")
    if max_tokens < max_length:
        raise TextBatchError(
            f"max_tokens={max_tokens} is below max_length={max_length}: the longest example "
            "would not fit a batch. Raise --max-tokens or lower --max-length."
        )
    plans: dict[str, Callable[[], list]] = {
        "pad_to_max_length": lambda: random_batches(len(lengths), batch_size, seed),
        "random": lambda: random_batches(len(lengths), batch_size, seed),
        "hf_length_grouped": lambda: hf_length_grouped_batches(lengths, batch_size, seed),
        "sorted": lambda: sorted_batches(lengths, batch_size),
        "bucket": lambda: BucketBatchSampler(lengths, batch_size, seed=seed).batches(),
        "token_budget": lambda: BucketBatchSampler(
            lengths, max_tokens=max_tokens, seed=seed
        ).batches(),
        "packing": lambda: BucketBatchSampler(
            lengths, max_tokens=max_tokens, packing_capacity=max_length, seed=seed
        ).batches(),
        "recommended": lambda: BucketBatchSampler(
            lengths, max_tokens=recommended_max_tokens, seed=seed
        ).batches(),
    }
    options = {
        "token_budget": {"max_tokens": max_tokens},
        "packing": {"max_tokens": max_tokens, "capacity": max_length},
        "recommended": {"max_tokens": recommended_max_tokens},
    }
    results = []
    for name in strategies:
        plan, seconds = timed(plans[name], repeats=2)  # the first run pays one-off imports
        plan = [list(map(int, batch)) for batch in plan]
        if name == "pad_to_max_length":
            stats = _padded_to(max_length, lengths, plan)
        elif name == "packing":
            stats = packing_stats(lengths, plan, max_length)
        else:
            stats = padding_stats(lengths, plan)
        results.append(
            _result(name, stats, seconds, plan, options.get(name, {"batch_size": batch_size}))
        )
    return results


def collate_speed(
    dataset: Any, tokenizer: Any, batch_size: int, batches: int = 100, seed: int = 0
) -> dict[str, float]:
    """Seconds per batch of ``PaddingCollator`` vs ``DataCollatorWithPadding`` on the same
    random batches of ``dataset`` (features as ``ds[i]`` gives them)."""
    from transformers import DataCollatorWithPadding

    from textbatch.batching.collate import PaddingCollator

    rng = np.random.default_rng(seed)
    size = min(batch_size, len(dataset))
    features = [
        [dataset[int(i)] for i in rng.choice(len(dataset), size=size, replace=False)]
        for _ in range(batches)
    ]
    ours, theirs = PaddingCollator.from_tokenizer(tokenizer), DataCollatorWithPadding(tokenizer)
    timings = {}
    for name, collate in (("textbatch", ours), ("hf", theirs)):
        _, seconds = timed(lambda collate=collate: [collate(f) for f in features], repeats=3)
        timings[name] = seconds / batches
    return {
        "batch_size": size,
        "batches": batches,
        "textbatch_seconds": timings["textbatch"],
        "hf_seconds": timings["hf"],
        "speedup": timings["hf"] / timings["textbatch"],
    }


def train_throughput(
    dataset: Any,
    tokenizer: Any,
    results: list[StrategyResult],
    steps: int,
    max_length: int,
    seed: int = 0,
    repeats: int = 3,
) -> None:
    """Train the small classifier on ``steps`` batches of each strategy's plan (all of a plan
    with fewer), spread evenly over the epoch (so that a sorted plan is not judged on its
    shortest batches), ``repeats`` times, the strategies interleaved and their order rotated
    each round (so that a busy moment of the machine does not fall on one strategy only).
    Stores the median real tokens per second, every run, the spread, whether it is within the
    noise of the fastest, and the batches trained."""
    if not dataset.has_labels:
        raise TextBatchError("--train-steps needs labelled data (a label column).")
    runs: dict[str, list[float]] = {r.name: [] for r in results}
    for round_ in range(repeats):
        shift = round_ % len(results)
        for result in results[shift:] + results[:shift]:
            runs[result.name].append(
                _train_once(dataset, tokenizer, result, steps, max_length, seed)
            )
    for result in results:
        values = np.asarray(runs[result.name])
        median = float(np.median(values))
        result.train_tokens_per_second = median
        result.train_runs = values.tolist()
        result.train_spread = float((values.max() - values.min()) / median)
        result.train_steps = len(_spread_picks(len(result.plan), steps))
    fastest = max(results, key=lambda r: r.train_tokens_per_second or 0.0)
    for result in results:
        result.train_within_noise_of_fastest = max(result.train_runs) >= min(fastest.train_runs)


def _train_once(
    dataset: Any, tokenizer: Any, result: StrategyResult, steps: int, max_length: int, seed: int
) -> float:
    """Real tokens per second of one training run on ``steps`` batches of ``result``'s plan."""
    import torch
    from torch.utils.data import DataLoader

    from textbatch.batching.collate import PackingCollator, PaddingCollator
    from textbatch.models.classifiers import TextClassifier
    from textbatch.training.loop import fit

    if result.name == "packing":
        collate: Any = PackingCollator.from_tokenizer(tokenizer, capacity=max_length, mask=False)
    elif result.name == "pad_to_max_length":
        collate = PaddingCollator.from_tokenizer(tokenizer, pad_to_multiple_of=max_length)
    else:
        collate = PaddingCollator.from_tokenizer(tokenizer)
    sample = [result.plan[i] for i in _spread_picks(len(result.plan), steps)]
    loader = DataLoader(dataset, batch_sampler=sample, collate_fn=collate)
    torch.manual_seed(seed)
    model = TextClassifier(
        len(tokenizer), dataset.num_labels, dim=64, encoder="transformer", num_layers=1,
        max_length=max_length,
    )  # fmt: skip
    history = fit(model, loader, epochs=1, lr=3e-3, seed=seed, progress=False, log=False)
    return float(history[-1]["tokens_per_second"])  # leaves out fit's thread measuring


def _spread_picks(batches: int, steps: int) -> np.ndarray:
    """``steps`` places spread evenly over a plan of ``batches`` batches (every place of a plan
    with fewer)."""
    return np.unique(np.linspace(0, batches - 1, steps).round().astype(int))


def machine() -> dict[str, Any]:
    """What a benchmark ran on: date, Python, torch, CPU count, GPU."""
    import os
    import platform
    from datetime import date

    import torch

    return {
        "date": date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def recommend(
    lengths: np.ndarray, batch_size: int, max_length: int, seed: int = 0
) -> dict[str, Any]:
    """What to use on data with these lengths: the strategy, its batch size or token budget,
    the padding to expect, and the estimated speed-up over random batches (padded tokens, and
    with attention's quadratic cost)."""
    lengths = as_lengths(lengths)
    max_tokens = batch_size * int(np.percentile(lengths, 50) + 0.5) * 2
    max_tokens = max(max_tokens, max_length)
    results = {
        r.name: r
        for r in compare_strategies(
            lengths,
            batch_size,
            max_tokens,
            max_length,
            seed,
            strategies=("random", "bucket", "token_budget"),
        )
    }
    spread = float(np.percentile(lengths, 99) / max(np.percentile(lengths, 50), 1))
    # Long tails make batch-size buckets swing in memory; a token budget keeps batches even.
    name = "token_budget" if spread > 4 else "bucket"
    chosen, random = results[name], results["random"]

    def quadratic(result: StrategyResult) -> float:
        return sum(len(b) * float(lengths[b].max()) ** 2 for b in result.plan)

    return {
        "strategy": name,
        "batch_size": batch_size if name == "bucket" else None,
        "max_tokens": max_tokens if name == "token_budget" else None,
        "expected_padding": chosen.waste,
        "random_padding": random.waste,
        "speedup_padded_tokens": random.padded_tokens / chosen.padded_tokens,
        "speedup_attention": quadratic(random) / quadratic(chosen),
        "p99_over_median": spread,
    }
