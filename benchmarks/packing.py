"""Packed vs bucketed vs random batches: training throughput and padding.

Trains the small Transformer TextClassifier (1 layer, width 64) for one epoch on the embedded
corpus (truncated at --max-length tokens) with each batching strategy, on the CPU (and again on
the GPU when one is present), and reports real tokens per second, padding, and accuracy.
Run: python benchmarks/packing.py [--max-length 128] [--max-tokens 2048] [--out FILE]
"""

from __future__ import annotations

import argparse

import torch
from _common import save

from textbatch import (
    PackingCollator,
    PaddingCollator,
    TextClassifier,
    fit,
)
from textbatch.batching.loaders import make_loader
from textbatch.data.prepare import corpus_train_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--encoder", default="transformer", choices=["transformer", "mean"])
    parser.add_argument("--out", help="JSON file (default benchmarks/results/packing.json)")
    args = parser.parse_args()

    train, evaluation, tokenizer = corpus_train_eval(max_length=args.max_length)
    padding = PaddingCollator.from_tokenizer(tokenizer)
    capacity = args.max_length
    # TextClassifier builds its attention mask from sequence_ids: no dense mask to collate.
    packing = PackingCollator.from_tokenizer(tokenizer, capacity=capacity, mask=False)
    strategies = {
        f"random (batch size {args.batch_size})": (
            padding,
            {"sampler": "random", "batch_size": args.batch_size},
        ),
        f"bucket (batch size {args.batch_size})": (padding, {"batch_size": args.batch_size}),
        f"bucket ({args.max_tokens} tokens)": (
            padding,
            {"batch_size": None, "max_tokens": args.max_tokens},
        ),
        f"packed ({args.max_tokens} tokens, rows of {capacity})": (
            packing,
            {"max_tokens": args.max_tokens, "packing_capacity": capacity},
        ),
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for name, (collate, options) in strategies.items():
            torch.manual_seed(0)
            model = TextClassifier(
                len(tokenizer),
                train.num_labels,
                dim=64,
                encoder=args.encoder,
                num_layers=1,
                max_length=args.max_length,
            )
            loader = make_loader(train, collate, seed=0, **options)
            eval_loader = make_loader(
                evaluation, collate, shuffle=False, **{**options, "sampler": "bucket"}
            )
            lr = 3e-3 if args.encoder == "transformer" else 5e-2
            batches = len(loader)  # epoch 0's, the one trained (after fit: the next epoch's)
            history = fit(
                model, loader, eval_loader, epochs=1, lr=lr, device=device, progress=False
            )
            record = history[-1]
            rows.append(
                {
                    "device": device,
                    "strategy": name,
                    "tokens_per_second": record["tokens_per_second"],
                    "padding": record["padding"],
                    # training time, fit's thread measuring left out (as tokens_per_second)
                    "seconds": record["seconds"] - record["thread_seconds"],
                    "batches": batches,
                    "accuracy": record["eval_accuracy"],
                }
            )
    header = ("device", "strategy", "tokens/s", "padding", "s/epoch", "accuracy")
    print("{:6s} {:44s} {:>10s} {:>8s} {:>8s} {:>9s}".format(*header))
    for row in rows:
        print(
            f"{row['device']:6s} {row['strategy']:44s} {row['tokens_per_second']:10,.0f} "
            f"{row['padding']:8.1%} {row['seconds']:8.1f} {row['accuracy']:9.4f}"
        )
    save("packing", {"options": vars(args), "results": rows}, args.out)


if __name__ == "__main__":
    main()
