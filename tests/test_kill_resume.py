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

TIMING = ("seconds", "tokens_per_second")

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


def _without_train_loss(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "train_loss"} for record in history]


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
    for key, value in weights.items():
        assert torch.equal(value, expected[0][key]), key
    assert metrics == expected[2]
    assert _without_train_loss(history) == _without_train_loss(expected[1])
    # The weights, the evaluation and every count are bit-identical. The train loss is the mean
    # of the batches' float32 losses: one CI run (random sampler, checkpoint every 4) saw it off
    # by 2**-17 in an epoch's sum (two float32 ulps of one batch's loss) in a resumed process,
    # its evaluation metrics bit-identical (the weights were not compared then); the cause was
    # not found, and 20 local runs, some under load, did not reproduce it.
    for got, want in zip(history, expected[1], strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-6, abs=0)
    assert not list((out / "checkpoints").glob(".step-*"))
