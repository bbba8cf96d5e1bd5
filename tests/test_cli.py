from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from textbatch.cli import main


@pytest.fixture
def files(tmp_path, corpus_records):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in corpus_records[:500]))
    test = tmp_path / "test.csv"
    test.write_text("text\n" + "".join(json.dumps(r["text"]) + "\n" for r in corpus_records[500:]))
    return train, test


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_predict(files, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run(
        capsys, "train", "--data", files[0], "--out", out_dir, "--epochs", 2, "--no-progress"
    )
    assert code == 0, err
    assert "final evaluation: accuracy" in out
    for name in ("model", "tokenizer", "labels.json", "history.json", "metrics.json"):
        assert (out_dir / name).exists(), name
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics) == {"accuracy", "macro_f1", "loss"} and metrics["accuracy"] > 0.3
    assert len(json.loads((out_dir / "history.json").read_text())) == 2
    labels = json.loads((out_dir / "labels.json").read_text())

    predictions = tmp_path / "predictions.jsonl"
    code, out, err = run(
        capsys, "predict", "--model", out_dir, "--data", files[1], "--out", predictions
    )
    assert code == 0, err
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["row"] for r in rows] == list(range(100))  # one per row, in input order
    assert all(r["label"] in labels and 0 < r["probability"] <= 1 for r in rows)

    as_csv = tmp_path / "predictions.csv"
    assert run(capsys, "predict", "--model", out_dir, "--data", files[1], "--out", as_csv)[0] == 0
    assert as_csv.read_text().splitlines()[0] == "row,label,probability"


def test_train_with_a_token_budget_and_eval_file(files, tmp_path, capsys, corpus_records):
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text("".join(json.dumps(r) + "\n" for r in corpus_records[500:]))
    code, _, err = run(
        capsys,
        "train",
        "--data", files[0],
        "--eval-data", evaluation,
        "--model", "transformer",
        "--max-tokens", 2048,
        "--epochs", 1,
        "--dim", 32,
        "--out", tmp_path / "run",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["padding"] < 0.25  # random batches of this data: about 0.8


def test_train_with_packing(files, tmp_path, capsys):
    code, _, err = run(
        capsys,
        "train", "--data", files[0], "--out", tmp_path / "run", "--packing",
        "--max-length", 128, "--max-tokens", 1024, "--epochs", 1, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["padding"] < 0.05


def test_train_resumes(files, tmp_path, capsys):
    args = ["train", "--data", files[0], "--out", tmp_path / "run", "--epochs", 2, "--no-progress"]
    assert run(capsys, *args)[0] == 0
    code, out, _ = run(capsys, *args, "--resume")
    assert code == 0 and "resuming from" in out


def test_demo_end_to_end(capsys):
    code, out, err = run(capsys, "demo", "--size", 800, "--no-progress", "--max-length", 64)
    assert code == 0, err
    assert "random" in out and "bucket" in out
    assert "bucketed batches trained" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--label-column", "topic"], "label column 'topic' is not in the data"),
        (["--text-column", "body"], "column 'body' is not in"),
        (["--max-tokens", 8], "more than max_tokens=8"),
        (["--model", "no/such/model"], "neither 'small', 'transformer' nor a model directory"),
        (["--eval-fraction", 1.5], "--eval-fraction=1.5"),
    ],
)
def test_train_bad_input_is_one_clear_line(files, tmp_path, capsys, args, message):
    code, _, err = run(capsys, "train", "--data", files[0], "--out", tmp_path / "run", *args)
    assert code == 2
    last = err.strip().splitlines()[-1]  # after the progress bars of the data set
    assert last.startswith("textbatch train: error: ") and message in last
    assert "Traceback" not in err


def test_eval_label_never_seen_in_training(files, tmp_path, capsys):
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text(json.dumps({"text": "a new kind of text", "label": "weather"}) + "\n")
    code, _, err = run(
        capsys, "train", "--data", files[0], "--eval-data", evaluation, "--out", tmp_path / "r"
    )
    assert code == 2 and "a label never seen in training" in err and "'weather'" in err


def test_empty_file_and_model_that_is_not_a_model(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = run(capsys, "train", "--data", empty, "--out", tmp_path / "r")
    assert code == 2 and "is empty" in err
    data = tmp_path / "x.csv"
    data.write_text("text\nhello\n")
    code, _, err = run(
        capsys, "predict", "--model", tmp_path, "--data", data, "--out", tmp_path / "p.csv"
    )
    assert code == 2 and "no tokenizer found" in err


def test_corrupt_checkpoint_on_resume(files, tmp_path, capsys):
    args = ["train", "--data", files[0], "--out", tmp_path / "run", "--epochs", 1, "--no-progress"]
    assert run(capsys, *args)[0] == 0
    folder = tmp_path / "run" / "checkpoints"
    (folder / (folder / "latest").read_text().strip() / "trainer_state.json").write_text("{")
    code, _, err = run(capsys, *args, "--resume")
    assert code == 2 and "is damaged or incomplete" in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "train", "predict", "stats"):
        assert command in out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torchrun_two_processes(files, tmp_path):
    out_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TEXTBATCH_CACHE": str(tmp_path / "cache")}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "-m", "textbatch", "train", "--data", str(files[0]), "--out", str(out_dir),
        "--epochs", "2", "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("final evaluation") == 1  # only rank 0 prints
    assert json.loads((out_dir / "metrics.json").read_text())["accuracy"] > 0.2
