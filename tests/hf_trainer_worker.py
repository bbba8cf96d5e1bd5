"""Run by torchrun in tests/test_integrations.py: BucketTrainer on 2 gloo CPU processes.

Usage: hf_trainer_worker.py text|arrow TOKENIZER_DIR MODEL_DIR OUT_DIR. Each rank writes
OUT_DIR/rank<r>.json: the examples of every batch it trained on (by a hash of their token ids),
its steps per epoch, and the examples of the whole dataset.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import (
    BertForSequenceClassification,
    DataCollatorWithPadding,
    TrainingArguments,
)

from textbatch import BucketTrainer, PaddingCollator, TextDataset, load_tokenizer, make_corpus


def end_process_group() -> None:
    """Accelerate leaves the process group to the interpreter's exit, where gloo's threads abort
    a rank (SIGABRT, "terminate called without an active exception"; 2 runs in 19 of the step
    worker, which lacked this): both ranks done, then torn down while Python is whole."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def key(ids) -> int:
    return hash(tuple(int(t) for t in ids))


class Recorder:
    def __init__(self, collate):
        self.collate, self.batches = collate, []

    def __call__(self, features):
        self.batches.append([key(f["input_ids"]) for f in features])
        return self.collate(features)


def main() -> None:
    data, tokenizer_dir, model_dir, out = sys.argv[1:5]
    tokenizer = load_tokenizer(tokenizer_dir)
    records = make_corpus(300, seed=1)
    if data == "text":
        train = TextDataset.from_records(records, tokenizer, max_length=128)
        collate, options = Recorder(PaddingCollator.from_tokenizer(tokenizer)), {}
    else:
        import datasets

        names = sorted({r["label"] for r in records})
        raw = datasets.Dataset.from_list([{**r, "label": names.index(r["label"])} for r in records])
        train = raw.map(
            lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True
        )
        collate, options = Recorder(DataCollatorWithPadding(tokenizer)), {"max_tokens": 1024}
    args = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=8,
        num_train_epochs=2,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=8)
    trainer = BucketTrainer(
        model=model, args=args, train_dataset=train, data_collator=collate, **options
    )
    trainer.train()
    steps = len(trainer.train_sampler.batches(0))
    assert len(collate.batches) == 2 * steps, (len(collate.batches), steps)
    result = {
        "world_size": args.world_size,
        "ddp": isinstance(trainer.model_wrapped, torch.nn.parallel.DistributedDataParallel),
        "global_step": trainer.state.global_step,
        "steps_per_epoch": steps,
        "epochs": [collate.batches[:steps], collate.batches[steps:]],
        "all_examples": [key(train[i]["input_ids"]) for i in range(len(train))],
    }
    Path(out, f"rank{args.process_index}.json").write_text(json.dumps(result))
    end_process_group()


if __name__ == "__main__":
    main()
