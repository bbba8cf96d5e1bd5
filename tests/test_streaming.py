from __future__ import annotations

import json
from collections import Counter

import datasets
import pytest
import torch

from textbatch import StreamingTextDataset, TextBatchError, TextDataset
from textbatch.errors import TextBatchWarning


@pytest.fixture(scope="module")
def records(corpus_records):
    return corpus_records[:200]


def key(example):
    return tuple(example["input_ids"]), example.get("labels")


def test_yields_the_same_features_as_text_dataset_plus_length(tokenizer, records):
    stored = TextDataset.from_records(records, tokenizer)
    streamed = list(
        StreamingTextDataset(
            records, tokenizer, label_names=stored.label_names, tokenize_batch_size=7
        )
    )
    assert len(streamed) == len(stored)
    for i, example in enumerate(streamed):
        assert example["length"] == len(example["input_ids"]) == stored.lengths[i]
        assert {k: v for k, v in example.items() if k != "length"} == stored[i]


def test_from_file_and_from_hf(tokenizer, records, tmp_path):
    names = sorted({r["label"] for r in records})
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    from_file = list(StreamingTextDataset.from_file(path, tokenizer, label_names=names))
    from_hf = list(
        StreamingTextDataset.from_hf(
            datasets.Dataset.from_list(records), tokenizer, label_names=names
        )
    )
    expected = list(StreamingTextDataset(records, tokenizer, label_names=names))
    assert from_file == expected and from_hf == expected


def test_classlabel_feature_provides_label_names(tokenizer):
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    hf = datasets.Dataset.from_dict({"text": ["bad", "good"], "label": [0, 1]}, features=features)
    stream = StreamingTextDataset.from_hf(hf.to_iterable_dataset(), tokenizer)
    assert stream.label_names == ["neg", "pos"]
    assert [e["labels"] for e in stream] == [0, 1]


def test_unlabelled_stream(tokenizer, records):
    texts = [{"text": r["text"]} for r in records[:5]]
    examples = list(StreamingTextDataset(texts, tokenizer))
    assert len(examples) == 5 and "labels" not in examples[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("source_kind", ["list", "hf-4-shards"])
def test_workers_and_ranks_split_without_overlap(tokenizer, records, source_kind):
    names = sorted({r["label"] for r in records})
    expected = Counter(key(e) for e in StreamingTextDataset(records, tokenizer, label_names=names))
    seen: Counter = Counter()
    for rank in range(2):
        if source_kind == "list":
            source = records
        else:
            source = datasets.Dataset.from_list(records).to_iterable_dataset(num_shards=4)
        stream = StreamingTextDataset(
            source, tokenizer, label_names=names, num_replicas=2, rank=rank
        )
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
        part = Counter(key(e) for e in loader)
        assert 0 < sum(part.values()) < len(records)
        seen += part
    assert seen == expected


def test_labelled_stream_needs_label_names(tokenizer, records):
    with pytest.raises(TextBatchError, match="label_names"):
        list(StreamingTextDataset(records, tokenizer))


def test_bad_records(tokenizer):
    good = {"text": "fine", "label": "a"}
    with pytest.raises(TextBatchError, match=r"record 1, column 'text' is missing"):
        list(
            StreamingTextDataset([good, {"text": None, "label": "a"}], tokenizer, label_names=["a"])
        )
    with pytest.raises(TextBatchError, match=r"label 'b' .*not in label_names"):
        list(
            StreamingTextDataset([good, {"text": "x", "label": "b"}], tokenizer, label_names=["a"])
        )
    with pytest.raises(TextBatchError, match="record 0 has no column 'body'"):
        list(StreamingTextDataset([good], tokenizer, text="body", label_names=["a"]))
    with pytest.raises(TextBatchError, match="iterable of dicts"):
        StreamingTextDataset("not records", tokenizer)


def test_drop_invalid_counts(tokenizer):
    records = [
        {"text": "fine", "label": "a"},
        {"text": "", "label": "a"},
        {"text": 3, "label": "a"},
    ]
    stream = StreamingTextDataset(records, tokenizer, label_names=["a"], drop_invalid=True)
    with pytest.warns(UserWarning, match="dropped 2"):
        examples = list(stream)
    assert len(examples) == 1 and stream.num_dropped == 2


def test_resume_after_a_finished_pass_starts_the_next_one(tokenizer, records):
    names = sorted({r["label"] for r in records})
    stream = StreamingTextDataset(records[:20], tokenizer, label_names=names)
    assert len(list(stream)) == 20
    resumed = StreamingTextDataset(records[:20], tokenizer, label_names=names)
    resumed.load_state_dict(stream.state_dict())
    assert len(list(resumed)) == 20


def test_labels_match_text_dataset_for_other_kinds(tokenizer):
    records = [{"text": f"text {i}", "label": bool(i % 2)} for i in range(6)]
    stored = TextDataset.from_records(records, tokenizer)
    streamed = list(StreamingTextDataset(records, tokenizer, label_names=stored.label_names))
    assert [e["labels"] for e in streamed] == [stored[i]["labels"] for i in range(6)]


def test_classlabel_stream_with_label_names_and_missing_labels(tokenizer):
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    hf = datasets.Dataset.from_dict(
        {"text": ["bad", "good", "none"], "label": [0, 1, -1]}, features=features
    )
    stream = StreamingTextDataset.from_hf(
        hf.to_iterable_dataset(), tokenizer, label_names=["pos", "neg"], drop_invalid=True
    )
    with pytest.warns(UserWarning, match="dropped 1"):
        assert [e["labels"] for e in stream] == [1, 0]


def test_length_is_counted_after_the_transform(tokenizer, records):
    from textbatch import TokenDropout

    names = sorted({r["label"] for r in records})
    stream = StreamingTextDataset(
        records[:30], tokenizer, label_names=names, transform=TokenDropout(0.5)
    )
    torch.manual_seed(0)
    assert all(e["length"] == len(e["input_ids"]) for e in stream)


def test_ranks_given_to_the_bucketed_stream_alone_are_refused(tokenizer, records):
    """A StreamingTextDataset splits itself between ranks; ranks given only to BucketedStream
    were ignored, and every rank read every example."""
    from textbatch import BucketedStream

    names = sorted({r["label"] for r in records})
    whole = StreamingTextDataset(records, tokenizer, label_names=names)
    with pytest.raises(TextBatchError, match=r"splits itself as rank 0 of 1.*rank 1 of 2"):
        BucketedStream(whole, batch_size=8, num_replicas=2, rank=1)
    for given in ({}, {"num_replicas": 2}):  # ranks given to the source (and agreeing)
        seen: Counter = Counter()
        for rank in range(2):
            part = StreamingTextDataset(
                records, tokenizer, label_names=names, num_replicas=2, rank=rank
            )
            stream = BucketedStream(part, batch_size=8, **given)
            assert (stream.rank, stream.num_replicas) == (rank, 2)
            seen += Counter(key(e) for batch in stream for e in batch)
        assert sum(seen.values()) == len(records) and max(seen.values()) == 1


def test_a_json_array_file_streams_every_value_as_written(tokenizer, tmp_path):
    """A .json array file (not lines) streamed through datasets read a column of several kinds
    lossily: beside a number, "123" came back as 123 and "null" as missing."""
    rows = [{"text": 42, "label": "x"}, {"text": "123", "label": "y"},
            {"text": "null", "label": "x"}, {"text": '"great"', "label": "y"}]  # fmt: skip
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows, indent=1))
    stream = StreamingTextDataset.from_file(path, tokenizer, label_names=["x", "y"],
                                            drop_invalid=True)  # fmt: skip
    with pytest.warns(TextBatchWarning, match="dropped 1 streamed records"):
        got = [e["input_ids"] for e in stream]
    expected = TextDataset.from_records(rows[1:], tokenizer, label_names=["x", "y"])
    assert got == [expected[i]["input_ids"] for i in range(3)]
    path.write_text(json.dumps([["a", "x"]]))
    with pytest.raises(TextBatchError, match=r"item 0 of .* is a list, not an object"):
        list(StreamingTextDataset.from_file(path, tokenizer, label_names=["x"]))
