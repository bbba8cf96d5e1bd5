"""`textbatch train` killed (SIGKILL) at random points and resumed ends exactly as an unbroken
run: the same weights, history and metrics (DESIGN.md, Guarantees: resume equality)."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TIMING = ("seconds", "thread_seconds", "tokens_per_second")

CONFIGS = {
    "bucket": ["--sampler", "bucket", "--batch-size", "16"],
    "random": ["--sampler", "random", "--batch-size", "16"],
    "token-budget": ["--sampler", "bucket", "--max-tokens", "1024"],
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, corpus_records, tokenizer):
    folder = tmp_path_factory.mktemp("inputs")
    with open(folder / "data.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(corpus_records[:400])
    # A fixed tokenizer: the default one is trained per run, and WordPiece training in
    # `tokenizers` breaks ties in an unspecified order.
    tokenizer.save_pretrained(folder / "tokenizer")
    return folder


def _command(inputs: Path, out: Path, config: str, every: int | None) -> list[str]:
    command = [sys.executable, "-m", "textbatch", "train", "--data", str(inputs / "data.csv")]
    command += ["--tokenizer", str(inputs / "tokenizer"), "--out", str(out), "--epochs", "3"]
    command += ["--model", "transformer", "--dim", "32", "--lr", "3e-3", "--max-length", "96"]
    command += ["--no-progress"]
    command += CONFIGS[config]
    if every:
        command += ["--checkpoint-every", str(every)]
    return command


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "TEXTBATCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def _results(out: Path) -> tuple[dict, list, dict]:
    weights = load_file(str(out / "model" / "model.safetensors"))
    history = json.loads((out / "history.json").read_text())
    history = [{k: v for k, v in r.items() if k not in TIMING} for r in history]
    return weights, history, json.loads((out / "metrics.json").read_text())


def _checkpoints(out: Path) -> set[str]:
    return {p.name for p in (out / "checkpoints").glob("step-*")}


def _kill_during_training(process: subprocess.Popen, out: Path, delay: float) -> bool:
    """Wait for the run to write a checkpoint it did not start with, then SIGKILL it ``delay``
    seconds later (somewhere in the next steps). False when the run finished first."""
    before = _checkpoints(out)
    while process.poll() is None and _checkpoints(out) <= before:
        time.sleep(0.02)
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("every", [None, 4])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_killed_and_resumed_train_equals_an_unbroken_run(inputs, tmp_path, config, every):
    env = _env(tmp_path / "cache")
    whole = tmp_path / "whole"
    subprocess.run(_command(inputs, whole, config, every), env=env, check=True, capture_output=True)
    expected = _results(whole)

    out = tmp_path / "cut"
    rng = random.Random(f"{config}-{every}")
    kills = []
    for attempt in range(3):
        command = _command(inputs, out, config, every) + (["--resume"] if attempt else [])
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if not _kill_during_training(process, out, rng.uniform(0.0, 1.0)):
            assert process.returncode == 0, process.stderr.read().decode()
            break
        kills.append(sorted(_checkpoints(out)))
    final = subprocess.run(
        [*_command(inputs, out, config, every), "--resume"], env=env, capture_output=True
    )
    assert final.returncode == 0, final.stderr.decode()
    print(f"{config}, checkpoint every {every}: killed with checkpoints {kills}")
    assert kills, "no kill landed during training"
    weights, history, metrics = _results(out)
    assert weights.keys() == expected[0].keys()
    _assert_same_results((weights, history, metrics), expected)
    assert not list((out / "checkpoints").glob(".step-*"))


# What a resumed run decides is exact: the batches, their order, the steps, the evaluation's
# counts. Its float results were bit-identical in almost every kill-and-resume case, but not all:
# under a busy loop on the 2-core machine, 1 of about 40 cases (and one CI run, 2026-12-03) had a
# resumed process compute an epoch in the last bits differently, its batches the same (the
# epoch's train loss 3e-8 relative off, evaluation bit-identical; an unbroken run repeated in a
# fresh process was bit-identical). The cause, somewhere in torch's CPU kernels or MKL, was not
# found. By the end the weights differed by at most 4e-7, but for attention's key bias: the
# softmax over keys ignores it, so its gradient is round-off alone, which Adam scales up to
# steps of the learning rate (1e-4 apart there). It changes no output and is not compared. A
# fault of the resume moves the weights by far more: with the mid-epoch RNG state left
# unrestored (dropout masks differ), 7e-3 in the weights and 6e-4 in the train loss.
WEIGHT_RTOL, WEIGHT_ATOL = 1e-5, 1e-6
LOSS_REL = 1e-6
LOSSES = ("train_loss", "eval_loss", "loss")


def _without_key_bias(key: str, value: torch.Tensor) -> torch.Tensor:
    """``value``, with the key third of an attention in-projection bias set to 0."""
    if not key.endswith("in_proj_bias"):
        return value
    third = value.shape[0] // 3
    return torch.cat([value[:third], torch.zeros(third), value[2 * third :]])


def _assert_same_results(got: tuple[dict, list, dict], want: tuple[dict, list, dict]) -> None:
    weights, history, metrics = got
    apart = {k: float((v - want[0][k]).abs().max()) for k, v in weights.items()}
    apart = {k: d for k, d in apart.items() if d > 0}
    # A CI log then says which parameters were not bit-identical, and by how much.
    print(
        f"weights not bit-identical (largest differences): {apart}"
        if apart
        else "weights bit-identical"
    )
    for key, value in weights.items():
        torch.testing.assert_close(
            _without_key_bias(key, value),
            _without_key_bias(key, want[0][key]),
            rtol=WEIGHT_RTOL,
            atol=WEIGHT_ATOL,
            msg=lambda m, k=key: f"{k}: {m}",
        )
    records = [*zip(history, want[1], strict=True), (metrics, want[2])]
    for record, expected in records:
        assert record.keys() == expected.keys()
        for name, value in record.items():
            if name in LOSSES:
                assert value == pytest.approx(expected[name], rel=LOSS_REL, abs=0), name
            else:
                assert value == expected[name], name
