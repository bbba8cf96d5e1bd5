"""``textbatch demo``: the whole pipeline on the embedded corpus, random vs bucketed batches."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from textbatch.batching.collate import PaddingCollator
from textbatch.batching.loaders import make_loader
from textbatch.data.prepare import corpus_train_eval
from textbatch.models.classifiers import TextClassifier
from textbatch.training.loop import fit


def run_demo(
    size: int = 20_000,
    epochs: int = 1,
    batch_size: int = 32,
    max_length: int = 128,
    dim: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The whole pipeline on the embedded corpus: train a tokenizer, build the datasets, and
    train the same small Transformer classifier on random batches and on bucketed batches.
    Returns one result per strategy (accuracy, macro-F1, seconds per epoch, padding)."""
    started = time.perf_counter()
    train, evaluation, tok = corpus_train_eval(size, seed, max_length)
    print(
        f"corpus: {size:,} examples, {train.num_labels} labels, median "
        f"{int(np.median(train.lengths))} tokens, longest {int(train.lengths.max())} "
        f"(max_length {max_length}); set up in {time.perf_counter() - started:.1f} s"
    )
    collate = PaddingCollator.from_tokenizer(tok)
    eval_loader = make_loader(evaluation, collate, batch_size=2 * batch_size, shuffle=False)
    results = []
    for strategy in ("random", "bucket"):
        torch.manual_seed(seed)
        model = TextClassifier(
            len(tok),
            train.num_labels,
            dim=dim,
            encoder="transformer",
            num_layers=1,
            max_length=max_length,
            pad_token_id=tok.pad_token_id,
        )
        loader = make_loader(train, collate, sampler=strategy, batch_size=batch_size, seed=seed)
        print(f"training on {strategy} batches of {batch_size}:")
        history = fit(
            model, loader, eval_loader, epochs=epochs, lr=3e-3, seed=seed, progress=progress
        )
        results.append({"strategy": strategy, **history_summary(history)})
    return results


def history_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The last epoch's evaluation, and speed and padding over every epoch: seconds of training
    per epoch and real tokens per second of training, both leaving out the time spent
    measuring thread counts (``thread_seconds``, counted apart), and the share of padded
    positions."""
    last = history[-1]
    measuring = sum(h.get("thread_seconds", 0.0) for h in history)  # older histories: none
    training = sum(h["seconds"] for h in history) - measuring
    real = sum(h["real_tokens"] for h in history)
    return {
        "accuracy": last["eval_accuracy"],
        "macro_f1": last["eval_macro_f1"],
        "seconds_per_epoch": training / len(history),
        "thread_seconds": measuring,
        "padding": 1 - real / sum(h["padded_tokens"] for h in history),
        "tokens_per_second": real / max(training, 1e-9),
    }
