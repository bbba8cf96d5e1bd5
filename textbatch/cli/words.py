"""The library's messages name its Python parameters (``drop_invalid=True``); the command line
says its flags instead (``--drop-invalid``). One table, applied to every error and textbatch
warning the CLI prints; ``tests/test_cli_errors.py`` checks that each library phrase still
occurs in the source, so the table cannot silently stop matching."""

from __future__ import annotations

import re
from collections.abc import Collection

from textbatch.cli.config import flag_of

# (the library's words, the command line's words), applied in order.
PHRASES: tuple[tuple[str, str], ...] = (
    (
        "Pass the name of the text column as text=... (and text_pair=...).",
        "Name the text column with --text-column (and the second one with --text-pair-column).",
    ),
    (
        "Fix the data, or pass drop_invalid=True to drop such rows (num_dropped reports how many).",
        "Fix the data, or pass --drop-invalid to drop such rows.",
    ),
    (
        "Convert it to text, or pass drop_invalid=True to drop such rows (num_dropped reports "
        "how many).",
        "Fix the data, or pass --drop-invalid to drop such rows.",
    ),
    ("nothing is left after drop_invalid=True.", "nothing is left after --drop-invalid."),
    ("(drop_invalid=True)", "(--drop-invalid)"),
    (
        "Pass label=<name>, or label=None for unlabelled data.",
        "Name the label column with --label-column.",
    ),
    (
        "Add them to label_names, or remove those rows.",
        "Remove those rows, or add examples of those labels to --data.",
    ),
    ("is not in label_names", "is not among the training labels"),
    (
        "Raise max_tokens, truncate with max_length, or pass oversized='alone' to give each such "
        "example a batch of its own.",
        "Raise --max-tokens to at least the longest example, or lower --max-length.",
    ),
    (
        "Raise it, truncate with max_length, or pass oversized='truncate' (and pack with "
        "PackingCollator(overlong='truncate')).",
        "Raise --packing-capacity to at least the longest example, or lower --max-length.",
    ),
    (
        "or train one with textbatch.train_tokenizer().",
        "or leave out --tokenizer to train one on the data.",
    ),
    ("continue it with resume=True (--resume)", "continue it with --resume"),
    (
        "Pass the file's encoding as encoding=... (e.g. 'cp1252', what Excel writes on "
        "Windows, or 'latin-1'), or encoding_errors='replace' to replace such bytes with U+FFFD.",
        "Give the file's encoding with --encoding (e.g. --encoding cp1252, what Excel writes on "
        "Windows, or latin-1), or pass --encoding-errors replace to replace such bytes with "
        "U+FFFD.",
    ),
    ("Pass encoding='utf-16'.", "Pass --encoding utf-16."),
    ("pass encoding='cp1252'.", "pass --encoding cp1252."),
    ("(encoding_errors='replace')", "(--encoding-errors replace)"),
)

# A phrase above that names a flag some command lacks, and what that command says instead.
WITHOUT_FLAG: dict[str, tuple[str, str]] = {
    "Fix the data, or pass --drop-invalid to drop such rows.": (
        "--drop-invalid",
        "Fix the data.",
    ),
    "Raise --max-tokens to at least the longest example, or lower --max-length.": (
        "--max-length",
        "Raise --max-tokens to at least the longest example.",
    ),
}

# Parameter names with a value: ``max_tokens=8`` -> ``--max-tokens 8``.
FLAGS = {
    "max_tokens": "--max-tokens",
    "max_length": "--max-length",
    "packing_capacity": "--packing-capacity",
    "batch_size": "--batch-size",
    "vocab_size": "--vocab-size",
    "grad_accum": "--grad-accum",
    "checkpoint_every": "--checkpoint-every",
}
_FLAG_VALUE = re.compile(r"\b(" + "|".join(FLAGS) + r")=")


# A resume refused for an option of the command line: "config.lr=None in the checkpoint, 0.01
# now" (the names of TrainConfig's fields) -> "--lr: not given (the default) when the run
# started, 0.01 now".
_CONFIG_VALUE = re.compile(r"config\.(\w+)=(.+?) in the checkpoint, (.+?) now(?=; |\. )")


def _said_as_flag(match: re.Match[str]) -> str:
    def shown(value: str) -> str:
        if value in ("None", "'<none>'"):
            return "not given (the default)"
        return {"True": "given", "False": "not given"}.get(value, value.strip("'"))

    name, before, now = match.groups()
    flag = flag_of(name) or name
    return f"{flag}: {shown(before)} when the run started, {shown(now)} now"


def in_cli_words(message: str, flags: Collection[str] | None = None) -> str:
    """``message`` with the library's parameter names replaced by the CLI's flags; with
    ``flags`` (the command's own), advice that names a flag the command lacks is reworded."""
    for library, cli in PHRASES:
        message = message.replace(library, cli)
    if flags is not None:
        for cli, (flag, instead) in WITHOUT_FLAG.items():
            if flag not in flags:
                message = message.replace(cli, instead)
    message = _CONFIG_VALUE.sub(_said_as_flag, message)
    return _FLAG_VALUE.sub(lambda match: FLAGS[match.group(1)] + " ", message)
