"""Argument checks shared by the samplers and streams: whole numbers given as ints (numpy ints
too), never bools or floats, checked when given rather than when first used."""

from __future__ import annotations

from typing import Any

import numpy as np

from textbatch.errors import TextBatchError


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def positive_int(name: str, value: Any, allow_none: bool = True) -> int | None:
    """``value`` as an int >= 1 (or None when allowed), else a ``TextBatchError`` naming it."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < 1:
        raise TextBatchError(f"{name}={value!r} must be a positive int.")
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an int >= 0 (an epoch, a position, a seed), else a ``TextBatchError``."""
    if not _is_int(value) or value < 0:
        raise TextBatchError(f"{name}={value!r} must be a non-negative int.")
    return int(value)


def positive_float(name: str, value: Any, allow_none: bool = True) -> float | None:
    """``value`` as a finite float > 0 (a learning rate; None when allowed), else a
    ``TextBatchError`` naming it."""
    import math

    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TextBatchError(f"{name}={value!r} must be a number above 0.")
    if not math.isfinite(value) or value <= 0:
        raise TextBatchError(f"{name}={value!r} must be a finite number above 0.")
    return float(value)
