"""The end-to-end jobs behind the command line: train, predict and the demo.

Each turns plain arguments into components (tokenizer, datasets, sampler, collator, model) and
runs them; the command line only parses arguments and prints.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textbatch.collate import PackingCollator, PaddingCollator
from textbatch.data import TextDataset, load_file, resolve_max_length
from textbatch.distributed import barrier
from textbatch.errors import TextBatchError
from textbatch.io import write_json, write_text
from textbatch.loaders import make_loader
from textbatch.models import BackboneClassifier, TextClassifier, load_model
from textbatch.pipeline import corpus_train_eval, texts_of
from textbatch.tokenizers import load_tokenizer, train_tokenizer
from textbatch.train import fit, init_distributed, is_main_process, resolve_device

SMALL_MODELS = {"small": "mean", "transformer": "transformer"}
# Peak learning rates that suit each kind of model on the embedded corpus.
DEFAULT_LR = {"small": 5e-2, "transformer": 3e-3, "pretrained": 5e-5}


def _eval_split(
    dataset: TextDataset, fraction: float, seed: int
) -> tuple[TextDataset, TextDataset]:
    if not 0 < fraction < 1:
        raise TextBatchError(f"--eval-fraction={fraction} must be between 0 and 1.")
    order = np.random.default_rng(seed).permutation(len(dataset))
    size = max(1, round(fraction * len(dataset)))
    if size >= len(dataset):
        raise TextBatchError(
            f"{len(dataset)} examples are too few to hold out {fraction:.0%} for evaluation; "
            "give --eval-data or more data."
        )
    return dataset.select(np.sort(order[size:])), dataset.select(np.sort(order[:size]))


def train_classifier(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    eval_data: str | os.PathLike | None = None,
    eval_fraction: float = 0.1,
    text: str = "text",
    text_pair: str | None = None,
    label: str = "label",
    tokenizer: str | os.PathLike | None = None,
    model: str = "small",
    sampler: str = "bucket",
    batch_size: int | None = 32,
    max_tokens: int | None = None,
    epochs: int = 3,
    lr: float | None = None,
    max_length: int | None = None,
    dim: int = 128,
    pooling: str = "cls",
    grad_accum: int = 1,
    checkpoint_every: int | None = None,
    packing: bool = False,
    packing_capacity: int | None = None,
    resume: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    device: str = "auto",
    drop_invalid: bool = False,
    vocab_size: int = 8000,
    progress: bool = True,
) -> dict[str, float]:
    """Train a classifier on a data file; write the model, tokenizer, label names,
    ``history.json`` and ``metrics.json`` (the final evaluation) under ``out``.

    ``model`` is ``"small"`` (mean of embeddings), ``"transformer"`` (a small Transformer
    encoder) or the path of a local Hugging Face encoder to fine-tune. With ``packing``,
    batches are packed rows of ``packing_capacity`` tokens (default: the truncation length),
    ``max_tokens`` per batch (default 8 rows). Works under ``torchrun``.
    """
    out = Path(out)
    torch_device = resolve_device(device)
    distributed = init_distributed(torch_device)
    main = is_main_process()
    backbone = model not in SMALL_MODELS
    if backbone and not Path(model).is_dir():
        raise TextBatchError(
            f"--model {model!r} is neither 'small', 'transformer' nor a model directory."
        )
    if resume and not (out / "tokenizer").is_dir():
        raise TextBatchError(f"nothing to resume in {str(out)!r}: it holds no tokenizer/ yet.")

    # The tokenizer: given, the backbone's own, the one saved by an interrupted run, or trained
    # here (by rank 0, then shared through the output directory).
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    elif backbone:
        tok = load_tokenizer(model)
    elif resume:
        tok = load_tokenizer(out / "tokenizer")
    else:
        if main:
            texts = texts_of(load_file(data), text, text_pair)
            train_tokenizer(texts, vocab_size=vocab_size).save_pretrained(out / "tokenizer")
        barrier()
        tok = load_tokenizer(out / "tokenizer")

    options = {"text": text, "text_pair": text_pair, "label": label, "max_length": max_length}
    if main:  # rank 0 tokenises first; the others then read its cache
        train = TextDataset.from_file(data, tok, drop_invalid=drop_invalid, **options)
    barrier()
    if not main:
        train = TextDataset.from_file(data, tok, drop_invalid=drop_invalid, **options)
    if not train.has_labels:
        raise TextBatchError(
            f"{str(data)!r} has no label column {label!r}; pass --label-column to name it."
        )
    if eval_data is not None:
        try:
            evaluation = TextDataset.from_file(
                eval_data, tok, label_names=train.label_names, drop_invalid=drop_invalid, **options
            )
        except TextBatchError as error:
            if "is not in label_names" not in str(error):
                raise
            raise TextBatchError(
                f"the evaluation data {str(eval_data)!r} has a label never seen in training: "
                f"{error}"
            ) from error
    else:
        train, evaluation = _eval_split(train, eval_fraction, seed)

    torch.manual_seed(seed)
    names = train.label_names
    if backbone:
        classifier: torch.nn.Module = BackboneClassifier.from_pretrained(
            model, len(names), pooling=pooling, label_names=names
        )
    else:
        classifier = TextClassifier(
            len(tok),
            len(names),
            dim=dim,
            encoder=SMALL_MODELS[model],
            max_length=resolve_max_length(tok, max_length),
            pad_token_id=tok.pad_token_id,
            label_names=names,
        )
    capacity = None
    if packing:
        capacity = packing_capacity or resolve_max_length(tok, max_length)
        max_tokens = max_tokens or 8 * capacity
        collate: Any = PackingCollator.from_tokenizer(
            tok,
            capacity=capacity,
            position_offset=getattr(classifier, "position_offset", 0),
            mask=backbone,  # TextClassifier builds its own mask from sequence_ids
        )
    else:
        collate = PaddingCollator.from_tokenizer(tok)
    train_loader = make_loader(
        train,
        collate,
        sampler=sampler,
        batch_size=batch_size,
        max_tokens=max_tokens,
        seed=seed,
        num_workers=num_workers,
        device=torch_device,
        packing_capacity=capacity,
    )
    eval_loader = make_loader(
        evaluation,
        collate,
        sampler="bucket",
        batch_size=None if batch_size is None else 2 * batch_size,
        max_tokens=max_tokens,
        shuffle=False,
        device=torch_device,
        packing_capacity=capacity,
    )
    history = fit(
        classifier,
        train_loader,
        eval_loader,
        epochs=epochs,
        lr=lr if lr is not None else DEFAULT_LR["pretrained" if backbone else model],
        grad_accum=grad_accum,
        device=torch_device,
        out_dir=out,
        resume=resume,
        checkpoint_every=checkpoint_every,
        seed=seed,
        progress=progress,
    )
    final = history[-1]
    metrics = {k[len("eval_") :]: final[k] for k in ("eval_accuracy", "eval_macro_f1", "eval_loss")}
    if main:
        classifier.save_pretrained(out / "model")
        tok.save_pretrained(out / "tokenizer")
        write_json(out / "labels.json", names)
        write_json(out / "metrics.json", metrics)
        print(
            f"final evaluation: accuracy {metrics['accuracy']:.4f}, macro-F1 "
            f"{metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f}; wrote {out}"
        )
    if distributed:
        barrier()
        torch.distributed.destroy_process_group()
    return metrics


def _model_and_tokenizer(directory: Path) -> tuple[torch.nn.Module, Any]:
    """A ``train`` output directory (model/ and tokenizer/) or a model directory."""
    model_dir = directory / "model" if (directory / "model").is_dir() else directory
    for candidate in (directory / "tokenizer", model_dir / "tokenizer", model_dir / "backbone"):
        if candidate.is_dir():
            return load_model(model_dir), load_tokenizer(candidate)
    raise TextBatchError(
        f"no tokenizer found with the model in {str(directory)!r}; pass the directory that "
        "`textbatch train --out` wrote."
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
) -> int:
    """Write one prediction per row of ``data`` (``row``, ``label``, ``probability``), in input
    order, to ``out`` (``.csv`` or ``.jsonl``). Returns the number of rows."""
    from textbatch.train import predict_proba

    out = Path(out)
    if out.suffix not in (".csv", ".jsonl"):
        raise TextBatchError(f"--out {str(out)!r} must end in .csv or .jsonl.")
    model, tok = _model_and_tokenizer(Path(model_dir))
    names = model.config.get("label_names") or [str(i) for i in range(model.num_labels)]
    max_length = model.config.get("max_length")
    dataset = TextDataset.from_file(
        data, tok, text=text, text_pair=text_pair, label=None, max_length=max_length
    )
    loader = make_loader(
        dataset,
        PaddingCollator.from_tokenizer(tok),
        batch_size=batch_size,
        max_tokens=max_tokens,
        shuffle=False,
        device=resolve_device(device),
    )
    probabilities = np.zeros((len(dataset), model.num_labels), dtype=np.float32)
    batches = loader.batch_sampler.batches()
    for indices, probs in zip(batches, predict_proba(model, loader, device), strict=True):
        probabilities[indices] = probs.numpy()
    best = probabilities.argmax(1)
    rows = [
        {"row": i, "label": names[k], "probability": round(float(probabilities[i, k]), 6)}
        for i, k in enumerate(best)
    ]
    if out.suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["row", "label", "probability"])
        writer.writeheader()
        writer.writerows(rows)
        write_text(out, buffer.getvalue())
    else:
        write_text(out, "".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


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
        last = history[-1]
        results.append(
            {
                "strategy": strategy,
                "accuracy": last["eval_accuracy"],
                "macro_f1": last["eval_macro_f1"],
                "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history),
                "padding": last["padding"],
                "tokens_per_second": last["tokens_per_second"],
            }
        )
    return results


def run_bench(
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    text: str = "text",
    label: str = "label",
    tokenizer: str | os.PathLike | None = None,
    max_length: int = 512,
    batch_size: int = 32,
    max_tokens: int | None = None,
    train_steps: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Tokenise the data once, compare every strategy on its lengths, time the collators (and,
    with ``train_steps``, training), and write ``results.json``, ``results.csv`` and PNG plots
    (when matplotlib is installed) under ``out``. Returns the results."""
    from textbatch.bench import (
        SCHEMA_VERSION,
        collate_speed,
        compare_strategies,
        machine,
        train_throughput,
    )
    from textbatch.pipeline import load_dataset_and_tokenizer
    from textbatch.stats import length_summary

    out = Path(out)
    max_tokens = max_tokens or 128 * batch_size
    dataset, tok = load_dataset_and_tokenizer(
        data, tokenizer, text=text, label=label, max_length=max_length
    )
    lengths = dataset.lengths
    results = compare_strategies(lengths, batch_size, max_tokens, max_length, seed)
    if train_steps:
        train_throughput(dataset, tok, results, train_steps, max_length, seed)
    report = {
        "schema": SCHEMA_VERSION,
        "source": str(data) if data is not None else "embedded corpus",
        "examples": len(dataset),
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "max_length": max_length,
        "lengths": length_summary(lengths, max_length),
        "strategies": [r.as_dict() for r in results],
        "collate": collate_speed(dataset, tok, batch_size, seed=seed),
        "machine": machine(),
    }
    write_json(out / "results.json", report)
    columns = list(report["strategies"][0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(report["strategies"])
    write_text(out / "results.csv", buffer.getvalue())
    try:
        from textbatch.plots import plot_results

        report["plots"] = [str(p) for p in plot_results(out, lengths, results, max_length)]
    except ImportError:
        report["plots"] = []
        print(
            "textbatch bench: matplotlib is not installed, so no plots were drawn; "
            "pip install 'textbatch[plot]' for them. The other results are written."
        )
    return report


def data_stats(
    data: str | os.PathLike | None = None,
    *,
    text: str = "text",
    text_pair: str | None = None,
    tokenizer: str | os.PathLike | None = None,
    max_length: int = 512,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Token lengths of the data (untruncated), how many ``max_length`` would cut, and what
    batching to use on it (``textbatch.bench.recommend``)."""
    from textbatch.bench import recommend
    from textbatch.pipeline import load_dataset_and_tokenizer
    from textbatch.stats import length_summary

    dataset, _ = load_dataset_and_tokenizer(
        data, tokenizer, text=text, text_pair=text_pair, label=None, max_length=10**7
    )
    lengths = dataset.lengths
    summary = length_summary(lengths)
    summary["truncated"] = int((lengths > max_length).sum())
    return {
        "source": str(data) if data is not None else "embedded corpus",
        "max_length": max_length,
        "lengths": summary,
        "recommendation": recommend(np.minimum(lengths, max_length), batch_size, max_length, seed),
    }
