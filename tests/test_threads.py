"""The command line's OpenMP policy: set before torch loads, never over the user's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from textbatch.threads import CLI_POLICY, apply_cli_thread_policy, cli_thread_environment


@pytest.mark.parametrize(
    ("environ", "added"),
    [
        ({}, CLI_POLICY),
        ({"PATH": "/bin"}, CLI_POLICY),
        ({"OMP_NUM_THREADS": "1"}, {}),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, {}),
        ({"GOMP_SPINCOUNT": "1000"}, {}),
        ({"KMP_BLOCKTIME": "0"}, {}),
    ],
)
def test_the_policy_is_added_only_when_the_user_chose_none(environ, added):
    assert cli_thread_environment(environ) == added
    copy = dict(environ)
    assert apply_cli_thread_policy(copy) == added
    assert copy == {**environ, **added}


CHECK = """
import os, sys
import textbatch, textbatch.threads
assert "torch" not in sys.modules, "import textbatch loaded torch"
import textbatch.cli  # sets the policy, then imports torch
assert "torch" in sys.modules
print(os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize(("user", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_command_line_sets_it_before_torch_loads(user, seen):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if user is not None:
        env["OMP_WAIT_POLICY"] = user
    result = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == seen
