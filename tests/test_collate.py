from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import DataCollatorWithPadding

from textbatch import PaddingCollator, TextBatchError, TextDataset


def random_features(rng, batch_size, with_types, max_len=60):
    features = []
    for _ in range(batch_size):
        n = int(rng.integers(1, max_len))
        feature = {"input_ids": rng.integers(1, 800, size=n).tolist()}
        if with_types:
            feature["token_type_ids"] = rng.integers(0, 2, size=n).tolist()
        feature["label"] = int(rng.integers(0, 5))
        features.append(feature)
    return features


def assert_same_batch(ours, theirs):
    assert set(ours) == set(theirs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype, key
        assert ours[key].shape == theirs[key].shape, key
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("pad_to_multiple_of", [None, 8])
@pytest.mark.parametrize("with_types", [False, True])
def test_matches_data_collator_with_padding(
    tokenizer, monkeypatch, padding_side, pad_to_multiple_of, with_types
):
    monkeypatch.setattr(tokenizer, "padding_side", padding_side)
    theirs = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
    ours = PaddingCollator.from_tokenizer(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
    assert ours.padding_side == padding_side
    rng = np.random.default_rng(0)
    for _ in range(40):
        features = random_features(rng, int(rng.integers(1, 40)), with_types)
        assert_same_batch(ours(features), dict(theirs(features)))


def test_matches_on_real_dataset_batches(tokenizer, corpus_records):
    ds = TextDataset.from_records(corpus_records, tokenizer)
    theirs = DataCollatorWithPadding(tokenizer)
    ours = PaddingCollator.from_tokenizer(tokenizer)
    rng = np.random.default_rng(1)
    for _ in range(20):
        indices = rng.choice(len(ds), size=32, replace=False).tolist()
        features = [ds[i] for i in indices]
        expected = dict(theirs(features))
        assert_same_batch(ours(features), expected)
        assert_same_batch(ours(ds.__getitems__(indices)), expected)


@pytest.mark.parametrize("form", ["numpy", "numpy-int32", "tensor"])
def test_lists_arrays_and_tensors_give_the_same_batch(form):
    rng = np.random.default_rng(2)
    features = random_features(rng, 16, with_types=True)
    convert = {
        "numpy": np.asarray,
        "numpy-int32": lambda x: np.asarray(x, dtype=np.int32),
        "tensor": torch.tensor,
    }[form]
    converted = [
        {
            "input_ids": convert(f["input_ids"]),
            "token_type_ids": convert(f["token_type_ids"]),
            "label": f["label"] if form != "tensor" else torch.tensor(f["label"]),
        }
        for f in features
    ]
    collate = PaddingCollator(0, pad_to_multiple_of=4)
    assert_same_batch(collate(converted), collate(features))


def unpad(batch, side):
    rows = []
    for ids, mask in zip(
        batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True
    ):
        rows.append([i for i, m in zip(ids, mask, strict=True) if m])
    return rows


sequences = st.lists(
    st.lists(st.integers(min_value=1, max_value=30_000), min_size=1, max_size=50),
    min_size=1,
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(
    seqs=sequences,
    side=st.sampled_from(["right", "left"]),
    multiple=st.sampled_from([None, 1, 3, 8]),
)
def test_padding_properties(seqs, side, multiple):
    batch = PaddingCollator(0, padding_side=side, pad_to_multiple_of=multiple)(
        [{"input_ids": s} for s in seqs]
    )
    lengths = [len(s) for s in seqs]
    width = batch["input_ids"].shape[1]
    # padding then stripping padding gives back the input
    assert unpad(batch, side) == seqs
    # attention_mask row sums equal the lengths
    assert batch["attention_mask"].sum(1).tolist() == lengths
    # the width is the longest, rounded up to the multiple, and no wider
    assert width >= max(lengths) and width - max(lengths) < (multiple or 1)
    if multiple:
        assert width % multiple == 0
    mask = batch["attention_mask"]
    if side == "left":  # real tokens sit at the end of each row
        for row, n in enumerate(lengths):
            assert mask[row, width - n :].all() and not mask[row, : width - n].any()
            assert batch["input_ids"][row, width - n :].tolist() == seqs[row]
    else:
        for row, n in enumerate(lengths):
            assert mask[row, :n].all() and not mask[row, n:].any()
    assert (batch["input_ids"][mask == 0] == 0).all()


@settings(max_examples=100, deadline=None)
@given(seqs=sequences, max_length=st.integers(1, 60), side=st.sampled_from(["right", "left"]))
def test_max_length_truncates_each_example(seqs, max_length, side):
    batch = PaddingCollator(0, max_length=max_length, padding_side=side)(
        [{"input_ids": s, "token_type_ids": [1] * len(s)} for s in seqs]
    )
    assert batch["input_ids"].shape[1] == min(max_length, max(len(s) for s in seqs))
    assert unpad(batch, side) == [s[:max_length] for s in seqs]
    assert (batch["token_type_ids"].sum(1) == batch["attention_mask"].sum(1)).all()


def test_labels_keys_and_dtypes():
    collate = PaddingCollator(0)
    batch = collate([{"input_ids": [1, 2], "labels": 3}, {"input_ids": [4], "labels": 0}])
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [3, 0]
    regression = collate([{"input_ids": [1], "label": 0.5}, {"input_ids": [2], "label": 1.0}])
    assert regression["labels"].dtype == torch.float32
    no_labels = collate([{"input_ids": [1, 2]}, {"input_ids": [3]}])
    assert set(no_labels) == {"input_ids", "attention_mask"}


def test_streaming_length_key_is_dropped_and_scalars_pass_through():
    batch = PaddingCollator(0)([{"input_ids": [5, 6], "length": 2, "idx": 7}])
    assert "length" not in batch
    assert batch["idx"].tolist() == [7]


def test_given_attention_mask_is_padded_not_replaced():
    batch = PaddingCollator(0)(
        [
            {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 0]},
            {"input_ids": [8], "attention_mask": [1]},
        ]
    )
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 0, 0]]


def test_collator_pickles_and_keeps_its_options(tokenizer):
    collate = PaddingCollator.from_tokenizer(tokenizer, pad_to_multiple_of=8, padding_side="left")
    clone = pickle.loads(pickle.dumps(collate))
    assert repr(clone) == repr(collate)
    features = [{"input_ids": [2, 9, 3]}, {"input_ids": [2, 3]}]
    assert_same_batch(clone(features), collate(features))
    assert len(pickle.dumps(collate)) < 1000  # the tokenizer is not carried along


@pytest.mark.timeout(120)
def test_dataloader_with_two_workers(tokenizer, corpus_records):
    ds = TextDataset.from_records(corpus_records, tokenizer)  # tokenises in this process first
    collate = PaddingCollator.from_tokenizer(tokenizer)
    batches = [list(range(i, min(i + 32, len(ds)))) for i in range(0, len(ds), 32)]
    serial = list(torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=collate))
    parallel = list(
        torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=collate, num_workers=2)
    )
    assert len(parallel) == len(serial) == len(batches)
    for a, b in zip(serial, parallel, strict=True):
        assert_same_batch(a, b)


@pytest.mark.parametrize("bad", [0, -8, 2.0, "8", True])
def test_bad_pad_to_multiple_of(bad):
    with pytest.raises(TextBatchError, match="pad_to_multiple_of"):
        PaddingCollator(0, pad_to_multiple_of=bad)


def test_tokenizer_without_pad_token(tokenizer):
    import copy

    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    with pytest.raises(TextBatchError, match=r"no pad token.*tokenizer\.pad_token ="):
        PaddingCollator.from_tokenizer(no_pad)


def test_other_bad_input():
    with pytest.raises(TextBatchError, match="empty batch"):
        PaddingCollator(0)([])
    with pytest.raises(TextBatchError, match="'input_ids' key"):
        PaddingCollator(0)([{"ids": [1]}])
    with pytest.raises(TextBatchError, match="example 1 has 1 token_type_ids but 2 input_ids"):
        PaddingCollator(0)(
            [
                {"input_ids": [1], "token_type_ids": [0]},
                {"input_ids": [1, 2], "token_type_ids": [0]},
            ]
        )
    with pytest.raises(TextBatchError, match="padding_side='middle'"):
        PaddingCollator(0, padding_side="middle")
    with pytest.raises(TextBatchError, match="pad_token_id=None"):
        PaddingCollator(None)
    with pytest.raises(TextBatchError, match="'text'"):
        PaddingCollator(0)([{"input_ids": [1], "text": "raw"}])


def test_review_regressions():
    with pytest.raises(TextBatchError, match="class ids"):
        PaddingCollator(0)([{"input_ids": [1], "labels": "pos"}])
    with pytest.raises(TextBatchError, match=r"both \['labels', 'label'\]"):
        PaddingCollator(0)([{"input_ids": [1], "labels": 1, "label": 2}])
    with pytest.raises(TextBatchError, match="example 1 has no 'token_type_ids'"):
        PaddingCollator(0)([{"input_ids": [1], "token_type_ids": [0]}, {"input_ids": [2]}])
    with pytest.raises(TextBatchError, match="'spans'"):
        PaddingCollator(0)([{"input_ids": [1], "spans": [1, 2]}, {"input_ids": [2], "spans": [3]}])
    assert PaddingCollator(0, max_length=np.int64(2))([{"input_ids": [1, 2, 3]}])[
        "input_ids"
    ].tolist() == [[1, 2]]


def test_load_tokenizer_leaves_the_callers_tokenizer_alone(tokenizer):
    from textbatch import load_tokenizer

    backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
    backend.enable_padding(pad_id=0, pad_token="[PAD]")
    load_tokenizer(backend)
    assert backend.padding is not None
