"""The exception and warning types textbatch raises for bad input and repaired problems."""

from __future__ import annotations

from collections.abc import Iterator


class TextBatchError(ValueError):
    """Bad input to textbatch: the message names the offending value and says how to fix it."""


class TextBatchWarning(UserWarning):
    """Something textbatch noticed and handled (rows dropped, a damaged cache rebuilt, a damaged
    checkpoint passed over): the message says what was done."""


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what caused it (``__cause__``, else ``__context__``), and so on: where a
    library's wrapping error (``DatasetGenerationError``) keeps the words that say what failed."""
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__
