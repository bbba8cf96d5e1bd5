"""Training time per epoch: bucketed vs random batches, same model, batch size and data.

Trains the small Transformer classifier (1 layer, width 64) on the embedded corpus (long-tailed
lengths, truncated at --max-length) for one epoch per run, once per seed, with random batches
and with BucketBatchSampler batches, and reports seconds per epoch, tokens per second, padding
and evaluation accuracy (mean and spread over seeds, so that "the same accuracy" can be judged
against the noise between seeds).
Run: python benchmarks/train.py [--seeds 0 1] [--max-length 256] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import save

from textbatch import PaddingCollator
from textbatch.batching.loaders import make_loader
from textbatch.cli.demo import history_summary
from textbatch.data.prepare import corpus_train_eval
from textbatch.models.classifiers import TextClassifier
from textbatch.training.loop import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/train.json)")
    args = parser.parse_args()

    torch.set_num_threads(torch.get_num_threads())
    train, evaluation, tokenizer = corpus_train_eval(max_length=args.max_length)
    collate = PaddingCollator.from_tokenizer(tokenizer)
    eval_loader = make_loader(evaluation, collate, batch_size=64, shuffle=False)
    runs = []
    for strategy in ("random", "bucket"):
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = TextClassifier(
                len(tokenizer),
                train.num_labels,
                dim=64,
                encoder="transformer",
                num_layers=1,
                max_length=args.max_length,
            )
            loader = make_loader(
                train, collate, sampler=strategy, batch_size=args.batch_size, seed=seed
            )
            history = fit(
                model, loader, eval_loader, epochs=args.epochs, lr=3e-3, seed=seed, progress=False
            )
            # every epoch's training, fit's thread measuring left out (as textbatch demo)
            runs.append({"strategy": strategy, "seed": seed, **history_summary(history)})
    summary = {}
    for strategy in ("random", "bucket"):
        mine = [r for r in runs if r["strategy"] == strategy]
        accuracy = [r["accuracy"] for r in mine]
        summary[strategy] = {
            "seconds_per_epoch": statistics.mean(r["seconds_per_epoch"] for r in mine),
            "padding": statistics.mean(r["padding"] for r in mine),
            "tokens_per_second": statistics.mean(r["tokens_per_second"] for r in mine),
            "accuracy_mean": statistics.mean(accuracy),
            "accuracy_spread": max(accuracy) - min(accuracy),
        }
    ratio = summary["bucket"]["seconds_per_epoch"] / summary["random"]["seconds_per_epoch"]
    print(
        f"{'batches':8s} {'s/epoch':>8s} {'tokens/s':>10s} {'padding':>8s} "
        f"{'accuracy (mean, spread over seeds)':>36s}"
    )
    for strategy, row in summary.items():
        print(
            f"{strategy:8s} {row['seconds_per_epoch']:8.1f} {row['tokens_per_second']:10,.0f} "
            f"{row['padding']:8.1%} {row['accuracy_mean']:27.4f} ({row['accuracy_spread']:.4f})"
        )
    print(f"a bucketed epoch takes {ratio:.2f} of a random one ({1 / ratio:.1f}x faster)")
    save(
        "train",
        {"options": vars(args), "runs": runs, "summary": summary, "time_ratio": ratio},
        args.out,
    )


if __name__ == "__main__":
    main()
