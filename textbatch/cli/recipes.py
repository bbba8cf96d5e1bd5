"""The end-to-end jobs behind the command line: train, predict and the demo.

Each turns plain arguments into components (tokenizer, datasets, sampler, collator, model) and
runs them; the command line only parses arguments and prints.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textbatch.batching.collate import PackingCollator, PaddingCollator
from textbatch.batching.loaders import make_loader
from textbatch.cli.config import TrainConfig
from textbatch.data.dataset import TextDataset, load_file, resolve_max_length
from textbatch.data.prepare import corpus_train_eval, texts_of
from textbatch.data.tokenizers import load_tokenizer, train_tokenizer
from textbatch.distributed import barrier, init_distributed, is_main_process
from textbatch.errors import TextBatchError
from textbatch.files import atomic_folder, write_json, write_text
from textbatch.models.classifiers import BackboneClassifier, TextClassifier
from textbatch.training.checkpoint import checkpoint_folders
from textbatch.training.loop import fit, resolve_device

SMALL_MODELS = {"small": "mean", "transformer": "transformer"}  # --model -> encoder
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


def _save_tokenizer(tok: Any, out: Path, replace: bool = False) -> None:
    """Save ``tok`` as ``out/tokenizer`` atomically (a folder renamed into place). A tokenizer
    there already is kept (the run's own, on a resume) unless ``replace``."""
    final = out / "tokenizer"
    if final.is_dir() and not replace:
        return
    for leftover in out.glob(".tokenizer.*"):  # of a killed write
        shutil.rmtree(leftover, ignore_errors=True)
    # The truncation a last call left in the Rust tokenizer is not part of it (every call sets
    # its own): saved without it, the same tokenizer gives the same files, tokenised or not.
    tok.backend_tokenizer.no_truncation()
    tok.backend_tokenizer.no_padding()
    atomic_folder(final, tok.save_pretrained)


def train_classifier(config: TrainConfig) -> dict[str, float]:
    """Train a classifier on a data file; write the model, tokenizer, label names,
    ``history.json`` and ``metrics.json`` (the final evaluation) under ``config.out``.

    ``config.model`` is ``"small"`` (mean of embeddings), ``"transformer"`` (a small
    Transformer encoder) or the path of a local Hugging Face encoder to fine-tune. With
    ``packing``, batches are packed rows of ``packing_capacity`` tokens (default: the truncation
    length), ``max_tokens`` per batch (default 8 rows). Works under ``torchrun``.
    """
    out = Path(config.out)
    device = resolve_device(config.device)
    distributed = init_distributed(device)
    main = is_main_process()
    _check_model_and_out(config, out)
    if config.overwrite and main:
        _remove_train_outputs(out)
    barrier()
    existed = out.exists()
    try:
        metrics = _train(config, out, device, main)
    except BaseException:
        if main and not config.resume and not checkpoint_folders(out / "checkpoints"):
            # Nothing to resume from: leave --out as it was, so the same command can run again.
            _remove_train_outputs(out)
            if not existed and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise
    if distributed:
        barrier()
        torch.distributed.destroy_process_group()
    return metrics


def _train(config: TrainConfig, out: Path, device: torch.device, main: bool) -> dict[str, float]:
    """:func:`train_classifier` once the output directory is checked."""
    tok = _run_tokenizer(config, out, main)
    train, evaluation = _run_datasets(config, tok, main)
    names = train.label_names
    if main:  # what predict needs besides the weights, before the first checkpoint
        _save_tokenizer(tok, out, replace=not config.resume)
        write_json(out / "labels.json", names)
    torch.manual_seed(config.seed)
    classifier = _run_classifier(config, tok, names)
    train_loader, eval_loader = _run_loaders(config, train, evaluation, tok, classifier, device)
    history = fit(
        classifier,
        train_loader,
        eval_loader,
        epochs=config.epochs,
        lr=config.lr if config.lr is not None else DEFAULT_LR[_model_kind(config)],
        grad_accum=config.grad_accum,
        device=device,
        out_dir=out,
        resume=config.resume,
        checkpoint_every=config.checkpoint_every,
        seed=config.seed,
        progress=config.progress,
        config=config.identity(),
    )
    final = history[-1]
    metrics = {k[len("eval_") :]: final[k] for k in ("eval_accuracy", "eval_macro_f1", "eval_loss")}
    if main:
        classifier.save_pretrained(out / "model")
        write_json(out / "metrics.json", metrics)
        print(
            f"final evaluation: accuracy {metrics['accuracy']:.4f}, macro-F1 "
            f"{metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f}; wrote {out}"
        )
    return metrics


def _model_kind(config: TrainConfig) -> str:
    return "pretrained" if config.backbone else config.model


def _check_model_and_out(config: TrainConfig, out: Path) -> None:
    if config.backbone and not Path(config.model).is_dir():
        raise TextBatchError(
            f"--model {config.model!r} is neither 'small', 'transformer' nor a model directory."
        )
    if config.backbone and not (Path(config.model) / "config.json").is_file():
        raise TextBatchError(
            f"--model {config.model!r} is not a model folder: it has no config.json. Give the "
            "folder of a Hugging Face model (save_pretrained's output), or 'small' or "
            "'transformer'."
        )
    if config.resume and config.overwrite:
        raise TextBatchError(
            "--resume continues the run in --out and --overwrite replaces it; give one of them."
        )
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries and not config.resume:
        foreign = [name for name in entries if not _is_train_output(name)]
        if foreign:
            raise TextBatchError(
                f"--out {str(out)!r} holds files textbatch did not write ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); train into a new or empty directory."
            )
        if not config.overwrite:
            what = "the checkpoints" if "checkpoints" in entries else "the outputs"
            raise TextBatchError(
                f"--out {str(out)!r} holds {what} of an earlier run ({', '.join(entries)}); "
                "continue it with --resume, replace it with --overwrite, or train into another "
                "--out directory."
            )


TRAIN_OUTPUTS = ("model", "tokenizer", "checkpoints", "history.json", "metrics.json", "labels.json")


def _is_train_output(name: str) -> bool:
    """Whether ``name`` in an output directory is one ``train`` writes, or the leftover of a
    killed write of one (``.<name>.<random>``)."""
    return name in TRAIN_OUTPUTS or any(name.startswith(f".{o}.") for o in TRAIN_OUTPUTS)


def _remove_train_outputs(out: Path) -> None:
    """What an earlier run wrote in ``out`` (``--overwrite``)."""
    for entry in out.iterdir() if out.is_dir() else []:
        if _is_train_output(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _run_tokenizer(config: TrainConfig, out: Path, main: bool) -> Any:
    """The tokenizer: given, the backbone's own, the one saved by an interrupted run, or trained
    here (by rank 0, then shared through the output directory). It is saved at the start, so
    that an interrupted run can resume with it."""
    if config.tokenizer is not None:
        return load_tokenizer(config.tokenizer)
    if config.backbone:
        return load_tokenizer(config.model)
    if config.resume and (out / "tokenizer").is_dir():
        return load_tokenizer(out / "tokenizer")
    if config.resume and checkpoint_folders(out / "checkpoints"):
        raise TextBatchError(
            f"cannot resume in {str(out)!r}: it holds checkpoints but no tokenizer/, which the "
            "run's token ids came from. Restore it, or pass the run's --tokenizer."
        )
    if main:  # a fresh run (also --resume before any checkpoint was written)
        raw = load_file(
            config.data, encoding=config.encoding, encoding_errors=config.encoding_errors
        )
        texts = texts_of(raw, config.text, config.text_pair)
        trained = train_tokenizer(texts, vocab_size=config.vocab_size)
        _save_tokenizer(trained, out, replace=True)
    barrier()
    return load_tokenizer(out / "tokenizer")


def _run_datasets(config: TrainConfig, tok: Any, main: bool) -> tuple[TextDataset, TextDataset]:
    """The training and evaluation sets (``--eval-data``, or a seeded split of ``--data``)."""
    options = {
        "text": config.text,
        "text_pair": config.text_pair,
        "label": config.label,
        "max_length": config.max_length,
        "drop_invalid": config.drop_invalid,
        "encoding": config.encoding,
        "encoding_errors": config.encoding_errors,
    }
    if main:  # rank 0 tokenises first; the others then read its cache
        train = TextDataset.from_file(config.data, tok, **options)
    barrier()
    if not main:
        train = TextDataset.from_file(config.data, tok, **options)
    if not train.has_labels:
        raise TextBatchError(
            f"{str(config.data)!r} has no label column {config.label!r}; pass --label-column to "
            "name it."
        )
    if train.num_labels < 2:
        raise TextBatchError(
            f"{str(config.data)!r} has one label only ({train.label_names[0]!r} in column "
            f"{config.label!r}): a classifier needs at least two. Check --label-column, or give "
            "data with examples of every class."
        )
    if config.eval_data is None:
        return _eval_split(train, config.eval_fraction, config.seed)
    try:
        evaluation = TextDataset.from_file(
            config.eval_data, tok, label_names=train.label_names, **options
        )
    except TextBatchError as error:
        if "is not in label_names" not in str(error):
            raise
        raise TextBatchError(
            f"the evaluation data {str(config.eval_data)!r} has a label never seen in training: "
            f"{error}"
        ) from error
    return train, evaluation


def _run_classifier(config: TrainConfig, tok: Any, names: list[str]) -> torch.nn.Module:
    max_length = resolve_max_length(tok, config.max_length, pair=config.text_pair is not None)
    if config.backbone:
        return BackboneClassifier.from_pretrained(
            config.model,
            len(names),
            pooling=config.pooling,
            label_names=names,
            max_length=max_length,
        )
    return TextClassifier(
        len(tok),
        len(names),
        dim=config.dim,
        encoder=SMALL_MODELS[config.model],
        max_length=max_length,
        pad_token_id=tok.pad_token_id,
        label_names=names,
    )


def _run_loaders(
    config: TrainConfig,
    train: TextDataset,
    evaluation: TextDataset,
    tok: Any,
    classifier: torch.nn.Module,
    device: torch.device,
) -> tuple[Any, Any]:
    """Training and evaluation loaders: padded batches, or packed rows with ``--packing``."""
    capacity, max_tokens = None, config.max_tokens
    if config.packing:
        pair = config.text_pair is not None
        capacity = config.packing_capacity or resolve_max_length(tok, config.max_length, pair=pair)
        max_tokens = max_tokens or 8 * capacity
        collate: Any = PackingCollator.from_tokenizer(
            tok,
            capacity=capacity,
            position_offset=getattr(classifier, "position_offset", 0),
            mask=config.backbone,  # TextClassifier builds its own mask from sequence_ids
        )
    else:
        collate = PaddingCollator.from_tokenizer(tok)
    batch_size = config.batch_size
    train_loader = make_loader(
        train,
        collate,
        sampler=config.sampler,
        batch_size=batch_size,
        max_tokens=max_tokens,
        seed=config.seed,
        num_workers=config.num_workers,
        device=device,
        packing_capacity=capacity,
    )
    eval_loader = make_loader(
        evaluation,
        collate,
        sampler="bucket",
        batch_size=None if batch_size is None else 2 * batch_size,
        max_tokens=max_tokens,
        shuffle=False,
        device=device,
        packing_capacity=capacity,
    )
    return train_loader, eval_loader


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


BENCH_OUTPUTS = ("results.json", "results.csv", "lengths.png", "waste.png", "throughput.png")


def run_bench(
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    text: str = "text",
    text_pair: str | None = None,
    label: str = "label",
    tokenizer: str | os.PathLike | None = None,
    max_length: int = 512,
    batch_size: int = 32,
    max_tokens: int | None = None,
    train_steps: int | None = None,
    seed: int = 0,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Tokenise the data once, compare every strategy on its lengths, time the collators (and,
    with ``train_steps``, training), and write ``results.json``, ``results.csv`` and PNG plots
    (when matplotlib is installed) under ``out``. Results of an earlier run in ``out`` are
    replaced only with ``overwrite``. Returns the results."""
    from textbatch.batching.stats import length_summary
    from textbatch.bench.compare import (
        SCHEMA_VERSION,
        collate_speed,
        compare_strategies,
        machine,
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
    dataset, tok = load_dataset_and_tokenizer(
        data,
        tokenizer,
        text=text,
        text_pair=text_pair,
        label=label,
        max_length=max_length,
        encoding=encoding,
        encoding_errors=encoding_errors,
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
        from textbatch.bench.plots import plot_results

        report["plots"] = [str(p) for p in plot_results(out, lengths, results, max_length)]
    except ImportError:
        report["plots"] = []
        print(
            "textbatch bench: matplotlib is not installed, so no plots were drawn; "
            "pip install 'textbatch[plot]' for them. The other results are written."
        )
    return report


# `stats` counts each example's tokens up to max(STATS_CAP_FACTOR * --max-length, STATS_CAP_MIN)
# and reports longer ones as "> N": a 50 MB line then costs milliseconds, not minutes.
STATS_CAP_FACTOR = 16
STATS_CAP_MIN = 4096


def data_stats(
    data: str | os.PathLike | None = None,
    *,
    text: str = "text",
    text_pair: str | None = None,
    tokenizer: str | os.PathLike | None = None,
    max_length: int = 512,
    batch_size: int = 32,
    seed: int = 0,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
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
