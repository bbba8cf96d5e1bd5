"""How many threads ``fit`` trains with on the CPU: measured at the start of a run, and again
every so often.

Bucketed batches are small and of varying width, so a training step runs many short ops, each
ending at an OpenMP barrier where the threads wait for each other. When another process takes a
core, the thread that lost it holds up every op (measured on 2 cores: a bucketed epoch 3x slower
beside one busy process); with fewer threads there is no one to wait for. So ``fit`` times a few
forward and backward passes of a typical batch (the epoch's batch of mean padded size, with a
``BucketBatchSampler``; else the first) at torch's thread count and at fewer, and trains with
the fastest (fewer only when clearly faster). It measures again every :data:`RECHECK_AFTER`
seconds or more (``ThreadWatch``): load comes and goes on a shared machine, and a short
measurement can catch a moment of it. Those passes leave no trace (no optimizer step, dropout
off, gradients and random state put back). The count in use is saved in checkpoints, so that a
resumed run goes on with it; results differ in the last digits between thread counts
(LayerNorm's backward sums per thread).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# Variables that set OpenMP's threads or waiting; when the user sets any, fit leaves threads alone.
USER_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
)
CLEARLY_FASTER = 1.15  # fewer threads win only when this much faster
DECISIVE = 2.0  # two rounds are enough when a count is this much faster than another
ROUNDS = 3  # rounds of one pass per count; the fastest pass of each count counts
SHORTEST_PASS = 0.01  # seconds: passes this quick are not worth choosing for
RECHECK_AFTER = 30.0  # seconds of a run between two measurements, at least
RECHECK_SHARE = 0.02  # and measuring takes at most this share of the run's time


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count chosen, the fastest pass measured at each count tried and the time
    all the passes took (seconds)."""

    threads: int
    seconds: dict[int, float]
    measuring: float = 0.0

    def describe(self, available: int, previous: int | None = None) -> str:
        """One line for the run's log (``previous``: the count this choice replaces)."""
        if self.threads == available:
            if previous is None or previous == available:
                return f"threads: {available}"
            return (
                f"threads: back to {available} from {previous} (a training pass measured "
                f"{1000 * self.seconds[available]:.0f} ms with {available}, "
                f"{1000 * self.seconds[previous]:.0f} ms with {previous})"
            )
        speedup = self.seconds[available] / self.seconds[self.threads]
        change = "" if previous is None else f", from {previous}"
        return (
            f"threads: {self.threads} of {available}{change} (a training pass measured "
            f"{speedup:.1f}x faster than with {available} in {self.measuring:.2f} s: another "
            f"process is using the CPU; --threads {available} or OMP_NUM_THREADS={available} "
            f"keeps {available})"
        )


@dataclass
class ThreadWatch:
    """When ``fit(threads="auto")`` measures: at the first batch, then again every
    :data:`RECHECK_AFTER` seconds or more, so that measuring takes at most
    :data:`RECHECK_SHARE` of the run. Another process may start or stop during a run, and a
    measurement in a moment of load (a few tenths of a second) may be wrong for the rest of it;
    measuring again puts either right. ``available``: the most threads (torch's count when the
    run started); ``next_at``: ``clock()`` time of the next measurement (None: at once)."""

    available: int
    next_at: float | None = None
    clock: Callable[[], float] = time.perf_counter

    def due(self) -> bool:
        return self.next_at is None or self.clock() >= self.next_at

    def measured(self, choice: ThreadChoice) -> None:
        wait = max(RECHECK_AFTER, choice.measuring / RECHECK_SHARE)
        self.next_at = self.clock() + wait

    def later(self) -> ThreadWatch:
        """This watch, its first measurement :data:`RECHECK_AFTER` seconds from now (a resumed
        run trains on with its checkpoint's count first)."""
        self.next_at = self.clock() + RECHECK_AFTER
        return self


def user_chose_threads(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment sets any of :data:`USER_THREAD_VARIABLES`."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in USER_THREAD_VARIABLES)


def candidate_threads(available: int) -> list[int]:
    """Thread counts worth trying, most first: all of them, half, one."""
    return sorted({available, max(1, available // 2), 1}, reverse=True)


def choose_threads(
    one_pass: Callable[[], None],
    candidates: Sequence[int],
    set_threads: Callable[[int], None],
    rounds: int = ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
) -> ThreadChoice:
    """Time ``one_pass`` at each of ``candidates`` (most threads first), ``rounds`` times after
    one warm-up pass, and choose: the most threads, unless fewer are :data:`CLEARLY_FASTER`.
    Each count's fastest pass counts, so one pass slowed by a passing blip of load decides
    nothing. Stops after the first round when passes are shorter than :data:`SHORTEST_PASS`
    (nothing to win), after the second when one count is :data:`DECISIVE`. Leaves the chosen
    count set."""
    most, began = candidates[0], clock()
    set_threads(candidates[-1])
    one_pass()  # warm-up: the first pass also allocates
    seconds: dict[int, float] = {}
    for done in range(1, rounds + 1):
        for threads in candidates:
            set_threads(threads)
            started = clock()
            one_pass()
            elapsed = clock() - started
            seconds[threads] = min(elapsed, seconds.get(threads, elapsed))
        fastest, slowest = min(seconds.values()), max(seconds.values())
        if seconds[most] < SHORTEST_PASS or (done >= 2 and slowest >= DECISIVE * fastest):
            break
    chosen = most
    for threads in candidates[1:]:
        if seconds[most] >= SHORTEST_PASS and seconds[threads] * CLEARLY_FASTER < seconds[chosen]:
            chosen = threads
    set_threads(chosen)
    return ThreadChoice(chosen, seconds, clock() - began)
