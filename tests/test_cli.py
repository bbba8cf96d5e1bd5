from __future__ import annotations

import pytest

from textbatch.cli import main


def test_stats_on_a_file(tmp_path, capsys, corpus_records):
    path = tmp_path / "data.jsonl"
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in corpus_records[:300]))
    assert main(["stats", "--data", str(path), "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "300 examples" in out
    assert "token lengths:" in out and "p99" in out
    assert "padding at batch size 16, random batches" in out


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["stats", "--data", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("textbatch stats: error: data file")
    assert "does not exist" in err and "Traceback" not in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "stats" in capsys.readouterr().out
