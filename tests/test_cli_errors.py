"""The command line in its own words: flags instead of Python parameters, files in any encoding
read as written or refused with where they break, ``--out`` never clobbered, and a failed run
that leaves nothing behind."""

from __future__ import annotations

import csv
import json
import os
import re
import time
import warnings
from pathlib import Path

import pytest

from textbatch import TextBatchError, TextBatchWarning, TextDataset
from textbatch.cli.main import main
from textbatch.cli.words import PHRASES, in_cli_words

PYTHON_WORDS = re.compile(r"\w=(True|None|<|\.\.\.|'|\d)|label_names|oversized|PackingCollator")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, command: str) -> str:
    """The error line, after checking that it is the only thing of note on stderr."""
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"textbatch {command}: error: ")
    return lines[0]


def write_csv(path: Path, records: list[dict], fields=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    return path


@pytest.fixture
def data(tmp_path, corpus_records, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    return write_csv(tmp_path / "data.csv", corpus_records[:300]), tmp_path / "tok"


# ---------------------------------------------------------------------- the CLI's words


def test_every_library_phrase_of_the_table_is_still_in_the_source():
    source = "".join(p.read_text() for p in Path("textbatch").rglob("*.py") if p.name != "words.py")
    flat = re.sub(r'"\s*\n\s*(f?)"', "", source)  # join implicitly concatenated strings
    for library, _ in PHRASES:
        assert library in flat, library


PACKING = (
    "Raise it, truncate with max_length, or pass oversized='truncate' (and pack with "
    "PackingCollator(overlong='truncate'))."
)
# Library phrases a command never meets, and why (the test below checks all others).
NEVER_MET = {
    "predict": {
        "nothing is left after drop_invalid=True.": "predict keeps invalid rows",
        "(drop_invalid=True)": "predict keeps invalid rows",
        "Pass label=<name>, or label=None for unlabelled data.": "predict reads no labels",
        PACKING: "predict does not pack",
        "or train one with textbatch.train_tokenizer().": "the model folder has its tokenizer",
        "continue it with resume=True (--resume)": "predict does not train",
    },
    "stats": {
        "Pass label=<name>, or label=None for unlabelled data.": "stats reads no labels",
        "Raise max_tokens, truncate with max_length, or pass oversized='alone' to give each "
        "such example a batch of its own.": "its budget is at least --max-length, which it cuts to",
        PACKING: "stats does not pack",
        "continue it with resume=True (--resume)": "stats does not train",
    },
    "bench": {
        PACKING: "bench packs rows of --max-length tokens",
        "continue it with resume=True (--resume)": "bench trains without checkpoints",
    },
}


@pytest.mark.parametrize("command", ["train", "predict", "stats", "bench"])
def test_every_flag_a_command_advises_is_one_it_takes(command):
    """stats and bench advised --drop-invalid, predict --max-length: flags they did not take.
    (demo reads only the embedded corpus.)"""
    from textbatch.cli.main import build_parser, command_flags

    flags = command_flags(build_parser(), command)
    for library, _ in PHRASES:
        if library in NEVER_MET.get(command, {}):
            continue
        advised = set(re.findall(r"--[a-z][a-z-]*", in_cli_words(library, flags)))
        assert advised <= flags, (library, advised - flags)


def test_flag_values_are_rewritten():
    assert in_cli_words("more than max_tokens=8 allows") == "more than --max-tokens 8 allows"
    assert in_cli_words("max_length=0 must be") == "--max-length 0 must be"


@pytest.mark.parametrize(
    ("case", "flags", "expected"),
    [
        ("text column", ["--text-column", "body"], "--text-column"),
        ("label column", ["--label-column", "topic"], "--label-column"),
        ("empty text", [], "--drop-invalid"),
        ("unknown eval label", ["--eval-data", "EVAL"], "not among the training labels"),
        ("budget", ["--max-tokens", "8", "--max-length", "64"], "Raise --max-tokens"),
        (
            "packing",
            ["--packing", "--packing-capacity", "8", "--max-length", "64"],
            "Raise --packing-capacity",
        ),
        ("encoding", ["--data", "LATIN"], "--encoding cp1252, what Excel writes on Windows, or"),
    ],
)
def test_train_errors_name_flags_not_python(
    data, tmp_path, capsys, corpus_records, case, flags, expected
):
    path, tok = data
    if case == "empty text":
        records = [dict(r) for r in corpus_records[:300]]
        records[7]["text"] = ""
        path = write_csv(tmp_path / "empty.csv", records)
    evaluation = write_csv(
        tmp_path / "eval.csv", [{"text": "a new thing", "label": "astrology"}, *corpus_records[:9]]
    )
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"text,label\n" + "caf\xe9 au lait,food\n".encode("latin-1") * 20)
    flags = [{"EVAL": evaluation, "LATIN": latin}.get(f, f) for f in flags]
    argv = ["train", "--data", path, "--tokenizer", tok, "--out", tmp_path / "run", *flags]
    code, _, err = run(capsys, *argv, "--no-progress")
    line = one_error_line(err, "train")
    assert code == 2 and expected in line
    assert not PYTHON_WORDS.search(line), line
    assert not (tmp_path / "run").exists()  # a failed run leaves nothing behind


def test_warnings_are_one_line_in_cli_words(data, tmp_path, capsys, corpus_records):
    _, tok = data
    records = [dict(r) for r in corpus_records[:300]]
    records[3]["text"] = "   "
    path = write_csv(tmp_path / "blank.csv", records)
    argv = ["train", "--data", path, "--tokenizer", tok, "--out", tmp_path / "run", "--epochs", 1]
    code, _, err = run(capsys, *argv, "--drop-invalid", "--no-progress")
    assert code == 0
    warning = [line for line in err.splitlines() if "warning" in line]
    assert warning == [
        "textbatch train: warning: dropped 1 of 300 rows with missing, non-string or empty text "
        "or label (--drop-invalid)."
    ]


# ---------------------------------------------------------------------- encodings

BAD = "caf\xe9 cr\xe8me".encode("latin-1")  # not UTF-8


def _bad_files(folder: Path) -> dict[str, tuple[Path, int]]:
    """One file per text format with a latin-1 text in its 21st example: (path, its line)."""
    texts = [f"text number {i}".encode() for i in range(40)]
    texts[20] = BAD
    labels = [b"a" if i % 2 else b"b" for i in range(40)]
    files = {}
    rows = b"".join(t + b"," + label + b"\n" for t, label in zip(texts, labels, strict=True))
    (folder / "bad.csv").write_bytes(b"text,label\n" + rows)
    files["csv"] = (folder / "bad.csv", 22)
    lines = [
        b'{"text": "' + t + b'", "label": "' + label + b'"}\n'
        for t, label in zip(texts, labels, strict=True)
    ]
    (folder / "bad.jsonl").write_bytes(b"".join(lines))
    files["jsonl"] = (folder / "bad.jsonl", 21)
    (folder / "bad.txt").write_bytes(b"".join(t + b"\n" for t in texts))
    files["txt"] = (folder / "bad.txt", 21)
    return files


@pytest.mark.parametrize("kind", ["csv", "jsonl", "txt"])
def test_a_file_that_is_not_utf8_names_the_byte_and_line(tmp_path, tokenizer, capsys, kind):
    path, line = _bad_files(tmp_path)[kind]
    tokenizer.save_pretrained(tmp_path / "tok")
    code, _, err = run(capsys, "stats", "--data", path, "--tokenizer", tmp_path / "tok")
    message = one_error_line(err, "stats")
    assert code == 2
    assert f"{str(path)!r} is not valid utf-8: byte e9 at offset" in message
    assert f"(line {line})" in message and "--encoding" in message


@pytest.mark.parametrize("kind", ["csv", "jsonl", "txt"])
def test_the_files_encoding_reads_the_text_as_written(tmp_path, tokenizer, kind):
    path, _ = _bad_files(tmp_path)[kind]
    label = None if kind == "txt" else "label"
    latin = TextDataset.from_file(path, tokenizer, label=label, encoding="latin-1")
    same_in_utf8 = tmp_path / f"utf8.{kind}"
    same_in_utf8.write_text(path.read_bytes().decode("latin-1"), encoding="utf-8")
    expected = TextDataset.from_file(same_in_utf8, tokenizer, label=label)
    assert [list(e["input_ids"]) for e in latin] == [list(e["input_ids"]) for e in expected]
    assert tokenizer.decode(latin[20]["input_ids"], skip_special_tokens=True).startswith("caf")


def test_a_cp1252_file_read_as_latin_1_warns_every_time(tmp_path, tokenizer, capsys):
    """latin-1 decodes Excel's cp1252 bytes for curly quotes, dashes and the euro sign as C1
    control characters, which the tokenizer drops: with the error's old first advice
    (--encoding latin-1) such texts trained without them, without a word."""
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "text,label\n\u201cgreat\u201d price \u20ac5 \u2013 cheap,pos\n".encode("cp1252")
    )
    for _ in range(2):  # the second read comes from the cache, and still warns
        with pytest.warns(TextBatchWarning, match="decoded 4 bytes .* most likely cp1252"):
            latin = TextDataset.from_file(path, tokenizer, encoding="latin-1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        right = TextDataset.from_file(path, tokenizer, encoding="cp1252")
    assert list(right[0]["input_ids"]) != list(latin[0]["input_ids"])
    code, _, err = run(capsys, "stats", "--data", path, "--encoding", "latin-1", "--no-progress")
    assert code == 0 and "pass --encoding cp1252." in err


def test_a_utf16_file_is_named_as_one(tmp_path, tokenizer, capsys):
    """Excel's "Unicode Text" export is UTF-16: the error named byte ff and advised latin-1,
    which then failed with KeyError: 'Field "\xff\xfet" does not exist in schema'."""
    path = tmp_path / "unicode.tsv"
    path.write_bytes("text\tlabel\nfine film\tpos\nbad film\tneg\n".encode("utf-16"))
    with pytest.raises(TextBatchError, match=r"UTF-16 byte-order mark .* encoding='utf-16'"):
        TextDataset.from_file(path, tokenizer)
    assert len(TextDataset.from_file(path, tokenizer, encoding="utf-16")) == 2
    with pytest.raises(TextBatchError, match=r"is not iso8859-1: it starts with a UTF-16"):
        TextDataset.from_file(path, tokenizer, encoding="latin-1")  # it decodes every byte
    code, _, err = run(capsys, "stats", "--data", path, "--no-progress")
    assert code == 2 and "Pass --encoding utf-16." in err


def test_replacing_bad_bytes_warns_with_a_count_every_time(tmp_path, tokenizer):
    path, _ = _bad_files(tmp_path)["csv"]
    for _ in range(2):  # the second read comes from the cache, and still warns
        with pytest.warns(TextBatchWarning, match="replaced 2 bytes"):
            dataset = TextDataset.from_file(path, tokenizer, encoding_errors="replace")
    assert len(dataset) == 40
    assert dataset.from_cache


def test_the_encoding_decides_the_cache(tmp_path, tokenizer):
    path, _ = _bad_files(tmp_path)["csv"]
    latin = TextDataset.from_file(path, tokenizer, encoding="latin-1")
    with pytest.warns(TextBatchWarning):
        replaced = TextDataset.from_file(path, tokenizer, encoding_errors="replace")
    assert not replaced.from_cache
    assert list(latin[20]["input_ids"]) != list(replaced[20]["input_ids"])


def test_unknown_encoding_is_refused(tmp_path, capsys, data):
    path, tok = data
    with pytest.raises(SystemExit) as exit:  # argparse's own exit
        main(["stats", "--data", str(path), "--encoding", "klingon"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "'klingon' is not an encoding" in one_error_line(err, "stats")
    with pytest.raises(ValueError, match="encoding_errors='ignore' must be"):
        TextDataset.from_file(path, tok, encoding_errors="ignore")


# ---------------------------------------------------------------------- --out


def _train(capsys, path, tok, out, *flags):
    argv = ["train", "--data", path, "--tokenizer", tok, "--out", out, "--epochs", 1]
    return run(capsys, *argv, "--no-progress", *flags)


def test_train_into_a_used_out_needs_overwrite_or_resume(data, tmp_path, capsys):
    path, tok = data
    out = tmp_path / "run"
    assert _train(capsys, path, tok, out, "--checkpoint-every", 3)[0] == 0
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    weights = (out / "model" / "model.safetensors").read_bytes()

    code, _, err = _train(capsys, path, tok, out, "--seed", 1)
    assert code == 2 and "--overwrite" in one_error_line(err, "train")
    assert (out / "model" / "model.safetensors").read_bytes() == weights  # untouched

    code, _, err = _train(capsys, path, tok, out, "--resume", "--overwrite")
    assert code == 2 and "give one of them" in one_error_line(err, "train")

    assert _train(capsys, path, tok, out, "--seed", 1, "--overwrite")[0] == 0
    assert (out / "model" / "model.safetensors").read_bytes() != weights
    # The earlier run's checkpoints are gone, not mixed with the new run's.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) != steps or not steps
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1


def test_overwrite_never_deletes_files_textbatch_did_not_write(data, tmp_path, capsys):
    path, tok = data
    out = tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = _train(capsys, path, tok, out, "--overwrite")
    assert code == 2 and "files textbatch did not write (notes.txt)" in one_error_line(err, "train")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_run_that_fails_before_its_first_checkpoint_leaves_out_as_it_was(data, tmp_path, capsys):
    path, tok = data
    out = tmp_path / "run"
    code, _, _ = _train(capsys, path, tok, out, "--max-tokens", 8, "--max-length", 64)
    assert code == 2 and not out.exists()
    out.mkdir()
    code, _, _ = _train(capsys, path, tok, out, "--max-tokens", 8, "--max-length", 64)
    assert code == 2 and out.is_dir() and not any(out.iterdir())
    assert _train(capsys, path, tok, out)[0] == 0  # the same command, fixed, runs


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_a_damaged_backbone_is_one_line(data, tmp_path, capsys, tiny_bert_dir, weights):
    import shutil

    path, _ = data
    backbone = tmp_path / "backbone"
    shutil.copytree(tiny_bert_dir, backbone)
    for old in [*backbone.glob("*.safetensors"), *backbone.glob("*.bin")]:
        old.unlink()
    (backbone / weights).write_bytes(b"not a checkpoint" * 8)
    argv = ["train", "--data", path, "--out", tmp_path / "run", "--model", backbone]
    code, _, err = run(capsys, *argv, "--no-progress")
    line = one_error_line(err, "train")
    assert code == 2 and f"cannot load a model from {str(backbone)!r}" in line
    assert weights in line and "damaged" in line
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- the cache


def test_a_cache_that_cannot_be_written_is_blamed_not_the_data(data, tmp_path, capsys, monkeypatch):
    path, tok = data
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TEXTBATCH_CACHE", str(blocker / "cache"))
    code, _, err = run(capsys, "stats", "--data", path, "--tokenizer", tok)
    line = one_error_line(err, "stats")
    assert code == 2 and f"cannot write to the cache folder {str(blocker / 'cache')!r}" in line
    assert "TEXTBATCH_CACHE" in line and "cannot read" not in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_warm_cache_is_blamed_not_the_data(data, tmp_path, capsys, cache_dir):
    path, tok = data
    assert run(capsys, "stats", "--data", path, "--tokenizer", tok)[0] == 0
    for folder in [cache_dir, *(p for p in cache_dir.rglob("*") if p.is_dir())]:
        folder.chmod(0o555)
    try:
        code, _, err = run(capsys, "stats", "--data", path, "--tokenizer", tok)
    finally:
        for folder in [cache_dir, *(p for p in cache_dir.rglob("*") if p.is_dir())]:
            folder.chmod(0o755)
    assert code == 2 and "cannot write to the cache folder" in one_error_line(err, "stats")


def test_a_killed_tokenisations_temporary_file_is_removed(tmp_path, tokenizer, cache_dir):
    path = write_csv(tmp_path / "d.csv", [{"text": "some words", "label": "a"}] * 3)
    cache_dir.mkdir(parents=True)
    old, live = cache_dir / "tmpkilled", cache_dir / "tmpwriting"
    old.write_bytes(b"x" * 1000)
    live.write_bytes(b"x" * 1000)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    TextDataset.from_file(path, tokenizer)
    assert not old.exists() and live.exists()


@pytest.mark.parametrize("which", ["--data", "--eval-data"])
def test_a_file_without_the_label_column_names_it_and_the_columns(
    tmp_path, capsys, corpus_records, which
):
    """ "the evaluation data has no labels" named neither the file, the flag nor the columns
    (here a header "text, label", whose second column is " label")."""
    good = write_csv(tmp_path / "good.csv", corpus_records[:60])
    spaced = tmp_path / "spaced.csv"
    spaced.write_text(good.read_text().replace("text,label", "text, label", 1))
    files = {"--data": good, "--eval-data": good, which: spaced}
    argv = ["train", "--data", files["--data"], "--eval-data", files["--eval-data"]]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "run", "--no-progress")
    assert code == 2
    assert f"'{spaced}' has no label column 'label'; its columns are ['text', ' label']" in err
    assert "--label-column" in err
