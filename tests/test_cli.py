from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from torchrun import torchrun

from textbatch.cli.main import main


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
    assert "best evaluation (epoch " in out and "kept as model/" in out
    for name in ("model", "tokenizer", "labels.json", "history.json", "metrics.json"):
        assert (out_dir / name).exists(), name
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics) == {"accuracy", "macro_f1", "loss", "epoch", "epochs"}
    history = json.loads((out_dir / "history.json").read_text())
    assert len(history) == 2 and metrics["epochs"] == 2 and metrics["accuracy"] > 0.3
    best = max(range(2), key=lambda i: (history[i]["eval_macro_f1"], -i))
    assert metrics["epoch"] == best + 1
    assert metrics["macro_f1"] == history[best]["eval_macro_f1"]
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
    assert as_csv.read_text().splitlines()[0] == "row,label,probability,reason"


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


def test_a_resume_with_no_checkpoint_makes_its_own_tokenizer(files, tmp_path, capsys):
    """A --resume that finds no checkpoint starts over: it reused the tokenizer/ that a failed
    (or killed) attempt left, trained on other data or replaced by --tokenizer, and predict
    then read the ids with it (accuracy 0.155 against 0.925 in a user's run)."""
    other = tmp_path / "other.jsonl"
    records = [json.loads(line) for line in files[0].read_text().splitlines()]
    other.write_text(  # other words: another vocabulary
        "".join(json.dumps({**r, "text": r["text"].replace("e", "q")}) + "\n" for r in records)
    )
    unknown = tmp_path / "unknown.jsonl"  # a label never seen in training: the attempt fails
    unknown.write_text(json.dumps({"text": "a new kind of text", "label": "weather"}) + "\n")
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--resume", "--data", other, "--eval-data", unknown,
                       "--out", out, "--no-progress")  # fmt: skip
    assert code == 2 and (out / "tokenizer").is_dir(), err  # left by the failed attempt
    args = ["train", "--data", files[0], "--epochs", 1, "--no-progress"]
    assert run(capsys, *args, "--resume", "--out", out)[0] == 0
    assert run(capsys, *args, "--out", tmp_path / "fresh")[0] == 0
    for name in ("tokenizer/tokenizer.json", "metrics.json"):
        assert (out / name).read_text() == (tmp_path / "fresh" / name).read_text(), name


def test_demo_end_to_end(capsys):
    code, out, err = run(capsys, "demo", "--size", 800, "--no-progress", "--max-length", 64)
    assert code == 0, err
    assert "random" in out and "bucket" in out
    assert "bucketed batches trained" in out


def test_demo_figures_are_all_over_the_same_epochs_without_measuring():
    """s/epoch, tokens/s and padding come from the same epochs' training, thread measuring left
    out: the table said 0.9x faster per epoch beside tokens/s 1.85x higher, because s/epoch
    took every epoch with epoch 1's measuring and tokens/s and padding the last epoch alone."""
    from textbatch.cli.demo import history_summary

    history = [
        {"seconds": 3.0, "thread_seconds": 1.5, "real_tokens": 3000, "padded_tokens": 6000},
        {"seconds": 1.5, "thread_seconds": 0.0, "real_tokens": 3000, "padded_tokens": 4000},
    ]
    history[-1].update(eval_accuracy=0.5, eval_macro_f1=0.4)
    summary = history_summary(history)
    assert summary["seconds_per_epoch"] == pytest.approx(1.5)  # (1.5 + 1.5) / 2
    assert summary["tokens_per_second"] == pytest.approx(6000 / 3.0)
    assert summary["padding"] == pytest.approx(1 - 6000 / 10000)
    assert summary["thread_seconds"] == 1.5
    assert (summary["accuracy"], summary["macro_f1"]) == (0.5, 0.4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--label-column", "topic"], "label column 'topic' is not in the data"),
        (["--text-column", "body"], "column 'body' is not in"),
        (["--max-tokens", 8], "more than --max-tokens 8"),
        (["--model", "no/such/model"], "neither 'small', 'transformer' nor a model directory"),
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
    assert code == 2 and "is not a model folder" in err


def test_corrupt_checkpoint_on_resume(files, tmp_path, capsys):
    args = ["train", "--data", files[0], "--out", tmp_path / "run", "--epochs", 1, "--no-progress"]
    assert run(capsys, *args)[0] == 0
    folder = tmp_path / "run" / "checkpoints"
    (next(folder.glob("step-*")) / "trainer_state.json").write_text("{")
    code, _, err = run(capsys, *args, "--resume")
    assert code == 2 and "no valid checkpoint" in err and "trainer_state.json has" in err


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
    command = [
        "-m", "textbatch", "train", "--data", str(files[0]), "--out", str(out_dir),
        "--epochs", "2", "--no-progress", "--overwrite",  # --overwrite: for torchrun's retry
    ]  # fmt: skip
    result = torchrun(command, tmp_path, timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best evaluation") == 1  # only rank 0 prints
    assert json.loads((out_dir / "metrics.json").read_text())["accuracy"] > 0.2


def test_train_options_are_written_once():
    """The parser, the recipe and the resume check all come from TrainConfig."""
    import dataclasses

    from textbatch.cli.config import TrainConfig, config_from_args
    from textbatch.cli.main import build_parser

    argv = ["train", "--data", "d.csv", "--out", "o", "--max-tokens", "512", "--no-progress"]
    config = config_from_args(build_parser().parse_args(argv))
    assert config == TrainConfig(data="d.csv", out="o", max_tokens=512, progress=False)
    assert config.batch_size is None and TrainConfig(data="d", out="o").batch_size == 32
    flags = build_parser().parse_args(["train", "--data", "d", "--out", "o"])
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= set(vars(flags))
    identity = config.identity()
    assert "data" not in identity and "out" not in identity and identity["max_tokens"] == 512
    backbone = TrainConfig(data="d", out="o", model="/models/minilm").identity()
    assert backbone["model"] == "pretrained"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "-1"], "argument --lr: '-1' must be a finite number above 0"),
        (["--lr", "nan"], "argument --lr: 'nan' must be a finite number above 0"),
        (["--device", "gpu"], "'gpu' is not a device"),
        (["--device", "tpu"], "'tpu' is not a device"),
        (["--num-workers", "-1"], "argument --num-workers: '-1' must be 0 or more"),
        (["--seed", "-1"], "argument --seed: '-1' must be 0 or more"),
        (["--checkpoint-every", "0"], "argument --checkpoint-every: '0' must be a positive"),
        (["--checkpoint-every", "-5"], "argument --checkpoint-every: '-5' must be a positive"),
        (["--packing", "--packing-capacity", "0"], "argument --packing-capacity: '0'"),
        (["--epoch", "1"], "unrecognized arguments: --epoch 1"),
        (["--eval-fraction", "1.5"], "must be between 0 and 1"),
    ],
)
def test_bad_train_flags_are_one_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "d.csv", "--out", "o", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("textbatch train: error: ") and message in err
    assert "Traceback" not in err


def test_a_typo_in_another_commands_flag_names_that_command(capsys):
    with pytest.raises(SystemExit):
        main(["stats", "--max-lenght", "5"])
    assert capsys.readouterr().err.startswith("textbatch stats: error: unrecognized arguments")


def test_csv_cells_like_na_are_text(tmp_path, tokenizer, monkeypatch):
    from textbatch import TextDataset

    monkeypatch.setenv("TEXTBATCH_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "na.csv"
    data.write_text("text,label\nNA,None\nnull,nan\nhello,NA\n")
    dataset = TextDataset.from_file(data, tokenizer)
    assert dataset.label_names == ["NA", "None", "nan"] and len(dataset) == 3


def test_header_only_csv_says_it_has_no_rows(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TEXTBATCH_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "header.csv"
    data.write_text("text,label\n")
    code, _, err = run(capsys, "stats", "--data", data)
    assert code == 2 and "has no rows" in err


def test_one_class_data_is_refused(tmp_path, capsys, corpus_records, monkeypatch):
    monkeypatch.setenv("TEXTBATCH_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "one.jsonl"
    data.write_text("".join(json.dumps({**r, "label": "x"}) + "\n" for r in corpus_records[:50]))
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "run", "--no-progress")
    assert code == 2 and "one label only ('x'" in err


def test_predict_refuses_to_overwrite_its_input(files, tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert run(capsys, "train", "--data", files[0], "--out", out_dir, "--epochs", 1,
               "--no-progress")[0] == 0  # fmt: skip
    code, _, err = run(capsys, "predict", "--model", out_dir, "--data", files[1], "--out", files[1])
    assert code == 2 and "is the --data file" in err
    assert files[1].read_text().startswith("text\n")


def test_ctrl_c_says_where_the_last_checkpoint_is(files, tmp_path, capsys, monkeypatch):
    import textbatch.cli.recipes

    out_dir = tmp_path / "run"
    args = ["train", "--data", files[0], "--out", out_dir, "--epochs", 1, "--no-progress"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(textbatch.cli.recipes, "fit", interrupted)
        code, _, err = run(capsys, *args)
    assert code == 130 and "before its first checkpoint" in err and "Traceback" not in err
    assert run(capsys, *args, "--resume")[0] == 0
    with monkeypatch.context() as patch:
        patch.setattr(textbatch.cli.recipes, "fit", interrupted)
        code, _, err = run(capsys, *args, "--resume")
    assert code == 130 and "the last checkpoint is" in err and "step-" in err
    assert err.count("\n") == 1


def test_no_progress_silences_every_bar(files, tmp_path, capsys, monkeypatch):
    import datasets

    monkeypatch.setenv("TEXTBATCH_CACHE", str(tmp_path / "fresh-cache"))
    try:
        args = ["train", "--data", files[0], "--out", tmp_path / "run", "--epochs", 1]
        code, _, err = run(capsys, *args, "--no-progress")
        assert code == 0, err
        assert "Tokenizing" not in err and "Generating" not in err and "batch/s" not in err
    finally:
        datasets.enable_progress_bars()


def test_no_progress_silences_the_bars_of_a_backbone_too(files, tmp_path, capsys, tiny_bert_dir):
    """transformers' "Writing model shards" bar showed through --no-progress."""
    small = tmp_path / "small.jsonl"
    small.write_text("".join(files[0].read_text().splitlines(keepends=True)[:120]))
    args = ["train", "--data", small, "--out", tmp_path / "run", "--epochs", 1, "--no-progress"]
    code, _, err = run(capsys, *args, "--model", tiny_bert_dir, "--max-length", 32)
    assert code == 0, err
    assert "Writing" not in err and "Loading" not in err and "it/s" not in err, err


def test_model_pointing_at_a_data_folder_says_it_is_not_a_model(files, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--data", files[0], "--out", tmp_path / "run",
                       "--model", files[0].parent)  # fmt: skip
    assert code == 2 and "is not a model folder: it has no config.json" in err


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_train_outputs_respect_the_umask(files, tmp_path, capsys, umask):
    import stat

    previous = os.umask(umask)
    try:
        out = tmp_path / "run"
        args = ["train", "--data", files[0], "--out", out, "--epochs", 1, "--no-progress"]
        assert run(capsys, *args)[0] == 0
    finally:
        os.umask(previous)
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*")}
    for name, mode in modes.items():
        expected = (0o777 if (out / name).is_dir() else 0o666) & ~umask
        assert mode == expected, (name, oct(mode), oct(expected))


def test_the_readme_synopsis_names_every_flag_of_every_command():
    import argparse
    import re
    from pathlib import Path

    from textbatch.cli.main import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    synopsis = readme.split("### Command line", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    blocks = re.split(r"^textbatch (\w+)", synopsis, flags=re.M)[1:]
    listed = {
        command: set(re.findall(r"--[\w-]+", text))
        for command, text in zip(blocks[::2], blocks[1::2], strict=True)
    }
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(listed) == set(commands.choices)
    for name, sub in commands.choices.items():
        flags = {f for a in sub._actions for f in a.option_strings if f.startswith("--")}
        assert flags - {"--help"} == listed[name], name


def test_the_same_train_command_gives_the_same_tokenizer_and_metrics(files, tmp_path, capsys):
    """No --tokenizer: the WordPiece tokenizer trained on the data is the same every run."""
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        args = ["train", "--data", files[0], "--out", out, "--epochs", 1, "--no-progress"]
        assert run(capsys, *args)[0] == 0
        outputs.append(
            ((out / "tokenizer" / "tokenizer.json").read_text(), (out / "metrics.json").read_text())
        )
    assert outputs[0] == outputs[1]


def test_model_is_the_best_epoch_and_keep_last_writes_the_last(
    files, tmp_path, capsys, monkeypatch
):
    """model/ holds the weights of the epoch with the best evaluation macro-F1, not the last."""
    import torch

    import textbatch.cli.recipes as recipes

    scores = iter([0.5, 0.9, 0.7])  # the second epoch is the best
    evaluate = recipes.fit.__globals__["evaluate"]

    def scripted(*args, **kwargs):
        metrics = evaluate(*args, **kwargs)
        return {**metrics, "macro_f1": next(scores)}

    monkeypatch.setitem(recipes.fit.__globals__, "evaluate", scripted)
    weights = []
    keep_best = recipes._keep_best

    def recording(out, **options):
        keep = keep_best(out, **options)

        def wrapped(history, model):
            weights.append({k: v.clone() for k, v in model.state_dict().items()})
            keep(history, model)

        return wrapped

    monkeypatch.setattr(recipes, "_keep_best", recording)
    out = tmp_path / "run"
    args = ["train", "--data", files[0], "--out", out, "--epochs", 3, "--keep-last"]
    code, printed, err = run(capsys, *args, "--no-progress")
    assert code == 0, err
    assert "best evaluation (epoch 2 of 3" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and metrics["macro_f1"] == 0.9
    from safetensors.torch import load_file

    best = load_file(out / "model" / "model.safetensors")
    last = load_file(out / "model-last" / "model.safetensors")
    assert all(torch.equal(best[k], weights[1][k]) for k in best)
    assert all(torch.equal(last[k], weights[2][k]) for k in last)
    assert not all(torch.equal(best[k], last[k]) for k in best)
    # predict takes model-last/ (and model/) itself, with the run's tokenizer beside it: it said
    # "no tokenizer found"
    predictions = {}
    for folder in ("model-last", "model", "."):
        where = tmp_path / f"p-{folder.strip('.') or 'run'}.csv"
        argv = ["predict", "--model", out / folder, "--data", files[1], "--out", where]
        code, _, err = run(capsys, *argv, "--no-progress")
        assert code == 0, err
        predictions[folder] = where.read_text()
    assert predictions["model"] == predictions["."] != predictions["model-last"]


def test_pretrained_defaults_bound_memory_and_read_max_length_off_the_data(
    tmp_path, capsys, corpus_records, tiny_bert_dir
):
    import numpy as np

    from textbatch import TextDataset, load_tokenizer
    from textbatch.cli.config import TrainConfig
    from textbatch.training.defaults import suggest_max_length

    config = TrainConfig(data="d", out="o", model=str(tiny_bert_dir))
    assert (config.batch_size, config.max_tokens) == (16, 4096)  # a budget bounds memory
    assert (
        TrainConfig(data="d", out="o", model=str(tiny_bert_dir), max_tokens=8192).batch_size is None
    )
    assert TrainConfig(data="d", out="o").batch_size == 32  # small models as before

    data = tmp_path / "train.jsonl"
    records = [dict(r) for r in corpus_records[:300]]
    records[0]["text"] = " ".join(["word"] * 700)  # one text past the model's 512
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "run"
    argv = ["train", "--data", data, "--out", out, "--model", tiny_bert_dir, "--epochs", 1]
    code, printed, err = run(capsys, *argv)
    assert code == 0, err
    assert "Loading weights" not in err  # no bar of transformers' own
    lengths = TextDataset.from_file(data, load_tokenizer(tiny_bert_dir), max_length=512).lengths
    expected = suggest_max_length(lengths, 512)
    assert expected < 512 and f"max_length {expected} tokens" in printed
    saved = json.loads((out / "model" / "textbatch_model.json").read_text())
    assert saved["max_length"] == expected
    assert np.percentile(lengths, 99) <= expected


def _short_encoder(tmp_path, tokenizer, kind="bert"):
    """A tiny encoder of 40 positions, its tokenizer beside it (whose limit is 512)."""
    from transformers import AutoModel, BertConfig, DebertaV2Config

    config = (BertConfig if kind == "bert" else DebertaV2Config)(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40,
    )  # fmt: skip
    path = tmp_path / kind
    AutoModel.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_train_keeps_within_a_backbones_position_embeddings(files, tmp_path, capsys, tokenizer):
    """The tokenizer's 512 was taken for the model's limit: training failed at the first long
    batch with a traceback (IndexError: index out of range in self)."""
    model = _short_encoder(tmp_path, tokenizer)
    args = ["train", "--data", files[0], "--model", model, "--epochs", 1, "--no-progress"]
    code, out, err = run(capsys, *args, "--out", tmp_path / "run")
    assert code == 0, err
    assert "max_length capped at 40 tokens" in out
    assert (
        json.loads((tmp_path / "run" / "model" / "textbatch_model.json").read_text())["max_length"]
        == 40
    )
    code, _, err = run(capsys, *args, "--out", tmp_path / "over", "--max-length", 64)
    assert code == 2
    assert "--max-length 64 is more than the 40 tokens" in err and "--max-length 40" in err
    # predict takes the run's model/ folder itself: its backbone/ holds no tokenizer, the run does
    written = []
    for model_folder in (tmp_path / "run", tmp_path / "run" / "model"):
        out = tmp_path / f"p{len(written)}.csv"
        argv = ["predict", "--model", model_folder, "--data", files[1], "--out", out]
        code, _, err = run(capsys, *argv, "--no-progress")
        assert code == 0, err
        written.append(out.read_text())
    assert written[0] == written[1]


def test_train_on_a_model_transformers_cannot_build_is_one_clear_line(
    files, tmp_path, capsys, tokenizer
):
    """The new position-limit and packing checks read the configuration unguarded: an unknown
    model_type ended in a ValueError traceback."""
    folder = _short_encoder(tmp_path, tokenizer)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "mybert"}))
    for extra in ([], ["--packing"]):
        args = ["train", "--data", files[0], "--model", folder, "--out", tmp_path / "run", *extra]
        code, _, err = run(capsys, *args, "--no-progress")
        assert code == 2 and f"cannot load a model from '{folder}'" in err, err


def test_train_refuses_packing_for_an_encoder_not_known_to_take_it(
    files, tmp_path, capsys, tokenizer, monkeypatch
):
    """DeBERTa-v2 failed at its first packed batch with a traceback."""
    import textbatch.cli.recipes as recipes

    def unread(*args, **kwargs):
        raise AssertionError("the data was read before the refusal")

    monkeypatch.setattr(recipes, "_from_file", unread)
    model = _short_encoder(tmp_path, tokenizer, "deberta-v2")
    args = ["train", "--data", files[0], "--model", model, "--packing", "--no-progress"]
    code, _, err = run(capsys, *args, "--out", tmp_path / "run")
    assert code == 2 and "not 'deberta-v2'" in err and "without --packing" in err


def test_an_error_in_the_evaluation_file_names_it(files, tmp_path, capsys, corpus_records):
    """ "column 'body' is not in the data" named no file, where the training file has it."""
    train = tmp_path / "train.csv"
    train.write_text(
        "body,label\n" + "".join(f'"{r["text"]}",{r["label"]}\n' for r in corpus_records[:100])
    )
    evaluation = tmp_path / "eval.csv"
    evaluation.write_text(
        "text,label\n" + "".join(f'"{r["text"]}",{r["label"]}\n' for r in corpus_records[100:130])
    )
    args = ["train", "--data", train, "--eval-data", evaluation, "--text-column", "body"]
    code, _, err = run(capsys, *args, "--out", tmp_path / "run", "--no-progress")
    assert code == 2
    assert f"in the evaluation data '{evaluation}': column 'body' is not in the data" in err


def test_train_on_a_txt_file_says_it_holds_no_labels(tmp_path, capsys, corpus_records, monkeypatch):
    """It advised naming the label column with --label-column, which a .txt cannot have (and
    said so once a tokenizer was trained and the file tokenised)."""
    import textbatch.cli.recipes as recipes

    def unread(*args, **kwargs):
        raise AssertionError("a tokenizer was trained before the refusal")

    monkeypatch.setattr(recipes, "trained_tokenizer", unread)
    data = tmp_path / "texts.txt"
    data.write_text("".join(r["text"] + "\n" for r in corpus_records[:50]))
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "run", "--no-progress")
    assert code == 2 and "is a text file: one text per line, no labels" in err
    assert "--label-column" not in err


def test_ctrl_c_while_the_command_loads_is_one_line():
    """torch and transformers load before any command runs (seconds on a busy machine): Ctrl-C
    then printed a KeyboardInterrupt traceback from inside importlib."""
    interrupted_import = """
import builtins, sys
real = builtins.__import__
def interrupt(name, *args, **kwargs):
    if name == "textbatch.cli.main":
        raise KeyboardInterrupt
    return real(name, *args, **kwargs)
builtins.__import__ = interrupt
from textbatch.__main__ import run
sys.exit(run())
"""
    result = subprocess.run(
        [sys.executable, "-c", interrupted_import], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 130
    assert result.stderr == "textbatch: interrupted.\n"


def test_the_console_script_is_the_interruptible_entry_point():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "textbatch"]
    assert script.value == "textbatch.__main__:run"
