from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from contracts import check_save_load_state

from textbatch import BucketedStream, PaddingCollator, StreamingTextDataset, TextBatchError
from textbatch.baselines import random_batches, sorted_batches
from textbatch.stats import padding_stats


def synthetic(n, seed=0):
    """Examples with an id and long-tailed lengths."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(30), 0.8, n), 2, 600).astype(int)
    return [{"input_ids": [i] * int(n_), "labels": i % 3} for i, n_ in enumerate(lengths)]


def ids(batches):
    return Counter(example["input_ids"][0] for batch in batches for example in batch)


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 16},
        {"max_tokens": 2000},
        {"max_tokens": 2000, "batch_size": 24, "pad_to_multiple_of": 8},
    ],
)
def test_every_example_once_and_within_limits(options):
    examples = synthetic(3000)
    batches = list(BucketedStream(examples, buffer_size=500, **options))
    assert ids(batches) == Counter(range(3000))
    for batch in batches:
        width = max(len(e["input_ids"]) for e in batch)
        if "batch_size" in options:
            assert len(batch) <= options["batch_size"]
        if "max_tokens" in options:
            multiple = options.get("pad_to_multiple_of") or 1
            assert len(batch) * -(-width // multiple) * multiple <= options["max_tokens"]
    if "max_tokens" not in options:  # only the end of the stream yields an incomplete batch
        assert sum(len(b) < options["batch_size"] for b in batches) <= 1


def test_pads_far_less_than_random_batches():
    examples = synthetic(5000, seed=1)
    lengths = np.array([len(e["input_ids"]) for e in examples])
    position = {e["input_ids"][0]: i for i, e in enumerate(examples)}
    batches = list(BucketedStream(examples, batch_size=32, buffer_size=2000))
    as_indices = [[position[e["input_ids"][0]] for e in b] for b in batches]
    bucketed = padding_stats(lengths, as_indices).waste
    random = padding_stats(lengths, random_batches(len(lengths), 32)).waste
    # a full sort of each buffer on its own is what a buffer of this size can do at best
    per_buffer = [lengths[i : i + 2000] for i in range(0, len(lengths), 2000)]
    sorted_waste = np.mean([padding_stats(x, sorted_batches(x, 32)).waste for x in per_buffer])
    assert bucketed < 1.5 * sorted_waste + 0.01
    assert bucketed < random / 4


def test_epochs_reshuffle_and_drop_last():
    examples = synthetic(1000, seed=2)
    stream = BucketedStream(examples, batch_size=32, buffer_size=300, drop_last=True)
    first = list(stream)
    stream.set_epoch(1)
    second = list(stream)
    assert first != second
    assert all(len(b) == 32 for b in first + second)
    assert sum(map(len, first)) == 1000 // 32 * 32


def test_plain_iterables_split_across_ranks():
    examples = synthetic(1000, seed=3)
    seen = Counter()
    for rank in range(3):
        part = ids(BucketedStream(examples, batch_size=16, num_replicas=3, rank=rank))
        assert 300 < sum(part.values()) < 370
        seen += part
    assert seen == Counter(range(1000))


@pytest.mark.timeout(120)
def test_dataloader_workers_over_a_streaming_dataset(tokenizer, corpus_records):
    names = sorted({r["label"] for r in corpus_records})
    stream = StreamingTextDataset(corpus_records, tokenizer, label_names=names)
    batches = BucketedStream(stream, max_tokens=1024, buffer_size=100)
    collate = PaddingCollator.from_tokenizer(tokenizer)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, collate_fn=collate, num_workers=2
    )
    got = list(loader)
    assert sum(b["input_ids"].shape[0] for b in got) == len(corpus_records)
    assert all(b["input_ids"].numel() <= 1024 for b in got)
    real = sum(int(b["attention_mask"].sum()) for b in got)
    encoded = tokenizer([r["text"] for r in corpus_records], truncation=True, max_length=512)
    expected = sum(len(x) for x in encoded["input_ids"])
    assert real == expected


def test_resume_contract_with_a_resumable_source(tokenizer, corpus_records):
    names = sorted({r["label"] for r in corpus_records})

    def make():
        source = StreamingTextDataset(corpus_records[:300], tokenizer, label_names=names)
        return BucketedStream(source, batch_size=8, buffer_size=64)

    check_save_load_state(make, epochs=2, stop_epoch=0)


def test_bad_input():
    with pytest.raises(TextBatchError, match="give batch_size"):
        BucketedStream([])
    with pytest.raises(TextBatchError, match="buffer_size=8 must hold at least one batch"):
        BucketedStream([], batch_size=16, buffer_size=8)
    with pytest.raises(TextBatchError, match="neither 'length' nor 'input_ids'"):
        list(BucketedStream([{"text": "raw"}], batch_size=4))
    with pytest.raises(TextBatchError, match="more than max_tokens=10"):
        list(BucketedStream([{"input_ids": [1] * 20}], max_tokens=10))
    stream = BucketedStream([{"input_ids": [1]}], batch_size=1)
    with pytest.raises(TextBatchError, match="cannot resume"):
        stream.load_state_dict(
            {"epoch": 0, "buffer": 0, "done": 1, "carry": [], "source": {"position": 3}}
        )
