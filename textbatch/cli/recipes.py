"""``textbatch train``: a ``TrainConfig`` turned into components (tokenizer, datasets,
sampler, collator, model) and run; the command line only parses arguments and prints.

The other commands' jobs live beside it: predict.py, demo.py, bench.py (bench and stats).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textbatch.batching.collate import PackingCollator, PaddingCollator
from textbatch.batching.loaders import make_loader
from textbatch.cli.config import TrainConfig
from textbatch.data.dataset import TextDataset, load_file, resolve_max_length
from textbatch.data.prepare import trained_tokenizer
from textbatch.data.tokenizers import load_tokenizer
from textbatch.distributed import barrier, init_distributed, is_main_process
from textbatch.errors import TextBatchError
from textbatch.files import atomic_folder, write_json
from textbatch.models.classifiers import (
    BackboneClassifier,
    TextClassifier,
    backbone_config,
    backbone_position_limit,
    check_packable,
)
from textbatch.training.checkpoint import checkpoint_folders
from textbatch.training.defaults import BACKBONE_WARMUP, default_epochs, suggest_max_length
from textbatch.training.loop import fit, resolve_device

SMALL_MODELS = {"small": "mean", "transformer": "transformer"}  # --model -> encoder
# Peak learning rates that suit each kind of model on the embedded corpus.
DEFAULT_LR = {"small": 5e-2, "transformer": 3e-3}


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
    # Only a checkpoint makes a resume: before the first one, --resume starts over, and
    # whatever an earlier attempt left in --out (its tokenizer) is made anew.
    resuming = config.resume and bool(checkpoint_folders(out / "checkpoints"))
    for data in (config.data, config.eval_data):  # before a tokenizer is trained on it
        if data is not None and Path(data).suffix.lower() == ".txt":
            raise TextBatchError(
                f"{str(data)!r} is a text file: one text per line, no labels, so it can be "
                "predicted but not trained on. Give a csv, tsv, jsonl or parquet file with a "
                "label column."
            )
    if config.packing and config.backbone:  # before tokenising, not at the first batch
        check_packable(backbone_config(config.model).model_type)
    tok = _run_tokenizer(config, out, main, resuming)
    max_length = _run_max_length(config, tok, main)
    train, evaluation = _run_datasets(config, tok, main, max_length)
    names = train.label_names
    if main:  # what predict needs besides the weights, before the first checkpoint
        _save_tokenizer(tok, out, replace=not resuming)
        write_json(out / "labels.json", names)
    torch.manual_seed(config.seed)
    classifier = _run_classifier(config, tok, names, max_length)
    train_loader, eval_loader = _run_loaders(config, train, evaluation, tok, classifier, device)
    epochs = config.epochs
    if epochs is None:  # enough steps for small data, for a pretrained model
        steps = len(train_loader) // config.grad_accum
        epochs = default_epochs(steps) if config.backbone else 3
    lr, head_lr = config.lr, config.head_lr
    if lr is None and not config.backbone:
        lr = DEFAULT_LR[config.model]
    warmup = config.warmup if config.warmup is not None else _default_warmup(config)
    history = fit(
        classifier,
        train_loader,
        eval_loader,
        epochs=epochs,
        lr=lr,  # None: fit's rates for a pretrained encoder and its new head
        head_lr=head_lr,
        warmup=warmup,
        grad_accum=config.grad_accum,
        device=device,
        out_dir=out,
        resume=config.resume,
        checkpoint_every=config.checkpoint_every,
        seed=config.seed,
        progress=config.progress,
        config=config.identity(),
        on_epoch_end=_keep_best(out, pairs=config.text_pair is not None),
        threads="auto" if config.threads == "auto" else int(config.threads),
    )
    best = best_epoch(history)
    metrics = {
        **{k[len("eval_") :]: best[k] for k in ("eval_accuracy", "eval_macro_f1", "eval_loss")},
        "epoch": best["epoch"],
        "epochs": len(history),
    }
    if main:
        if config.keep_last:
            atomic_folder(out / "model-last", _saver(classifier, config.text_pair is not None))
        write_json(out / "metrics.json", metrics)
        print(
            f"best evaluation (epoch {metrics['epoch']} of {len(history)}, kept as model/): "
            f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, loss "
            f"{metrics['loss']:.4f}; wrote {out}"
        )
    return metrics


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The record of the epoch with the best evaluation macro-F1 (the latest of equals)."""
    return max(reversed(history), key=lambda record: record["eval_macro_f1"])


def _keep_best(out: Path, pairs: bool) -> Any:
    """``fit``'s ``on_epoch_end``: write the model as ``out/model`` whenever an epoch beats the
    evaluation macro-F1 of every earlier one (the history survives a resume, so the best
    does too)."""

    def keep(history: list[dict[str, Any]], model: torch.nn.Module) -> None:
        if best_epoch(history) is history[-1] or not (out / "model").is_dir():
            atomic_folder(out / "model", _saver(model, pairs))

    return keep


INPUTS_FILE = "textbatch_inputs.json"  # beside the model: what it was trained to read


def _saver(model: Any, pairs: bool) -> Any:
    """Save ``model`` into a folder, with what it reads (``INPUTS_FILE``: text pairs or single
    texts), which ``predict`` checks its columns against."""

    def save(directory: Path) -> None:
        model.save_pretrained(directory)
        write_json(Path(directory) / INPUTS_FILE, {"text_pair": pairs})

    return save


def _default_warmup(config: TrainConfig) -> float:
    return BACKBONE_WARMUP if config.backbone else 0.06


def _run_max_length(config: TrainConfig, tok: Any, main: bool) -> int:
    """The truncation length: ``--max-length``, the tokenizer's limit for a small model, or for
    a pretrained model what :func:`suggest_max_length` reads off the training data (tokenised
    at the model's limit first; both are cached)."""
    pair = config.text_pair is not None
    cap = resolve_max_length(tok, config.max_length, pair=pair)
    if config.backbone:
        cap = _within_positions(config, cap, main)
    if config.max_length is not None or not config.backbone:
        return cap
    full = _from_file(config.data, tok, main, **_dataset_options(config), max_length=cap)
    chosen = resolve_max_length(tok, suggest_max_length(full.lengths, cap), pair=pair)
    if main:
        p99 = float(np.percentile(full.lengths, 99))
        print(
            f"max_length {chosen} tokens: the training texts' 99th percentile ({p99:.0f}), "
            f"rounded up, within the model's {cap}; --max-length sets it"
        )
    return chosen


def _within_positions(config: TrainConfig, cap: int, main: bool) -> int:
    """``cap``, or the backbone's position limit where that is smaller: the tokenizer's limit
    (or 512 where it sets none) may be more than the encoder has position embeddings for, and
    training failed at the first long batch with ``IndexError: index out of range in self``.
    A ``--max-length`` above the limit is an error."""
    limit = backbone_position_limit(config.model)
    if limit is None or cap <= limit:
        return cap
    if config.max_length is not None:
        raise TextBatchError(
            f"--max-length {config.max_length} is more than the {limit} tokens {config.model!r} "
            f"has position embeddings for; pass --max-length {limit} or less."
        )
    if main:
        print(f"max_length capped at {limit} tokens: the model's position embeddings end there")
    return limit


def _dataset_options(config: TrainConfig) -> dict[str, Any]:
    return {
        "text": config.text,
        "text_pair": config.text_pair,
        "label": config.label,
        "drop_invalid": config.drop_invalid,
        "encoding": config.encoding,
        "encoding_errors": config.encoding_errors,
    }


def _from_file(path: str, tok: Any, main: bool, **options: Any) -> TextDataset:
    """``TextDataset.from_file`` on every rank: rank 0 tokenises first, the others then read
    its cache."""
    if main:
        dataset = TextDataset.from_file(path, tok, **options)
    barrier()
    if not main:
        dataset = TextDataset.from_file(path, tok, **options)
    if options.get("label") is not None and not dataset.has_labels:  # training needs them
        reading = {k: options[k] for k in ("encoding", "encoding_errors") if k in options}
        columns = load_file(path, **reading).column_names  # the cached copy just read
        raise TextBatchError(
            f"{path!r} has no label column {options['label']!r}; its columns are {columns}. "
            "Name the label column with --label-column."
        )
    return dataset


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


TRAIN_OUTPUTS = (
    "model",
    "model-last",
    "tokenizer",
    "checkpoints",
    "history.json",
    "metrics.json",
    "labels.json",
)


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


def _run_tokenizer(config: TrainConfig, out: Path, main: bool, resuming: bool) -> Any:
    """The tokenizer: given, the backbone's own, the one saved by the run that wrote the
    checkpoints ``resuming`` goes on from, or trained here (by rank 0, then shared through the
    output directory). It is saved at the start, so that an interrupted run can resume with
    it; a tokenizer/ left by an attempt that wrote no checkpoint is not reused (it came from
    what that attempt was given, which may not be what this run is)."""
    if config.tokenizer is not None:
        return load_tokenizer(config.tokenizer)
    if config.backbone:
        return load_tokenizer(config.model)
    if resuming and (out / "tokenizer").is_dir():
        return load_tokenizer(out / "tokenizer")
    if resuming:
        raise TextBatchError(
            f"cannot resume in {str(out)!r}: it holds checkpoints but no tokenizer/, which the "
            "run's token ids came from. Restore it, or pass the run's --tokenizer."
        )
    if main:  # a fresh run (also --resume before any checkpoint was written)
        trained = trained_tokenizer(
            config.data,
            config.text,
            config.text_pair,
            config.vocab_size,
            encoding=config.encoding,
            encoding_errors=config.encoding_errors,
        )
        _save_tokenizer(trained, out, replace=True)
    barrier()
    return load_tokenizer(out / "tokenizer")


def _run_datasets(
    config: TrainConfig, tok: Any, main: bool, max_length: int
) -> tuple[TextDataset, TextDataset]:
    """The training and evaluation sets (``--eval-data``, or a seeded split of ``--data``)."""
    options = {**_dataset_options(config), "max_length": max_length}
    train = _from_file(config.data, tok, main, **options)
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
        evaluation = _from_file(
            config.eval_data, tok, main, label_names=train.label_names, **options
        )
    except TextBatchError as error:
        if "is not in label_names" in str(error):
            raise TextBatchError(
                f"the evaluation data {str(config.eval_data)!r} has a label never seen in "
                f"training: {error}"
            ) from error
        if str(config.eval_data) not in str(error):  # say which of the two files it is about
            raise TextBatchError(
                f"in the evaluation data {str(config.eval_data)!r}: {error}"
            ) from error
        raise
    return train, evaluation


def _run_classifier(
    config: TrainConfig, tok: Any, names: list[str], max_length: int
) -> torch.nn.Module:
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
