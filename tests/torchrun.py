"""Run a script or module on 2 gloo CPU processes with ``torchrun`` (the slow tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# What a rank prints when gloo's threads abort it (SIGABRT) as its interpreter exits, after
# the work is done: torch's, not textbatch's. Measured with tests/hf_trainer_step_worker.py on
# 2 busy cores: 2 runs in 19 without destroy_process_group, 1 in about 150 with it (the worker
# threads outlive it: something in C++ keeps the group), once in CI.
GLOO_EXIT_ABORT = "terminate called without an active exception"


def torchrun(
    args: list[str], tmp_path: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node 2 *args``, with one thread per
    process, the cache under ``tmp_path`` and Python's fault handler on (a rank that dies shows
    its stack). Run once more, and only once, when a rank aborted at exit as above: the test
    still needs one clean run."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONFAULTHANDLER": "1",
        "TEXTBATCH_CACHE": str(tmp_path / "cache"),
        **(env or {}),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0 and GLOO_EXIT_ABORT in result.stderr:
        print(f"a rank aborted at exit ({GLOO_EXIT_ABORT!r}); running once more")
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    return result
