"""One contract test for every stateful piece: stop at the start, the middle and the end of an
epoch, restore into a fresh object, and compare with a run that never stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def run_epochs(obj: Any, epochs: int, start_epoch: int = 0) -> list[list[Any]]:
    """Everything ``obj`` yields in ``epochs`` epochs, one list per epoch."""
    out = []
    for epoch in range(start_epoch, start_epoch + epochs):
        obj.set_epoch(epoch)
        out.append(list(obj))
    return out


def check_save_load_state(
    make: Callable[[], Any],
    epochs: int = 2,
    stop_epoch: int = 0,
    state_of: Callable[[Any, int], dict] | None = None,
    items: Callable[[Iterable[Any]], list[Any]] = list,
) -> None:
    """Assert that stopping after ``k`` items of epoch ``stop_epoch`` and resuming from the saved
    state in a fresh object yields exactly what an uninterrupted run yields, for ``k`` at the
    start, the middle and the end of the epoch, and for the epochs after it.

    ``state_of(obj, k)`` returns the state after ``k`` consumed items (default
    ``obj.state_dict()``).
    """
    expected = run_epochs(make(), epochs)
    total = len(expected[stop_epoch])
    assert total > 0, "the contract needs a non-empty epoch"
    for stop in sorted({0, total // 2, total}):
        first = make()
        first.set_epoch(stop_epoch)
        iterator = iter(first)
        consumed = [next(iterator) for _ in range(stop)]
        state = first.state_dict() if state_of is None else state_of(first, stop)

        resumed = make()
        resumed.load_state_dict(state)
        resumed.set_epoch(stop_epoch)  # a training loop calls this again: it must not reset
        if hasattr(resumed, "__len__"):
            assert len(resumed) == total - stop
        rest = items(resumed)
        assert consumed + rest == expected[stop_epoch], f"resume after {stop} of {total} differs"
        later = run_epochs(resumed, epochs - stop_epoch - 1, start_epoch=stop_epoch + 1)
        assert later == expected[stop_epoch + 1 :], f"epochs after a resume at {stop} differ"
