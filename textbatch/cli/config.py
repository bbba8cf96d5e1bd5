"""The options of ``textbatch train``, written once: the command line's flags, the recipe's
arguments and the resume check are all derived from ``TrainConfig``."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from textbatch.data.encoding import ENCODING_ERRORS
from textbatch.training.defaults import BACKBONE_BATCH_SIZE, BACKBONE_MAX_TOKENS

SMALL_MODELS = ("small", "transformer")


# ---------------------------------------------------------------------- flag value types
def positive(text: str) -> int:
    """An int >= 1 (argparse type)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive whole number")
    return value


def non_negative(text: str) -> int:
    """An int >= 0 (argparse type)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0 (argparse type), e.g. a learning rate."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
    return value


def fraction(text: str) -> float:
    """A float strictly between 0 and 1 (argparse type)."""
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1 (e.g. 0.1)")
    return value


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (argparse type)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda or cuda:N")
    return text


def thread_count(text: str) -> str:
    """``auto`` or a positive whole number (argparse type)."""
    if text != "auto" and not (text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a thread count: use auto or e.g. 2")
    return text


def encoding_name(text: str) -> str:
    """An encoding Python knows, e.g. ``utf-8``, ``latin-1``, ``cp1252`` (argparse type)."""
    import codecs

    try:
        codecs.lookup(text)
    except LookupError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an encoding: use e.g. utf-8, latin-1, cp1252 or utf-16"
        ) from None
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    group: str | None = None,
    decides_run: bool = True,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A ``TrainConfig`` field with what its command-line flag needs.

    ``flag``: the flag when it is not ``--<name>``; ``group``: flags of one group exclude each
    other; ``decides_run``: whether the option changes what a run computes (a resume with
    another value is refused). Paths do not: the data's content digest is checked instead.
    ``parse``: the flag's argparse type, which checks the value (default: the field's type).
    """
    metadata = {
        "parse": parse,
        "help": help,
        "flag": flag,
        "choices": choices,
        "group": group,
        "decides_run": decides_run,
    }
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything ``textbatch train`` (``train_classifier``) takes."""

    data: str = option(help="training data: csv, tsv, json, jsonl, parquet", decides_run=False)
    out: str = option(help="output directory", decides_run=False)
    eval_data: str | None = option(
        None, help="evaluation data file (same columns)", group="held_out", decides_run=False
    )
    eval_fraction: float = option(
        0.1,
        parse=fraction,
        help="hold out this share of --data for evaluation when no --eval-data (default 0.1)",
        group="held_out",
    )
    text: str = option("text", flag="--text-column", help="column with the text (default text)")
    text_pair: str | None = option(
        None, flag="--text-pair-column", help="column with the second text of a pair"
    )
    label: str = option(
        "label", flag="--label-column", help="column with the labels (default label)"
    )
    tokenizer: str | None = option(
        None,
        help="tokenizer directory or tokenizer.json (default: the model's, or a WordPiece one "
        "trained on --data)",
        decides_run=False,
    )
    model: str = option(
        "small",
        help="'small' (mean of embeddings), 'transformer' (a small Transformer encoder) or the "
        "path of a local Hugging Face encoder to fine-tune (default small)",
    )
    sampler: str = option(
        "bucket",
        choices=("bucket", "random", "sorted"),
        help="how examples are batched (default bucket)",
    )
    batch_size: int | None = option(
        None,
        parse=positive,
        help="examples per batch (default 32; a pretrained model: at most 16, within 4096 tokens)",
        group="size",
    )
    max_tokens: int | None = option(
        None,
        parse=positive,
        help="token budget per batch, padding included (a pretrained model: 4096 by default)",
        group="size",
    )
    epochs: int | None = option(
        None,
        parse=positive,
        help="epochs (default 3; a pretrained model: 3, or more up to 20 so that the run takes "
        "at least 300 optimizer steps)",
    )
    lr: float | None = option(
        None,
        parse=positive_float,
        help="peak learning rate (default 5e-2 small, 3e-3 transformer; a pretrained encoder 1e-4)",
    )
    head_lr: float | None = option(
        None,
        parse=positive_float,
        help="peak learning rate of a pretrained model's new head (default 2e-3, or --lr when "
        "given)",
    )
    warmup: float | None = option(
        None,
        parse=fraction,
        help="share of the steps that warm the learning rate up (default 0.06; a pretrained "
        "model 0.1)",
    )
    max_length: int | None = option(
        None,
        parse=positive,
        help="truncate examples to this many tokens (default: the tokenizer's limit; a "
        "pretrained model: the data's 99th percentile rounded up to 32, within the model's "
        "limit)",
    )
    dim: int = option(128, parse=positive, help="width of the small models (default 128)")
    pooling: str = option("cls", choices=("cls", "mean"), help="pretrained model pooling")
    grad_accum: int = option(1, parse=positive, help="batches per optimizer step")
    checkpoint_every: int | None = option(
        None, parse=positive, help="also checkpoint every N optimizer steps", decides_run=False
    )
    packing: bool = option(
        False, help="train on packed rows (no padding); --max-tokens per batch (default 8 rows)"
    )
    packing_capacity: int | None = option(
        None,
        parse=positive,
        help="tokens per packed row (default: --max-length, or the tokenizer's)",
    )
    keep_last: bool = option(
        False,
        help="also write the last epoch's model as model-last/ (model/ is the epoch with the "
        "best evaluation macro-F1)",
        decides_run=False,
    )
    resume: bool = option(
        False, help="continue from the last checkpoint in --out", decides_run=False
    )
    overwrite: bool = option(
        False,
        help="replace the outputs of an earlier run in --out (without it, a --out that is not "
        "empty is refused)",
        decides_run=False,
    )
    seed: int = option(0, parse=non_negative, help="random seed (default 0)")
    num_workers: int = option(
        0, parse=non_negative, help="DataLoader worker processes", decides_run=False
    )
    device: str = option(
        "auto", parse=device_name, help="auto (CUDA when present), cpu, cuda", decides_run=False
    )
    threads: str = option(
        "auto",
        parse=thread_count,
        help="CPU threads to train with; auto (default): measured at the start, fewer when "
        "another process is using the CPU; an OMP_NUM_THREADS you set wins",
        decides_run=False,
    )
    drop_invalid: bool = option(
        False, help="drop rows with missing or empty text or label instead of stopping"
    )
    encoding: str = option(
        "utf-8", parse=encoding_name, help="text encoding of the data files (default utf-8)"
    )
    encoding_errors: str = option(
        "strict",
        choices=ENCODING_ERRORS,
        help="at a byte that does not decode: stop with an error naming it (strict, the "
        "default), or replace it with U+FFFD and count them (replace)",
    )
    vocab_size: int = option(
        8000, parse=positive, help="vocabulary of the WordPiece tokenizer trained on --data"
    )
    progress: bool = option(True, flag="--no-progress", help="no progress bars", decides_run=False)

    def __post_init__(self) -> None:
        if self.backbone and not self.packing:
            # Memory bounded by the budget, and enough steps per epoch on short texts.
            given = self.batch_size is not None or self.max_tokens is not None
            if self.max_tokens is None:
                self.max_tokens = BACKBONE_MAX_TOKENS
            if not given:
                self.batch_size = BACKBONE_BATCH_SIZE
        if self.batch_size is None and self.max_tokens is None:
            self.batch_size = 32

    @property
    def backbone(self) -> bool:
        """Whether ``model`` names a pretrained model directory rather than a small model."""
        return self.model not in SMALL_MODELS

    def identity(self) -> dict[str, Any]:
        """The options that decide what the run computes, as plain data (a resume compares
        them). A backbone's path is not among them: its weights come from the checkpoint."""
        values = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata["decides_run"]
        }
        if self.backbone:
            values["model"] = "pretrained"
        return values


def flag_of(name: str, config: type = TrainConfig) -> str | None:
    """The command-line flag of ``config``'s field ``name`` (None: no such field)."""
    for f in dataclasses.fields(config):
        if f.name == name:
            return f.metadata["flag"] or "--" + f.name.replace("_", "-")
    return None


def add_arguments(parser: argparse.ArgumentParser, config: type = TrainConfig) -> None:
    """One flag per field of ``config`` (a dataclass made with :func:`option`)."""
    hints = typing.get_type_hints(config)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        meta = f.metadata
        if meta["group"] is not None and meta["group"] not in groups:
            groups[meta["group"]] = parser.add_mutually_exclusive_group()
        target = groups.get(meta["group"], parser)
        flag = flag_of(f.name, config)
        assert flag is not None
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if hints[f.name] is bool:
            kwargs["action"] = "store_false" if f.default else "store_true"
        else:
            kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],))
            parse = meta["parse"] or (None if kind is str else kind)
            if parse is not None:
                kwargs["type"] = parse
            if meta["choices"]:
                kwargs["choices"] = list(meta["choices"])
            else:
                kwargs["metavar"] = flag.removeprefix("--").replace("-", "_").upper()
            if f.default is dataclasses.MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = f.default
        target.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace, config: type = TrainConfig) -> Any:
    """The ``config`` dataclass of parsed arguments (made by :func:`add_arguments`)."""
    return config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config)})
