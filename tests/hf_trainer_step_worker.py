"""Run by torchrun in tests/test_integrations.py: one BucketTrainer optimizer step on 2 gloo CPU
processes, with a token budget and gradient accumulation.

Usage: hf_trainer_step_worker.py TOKENIZER_DIR MODEL_DIR OUT_DIR. Each rank writes
OUT_DIR/rank<r>.json: the features of the batches it trained on, and rank 0 the change of every
weight in the step (SGD, learning rate 1: the step's gradient).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from hf_trainer_worker import end_process_group
from transformers import BertForSequenceClassification, TrainingArguments

from textbatch import BucketTrainer, PaddingCollator, TextDataset, load_tokenizer, make_corpus

ACCUMULATE = 2


def main() -> None:
    tokenizer_dir, model_dir, out = sys.argv[1:4]
    tokenizer = load_tokenizer(tokenizer_dir)
    train = TextDataset.from_records(make_corpus(120, seed=1), tokenizer, max_length=64)
    collate = PaddingCollator.from_tokenizer(tokenizer)
    batches = []

    def recording(features):
        batches.append([{k: list(map(int, v)) if k == "input_ids" else int(v)
                         for k, v in f.items() if k in ("input_ids", "labels")}
                        for f in features])  # fmt: skip
        return collate(features)

    args = TrainingArguments(
        output_dir=out, gradient_accumulation_steps=ACCUMULATE, max_steps=1, learning_rate=1.0,
        optim="sgd", weight_decay=0.0, max_grad_norm=0.0, lr_scheduler_type="constant",
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=train.num_labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = BucketTrainer(
        model=model, args=args, train_dataset=train, data_collator=recording, max_tokens=256
    )
    trainer.train()
    result = {"batches": batches[:ACCUMULATE], "world_size": args.world_size}
    if args.process_index == 0:
        result["change"] = {
            name: (before[name] - p.detach()).tolist() for name, p in model.named_parameters()
        }
    Path(out, f"rank{args.process_index}.json").write_text(json.dumps(result))
    end_process_group()


if __name__ == "__main__":
    main()
