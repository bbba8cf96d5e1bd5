"""The one exception type textbatch raises for bad input."""


class TextBatchError(ValueError):
    """Bad input to textbatch: the message names the offending value and says how to fix it."""
