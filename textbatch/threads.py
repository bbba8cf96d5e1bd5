"""The OpenMP thread policy of ``textbatch`` commands, chosen before torch loads.

Bucketed batches are small and of varying width, so a training step runs many short ops. With
OpenMP's default policy, threads spin at the end of every op waiting for each other; when
another process takes a core, the spinning thread holds up every op (measured on 2 cores: a
bucketed epoch 3x slower beside one busy process). Passive waiting yields the core instead.
The OpenMP runtime reads its environment once, when torch is imported, so the command line sets
it first thing (``textbatch/cli/__init__.py``); a user's own setting always wins. Importing
this module imports nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

# Variables that decide OpenMP's threads or waiting; when the user sets any, textbatch sets none.
USER_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
CLI_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}


def cli_thread_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables ``textbatch`` commands add to ``environ``: :data:`CLI_POLICY`, unless the
    user already chose a thread policy (any of :data:`USER_THREAD_VARIABLES`)."""
    if any(name in environ for name in USER_THREAD_VARIABLES):
        return {}
    return dict(CLI_POLICY)


def apply_cli_thread_policy(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Add :func:`cli_thread_environment` to ``environ`` (default ``os.environ``); returns
    what it added. Has an effect only before torch is imported."""
    environ = os.environ if environ is None else environ
    added = cli_thread_environment(environ)
    environ.update(added)
    return added
