"""The recipes the README gives for Hugging Face Trainer and Accelerate, run for real."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textbatch import BucketBatchSampler, PaddingCollator, TextDataset


@pytest.fixture
def tiny_bert(tiny_bert_dir):
    """A tiny local BERT with a fresh classification head for the 8 corpus labels."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=8)


class RecordingCollator(PaddingCollator):
    """Remembers the shape of every batch it makes."""

    shapes: list[tuple[int, int]]

    def __call__(self, features):
        batch = super().__call__(features)
        self.shapes.append(tuple(batch["input_ids"].shape))
        return batch


@pytest.mark.timeout(300)
def test_hugging_face_trainer_recipe(tokenizer, corpus_records, tiny_bert, tmp_path):
    from torch.utils.data import DataLoader
    from transformers import Trainer, TrainingArguments

    train = TextDataset.from_records(corpus_records, tokenizer)
    collate = RecordingCollator.from_tokenizer(tokenizer)
    collate.shapes = []

    class BucketTrainer(Trainer):
        def get_train_dataloader(self):
            sampler = BucketBatchSampler(
                self.train_dataset.lengths,
                batch_size=self.args.per_device_train_batch_size,
                seed=self.args.seed,
            )
            return DataLoader(
                self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator
            )

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        num_train_epochs=2,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = BucketTrainer(model=tiny_bert, args=args, train_dataset=train, data_collator=collate)
    result = trainer.train()
    steps_per_epoch = -(-len(train) // 16)
    assert trainer.state.global_step == 2 * steps_per_epoch
    assert np.isfinite(result.training_loss)
    assert len(collate.shapes) == 2 * steps_per_epoch
    padded = sum(b * t for b, t in collate.shapes)
    # bucketed: little padding (random batches of this data carry about 3 padded tokens per
    # real one; 600 examples leave a sparse tail, so bucketing keeps some 10%)
    assert padded < 1.25 * 2 * train.lengths.sum()
    # the two epochs were planned differently (the sampler moved on by itself)
    assert collate.shapes[:steps_per_epoch] != collate.shapes[steps_per_epoch:]


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
