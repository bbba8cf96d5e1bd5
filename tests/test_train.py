from __future__ import annotations

import json

import pytest
import torch

from textbatch import PaddingCollator, TextBatchError, TextDataset
from textbatch.batching.loaders import make_loader
from textbatch.models.classifiers import BackboneClassifier, TextClassifier
from textbatch.training.checkpoint import find_checkpoint
from textbatch.training.loop import TrainingDiverged, evaluate, fit

TIMING = ("seconds", "thread_seconds", "tokens_per_second")


@pytest.fixture(scope="module")
def data(tokenizer, corpus_records):
    train = TextDataset.from_records(corpus_records[:500], tokenizer)
    evaluation = TextDataset.from_records(
        corpus_records[500:], tokenizer, label_names=train.label_names
    )
    return train, evaluation, PaddingCollator.from_tokenizer(tokenizer)


def loaders(data, **options):
    train, evaluation, collate = data
    options.setdefault("batch_size", 32)
    return (
        make_loader(train, collate, **options),
        make_loader(evaluation, collate, batch_size=64, shuffle=False),
    )


def small_model(tokenizer, seed=0, encoder="mean"):
    torch.manual_seed(seed)
    return TextClassifier(len(tokenizer), 8, dim=32, encoder=encoder, num_layers=1)


def without_timing(history):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def test_loss_goes_down_on_a_learnable_task(tokenizer, data):
    history = fit(small_model(tokenizer), *loaders(data), epochs=4, lr=5e-2, progress=False)
    assert len(history) == 4
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.1
    assert history[-1]["eval_accuracy"] > 0.4  # chance is 1/8
    assert 0 <= history[-1]["padding"] < 0.3
    for key in ("eval_macro_f1", "eval_loss", "tokens_per_second", "seconds"):
        assert key in history[-1]


def test_same_seed_same_result_on_cpu(tokenizer, data):
    runs = []
    for _ in range(2):
        model = small_model(tokenizer, encoder="transformer")
        history = fit(model, *loaders(data), epochs=2, lr=3e-3, seed=5, progress=False)
        runs.append((without_timing(history), model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][key]), key


@pytest.mark.parametrize("stop", [3, 16, 23])  # mid-epoch 1, the end of epoch 1, mid-epoch 2
def test_resume_equals_an_uninterrupted_run(tokenizer, data, tmp_path, stop):
    options = {"epochs": 2, "lr": 3e-3, "seed": 1, "progress": False}
    reference = small_model(tokenizer, encoder="transformer")
    expected = fit(reference, *loaders(data), out_dir=tmp_path / "whole", **options)

    interrupted = small_model(tokenizer, encoder="transformer")
    fit(interrupted, *loaders(data), out_dir=tmp_path / "cut", stop_after_steps=stop, **options)
    resumed = small_model(tokenizer, seed=99, encoder="transformer")  # weights come from disk
    history = fit(resumed, *loaders(data), out_dir=tmp_path / "cut", resume=True, **options)

    assert without_timing(history) == without_timing(expected)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    saved = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert without_timing(saved) == without_timing(expected)


def test_checkpoints_are_written_and_pruned(tokenizer, data, tmp_path):
    fit(
        small_model(tokenizer),
        *loaders(data),
        epochs=3,
        checkpoint_every=5,
        out_dir=tmp_path,
        progress=False,
    )
    folder = tmp_path / "checkpoints"
    kept = sorted(p.name for p in folder.glob("step-*"))
    assert kept == ["step-00000045", "step-00000048-end"]
    assert find_checkpoint(folder).name == "step-00000048-end"
    assert not list(folder.glob(".step-*"))  # no half-written leftovers
    contents = {p.name for p in (folder / kept[-1]).iterdir()}
    assert {
        "manifest.json",
        "model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng.pt",
        "trainer_state.json",
    } <= contents
    state = json.loads((folder / kept[-1] / "trainer_state.json").read_text())
    assert state["epoch"] == 3 and state["order"]["sampler"]["options"]["batch_size"] == 32


def test_gradient_accumulation_counts_optimizer_steps(tokenizer, data, tmp_path):
    fit(
        small_model(tokenizer),
        *loaders(data),
        epochs=1,
        grad_accum=3,
        out_dir=tmp_path,
        progress=False,
    )
    batches = len(loaders(data)[0])
    assert find_checkpoint(tmp_path / "checkpoints").name == f"step-{-(-batches // 3):08d}-end"


def test_evaluate_metrics_by_hand():
    class Fixed(torch.nn.Module):
        num_labels = 3

        def forward(self, predictions, labels, **unused):
            from transformers.modeling_outputs import SequenceClassifierOutput

            logits = torch.nn.functional.one_hot(predictions, 3).float() * 10
            loss = torch.nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    batches = [
        {"predictions": torch.tensor([0, 0, 1, 2]), "labels": torch.tensor([0, 1, 1, 2])},
        {"predictions": torch.tensor([2, 2]), "labels": torch.tensor([2, 0])},
    ]
    metrics = evaluate(Fixed(), batches, device="cpu")
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # F1: class 0: tp 1, support 2, predicted 2 -> 0.5; class 1: tp 1, 2, 1 -> 2/3;
    # class 2: tp 2, support 2, predicted 3 -> 0.8
    assert metrics["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert metrics["examples"] == 6


def test_nan_loss_stops_training(tokenizer, data):
    model = small_model(tokenizer)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(
        TrainingDiverged, match=r"the loss became nan at epoch 1.*Lower the learning"
    ):
        fit(model, *loaders(data), epochs=1, progress=False)


def test_damaged_checkpoint_and_changed_options(tokenizer, data, tmp_path):
    fit(small_model(tokenizer), *loaders(data), epochs=1, out_dir=tmp_path, progress=False)
    with pytest.raises(TextBatchError, match=r"cannot resume.*epochs=1 in the checkpoint, 2 now"):
        fit(
            small_model(tokenizer),
            *loaders(data),
            epochs=2,
            out_dir=tmp_path,
            resume=True,
            progress=False,
        )
    latest = find_checkpoint(tmp_path / "checkpoints")
    (latest / "optimizer.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TextBatchError, match=r"no valid checkpoint.*optimizer.pt has"):
        fit(
            small_model(tokenizer),
            *loaders(data),
            epochs=1,
            out_dir=tmp_path,
            resume=True,
            progress=False,
        )


def test_bad_fit_arguments(tokenizer, data):
    with pytest.raises(TextBatchError, match="epochs=0"):
        fit(small_model(tokenizer), *loaders(data), epochs=0)
    for name, value in (("checkpoint_every", 0), ("checkpoint_every", -5), ("grad_accum", 1.0)):
        with pytest.raises(TextBatchError, match=f"{name}={value}"):
            fit(small_model(tokenizer), *loaders(data), **{name: value})
    with pytest.raises(TextBatchError, match="resume=True needs out_dir"):
        fit(small_model(tokenizer), *loaders(data), resume=True)
    if not torch.cuda.is_available():
        with pytest.raises(TextBatchError, match="CUDA is not available"):
            fit(small_model(tokenizer), *loaders(data), device="cuda")


def test_random_and_sorted_samplers(tokenizer, data):
    for sampler in ("random", "sorted"):
        train_loader, eval_loader = loaders(data, sampler=sampler)
        history = fit(small_model(tokenizer), train_loader, eval_loader, epochs=1, progress=False)
        assert history[0]["real_tokens"] == int(data[0].lengths.sum())
    with pytest.raises(TextBatchError, match="token budget"):
        loaders(data, sampler="random", max_tokens=1000)


def test_tiny_bert_backbone_fine_tunes(tokenizer, data, tiny_bert_dir):
    torch.manual_seed(0)
    model = BackboneClassifier.from_pretrained(tiny_bert_dir, num_labels=8, pooling="mean")
    history = fit(model, *loaders(data), epochs=3, lr=3e-3, progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["eval_accuracy"] > 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_with_mixed_precision(tokenizer, data):
    model = small_model(tokenizer, encoder="transformer")
    train_loader, eval_loader = loaders(data, device=torch.device("cuda"))
    assert train_loader.pin_memory
    history = fit(
        model, train_loader, eval_loader, epochs=2, lr=3e-3, device="cuda", progress=False
    )
    assert next(model.parameters()).is_cuda
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.timeout(300)
def test_two_process_ddp_training(tmp_path, corpus_records, tokenizer):
    import torch.multiprocessing as mp
    from sampling_workers import ddp_fit_worker

    tokenizer.save_pretrained(tmp_path / "tokenizer")
    (tmp_path / "data.json").write_text(json.dumps(corpus_records[:400]))
    mp.spawn(ddp_fit_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"out-rank{r}.pt", weights_only=True) for r in range(2)]
    # DDP keeps the replicas identical, and each rank saw half of every epoch
    for key, value in results[0]["weights"].items():
        assert torch.equal(value, results[1]["weights"][key]), key
    assert results[0]["batches"] == results[1]["batches"]
    assert results[0]["history"] == results[1]["history"]  # metrics are reduced over ranks
    assert json.loads((tmp_path / "out" / "history.json").read_text())  # written by rank 0
    assert results[0]["history"][-1]["real_tokens"] > 0
    # stopped mid-epoch 2 and resumed: the same history. Rank 0's running totals alone were
    # saved and restored on both ranks, so epoch 2's loss and token counts came out wrong.
    steps = results[0]["batches"] + results[0]["batches"] // 2  # into epoch 2
    mp.spawn(ddp_fit_worker, args=(2, str(tmp_path), "cut", steps), nprocs=2, join=True)
    mp.spawn(ddp_fit_worker, args=(2, str(tmp_path), "cut"), nprocs=2, join=True)
    resumed = torch.load(tmp_path / "cut-rank0.pt", weights_only=True)
    assert resumed["history"] == results[0]["history"]
    for key, value in results[0]["weights"].items():
        assert torch.equal(value, resumed["weights"][key]), key


def test_fit_on_a_stream(tokenizer, corpus_records):
    from textbatch import BucketedStream, StreamingTextDataset

    names = sorted({r["label"] for r in corpus_records})
    stream = StreamingTextDataset(corpus_records[:400], tokenizer, label_names=names)
    batches = BucketedStream(stream, batch_size=32, buffer_size=128)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, collate_fn=PaddingCollator.from_tokenizer(tokenizer)
    )
    with pytest.raises(TextBatchError, match="pass batches_per_epoch"):
        fit(small_model(tokenizer), loader, epochs=1, progress=False)
    history = fit(
        small_model(tokenizer), loader, epochs=3, lr=5e-2, batches_per_epoch=13, progress=False
    )
    assert all(record["real_tokens"] == history[0]["real_tokens"] for record in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("stop", [3, 20])
def test_resume_with_a_plain_shuffled_dataloader(tokenizer, data, tmp_path, stop):
    """No sampler state: the interrupted epoch's order is replayed from its starting RNG."""
    train, _, collate = data

    def loader():
        return torch.utils.data.DataLoader(train, batch_size=32, shuffle=True, collate_fn=collate)

    options = {"epochs": 2, "lr": 5e-2, "seed": 3, "progress": False}
    reference = small_model(tokenizer)
    expected = fit(reference, loader(), out_dir=tmp_path / "whole", **options)
    fit(
        small_model(tokenizer), loader(), out_dir=tmp_path / "cut", stop_after_steps=stop, **options
    )
    resumed = small_model(tokenizer, seed=9)
    history = fit(resumed, loader(), out_dir=tmp_path / "cut", resume=True, **options)
    assert without_timing(history) == without_timing(expected)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_a_fresh_run_refuses_a_folder_with_checkpoints(tokenizer, data, tmp_path):
    fit(small_model(tokenizer), *loaders(data), epochs=1, out_dir=tmp_path, progress=False)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(TextBatchError, match=r"already holds checkpoints.*resume=True"):
        fit(small_model(tokenizer), *loaders(data), epochs=1, out_dir=tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


def _stream_loader(tokenizer, corpus_records):
    """A DataLoader over a BucketedStream of 200 records: 7 batches of up to 32."""
    from textbatch import BucketedStream, StreamingTextDataset

    names = sorted({r["label"] for r in corpus_records})
    stream = StreamingTextDataset(corpus_records[:200], tokenizer, label_names=names)
    return torch.utils.data.DataLoader(
        BucketedStream(stream, batch_size=32, buffer_size=64),
        batch_size=None,
        collate_fn=PaddingCollator.from_tokenizer(tokenizer),
    )


def test_stop_after_steps_counts_a_streams_last_short_step(tokenizer, corpus_records, tmp_path):
    loader = _stream_loader(tokenizer, corpus_records)
    batches = sum(1 for _ in loader)  # 7 batches: 3 steps of 2, then a last step of 1
    history = fit(
        small_model(tokenizer), loader, epochs=2, grad_accum=2, batches_per_epoch=20,
        stop_after_steps=-(-batches // 2), out_dir=tmp_path, progress=False,
    )  # fmt: skip
    assert history == []  # stopped at the epoch's last step, before the epoch was recorded
    assert find_checkpoint(tmp_path / "checkpoints").name == f"step-{-(-batches // 2):08d}"


def test_default_learning_rates_suit_the_model(tokenizer, tiny_bert_dir):
    from textbatch.training.defaults import BACKBONE_HEAD_LR, BACKBONE_LR, SCRATCH_LR
    from textbatch.training.loop import _parameter_groups, default_learning_rates

    backbone = BackboneClassifier.from_pretrained(tiny_bert_dir, num_labels=3)
    assert default_learning_rates(backbone) == (BACKBONE_LR, BACKBONE_HEAD_LR)
    assert default_learning_rates(small_model(tokenizer)) == (SCRATCH_LR, None)
    groups = _parameter_groups(backbone, 0.01, lr=1e-4, head_lr=2e-3)
    head = {id(p) for p in backbone.head.parameters()}
    for group in groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1  # a group is all head or all encoder
        assert group["lr"] == (2e-3 if in_head.pop() else 1e-4)
    counted = sum(p.numel() for g in groups for p in g["params"])
    assert counted == sum(p.numel() for p in backbone.parameters())  # every parameter once
    # without head_lr, the head learns at lr like everything else
    assert {g["lr"] for g in _parameter_groups(backbone, 0.01, lr=1e-4, head_lr=None)} == {1e-4}


def test_fit_without_lr_takes_the_models_rates(tokenizer, data, tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    model = BackboneClassifier.from_pretrained(tiny_bert_dir, num_labels=8)
    fit(model, *loaders(data), epochs=1, out_dir=tmp_path, stop_after_steps=1, progress=False)
    state = find_checkpoint(tmp_path / "checkpoints")
    options = json.loads((state / "trainer_state.json").read_text())["identity"]["options"]
    assert (options["lr"], options["head_lr"]) == (1e-4, 2e-3)
    with pytest.raises(TextBatchError, match="head_lr=0"):
        fit(model, *loaders(data), head_lr=0)


def _learning_rates(monkeypatch) -> list[float]:
    """The learning rate of every optimizer step fit takes from now on."""
    rates: list[float] = []
    step = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    return rates


def test_token_budget_epochs_of_other_lengths_are_all_scheduled_and_resumed(
    tokenizer, data, tmp_path, monkeypatch
):
    """Under a token budget epochs differ by a batch: the schedule spans every epoch's steps
    (none at learning rate 0 but the warm-up's first), and a run stopped at epoch 0's length
    into a longer epoch resumes the rest of it (it once took the epoch for finished)."""
    options = {"epochs": 3, "lr": 3e-3, "seed": 1, "progress": False}
    # The case: a sampler seed whose epoch 1 is longer than its epoch 0.
    plans = {s: loaders(data, max_tokens=2048, seed=s)[0].batch_sampler.epoch_lengths(3)
             for s in range(10)}  # fmt: skip
    seed, lengths = next((s, n) for s, n in plans.items() if n[1] > n[0])
    rates = _learning_rates(monkeypatch)
    reference = small_model(tokenizer, encoder="transformer")
    expected = fit(
        reference, *loaders(data, max_tokens=2048, seed=seed), out_dir=tmp_path / "whole", **options
    )
    assert len(rates) == sum(lengths) and min(rates[1:]) > 0  # warm-up starts at 0

    stop = lengths[0] * 2  # epoch 1 at epoch 0's length, a batch before its end
    cut = tmp_path / "cut"
    interrupted = small_model(tokenizer, encoder="transformer")
    fit(interrupted, *loaders(data, max_tokens=2048, seed=seed), out_dir=cut, stop_after_steps=stop,
        **options)  # fmt: skip
    rates.clear()
    resumed = small_model(tokenizer, seed=99, encoder="transformer")
    history = fit(
        resumed, *loaders(data, max_tokens=2048, seed=seed), out_dir=cut, resume=True, **options
    )
    assert len(rates) == sum(lengths) - stop
    assert without_timing(history) == without_timing(expected)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_a_stream_longer_than_batches_per_epoch_warns(tokenizer, corpus_records):
    loader = _stream_loader(tokenizer, corpus_records)
    with pytest.warns(UserWarning, match=r"step 6 is past the 5 steps .* learning rate 0"):
        fit(small_model(tokenizer), loader, epochs=1, batches_per_epoch=5, progress=False)
