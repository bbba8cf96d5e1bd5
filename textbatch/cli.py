"""The ``textbatch`` command line: parse arguments, build components, print what they report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from textbatch.errors import TextBatchError


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", help="csv, tsv, json, jsonl, parquet or txt file (default: the embedded corpus)"
    )
    parser.add_argument(
        "--text-column", default="text", help="column with the text (default: text)"
    )
    parser.add_argument("--text-pair-column", help="column with the second text of a pair")
    parser.add_argument(
        "--label-column", default="label", help="column with the labels (default: label)"
    )
    parser.add_argument(
        "--tokenizer",
        help="tokenizer directory or tokenizer.json (default: train a WordPiece one on the data)",
    )
    parser.add_argument(
        "--max-length", type=int, help="truncate examples to this many tokens (default: 512)"
    )
    parser.add_argument(
        "--drop-invalid",
        action="store_true",
        help="drop rows with missing or empty text or label instead of stopping",
    )


def _cmd_stats(args: argparse.Namespace) -> None:
    from textbatch.baselines import random_batches, sorted_batches
    from textbatch.pipeline import load_dataset_and_tokenizer
    from textbatch.stats import length_summary, padding_stats

    dataset, _ = load_dataset_and_tokenizer(
        args.data,
        args.tokenizer,
        text=args.text_column,
        text_pair=args.text_pair_column,
        label=args.label_column,
        max_length=args.max_length,
        drop_invalid=args.drop_invalid,
    )
    lengths = dataset.lengths
    source = args.data or "the embedded corpus"
    print(f"{source}: {len(dataset)} examples, labels: {dataset.label_names or 'none'}")
    summary = length_summary(lengths, args.max_length or 512)
    print("token lengths: " + ", ".join(f"{k} {_fmt(v)}" for k, v in summary.items()))
    batch_size = args.batch_size
    for name, batches in (
        ("random batches", random_batches(len(lengths), batch_size, args.seed)),
        ("sorted by length", sorted_batches(lengths, batch_size)),
    ):
        stats = padding_stats(lengths, batches)
        print(
            f"padding at batch size {batch_size}, {name}: {stats.waste:.1%} of "
            f"{stats.padded_tokens:,} tokens"
        )


def _fmt(value: float | int) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``textbatch`` command."""
    from textbatch import __version__

    parser = argparse.ArgumentParser(
        prog="textbatch",
        description="Fast, low-padding PyTorch batches from labelled text.",
    )
    parser.add_argument("--version", action="version", version=f"textbatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stats = commands.add_parser(
        "stats",
        help="token length distribution and padding of a data set",
        description="Tokenise a data set (the embedded corpus by default) and report its token "
        "lengths and how much padding random and length-sorted batches would carry.",
    )
    _add_data_arguments(stats)
    stats.add_argument("--batch-size", type=int, default=32, help="examples per batch (default 32)")
    stats.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    stats.set_defaults(run=_cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``textbatch`` command; bad input prints one clear line and exits with status 2."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except TextBatchError as error:
        print(f"textbatch {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
