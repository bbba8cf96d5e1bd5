"""PaddingCollator vs transformers' DataCollatorWithPadding vs a pad_sequence collate.

All three collate the same batches of the embedded corpus (random batches, so padded widths
vary as in training). Times are the best of several passes over all batches, per batch.
Run: python benchmarks/collate.py [--batch-sizes 32 128] [--batches 300] [--out FILE]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import best_time, corpus_dataset_and_tokenizer, save
from torch.nn.utils.rnn import pad_sequence
from transformers import DataCollatorWithPadding

from textbatch import PaddingCollator


def pad_sequence_collate(pad_token_id: int):
    """The hand-written collate people write: a tensor per example, then pad_sequence."""

    def collate(features):
        ids = [torch.tensor(f["input_ids"]) for f in features]
        types = [torch.tensor(f["token_type_ids"]) for f in features]
        return {
            "input_ids": pad_sequence(ids, batch_first=True, padding_value=pad_token_id),
            "token_type_ids": pad_sequence(types, batch_first=True, padding_value=0),
            "attention_mask": pad_sequence(
                [torch.ones(len(x), dtype=torch.int64) for x in ids], batch_first=True
            ),
            "labels": torch.tensor([f["labels"] for f in features]),
        }

    return collate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--batches", type=int, default=300, help="batches per timing pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/collate.json)")
    args = parser.parse_args()

    dataset, tokenizer = corpus_dataset_and_tokenizer()
    ours = PaddingCollator.from_tokenizer(tokenizer)
    theirs = DataCollatorWithPadding(tokenizer)
    handwritten = pad_sequence_collate(tokenizer.pad_token_id)
    rows = []
    for batch_size in args.batch_sizes:
        rng = np.random.default_rng(0)
        batches = [
            rng.choice(len(dataset), size=batch_size, replace=False).tolist()
            for _ in range(args.batches)
        ]
        features = [[dataset[i] for i in batch] for batch in batches]  # lists, as ds[i] gives
        # All three give the same tensors on these features (checked, not assumed).
        for got in (ours(features[0]), handwritten(features[0])):
            expected = theirs(features[0])
            assert all(torch.equal(got[k], expected[k]) for k in expected)

        def per_batch(fn, items):
            return best_time(lambda: [fn(x) for x in items], args.repeats) / len(items)

        times = {
            "hf_collator": per_batch(theirs, features),
            "pad_sequence": per_batch(handwritten, features),
            "textbatch": per_batch(ours, features),
            # Reading included: per-example reads + a collator vs one __getitems__ read + ours.
            "hf_read_and_collate": per_batch(lambda b: theirs([dataset[i] for i in b]), batches),
            "textbatch_read_and_collate": per_batch(
                lambda b: ours([dataset[i] for i in b]), batches
            ),
            "textbatch_getitems_and_collate": per_batch(
                lambda b: ours(dataset.__getitems__(b)), batches
            ),
        }
        row = {
            "batch_size": batch_size,
            "seconds_per_batch": times,
            "speedup_vs_hf_collator": times["hf_collator"] / times["textbatch"],
            "speedup_vs_pad_sequence": times["pad_sequence"] / times["textbatch"],
            "speedup_read_and_collate": times["hf_read_and_collate"]
            / times["textbatch_getitems_and_collate"],
            "speedup_getitems_vs_per_example_read": times["textbatch_read_and_collate"]
            / times["textbatch_getitems_and_collate"],
        }
        rows.append(row)
        print(f"batch size {batch_size}: microseconds per batch")
        for name, seconds in times.items():
            print(f"  {name:32s} {seconds * 1e6:10.1f}")
        print(
            f"  textbatch is {row['speedup_vs_hf_collator']:.1f}x faster than "
            f"DataCollatorWithPadding, "
            f"{row['speedup_vs_pad_sequence']:.1f}x faster than pad_sequence; "
            f"read+collate via __getitems__ {row['speedup_read_and_collate']:.1f}x faster than "
            f"per-example reads + HF ({row['speedup_getitems_vs_per_example_read']:.1f}x faster "
            "than per-example reads + textbatch)"
        )
    save("collate", {"batches_per_pass": args.batches, "results": rows}, args.out)


if __name__ == "__main__":
    main()
