"""Regression tests for issue 9: no silent wrong result in iteration, resume or loss weighting.

Each test here failed on v0.1's code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from textbatch import BucketBatchSampler, PaddingCollator, TextBatchError, TextDataset
from textbatch.batching.loaders import make_loader
from textbatch.models.classifiers import TextClassifier
from textbatch.training.checkpoint import checkpoint_folders
from textbatch.training.loop import _train_window, evaluate, fit, resolve_device

TIMING = ("seconds", "thread_seconds", "tokens_per_second")


def _loader(num_workers: int, **options) -> tuple[DataLoader, BucketBatchSampler]:
    lengths = np.random.default_rng(0).integers(1, 200, size=1024)
    sampler = BucketBatchSampler(lengths, 32, **options)
    return DataLoader(range(1024), batch_sampler=sampler, num_workers=num_workers), sampler


def _indices(batches) -> list[int]:
    return sorted(int(i) for batch in batches for i in batch)


# ---------------------------------------------------------------------- 1. peeking drops data


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_peek_does_not_shorten_the_next_pass(num_workers):
    loader, sampler = _loader(num_workers)
    assert len(sampler) == len(loader) == 32
    next(iter(loader))  # as the README's collator example does
    assert len(sampler) == 32
    batches = list(loader)
    assert len(batches) == 32
    assert _indices(batches) == list(range(1024))


def test_a_break_does_not_shorten_the_next_pass():
    loader, sampler = _loader(0)
    for k, _ in enumerate(loader):
        if k == 4:
            break
    assert len(sampler) == 32
    assert _indices(loader) == list(range(1024))


def test_set_epoch_after_a_peek_starts_from_the_beginning():
    sampler = BucketBatchSampler(np.arange(1, 301), 16)
    sampler.set_epoch(3)
    next(iter(sampler))
    sampler.set_epoch(3)
    assert list(sampler) == sampler.batches(3)


def test_only_the_first_pass_after_load_state_dict_resumes():
    lengths = np.arange(1, 301)
    first = BucketBatchSampler(lengths, 16)
    iterator = iter(first)
    consumed = [next(iterator) for _ in range(5)]
    resumed = BucketBatchSampler(lengths, 16)
    resumed.load_state_dict(first.state_dict())
    assert consumed + list(resumed) == first.batches(0)
    resumed.set_epoch(0)  # a fresh pass of the same epoch is the whole epoch
    assert list(resumed) == first.batches(0)


def test_a_peek_at_a_resumed_sampler_then_a_fresh_pass_is_whole():
    lengths = np.arange(1, 301)
    first = BucketBatchSampler(lengths, 16)
    first.set_epoch(1)
    resumed = BucketBatchSampler(lengths, 16)
    resumed.load_state_dict(first.state_dict(position=4))
    next(iter(resumed))  # the resumed pass, abandoned
    resumed.set_epoch(1)
    assert list(resumed) == first.batches(1)


@pytest.mark.parametrize("max_tokens", [None, 512])
def test_a_state_taken_right_after_set_epoch_resumes_that_whole_epoch(max_tokens):
    """A loop that checkpoints at an epoch's start: set_epoch, then state_dict() with no
    position. The state once kept the previous epoch's position, so the resume skipped the
    epoch (or, under a budget, refused a position past its end)."""
    lengths = np.random.default_rng(0).integers(5, 200, 1000)
    options = {"batch_size": 32, "max_tokens": max_tokens}
    sampler = BucketBatchSampler(lengths, **options)
    list(sampler)  # all of epoch 0
    sampler.set_epoch(1)
    state = sampler.state_dict()
    assert (state["epoch"], state["position"]) == (1, 0)
    resumed = BucketBatchSampler(lengths, **options)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # as a loop that resumes calls it
    assert list(resumed) == sampler.batches(1)

    at_ten = BucketBatchSampler(lengths, **options)
    at_ten.load_state_dict({**state, "position": 10})
    at_ten.set_epoch(2)  # another epoch: from its start, and the state says so
    assert (at_ten.state_dict()["epoch"], at_ten.state_dict()["position"]) == (2, 0)
    at_ten.load_state_dict({**state, "position": 10})
    at_ten.set_epoch(1)  # the saved epoch again: its saved position is kept
    assert at_ten.state_dict()["position"] == 10
    assert list(at_ten) == sampler.batches(1)[10:]


# ---------------------------------------------------------------------- 11. checked when given


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_sampler_refuses_a_bad_seed(seed):
    with pytest.raises(TextBatchError, match="seed"):
        BucketBatchSampler([3, 4, 5], 2, seed=seed)


@pytest.mark.parametrize(("key", "value"), [("position", 2.5), ("position", -1), ("epoch", 1.0)])
def test_load_state_dict_refuses_non_integers(key, value):
    sampler = BucketBatchSampler(np.arange(1, 101), 8)
    state = sampler.state_dict()
    state[key] = value
    with pytest.raises(TextBatchError, match=key):
        BucketBatchSampler(np.arange(1, 101), 8).load_state_dict(state)


def test_state_dict_refuses_a_fractional_position():
    with pytest.raises(TextBatchError, match="position"):
        BucketBatchSampler(np.arange(1, 101), 8).state_dict(position=2.5)


def test_set_epoch_refuses_a_negative_epoch():
    with pytest.raises(TextBatchError, match="epoch"):
        BucketBatchSampler(np.arange(1, 101), 8).set_epoch(-1)


# ---------------------------------------------------------------------- 3, 5. exact resume


@pytest.fixture(scope="module")
def data(tokenizer, corpus_records):
    train = TextDataset.from_records(corpus_records[:300], tokenizer, max_length=64)
    evaluation = TextDataset.from_records(
        corpus_records[300:400], tokenizer, max_length=64, label_names=train.label_names
    )
    return train, evaluation, PaddingCollator.from_tokenizer(tokenizer)


def _model(tokenizer, seed=0):
    torch.manual_seed(seed)  # a Transformer with dropout: resumes must replay its RNG draws
    return TextClassifier(len(tokenizer), 8, dim=32, encoder="transformer", num_layers=1)


def _loaders(data, num_workers=0, **options):
    train, evaluation, collate = data
    options.setdefault("batch_size", 32)
    return (
        make_loader(train, collate, num_workers=num_workers, **options),
        make_loader(evaluation, collate, batch_size=64, shuffle=False),
    )


def _plain(history):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def _same_weights(a, b):
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


OPTIONS = {"epochs": 2, "lr": 3e-3, "seed": 1, "progress": False, "log": False}


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("sampler", ["bucket", "random"])
def test_resume_from_an_end_of_epoch_checkpoint(tokenizer, data, tmp_path, num_workers, sampler):
    reference = _model(tokenizer)
    expected = fit(reference, *_loaders(data, num_workers, sampler=sampler), **OPTIONS)
    cut = tmp_path / "cut"
    fit(_model(tokenizer), *_loaders(data, num_workers, sampler=sampler), out_dir=cut, **OPTIONS)
    folders = checkpoint_folders(cut / "checkpoints")
    assert [p.name.endswith("-end") for p in folders] == [True, True]
    shutil.rmtree(folders[0])  # back to the end of epoch 1
    resumed = _model(tokenizer, seed=9)  # the weights come from the checkpoint
    history = fit(
        resumed, *_loaders(data, num_workers, sampler=sampler), out_dir=cut, resume=True, **OPTIONS
    )
    assert _plain(history) == _plain(expected)
    _same_weights(reference, resumed)


def test_mid_epoch_resume_with_workers(tokenizer, data, tmp_path):
    reference = _model(tokenizer)
    expected = fit(reference, *_loaders(data, 2), **OPTIONS)
    fit(_model(tokenizer), *_loaders(data, 2), out_dir=tmp_path, stop_after_steps=13, **OPTIONS)
    resumed = _model(tokenizer, seed=9)
    history = fit(resumed, *_loaders(data, 2), out_dir=tmp_path, resume=True, **OPTIONS)
    assert _plain(history) == _plain(expected)
    _same_weights(reference, resumed)


def test_a_pruned_checkpoint_leaves_the_checkpoints_before_it_is_deleted(
    tokenizer, data, tmp_path, monkeypatch
):
    """A kill while an old checkpoint was deleted in place left part of it (its state file
    gone) among the checkpoints for good: no later prune could tell it was this run's."""
    from textbatch.training import checkpoint

    deleted = []
    monkeypatch.setattr(checkpoint.shutil, "rmtree", lambda path, **kw: deleted.append(path))
    options = {**OPTIONS, "checkpoint_every": 3}
    fit(_model(tokenizer), *_loaders(data), out_dir=tmp_path, stop_after_steps=12, **options)
    folder = tmp_path / "checkpoints"
    assert len(checkpoint_folders(folder)) == checkpoint.KEEP  # as if every delete was killed
    pruned = [path for path in deleted if path.name.endswith(".pruned")]
    assert pruned and all(path.name.startswith(".step-") for path in pruned)
    monkeypatch.undo()
    checkpoint.remove_leftovers(folder)  # what the next run does first
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in checkpoint_folders(folder)
    )


def test_a_damaged_newest_checkpoint_falls_back_to_an_older_one(tokenizer, data, tmp_path):
    reference = _model(tokenizer)
    expected = fit(reference, *_loaders(data), **OPTIONS)
    options = {**OPTIONS, "checkpoint_every": 4}
    fit(_model(tokenizer), *_loaders(data), out_dir=tmp_path, stop_after_steps=14, **options)
    newest, older = checkpoint_folders(tmp_path / "checkpoints")
    weights = newest / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-10] ^= 0xFF  # a flipped bit in a weight: the file still loads, with another value
    weights.write_bytes(bytes(raw))
    resumed = _model(tokenizer, seed=9)
    with pytest.warns(UserWarning, match=f"resuming from .*{older.name}.*digest differs"):
        history = fit(resumed, *_loaders(data), out_dir=tmp_path, resume=True, **options)
    assert _plain(history) == _plain(expected)
    _same_weights(reference, resumed)


def test_no_valid_checkpoint_refuses_to_start_over(tokenizer, data, tmp_path):
    fit(_model(tokenizer), *_loaders(data), out_dir=tmp_path, stop_after_steps=3, **OPTIONS)
    (folder,) = checkpoint_folders(tmp_path / "checkpoints")
    (folder / "manifest.json").unlink()  # as a write killed before its end leaves it
    with pytest.raises(TextBatchError, match=r"no valid checkpoint.*no manifest\.json"):
        fit(_model(tokenizer), *_loaders(data), out_dir=tmp_path, resume=True, **OPTIONS)
    assert folder.is_dir()


def test_resume_never_deletes_another_runs_checkpoints(tokenizer, data, tmp_path):
    fit(
        _model(tokenizer),
        *_loaders(data),
        out_dir=tmp_path / "other",
        stop_after_steps=2,
        **OPTIONS,
    )
    (foreign,) = checkpoint_folders(tmp_path / "other" / "checkpoints")
    run = tmp_path / "run" / "checkpoints"
    fit(_model(tokenizer), *_loaders(data), out_dir=run.parent, stop_after_steps=3, **OPTIONS)
    shutil.copytree(foreign, run / "step-00000001")  # another run's, older
    (run / ".step-00000009.x1y2").mkdir()  # what a killed write leaves
    fit(_model(tokenizer), *_loaders(data), out_dir=run.parent, resume=True, **OPTIONS)
    names = sorted(p.name for p in run.iterdir())
    assert names == ["step-00000001", "step-00000010-end", "step-00000020-end"]


def test_resume_without_any_checkpoint_starts_from_the_beginning(tokenizer, data, tmp_path):
    reference = _model(tokenizer)
    expected = fit(reference, *_loaders(data), **OPTIONS)
    resumed = _model(tokenizer)
    history = fit(resumed, *_loaders(data), out_dir=tmp_path, resume=True, **OPTIONS)
    assert _plain(history) == _plain(expected)


# ---------------------------------------------------------------------- 4. resume checks the run


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 2}, r"batches\.order\.seed=1 in the checkpoint, 2 now"),
        ({"rows": slice(None, None, -1)}, "training data differ"),
        ({"rows": slice(1, None)}, "training data differ"),
        ({"batch_size": 16}, "batch_size=32 in the checkpoint, 16 now"),
    ],
)
def test_resume_refuses_other_data_or_batches(tokenizer, data, tmp_path, change, message):
    train, _, collate = data

    def loader(rows=slice(None), seed=1, batch_size=32):
        dataset = train.select(np.arange(len(train))[rows])
        return make_loader(dataset, collate, sampler="random", batch_size=batch_size, seed=seed)

    fit(_model(tokenizer), loader(), out_dir=tmp_path, stop_after_steps=3, **OPTIONS)
    with pytest.raises(TextBatchError, match=message):
        fit(_model(tokenizer), loader(**change), out_dir=tmp_path, resume=True, **OPTIONS)


def test_resume_refuses_another_evaluation_split_or_option(tokenizer, data, tmp_path):
    train_loader, eval_loader = _loaders(data)
    fit(
        _model(tokenizer),
        train_loader,
        eval_loader,
        out_dir=tmp_path,
        stop_after_steps=3,
        **OPTIONS,
    )
    _, evaluation, collate = data
    other_eval = make_loader(
        evaluation.select(np.arange(50)), collate, batch_size=64, shuffle=False
    )
    with pytest.raises(TextBatchError, match="evaluation data differ"):
        fit(_model(tokenizer), train_loader, other_eval, out_dir=tmp_path, resume=True, **OPTIONS)
    with pytest.raises(TextBatchError, match=r"lr=0\.003 in the checkpoint, 0\.01 now"):
        fit(
            _model(tokenizer), *_loaders(data), out_dir=tmp_path, resume=True,
            **{**OPTIONS, "lr": 1e-2},
        )  # fmt: skip


# ---------------------------------------------------------------------- 7. loss weighting


def _batch(dataset, rows, collate):
    return collate(dataset.__getitems__(list(rows)))


def _gradients(model, window, world=1):
    model.zero_grad(set_to_none=True)
    meter = {"loss": 0.0, "sequences": 0.0, "real": 0.0, "padded": 0.0}
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    _train_window(model, window, scaler, torch.device("cpu"), False, meter, "test")
    return {name: p.grad.clone() for name, p in model.named_parameters()}, meter


def test_every_sequence_weighs_the_same_in_a_step(tokenizer, corpus_records):
    dataset = TextDataset.from_records(corpus_records[:554], tokenizer)
    collate = PaddingCollator.from_tokenizer(tokenizer)
    torch.manual_seed(0)
    model = TextClassifier(len(tokenizer), 8, dim=32, encoder="mean", dropout=0.0)
    small, large = _batch(dataset, range(3), collate), _batch(dataset, range(3, 554), collate)
    whole = _batch(dataset, range(554), collate)
    accumulated, meter = _gradients(model, [small, large])
    expected, _ = _gradients(model, [whole])
    for name, gradient in expected.items():
        torch.testing.assert_close(accumulated[name], gradient, rtol=1e-4, atol=1e-7)
    assert meter["sequences"] == 554


def _ddp_gradients(rank, world, init, model, batches, results):
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        gradients, _ = _gradients(wrapped, [batches[rank]])
        if rank == 0:
            results.update({k.removeprefix("module."): v for k, v in gradients.items()})
        # Both ranks done, and DDP's reducer (with gloo work it holds) gone, before the group
        # is torn down: a rank that tore it down early was once seen to abort (SIGABRT).
        del wrapped
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_every_sequence_weighs_the_same_across_ranks(tokenizer, corpus_records, tmp_path):
    dataset = TextDataset.from_records(corpus_records[:554], tokenizer)
    collate = PaddingCollator.from_tokenizer(tokenizer)
    torch.manual_seed(0)
    model = TextClassifier(len(tokenizer), 8, dim=32, encoder="mean", dropout=0.0)
    batches = [_batch(dataset, range(3), collate), _batch(dataset, range(3, 554), collate)]
    expected, _ = _gradients(model, [_batch(dataset, range(554), collate)])
    results = torch.multiprocessing.Manager().dict()
    init = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.spawn(_ddp_gradients, args=(2, init, model, batches, results), nprocs=2)
    for name, gradient in expected.items():
        torch.testing.assert_close(results[name], gradient, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------- 8, 10. ranks and devices


def test_first_uses_count_every_example_once_over_ranks():
    lengths = np.arange(1, 4)  # 3 examples over 4 ranks: one example is used twice
    counted = []
    for rank in range(4):
        sampler = BucketBatchSampler(lengths, 2, num_replicas=4, rank=rank)
        for batch, mask in zip(sampler.batches(), sampler.first_uses(), strict=True):
            counted += [i for i, keep in zip(batch, mask, strict=True) if keep]
    assert sampler.num_repeated > 0
    assert sorted(counted) == [0, 1, 2]


def _ddp_evaluate(rank, world, init, dataset, collate, model, results):
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        for sampler in ("bucket", "random"):
            loader = make_loader(dataset, collate, sampler=sampler, batch_size=4, shuffle=False)
            results[f"{sampler}-{rank}"] = evaluate(model, loader, "cpu")
        torch.distributed.barrier()  # both ranks done before the group is torn down
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_evaluation_counts_each_example_once(tokenizer, corpus_records, tmp_path):
    dataset = TextDataset.from_records(corpus_records[:9], tokenizer)  # 9 rows over 2 ranks
    collate = PaddingCollator.from_tokenizer(tokenizer)
    torch.manual_seed(0)
    model = TextClassifier(len(tokenizer), dataset.num_labels, dim=16, encoder="mean")
    expected = evaluate(model, make_loader(dataset, collate, batch_size=4, shuffle=False), "cpu")
    results = torch.multiprocessing.Manager().dict()
    init = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.spawn(
        _ddp_evaluate, args=(2, init, dataset, collate, model, results), nprocs=2
    )
    for key, metrics in results.items():
        assert metrics["examples"] == 9, key
        assert metrics["accuracy"] == pytest.approx(expected["accuracy"]), key
        assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-5), key


def test_cuda_without_an_index_is_this_ranks_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


# ---------------------------------------------------------------------- 4, 6. the command line


@pytest.fixture
def cli_data(tmp_path, corpus_records, tokenizer, monkeypatch):
    monkeypatch.setenv("TEXTBATCH_CACHE", str(tmp_path / "cache"))
    rows = corpus_records[:200]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("".join(json.dumps(r) + "\n" for r in rows[::-1]))
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    return data, shuffled, tmp_path / "tokenizer"


def _train(capsys, data, tok, out, *extra):
    from textbatch.cli.main import main

    argv = ["train", "--data", data, "--tokenizer", tok, "--out", out, "--epochs", "1"]
    code = main([str(a) for a in [*argv, "--no-progress", "--sampler", "random", *extra]])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("other", "extra", "message"),
    [
        (True, [], "the training data differ"),
        (False, ["--seed", "1"], "--seed: 0 when the run started, 1 now"),
        (False, ["--lr", "0.01"], "--lr: not given (the default) when the run started, 0.01 now"),
        (False, ["--eval-fraction", "0.2"], "evaluation data differ"),
    ],
)
def test_cli_resume_refuses_other_data_or_seed(cli_data, tmp_path, capsys, other, extra, message):
    data, shuffled, tok = cli_data
    out = tmp_path / "run"
    assert _train(capsys, data, tok, out)[0] == 0
    code, err = _train(capsys, shuffled if other else data, tok, out, "--resume", *extra)
    assert code == 2 and message in err
    if extra:  # a flag's difference alone, in flags: not the options and batches it derives
        assert "in the checkpoint" not in err, err


def test_an_interrupted_run_with_a_given_tokenizer_resumes(cli_data, tmp_path, capsys, monkeypatch):
    import textbatch.cli.recipes

    data, _, tok = cli_data
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(textbatch.cli.recipes, "fit", interrupted)
        assert _train(capsys, data, tok, out)[0] == 130  # interrupted
    # Interrupted before its first checkpoint: nothing to resume, so nothing is left behind.
    assert not out.exists()
    code, err = _train(capsys, data, tok, out, "--resume")
    assert code == 0, err
    assert (out / "model").is_dir()


# ---------------------------------------------------------------------- 9. max_length


@pytest.mark.parametrize("command", ["train", "stats"])
def test_cli_refuses_a_max_length_with_no_room_for_text(cli_data, tmp_path, capsys, command):
    from textbatch.cli.main import main

    data, _, tok = cli_data
    argv = [command, "--data", data, "--tokenizer", tok, "--max-length", "1"]
    if command == "train":
        argv += ["--out", tmp_path / "run", "--no-progress"]
    code = main([str(a) for a in argv])
    assert code == 2
    assert "--max-length 1 leaves no room for text" in capsys.readouterr().err


# ---------------------------------------------------------------------- 11. streams, the same


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"batch_size": 4, "seed": -1}, "seed"),
        ({"batch_size": 4, "mix": -1}, "mix"),
        ({"batch_size": np.int64(4), "buffer_size": 0}, "buffer_size"),
    ],
)
def test_bucketed_stream_checks_its_options_when_given(options, name):
    from textbatch import BucketedStream

    with pytest.raises(TextBatchError, match=name):
        BucketedStream([], **options)


def test_stream_states_refuse_fractional_positions(tokenizer, corpus_records):
    from textbatch import BucketedStream, StreamingTextDataset

    names = sorted({r["label"] for r in corpus_records})
    stream = StreamingTextDataset(corpus_records[:50], tokenizer, label_names=names)
    with pytest.raises(TextBatchError, match="position"):
        stream.load_state_dict({"position": 2.5})
    bucketed = BucketedStream(stream, batch_size=4, buffer_size=16)
    state = {**bucketed.state_dict(), "read": 1.5}
    with pytest.raises(TextBatchError, match="read"):
        bucketed.load_state_dict(state)


def test_a_peek_at_a_bucketed_stream_costs_the_next_pass_nothing(tokenizer, corpus_records):
    from textbatch import BucketedStream, StreamingTextDataset

    names = sorted({r["label"] for r in corpus_records})
    stream = StreamingTextDataset(corpus_records[:100], tokenizer, label_names=names)
    bucketed = BucketedStream(stream, batch_size=8, buffer_size=32)
    next(iter(bucketed))
    assert sum(len(batch) for batch in bucketed) == 100


# ---------------------------------------------------------------------- the state_dict protocol


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("stop", [5, 10])  # mid-epoch 1, the end of epoch 1
def test_resume_through_torchdata_stateful_dataloader(tokenizer, data, tmp_path, num_workers, stop):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    train, evaluation, collate = data

    def loaders():
        sampler = BucketBatchSampler(train.lengths, 32, seed=4)
        loader = stateful.StatefulDataLoader(
            train, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers
        )
        return loader, make_loader(evaluation, collate, batch_size=64, shuffle=False)

    reference = _model(tokenizer)
    expected = fit(reference, *loaders(), **OPTIONS)
    fit(_model(tokenizer), *loaders(), out_dir=tmp_path, stop_after_steps=stop, **OPTIONS)
    resumed = _model(tokenizer, seed=9)
    history = fit(resumed, *loaders(), out_dir=tmp_path, resume=True, **OPTIONS)
    assert _plain(history) == _plain(expected)
    _same_weights(reference, resumed)


def test_a_resume_with_another_number_of_ranks_says_so():
    """The refusal named internal option paths and a derived batch count, never the number of
    processes or torchrun's flag."""
    from textbatch.training.loop import _check_identity

    def identity(ranks, batches):
        return {"train": {"data": "d", "batches": {"num_replicas": ranks, "batches": batches}},
                "eval": {"data": "e", "batches": {"num_replicas": ranks}}}  # fmt: skip

    with pytest.raises(TextBatchError) as refused:
        _check_identity(identity(2, 43), identity(1, 85), Path("ckpt"))
    message = str(refused.value)
    assert "written by 2 processes (ranks) and this run has 1" in message
    assert "torchrun --nproc-per-node 2" in message and "batches=43" not in message


def test_a_checkpoint_of_the_older_data_digest_says_so():
    """The data digest once also hashed how Arrow chunked the rows: a checkpoint of that
    textbatch was refused as "the training data differ", which they did not."""
    from textbatch.training.loop import DIGEST_SCHEME, _check_identity

    old, new = "0123456789abcdef" * 2, f"{DIGEST_SCHEME}:" + "f" * 32
    with pytest.raises(TextBatchError) as refused:
        _check_identity(
            {"train": {"data": old}, "eval": {"data": old}},
            {"train": {"data": new}, "eval": {"data": new}},
            Path("ckpt"),
        )
    message = str(refused.value)
    assert "written by an older textbatch" in message and "data differ" not in message
    assert message.count("older textbatch") == 1
    with pytest.raises(TextBatchError, match="the training data differ"):
        _check_identity({"train": {"data": new}}, {"train": {"data": new[:-1] + "e"}}, Path("c"))
