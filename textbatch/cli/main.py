"""The ``textbatch`` command line: parse arguments, build components, print what they report."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from textbatch.cli.config import (
    TrainConfig,
    add_arguments,
    config_from_args,
    device_name,
    encoding_name,
    non_negative,
    positive,
)
from textbatch.cli.words import in_cli_words
from textbatch.data.encoding import ENCODING_ERRORS
from textbatch.errors import TextBatchError, TextBatchWarning


def _add_data_arguments(parser: argparse.ArgumentParser, label: bool = True) -> None:
    parser.add_argument(
        "--data", help="csv, tsv, json, jsonl, parquet or txt file (default: the embedded corpus)"
    )
    parser.add_argument(
        "--text-column", default="text", help="column with the text (default: text)"
    )
    parser.add_argument("--text-pair-column", help="column with the second text of a pair")
    if label:
        parser.add_argument(
            "--label-column", default="label", help="column with the labels (default: label)"
        )
    parser.add_argument(
        "--tokenizer",
        help="tokenizer directory or tokenizer.json (default: train a WordPiece one on the data)",
    )
    parser.add_argument(
        "--max-length",
        type=positive,
        help="examples' length limit in tokens (default: the tokenizer's model_max_length, as "
        "train uses; 512 without --tokenizer)",
    )
    parser.add_argument(
        "--drop-invalid",
        action="store_true",
        help="leave out rows with missing or empty text (or label) instead of stopping",
    )
    _add_reading_arguments(parser)


def _add_reading_arguments(parser: argparse.ArgumentParser) -> None:
    """How data files are read, and whether progress bars are shown."""
    parser.add_argument(
        "--encoding",
        type=encoding_name,
        default="utf-8",
        help="text encoding of the data file (default utf-8)",
    )
    parser.add_argument(
        "--encoding-errors",
        choices=ENCODING_ERRORS,
        default="strict",
        help="at a byte that does not decode: stop with an error naming it (strict, the "
        "default), or replace it with U+FFFD and count them (replace)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cmd_stats(args: argparse.Namespace) -> None:
    from textbatch.cli.bench import data_stats

    report = data_stats(
        args.data,
        text=args.text_column,
        text_pair=args.text_pair_column,
        tokenizer=args.tokenizer,
        max_length=args.max_length,
        batch_size=args.batch_size,
        seed=args.seed,
        encoding=args.encoding,
        encoding_errors=args.encoding_errors,
        drop_invalid=args.drop_invalid,
    )
    lengths, advice = report["lengths"], report["recommendation"]
    print(
        f"{report['source']}: {lengths['examples']:,} examples, "
        f"{_fmt_length(lengths, 'tokens')} tokens"
    )
    print(
        "token lengths: "
        + ", ".join(
            f"{k} {_fmt_length(lengths, k)}"
            for k in ("mean", "min", "p50", "p90", "p95", "p99", "max")
        )
    )
    if lengths.get("over_cap"):
        print(
            f"{lengths['over_cap']:,} example{'s' * (lengths['over_cap'] != 1)} longer than "
            f"{lengths['cap']:,} tokens {'was' if lengths['over_cap'] == 1 else 'were'} counted "
            "no further"
        )
    print(
        f"longer than --max-length {report['max_length']}: {lengths['truncated']:,} examples "
        f"({lengths['truncated'] / lengths['examples']:.1%}) would be truncated"
    )
    if advice["strategy"] == "bucket":
        how = f"BucketBatchSampler(lengths, batch_size={advice['batch_size']})"
    else:
        how = f"BucketBatchSampler(lengths, max_tokens={advice['max_tokens']})"
        print(
            f"lengths are long-tailed (p99 is {advice['p99_over_median']:.1f}x the median): a "
            "token budget keeps every batch the same size in memory"
        )
    print(f"recommended: {how}")
    print(
        f"expected padding {advice['expected_padding']:.1%} (random batches of "
        f"{args.batch_size}: {advice['random_padding']:.1%}); estimated speed-up over random "
        f"batches: {advice['speedup_padded_tokens']:.1f}x in padded tokens, "
        f"{advice['speedup_attention']:.1f}x where attention's quadratic cost dominates"
    )


def _cmd_bench(args: argparse.Namespace) -> None:
    from textbatch.cli.bench import run_bench

    report = run_bench(
        args.out,
        args.data,
        text=args.text_column,
        text_pair=args.text_pair_column,
        label=args.label_column,
        tokenizer=args.tokenizer,
        max_length=args.max_length,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        train_steps=args.train_steps,
        train_repeats=args.train_repeats,
        seed=args.seed,
        encoding=args.encoding,
        encoding_errors=args.encoding_errors,
        overwrite=args.overwrite,
        drop_invalid=args.drop_invalid,
    )
    print(
        f"{report['source']}: {report['examples']:,} examples, batch size {report['batch_size']}, "
        f"token budget {report['max_tokens']:,}, max_length {report['max_length']}"
    )
    header = ("strategy", "waste", "real tokens", "padded tokens", "batches", "plan s")
    line = "{:18s} {:>7s} {:>13s} {:>14s} {:>8s} {:>8s}"
    train = report["train"]
    print(line.format(*header) + ("  train tokens/s (median, spread)" if train else ""))
    fastest = max(report["strategies"], key=lambda s: s["train_tokens_per_second"] or 0)
    for s in report["strategies"]:
        row = (
            f"{s['name']:18s} {s['waste']:7.1%} {s['real_tokens']:13,} {s['padded_tokens']:14,} "
            f"{s['batches']:8,} {s['plan_seconds']:8.3f}"
        )
        if train:
            row += f"  {s['train_tokens_per_second']:14,.0f} {s['train_spread']:6.0%}"
            if s is fastest:
                row += "  fastest"
            elif s["train_within_noise_of_fastest"]:
                row += "  *"
        print(row)
    advice = report["recommendation"]
    print(
        f"recommended by textbatch stats: {advice['benched_as']}"
        + (f" (max_tokens={advice['max_tokens']:,})" if advice["max_tokens"] else "")
    )
    if train:
        fewer = [
            f"{s['name']} {s['train_steps']}"
            for s in report["strategies"]
            if s["train_steps"] < train["steps"]
        ]
        but = f" (all of a shorter plan's: {', '.join(fewer)})" if fewer else ""
        print(
            f"training: the {train['model']} on {train['steps']} batches of each plan{but}, "
            f"{train['repeats']} runs each, interleaved; spread = (max - min) / median; * = its "
            "runs overlap the fastest one's (too close to call on this machine)"
        )
    collate = report["collate"]
    print(
        f"collating a batch of {collate['batch_size']}: PaddingCollator "
        f"{collate['textbatch_seconds'] * 1e6:,.0f} us, DataCollatorWithPadding "
        f"{collate['hf_seconds'] * 1e6:,.0f} us ({collate['speedup']:.1f}x faster)"
    )
    files = ["results.json", "results.csv", *[Path(p).name for p in report["plots"]]]
    print(f"wrote {', '.join(files)} to {args.out}")


def _fmt(value: float | int) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _fmt_length(lengths: dict[str, Any], key: str) -> str:
    """A figure of ``data_stats``'s lengths: "> N" past the cap it counted up to, ">= x" when
    examples past the cap make it a lower bound."""
    value, cap = lengths[key], lengths.get("cap")
    if cap is not None and key != "tokens" and value > cap:
        return f"> {cap:,}"
    return (">= " if key in lengths.get("at_least", ()) else "") + _fmt(value)


def _cmd_demo(args: argparse.Namespace) -> None:
    from textbatch.cli.demo import run_demo

    results = run_demo(
        size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print()
    header = ("batches", "accuracy", "macro-F1", "s/epoch", "tokens/s", "padding")
    print("{:10s} {:>9s} {:>9s} {:>8s} {:>10s} {:>8s}".format(*header))
    for r in results:
        print(
            f"{r['strategy']:10s} {r['accuracy']:9.4f} {r['macro_f1']:9.4f} "
            f"{r['seconds_per_epoch']:8.1f} {r['tokens_per_second']:10,.0f} {r['padding']:8.1%}"
        )
    random, bucket = results
    speedup = random["seconds_per_epoch"] / bucket["seconds_per_epoch"]
    print(
        f"bucketed batches trained {speedup:.1f}x faster per epoch, with "
        f"{bucket['padding']:.1%} padding instead of {random['padding']:.1%}."
    )
    measuring = [r["thread_seconds"] for r in results]
    if any(measuring):
        print(
            "s/epoch, tokens/s and padding are over every epoch's training, leaving out the "
            f"{measuring[0]:.1f} s and {measuring[1]:.1f} s spent choosing thread counts."
        )


def _cmd_train(args: argparse.Namespace) -> None:
    from textbatch.cli.recipes import train_classifier

    train_classifier(config_from_args(args, TrainConfig))


def _cmd_predict(args: argparse.Namespace) -> None:
    from textbatch.cli.predict import predict_file

    summary = predict_file(
        args.model,
        args.data,
        args.out,
        text=args.text_column,
        text_pair=args.text_pair_column,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        device=args.device,
        encoding=args.encoding,
        encoding_errors=args.encoding_errors,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if summary.not_predicted:
        print(f"textbatch predict: {summary.describe_not_predicted()}", file=sys.stderr)
        print(f"wrote {summary.rows:,} rows to {args.out} ({summary.predicted:,} predicted)")
    else:
        print(f"wrote {summary.rows:,} predictions to {args.out}")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``textbatch train: error: ...``, exit 2) and no
    abbreviated flags (``--epoch`` is not ``--epochs``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``textbatch`` command."""
    from textbatch import __version__

    parser = _Parser(
        prog="textbatch",
        allow_abbrev=False,
        description="Fast, low-padding PyTorch batches from labelled text.",
    )
    parser.add_argument("--version", action="version", version=f"textbatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stats = commands.add_parser(
        "stats",
        help="token lengths of a data set, and what batching to use on it",
        description="Tokenise a data set (the embedded corpus by default) and report its token "
        "length distribution, how many examples --max-length would truncate, and a "
        "recommendation: strategy, batch size or token budget, expected padding and the "
        "estimated speed-up over random batches.",
    )
    _add_data_arguments(stats, label=False)
    stats.add_argument(
        "--batch-size", type=positive, default=32, help="examples per batch (default 32)"
    )
    stats.add_argument("--seed", type=non_negative, default=0, help="random seed (default 0)")
    stats.set_defaults(run=_cmd_stats)

    bench = commands.add_parser(
        "bench",
        help="padding, planning and collate time of every batching strategy, with plots",
        description="Tokenise once, then compare on the same lengths: padding every example to "
        "max_length, random batches, transformers' LengthGroupedSampler, a full sort, textbatch "
        "bucketing, a token budget and packing; time PaddingCollator against "
        "DataCollatorWithPadding; with --train-steps, the small classifier's training "
        "throughput under each. Writes results.json, results.csv and PNG plots to --out.",
    )
    _add_data_arguments(bench)
    bench.add_argument(
        "--batch-size", type=positive, default=32, help="examples per batch (default 32)"
    )
    bench.add_argument(
        "--max-tokens", type=positive, help="token budget per batch (default 128 x --batch-size)"
    )
    bench.add_argument(
        "--train-steps", type=positive, help="also train N batches with each strategy (throughput)"
    )
    bench.add_argument(
        "--train-repeats",
        type=positive,
        default=3,
        help="runs per strategy with --train-steps, interleaved; the median is reported "
        "(default 3)",
    )
    bench.add_argument("--seed", type=non_negative, default=0, help="random seed (default 0)")
    bench.add_argument("--out", required=True, help="output directory")
    bench.add_argument(
        "--overwrite", action="store_true", help="replace the results of an earlier bench in --out"
    )
    bench.set_defaults(run=_cmd_bench)

    demo = commands.add_parser(
        "demo",
        help="the whole pipeline on the embedded corpus, random vs bucketed batches",
        description="Generate the embedded corpus, train a tokenizer, build the datasets and "
        "train the same small Transformer classifier on random batches and on bucketed batches; "
        "print accuracy, time per epoch and padding for both (about a minute on 2 CPU cores).",
    )
    demo.add_argument(
        "--size", type=positive, default=20_000, help="corpus examples (default 20000)"
    )
    demo.add_argument("--epochs", type=positive, default=1, help="epochs per run (default 1)")
    demo.add_argument(
        "--batch-size", type=positive, default=32, help="examples per batch (default 32)"
    )
    demo.add_argument(
        "--max-length", type=positive, default=128, help="tokens per example (default 128)"
    )
    demo.add_argument("--seed", type=non_negative, default=0, help="random seed (default 0)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=_cmd_demo)

    train = commands.add_parser(
        "train",
        help="train a text classifier on a data file",
        description="Train a classifier on labelled text and write the model, tokenizer, label "
        "names, history.json and metrics.json to --out. Runs on the CPU, a GPU, or several "
        "processes under torchrun (e.g. torchrun --nproc_per_node 2 -m textbatch train ...).",
    )
    add_arguments(train, TrainConfig)
    train.set_defaults(run=_cmd_train)

    predict = commands.add_parser(
        "predict",
        help="predict labels for a data file with a trained model",
        description="Write one row per row of --data (row, label, probability, reason), in input "
        "order, to --out (.csv or .jsonl). Rows with missing or empty text get no label and a "
        "reason, counted on stderr; exit status 2 when no row can be predicted.",
    )
    predict.add_argument("--model", required=True, help="the directory `textbatch train` wrote")
    predict.add_argument("--data", required=True, help="csv, tsv, json, jsonl, parquet or txt")
    predict.add_argument("--out", required=True, help="predictions file (.csv or .jsonl)")
    predict.add_argument("--text-column", default="text", help="column with the text")
    predict.add_argument("--text-pair-column", help="column with the second text of a pair")
    predict_size = predict.add_mutually_exclusive_group()
    predict_size.add_argument("--batch-size", type=positive, default=64, help="examples per batch")
    predict_size.add_argument("--max-tokens", type=positive, help="token budget per batch")
    predict.add_argument(
        "--device", type=device_name, default="auto", help="auto (CUDA when present), cpu, cuda"
    )
    predict.add_argument(
        "--overwrite", action="store_true", help="replace --out when it exists (never --data)"
    )
    _add_reading_arguments(predict)
    predict.set_defaults(run=_cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``textbatch`` command; bad input prints one clear line and exits with status 2."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's own parser, with its own usage
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    flags = command_flags(parser, args.command)
    with warnings.catch_warnings():
        warnings.showwarning = _warning_printer(args.command, flags)
        try:
            if getattr(args, "no_progress", False) or getattr(args, "progress", True) is False:
                import datasets

                datasets.disable_progress_bars()  # "Generating", "Tokenizing", "Map" bars too
            args.run(args)
        except TextBatchError as error:
            message = in_cli_words(str(error), flags)
            print(f"textbatch {args.command}: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"textbatch {args.command}: interrupted{_where_to_resume(args)}", file=sys.stderr)
            return 130
    return 0


def command_flags(parser: argparse.ArgumentParser, command: str) -> set[str]:
    """The option strings (``--max-tokens``) that ``textbatch <command>`` takes."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(commands.choices[command]._option_string_actions)


def _warning_printer(command: str, flags: set[str] | None = None) -> Callable[..., None]:
    """``warnings.showwarning`` for the CLI: textbatch's warnings as one line in the CLI's
    words (``textbatch train: warning: ...``), other libraries' as Python prints them."""
    default = warnings.showwarning
    shown: set[str] = set()  # a file read twice (tokenizer, then dataset) warns once

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, TextBatchWarning):
            text = in_cli_words(str(message), flags).removeprefix("textbatch ")
            if text not in shown:
                shown.add(text)
                print(f"textbatch {command}: warning: {text}", file=sys.stderr)
        else:
            default(message, category, *args, **kwargs)

    return show


def _where_to_resume(args: argparse.Namespace) -> str:
    """For an interrupted ``train``: where its newest checkpoint is and how to continue."""
    if args.command != "train":
        return "."
    from textbatch.training.checkpoint import checkpoint_folders

    folders = checkpoint_folders(Path(args.out) / "checkpoints")
    if not folders:
        return " before its first checkpoint; run the same command again to start over."
    return f"; the last checkpoint is {folders[0]}. Continue with the same command and --resume."


if __name__ == "__main__":
    sys.exit(main())
