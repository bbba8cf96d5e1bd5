"""`textbatch predict`: one output row per input row in input order (rows without text marked
with a reason), streamed a chunk of rows at a time, written atomically with the umask's mode."""

from __future__ import annotations

import csv
import io
import json
import os
import stat

import datasets
import numpy as np
import pytest

import textbatch.cli.predict as predict
from textbatch import TextBatchError
from textbatch.cli.main import main
from textbatch.cli.predict import predict_file
from textbatch.data.columns import invalid_text_rows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, corpus_records):
    """A small model trained once for the module (its cache in its own folder)."""
    root = tmp_path_factory.mktemp("predict-model")
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in corpus_records[:400]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEXTBATCH_CACHE", str(root / "cache"))
        argv = ["train", "--data", train, "--out", root / "run", "--epochs", 1, "--no-progress"]
        assert main([str(a) for a in argv]) == 0
    return root / "run"


@pytest.fixture(autouse=True)
def quiet_progress_bars():
    """No `datasets` progress bars on stderr, so that stderr holds only what predict says."""
    disabled = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    yield
    if not disabled:
        datasets.enable_progress_bars()


def run(capsys, *argv):
    """The command's exit code, stdout and stderr (no progress bar on stderr)."""
    code = main([str(a) for a in (*argv, "--no-progress")])
    out, err = capsys.readouterr()
    return code, out, err


def run_predict(capsys, model, data, out, *flags):
    """``textbatch predict --model model --data data --out out [flags]``, as :func:`run`."""
    return run(capsys, "predict", "--model", model, "--data", data, "--out", out, *flags)


def read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def labels_of(model_dir):
    return json.loads((model_dir / "labels.json").read_text())


# ---------------------------------------------------------------------- rows without text


def test_rows_without_text_get_a_reason_in_order_jsonl(model_dir, tmp_path, capsys, corpus_records):
    texts = [r["text"] for r in corpus_records[400:405]]
    records = [
        {"text": texts[0]},
        {"text": ""},
        {"text": texts[1]},
        {"text": "  \t "},
        {"text": None},
        {"id": 7},  # no text at all
        {"text": texts[2]},
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "p.jsonl"
    code, stdout, err = run_predict(capsys, model_dir, data, out)
    assert code == 0, err
    assert "Traceback" not in err
    rows = read_jsonl(out)
    assert [r["row"] for r in rows] == list(range(len(records)))  # one per input row, in order
    assert [r["reason"] for r in rows] == [
        None, "empty text", None, "empty text", "missing text", "missing text", None
    ]  # fmt: skip
    for r in rows:
        assert list(r) == ["row", "label", "probability", "reason"]
        if r["reason"] is None:
            assert r["label"] in labels_of(model_dir) and 0 < r["probability"] <= 1
        else:
            assert r["label"] is None and r["probability"] is None
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        "textbatch predict: 4 of 7 rows could not be predicted (2 empty text, 2 missing text); "
        "see the reason column"
    ]
    assert "wrote 7 rows to " in stdout and "(3 predicted)" in stdout


def test_rows_without_text_in_a_csv(model_dir, tmp_path, capsys, corpus_records):
    text = corpus_records[400]["text"]
    data = tmp_path / "data.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "text"], [1, text], [2, "   "], [3, text], [4, " "]])
    out = tmp_path / "p.csv"
    code, _, err = run_predict(capsys, model_dir, data, out)
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert lines[0] == "row,label,probability,reason"
    assert lines[2] == "1,,,empty text" and lines[4] == "3,,,empty text"
    rows = read_csv(out)
    assert [r["row"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[0]["reason"] == rows[2]["reason"] == ""
    assert rows[0]["label"] == rows[2]["label"] != ""  # the same text, the same prediction
    assert "2 of 4 rows could not be predicted (empty text); see the reason column" in err


def test_no_row_with_text_is_one_error_line_and_exit_2(model_dir, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": ""}\n{"text": "   "}\n{"text": null}\n')
    out = tmp_path / "p.csv"
    code, stdout, err = run_predict(capsys, model_dir, data, out)
    assert code == 2 and stdout == ""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("textbatch predict: error: no row of ")
    assert "can be predicted" in lines[0] and "2 empty text, 1 missing text" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".p.csv*"))


def test_reasons_name_what_is_wrong():
    from textbatch.data.columns import invalid_text_reasons

    hf = datasets.Dataset.from_dict(
        {"a": ["x", "", None, "y", "\u200b", "\u200bz"], "b": ["p", "q", "r", " ", "s", "t"]}
    )
    bad = invalid_text_rows(hf, ["a", "b"])
    assert bad.tolist() == [False, True, True, True, True, False]
    reasons = invalid_text_reasons(hf, ["a", "b"], np.flatnonzero(bad))
    assert reasons == ["empty text", "missing text", "empty text pair", "empty text"]
    numbers = datasets.Dataset.from_dict({"a": [1, None]})
    assert invalid_text_reasons(numbers, ["a"], [0, 1]) == ["text is not a string", "missing text"]


def test_a_chunk_without_invalid_rows_of_a_json_typed_text_column(model_dir, tmp_path):
    """A jsonl with a number for a text is read as JSON values; a later chunk of predict's with
    no invalid row crashed (TypeError: ufunc 'invert' not supported: the empty mask was float),
    so any such file over 8,192 rows failed."""
    data = tmp_path / "data.jsonl"
    rows = [{"text": 12345}] + [{"text": f"a fine film number {i}"} for i in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if int(datasets.__version__.split(".")[0]) < 5:  # it cannot read such a file
        with pytest.raises(TextBatchError, match="changed from"):
            predict_file(model_dir, data, tmp_path / "p.jsonl", chunk_rows=2)
        return
    predict_file(model_dir, data, tmp_path / "p.jsonl", chunk_rows=2)
    reasons = [r["reason"] for r in read_jsonl(tmp_path / "p.jsonl")]
    assert reasons == ["text is not a string"] + [None] * 5


def test_invalid_rows_across_many_arrow_chunks():
    import pyarrow as pa

    chunks = [pa.array(["a", " ", None]), pa.array([], pa.string()), pa.array(["", "b"])]
    table = pa.Table.from_arrays([pa.chunked_array(chunks)], names=["text"])
    hf = datasets.Dataset(table)
    assert invalid_text_rows(hf, ["text"]).tolist() == [False, True, True, True, False]


# ---------------------------------------------------------------------- streaming in chunks


@pytest.fixture
def many_rows(tmp_path, corpus_records):
    """230 rows, some without text, spread over several chunks when chunk_rows is small."""
    records = [{"text": r["text"]} for r in corpus_records[:230]]
    for i in (0, 31, 32, 33, 100, 229):
        records[i] = {"text": " " if i % 2 else ""}
    data = tmp_path / "many.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return data


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_chunks_give_the_whole_file_prediction(model_dir, many_rows, tmp_path, suffix, monkeypatch):
    written = []
    write_rows = predict.write_rows

    def recording(f, suffix, rows):
        written.append(len(rows))
        write_rows(f, suffix, rows)

    whole = predict_file(model_dir, many_rows, tmp_path / f"whole{suffix}", chunk_rows=10**6)
    monkeypatch.setattr(predict, "write_rows", recording)
    chunked = predict_file(model_dir, many_rows, tmp_path / f"chunked{suffix}", chunk_rows=32)
    assert written == [32] * 7 + [6]  # written a chunk at a time, never all at once
    assert whole == chunked and chunked.rows == 230 and chunked.not_predicted == {"empty text": 6}

    read = read_csv if suffix == ".csv" else read_jsonl
    expected, got = read(tmp_path / f"whole{suffix}"), read(tmp_path / f"chunked{suffix}")
    assert [r["row"] for r in got] == [r["row"] for r in expected]
    assert [(r["label"], r["reason"]) for r in got] == [(r["label"], r["reason"]) for r in expected]
    for a, b in zip(expected, got, strict=True):
        if a["probability"] in ("", None):
            assert b["probability"] == a["probability"]
        else:  # other batches: the same up to float rounding
            assert float(b["probability"]) == pytest.approx(float(a["probability"]), abs=2e-6)


def test_chunk_rows_must_be_positive(model_dir, many_rows, tmp_path):
    from textbatch.errors import TextBatchError

    with pytest.raises(TextBatchError, match="chunk_rows=0 must be a positive int"):
        predict_file(model_dir, many_rows, tmp_path / "p.csv", chunk_rows=0)


# ---------------------------------------------------------------------- files


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_output_mode_respects_the_umask(model_dir, many_rows, tmp_path, capsys, umask):
    out = tmp_path / "out" / "p.csv"
    previous = os.umask(umask)
    try:
        code, _, err = run(
            capsys, "predict", "--model", model_dir, "--data", many_rows, "--out", out
        )
    finally:
        os.umask(previous)
    assert code == 0, err
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(out.parent) == ["p.csv"]  # no temporary file left beside it


def test_a_failed_run_leaves_no_partial_output(model_dir, many_rows, tmp_path, monkeypatch):
    out = tmp_path / "p.jsonl"
    out.write_text("an earlier run's predictions\n")
    predict_rows = predict.predict_rows
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C with two chunks written
        return predict_rows(*args, **kwargs)

    monkeypatch.setattr(predict, "predict_rows", failing)
    with pytest.raises(KeyboardInterrupt):
        predict_file(model_dir, many_rows, out, chunk_rows=50, overwrite=True)
    assert out.read_text() == "an earlier run's predictions\n"
    assert not list(tmp_path.glob(".p.jsonl*"))  # nor a temporary file


# ---------------------------------------------------------------------- the command's flags


def test_an_existing_out_is_replaced_only_with_overwrite(model_dir, many_rows, tmp_path, capsys):
    out = tmp_path / "p.csv"
    out.write_text("an earlier run's predictions\n")
    argv = ("predict", "--model", model_dir, "--data", many_rows, "--out", out)
    code, _, err = run(capsys, *argv)
    assert code == 2 and "exists; pass --overwrite to replace it" in err and "Traceback" not in err
    assert out.read_text() == "an earlier run's predictions\n"
    code, _, err = run(capsys, *argv, "--overwrite")
    assert code == 0, err
    assert len(read_csv(out)) == 230


def test_a_file_in_another_encoding_is_read_with_encoding(model_dir, tmp_path, capsys):
    data = tmp_path / "latin.csv"
    data.write_bytes(
        "text\ncaf\xe9 prices rise in the city\nthe team won the final\n".encode("latin-1")
    )
    argv = ("predict", "--model", model_dir, "--data", data, "--out", tmp_path / "p.jsonl")
    code, _, err = run(capsys, *argv)
    assert code == 2 and "is not valid utf-8: byte e9 at offset 8 (line 2)" in err
    assert "--encoding" in err and not (tmp_path / "p.jsonl").exists()
    code, _, err = run(capsys, *argv, "--encoding", "latin-1")
    assert code == 0, err
    assert [r["reason"] for r in read_jsonl(tmp_path / "p.jsonl")] == [None, None]


def test_progress_bar_over_rows_unless_no_progress(model_dir, many_rows, tmp_path, capsys):
    argv = ["predict", "--model", model_dir, "--data", many_rows, "--out", tmp_path / "a.csv"]
    assert main([str(a) for a in argv]) == 0
    assert "Predicting" in capsys.readouterr().err
    code, _, err = run(capsys, *argv[:-1], tmp_path / "b.csv")  # run() adds --no-progress
    assert code == 0 and "Predicting" not in err and "Tokenizing" not in err


def test_a_folder_that_is_not_a_model_says_so(tmp_path, many_rows, capsys):
    code, _, err = run(capsys, "predict", "--model", many_rows.parent, "--data", many_rows,
                       "--out", tmp_path / "p.csv")  # fmt: skip
    assert code == 2 and "is not a model folder" in err and "tokenizer" not in err


def test_a_missing_text_column_names_the_flag(model_dir, many_rows, tmp_path, capsys):
    code, _, err = run(capsys, "predict", "--model", model_dir, "--data", many_rows,
                       "--out", tmp_path / "p.csv", "--text-column", "body")  # fmt: skip
    assert code == 2 and "column 'body' is not in" in err and "--text-column" in err
    assert not (tmp_path / "p.csv").exists()


def test_rows_are_truncated_to_the_models_training_length(model_dir, tmp_path, corpus_records):
    """predict cuts texts where training cut them (stored with the model), not at 512."""
    seen = []
    from_hf = predict.TextDataset.from_hf

    def recording(*args, **kwargs):
        seen.append(kwargs["max_length"])
        return from_hf(*args, **kwargs)

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in corpus_records[:20]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predict.TextDataset, "from_hf", recording)
        predict_file(model_dir, data, tmp_path / "p.csv")
    trained = json.loads((model_dir / "model" / "textbatch_model.json").read_text())["max_length"]
    assert seen == [trained]


def test_a_backbone_records_the_length_it_was_trained_with(tiny_bert_dir, tmp_path, capsys,
                                                           corpus_records):  # fmt: skip
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in corpus_records[:64]))
    argv = ["train", "--data", data, "--out", tmp_path / "run", "--model", tiny_bert_dir,
            "--max-length", 24, "--epochs", 1, "--no-progress"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    config = json.loads((tmp_path / "run" / "model" / "textbatch_model.json").read_text())
    assert config["type"] == "BackboneClassifier" and config["max_length"] == 24


def test_a_pair_model_and_a_single_text_model_refuse_the_other_input(
    model_dir, tmp_path, capsys, corpus_records
):
    """A model trained on pairs predicted from the first text alone when --text-pair-column
    was left off, confidently and without a word (and the other way round)."""
    rows = [{"text": r["text"], "second": r["text"][::-1], "label": r["label"]}
            for r in corpus_records[:200]]  # fmt: skip
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = tmp_path / "pairs"
    argv = ["train", "--data", data, "--out", pairs, "--epochs", 1, "--text-pair-column", "second"]
    assert run(capsys, *argv)[0] == 0
    assert json.loads((pairs / "model" / "textbatch_inputs.json").read_text()) == {
        "text_pair": True
    }
    code, _, err = run(capsys, "predict", "--model", pairs, "--data", data, "--out",
                       tmp_path / "p.csv")  # fmt: skip
    assert code == 2 and "trained on text pairs; name the data's second" in err
    code, _, _ = run_predict(
        capsys, pairs, data, tmp_path / "p.csv", "--text-pair-column", "second"
    )
    assert code == 0 and len(read_csv(tmp_path / "p.csv")) == 200
    code, _, err = run_predict(
        capsys, model_dir, data, tmp_path / "q.csv", "--text-pair-column", "second"
    )
    assert code == 2 and "trained on single texts, not pairs" in err


def test_a_killed_runs_temporary_output_is_removed_by_the_next(model_dir, many_rows, tmp_path,
                                                               capsys):  # fmt: skip
    """A SIGKILLed predict left its hidden .p.csv.XXXX.tmp (0600) behind for good."""
    out = tmp_path / "p.csv"
    stale, live = tmp_path / ".p.csv.killed.tmp", tmp_path / ".p.csv.writing.tmp"
    stale.write_text("row,label\n0,a\n")
    live.write_text("row,label\n")
    os.utime(stale, (0, 0))  # untouched for long: its writer is gone
    assert run(capsys, "predict", "--model", model_dir, "--data", many_rows, "--out", out)[0] == 0
    assert not stale.exists() and live.exists()  # a file written to lately may have a writer


def test_an_example_over_max_tokens_is_named_by_its_row(model_dir, tmp_path, capsys):
    """The sampler's error numbered the example among the chunk's rows with text ("example 1"
    for row 3 after two rows without text)."""
    data = tmp_path / "data.jsonl"
    rows = [{"text": ""}, {"text": " "}, {"text": "a short one"}, {"text": "word " * 60}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "p.csv"
    code, _, err = run_predict(capsys, model_dir, data, out, "--max-tokens", 20)
    assert code == 2 and not out.exists()
    assert "error: row 3 has 122 tokens, more than --max-tokens 20 (1 of rows 0 to 3" in err


@pytest.mark.parametrize("blank", ["", "\n"])
def test_texts_that_are_json_themselves_are_predicted(model_dir, tmp_path, capsys, blank):
    """Beside one number, "123" and "null" were read back as 123 and None: no prediction. With
    a blank line too, datasets 5 could not read the file ("changed from string to number")."""
    data = tmp_path / "data.jsonl"
    data.write_text(
        '{"text": 42}\n' + blank + '{"text": "123"}\n{"text": "null"}\n{"text": "\\"great\\""}\n'
    )
    out = tmp_path / "p.jsonl"
    code, _, err = run_predict(capsys, model_dir, data, out)
    if int(datasets.__version__.split(".")[0]) < 5:  # it cannot read such a file
        assert code == 2 and "JSON parse error" in err
        return
    assert code == 0, err
    assert [r["reason"] for r in read_jsonl(out)] == ["text is not a string", None, None, None]
