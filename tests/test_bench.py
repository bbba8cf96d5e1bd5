from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from textbatch import TextBatchError
from textbatch.batching.packing import pack_rows
from textbatch.bench.compare import STRATEGIES, compare_strategies, recommend
from textbatch.cli.main import main

LENGTHS = np.array([2, 9, 3, 7, 4, 8, 1, 6])  # 40 real tokens


def by_hand(lengths, plan, name, max_length):
    """Padded tokens of a plan, computed the slow, obvious way."""
    padded = 0
    for batch in plan:
        if name == "pad_to_max_length":
            padded += len(batch) * max_length
        elif name == "packing":
            padded += len(pack_rows([lengths[i] for i in batch], max_length)) * max_length
        else:
            padded += len(batch) * max(lengths[i] for i in batch)
    return padded


def test_every_number_equals_the_hand_computation():
    results = compare_strategies(
        LENGTHS, batch_size=2, max_tokens=18, max_length=9, recommended_max_tokens=12
    )
    assert [r.name for r in results] == list(STRATEGIES)
    for r in results:
        assert sorted(i for b in r.plan for i in b) == list(range(8)), r.name
        assert r.real_tokens == 40
        assert r.padded_tokens == by_hand(LENGTHS, r.plan, r.name, 9), r.name
        assert r.waste == pytest.approx(1 - 40 / r.padded_tokens)
        assert r.batches == len(r.plan)
        assert r.batch_size_mean == pytest.approx(8 / len(r.plan))
        assert r.plan_seconds >= 0
    named = {r.name: r for r in results}
    # fixed strategies, fully by hand
    assert (
        named["pad_to_max_length"].padded_tokens == 8 * 9
        and named["pad_to_max_length"].batches == 4
    )
    # sorted: [1, 2], [3, 4], [6, 7], [8, 9] -> 2*2 + 2*4 + 2*7 + 2*9 = 44
    assert named["sorted"].padded_tokens == 44
    assert named["sorted"].max_batch_tokens == 18
    # token budget 18: no batch over it; packing rows of 9 tokens: 40 tokens need at least 5 rows
    assert named["token_budget"].max_batch_tokens <= 18
    assert named["packing"].padded_tokens >= 45 and named["packing"].max_batch_tokens <= 18
    assert named["recommended"].max_batch_tokens <= 12
    assert named["recommended"].options == {"max_tokens": 12}
    assert named["bucket"].options == {"batch_size": 2}
    # without a recommended budget, the recommended strategy is left out
    plain = compare_strategies(LENGTHS, batch_size=2, max_tokens=18, max_length=9)
    assert [r.name for r in plain] == [n for n in STRATEGIES if n != "recommended"]


def test_bad_comparisons():
    with pytest.raises(TextBatchError, match="exceeds max_length=5"):
        compare_strategies(LENGTHS, 2, 18, 5)
    with pytest.raises(TextBatchError, match="max_tokens=4 is below max_length=9"):
        compare_strategies(LENGTHS, 2, 4, 9)
    with pytest.raises(TextBatchError, match="unknown strategies"):
        compare_strategies(LENGTHS, 2, 18, 9, strategies=("magic",))


def test_recommendation():
    rng = np.random.default_rng(0)
    even = rng.integers(20, 40, 2000)
    advice = recommend(even, batch_size=32, max_length=128)
    assert advice["strategy"] == "bucket" and advice["batch_size"] == 32
    assert advice["expected_padding"] < advice["random_padding"]
    assert advice["speedup_padded_tokens"] > 1
    tailed = np.where(rng.random(2000) < 0.1, 400, 30)
    assert recommend(tailed, batch_size=32, max_length=512)["strategy"] == "token_budget"


@pytest.fixture
def data_file(tmp_path, corpus_records):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in corpus_records[:300]))
    return path


def test_bench_command_writes_the_documented_results(data_file, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            "--data",
            str(data_file),
            "--batch-size",
            "16",
            "--train-steps",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for name in STRATEGIES[:7]:
        assert name in printed
    assert "fastest" in printed and "recommended by textbatch stats" in printed
    report = json.loads((out / "results.json").read_text())
    assert report["schema"] == 2
    assert set(report) >= {
        "schema",
        "source",
        "examples",
        "batch_size",
        "max_tokens",
        "max_length",
        "lengths",
        "recommendation",
        "strategies",
        "train",
        "collate",
        "machine",
    }
    names = [s["name"] for s in report["strategies"]]
    benched_as = report["recommendation"]["benched_as"]
    assert benched_as in names and names[:7] == list(STRATEGIES[:7])
    assert report["train"]["repeats"] == 3 and report["train"]["steps"] == 2
    for record in report["strategies"]:
        assert set(record) == {
            "name", "options", "waste", "real_tokens", "padded_tokens", "batches",
            "plan_seconds", "batch_size_mean", "max_batch_tokens", "train_tokens_per_second",
            "train_runs", "train_spread", "train_within_noise_of_fastest", "train_steps",
        }  # fmt: skip
        assert record["train_steps"] == min(2, record["batches"])
        assert record["real_tokens"] == report["lengths"]["tokens"]
        assert record["train_tokens_per_second"] == sorted(record["train_runs"])[1]  # median
        assert len(record["train_runs"]) == 3 and min(record["train_runs"]) > 0
    assert report["collate"]["speedup"] > 1
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(report["strategies"][0])
    assert len(csv_lines) == 1 + len(names)
    runs_column = csv_lines[0].split(",").index("train_runs")
    for line, record in zip(csv_lines[1:], report["strategies"], strict=True):
        runs = [float(r) for r in line.split(",")[runs_column].split(";")]
        assert runs == record["train_runs"]  # the same numbers as results.json (not rounded)
    for plot in ("lengths.png", "waste.png", "throughput.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG"), plot


def test_bench_without_the_plot_extra(data_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    out = tmp_path / "bench"
    assert main(["bench", "--data", str(data_file), "--out", str(out)]) == 0
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert (out / "results.json").is_file() and (out / "results.csv").is_file()
    assert not list(out.glob("*.png"))


def test_stats_command(data_file, capsys):
    assert main(["stats", "--data", str(data_file), "--max-length", "64"]) == 0
    out = capsys.readouterr().out
    assert "300 examples" in out and "p99" in out
    assert "longer than --max-length 64" in out
    assert "recommended: BucketBatchSampler(lengths, " in out
    assert "estimated speed-up over random batches" in out


def test_bench_replaces_earlier_results_only_with_overwrite(data_file, tmp_path, capsys):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "results.json").write_text('{"an": "earlier bench"}')
    (out / "throughput.png").write_bytes(b"an earlier bench's, with --train-steps")
    (out / "notes.txt").write_text("the user's")
    argv = ["bench", "--data", str(data_file), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "earlier bench (results.json, throughput.png)" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == '{"an": "earlier bench"}'
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["schema"] == 2
    # no training this time: the earlier run's throughput plot stood beside these results
    assert not (out / "throughput.png").exists()
    assert (out / "notes.txt").read_text() == "the user's"


def test_stats_and_bench_read_the_files_encoding(tmp_path, corpus_records, capsys):
    data = tmp_path / "latin.csv"
    rows = "".join(f'"{r["text"]} caf\xe9",{r["label"]}\n' for r in corpus_records[:100])
    data.write_bytes(("text,label\n" + rows).encode("latin-1"))
    assert main(["stats", "--data", str(data)]) == 2
    assert "is not valid utf-8" in capsys.readouterr().err
    assert main(["stats", "--data", str(data), "--encoding", "latin-1"]) == 0
    assert "100 examples" in capsys.readouterr().out


def test_bench_tokenises_both_texts_of_a_pair(tmp_path, corpus_records, capsys):
    data = tmp_path / "pairs.jsonl"
    records = [{"a": r["text"], "b": r["text"], "label": r["label"]} for r in corpus_records[:80]]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    common = ["--data", str(data), "--text-column", "a"]
    assert main(["bench", *common, "--out", str(tmp_path / "one")]) == 0
    assert main(["bench", *common, "--text-pair-column", "b", "--out", str(tmp_path / "two")]) == 0
    capsys.readouterr()
    one = json.loads((tmp_path / "one" / "results.json").read_text())["lengths"]["tokens"]
    two = json.loads((tmp_path / "two" / "results.json").read_text())["lengths"]["tokens"]
    assert two > 1.5 * one  # both texts (a few pairs are cut at --max-length)


def test_throughput_is_the_median_of_interleaved_runs_and_noise_is_flagged(monkeypatch):
    import textbatch.bench.compare as compare

    results = compare_strategies(LENGTHS, batch_size=2, max_tokens=18, max_length=9)[:3]
    scripted = {  # tokens/s of each run, in the order the runs happen
        "pad_to_max_length": iter([10.0, 12.0, 11.0]),
        "random": iter([30.0, 50.0, 31.0]),
        "hf_length_grouped": iter([40.0, 42.0, 44.0]),
    }
    order = []

    def run_once(dataset, tokenizer, result, steps, max_length, seed):
        order.append(result.name)
        return next(scripted[result.name])

    monkeypatch.setattr(compare, "_train_once", run_once)

    class Labelled:
        has_labels = True

    compare.train_throughput(Labelled(), None, results, steps=2, max_length=9, repeats=3)
    names = [r.name for r in results]
    assert order == names + names[1:] + names[:1] + names[2:] + names[:2]  # rotated rounds
    by_name = {r.name: r for r in results}
    assert by_name["random"].train_tokens_per_second == 31.0  # the median, not the best
    assert by_name["random"].train_spread == pytest.approx(20 / 31)
    fastest = by_name["hf_length_grouped"]
    assert fastest.train_tokens_per_second == 42.0 and fastest.train_within_noise_of_fastest
    assert by_name["random"].train_within_noise_of_fastest  # 50 >= 40: too close to call
    assert not by_name["pad_to_max_length"].train_within_noise_of_fastest


def test_training_throughput_counts_the_batches_a_short_plan_has_and_no_measuring(
    tokenizer, corpus_records, monkeypatch
):
    """A plan shorter than --train-steps trains (and reports) all of its batches, not the steps
    asked for; and fit's thread measuring, which costs more on some plans' batches than on
    others', is left out of every strategy's tokens per second."""
    from textbatch import TextDataset
    from textbatch.bench.compare import StrategyResult, train_throughput
    from textbatch.training import loop

    dataset = TextDataset.from_records(corpus_records[:40], tokenizer, max_length=32)
    plans = {"short": [list(range(0, 20)), list(range(20, 40))], "long": [[i] for i in range(6)]}
    results = [
        StrategyResult(name, 0.0, 1, 1, len(plan), 0.0, 1.0, 1, plan=plan)
        for name, plan in plans.items()
    ]
    real_epoch_record = loop._epoch_record

    def with_measuring(epoch, meter, device):  # as if measuring thread counts took 1,000 s
        return real_epoch_record(epoch, {**meter, "seconds": meter["seconds"] + 1000.0,
                                         "thread_seconds": 1000.0}, device)  # fmt: skip

    monkeypatch.setattr(loop, "_epoch_record", with_measuring)
    trained = []
    real_fit = loop.fit

    def counting_fit(model, loader, **options):
        trained.append(len(loader))
        return real_fit(model, loader, **options)

    monkeypatch.setattr(loop, "fit", counting_fit)
    train_throughput(dataset, tokenizer, results, steps=4, max_length=32, repeats=1)
    assert trained == [2, 4]
    assert [r.train_steps for r in results] == [2, 4]
    # counted in, 1,000 s would give at most 800 real tokens / 1,000 s = 0.8 tokens/s
    assert all(r.train_tokens_per_second > 5 for r in results)


def test_bench_without_training_reads_no_labels(tmp_path, corpus_records, capsys):
    """It refused a file for a row without a label, which nothing but training reads; stats
    read the same file."""
    rows = [dict(r) for r in corpus_records[:60]]
    rows[5]["label"] = None
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "bench"
    assert main(["bench", "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["examples"] == 60
    argv = ["bench", "--data", str(data), "--out", str(tmp_path / "b2"), "--train-steps", "1"]
    assert main(argv) == 2
    assert "row 5, column 'label' is missing" in capsys.readouterr().err
