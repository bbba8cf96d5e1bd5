"""The exception and warning types textbatch raises for bad input and repaired problems."""


class TextBatchError(ValueError):
    """Bad input to textbatch: the message names the offending value and says how to fix it."""


class TextBatchWarning(UserWarning):
    """Something textbatch noticed and handled (rows dropped, a damaged cache rebuilt, a damaged
    checkpoint passed over): the message says what was done."""
