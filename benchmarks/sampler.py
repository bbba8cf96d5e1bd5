"""BucketBatchSampler vs transformers' length grouping: time to plan an epoch, and padding.

Speed: plan one epoch of 10 million long-tailed lengths with textbatch and with
``transformers.trainer_pt_utils.get_length_grouped_indices`` (what ``group_by_length`` uses),
on the same lengths. Padding: waste of each strategy at batch size 32 on the embedded corpus and
on 1 million synthetic long-tailed lengths, plus textbatch's token-budget mode.
Run: python benchmarks/sampler.py [--n 10000000] [--out FILE]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import best_time, corpus_dataset_and_tokenizer, save
from transformers.trainer_pt_utils import get_length_grouped_indices

from textbatch import BucketBatchSampler
from textbatch.batching.stats import padding_stats
from textbatch.bench.baselines import hf_length_grouped_batches, random_batches, sorted_batches


def long_tailed(n: int, seed: int = 0) -> np.ndarray:
    """90% a few dozen tokens, 10% a few hundred, capped at 1,024."""
    rng = np.random.default_rng(seed)
    short = rng.lognormal(np.log(30), 0.7, n)
    long = rng.lognormal(np.log(200), 0.6, n)
    return np.clip(np.where(rng.random(n) < 0.1, long, short), 3, 1024).astype(np.int64)


def plan_times(lengths: np.ndarray, batch_size: int, repeats: int) -> dict[str, float]:
    """Seconds to plan an epoch: the first one (sort keys computed), then later ones."""
    sampler = BucketBatchSampler(lengths, batch_size)
    start = time.perf_counter()
    sampler.plan(0)
    first = time.perf_counter() - start
    epochs = iter(range(1, 1000))
    later = best_time(lambda: sampler.plan(next(epochs)), repeats)
    budget = BucketBatchSampler(lengths, max_tokens=batch_size * 128)
    budget.plan(0)
    token_epochs = iter(range(1, 1000))
    tokens = best_time(lambda: budget.plan(next(token_epochs)), repeats)
    return {"textbatch_first_epoch": first, "textbatch": later, "textbatch_token_budget": tokens}


def padding_table(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[dict]:
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
    budget = BucketBatchSampler(lengths, max_tokens=max_tokens).batches()
    stats = padding_stats(lengths, budget, max_tokens=max_tokens)
    rows.append(
        {
            "strategy": f"textbatch_token_budget_{max_tokens}",
            "waste": stats.waste,
            "batches": stats.num_batches,
            "fill": stats.fill,
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="lengths to plan (speed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/sampler.json)")
    args = parser.parse_args()

    lengths = long_tailed(args.n)
    times = plan_times(lengths, args.batch_size, args.repeats)
    as_list = lengths.tolist()  # transformers' best case: a plain list
    generator = torch.Generator()

    def hf_plan() -> None:
        generator.manual_seed(0)
        get_length_grouped_indices(as_list, args.batch_size, generator=generator)

    times["hf_get_length_grouped_indices"] = best_time(hf_plan, max(1, args.repeats - 1))
    ratio = times["hf_get_length_grouped_indices"] / times["textbatch"]
    print(f"planning an epoch of {args.n:,} lengths, batch size {args.batch_size} (seconds):")
    for name, seconds in times.items():
        print(f"  {name:32s} {seconds:8.3f}")
    print(f"  textbatch is {ratio:.1f}x faster than get_length_grouped_indices")

    dataset, _ = corpus_dataset_and_tokenizer()
    padding = {
        "embedded_corpus": padding_table(dataset.lengths, args.batch_size, 4096),
        "synthetic_1m": padding_table(long_tailed(1_000_000, seed=1), args.batch_size, 4096),
    }
    for name, rows in padding.items():
        print(f"padding waste at batch size {args.batch_size}, {name}:")
        for row in rows:
            fill = f", fill {row['fill']:.1%}" if "fill" in row else ""
            print(f"  {row['strategy']:32s} {row['waste']:7.2%} ({row['batches']} batches{fill})")
    save(
        "sampler",
        {
            "n": args.n,
            "batch_size": args.batch_size,
            "plan_seconds": times,
            "speedup_vs_hf": ratio,
            "padding": padding,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
