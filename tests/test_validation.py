"""Issue 9, items 9 and 11: input that used to give silently wrong results is refused or honoured.

Each case is one row of a table; every row failed (no error, or an error that was not a
TextBatchError) before the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textbatch import (
    PackingCollator,
    PaddingCollator,
    StreamingTextDataset,
    TextBatchError,
    TextDataset,
)

RECORDS = [
    {"text": "The striker scored a late goal in the final minute.", "label": "sports"},
    {"text": "Parliament passed the budget.", "label": "politics"},
]
PAIRS = [{**r, "other": "A second text of several words."} for r in RECORDS]
COLLATORS = {"padding": PaddingCollator(0), "packing": PackingCollator(0, capacity=16)}

# ------------------------------------------------------------------ item 9: max_length


@pytest.mark.parametrize(
    ("build", "max_length", "minimum"),
    [
        ("records", 1, 3),  # [CLS] and [SEP] leave no room for text
        ("records", 2, 3),  # exactly the special tokens: an empty text
        ("pairs", 2, 5),  # a pair adds three special tokens
        ("pairs", 4, 5),  # room for one text of the pair only: the other would vanish
        ("stream", 1, 3),
    ],
)
def test_max_length_without_room_for_text_is_refused(tokenizer, build, max_length, minimum):
    def make():
        if build == "records":
            return TextDataset.from_records(RECORDS, tokenizer, max_length=max_length)
        if build == "pairs":
            return TextDataset.from_records(
                PAIRS, tokenizer, text_pair="other", max_length=max_length
            )
        return StreamingTextDataset(RECORDS, tokenizer, max_length=max_length)

    with pytest.raises(TextBatchError, match=rf"max_length={max_length}\b.*at least {minimum}"):
        make()


@pytest.mark.parametrize(("text_pair", "max_length"), [(None, 3), ("other", 5)])
def test_smallest_max_length_truncates(tokenizer, text_pair, max_length):
    ds = TextDataset.from_records(PAIRS, tokenizer, text_pair=text_pair, max_length=max_length)
    assert ds.lengths.tolist() == [max_length, max_length]
    special = set(tokenizer.all_special_ids)
    for i in range(len(ds)):
        real = [t for t in ds[i]["input_ids"] if t not in special]
        assert len(real) == max_length - tokenizer.num_special_tokens_to_add(text_pair is not None)


# ------------------------------------------------------------------ item 11: collators

BIG = 2**63 + 5  # wraps to a negative number in int64


BAD_FEATURES = {
    # (a) a key that only later examples carry
    "labels in example 1 only": (
        [{"input_ids": [1, 2]}, {"input_ids": [3], "labels": 1}],
        r"example 1 has 'labels', which example 0 lacks",
    ),
    "token_type_ids in example 1 only": (
        [{"input_ids": [1, 2]}, {"input_ids": [3], "token_type_ids": [0]}],
        r"example 1 has 'token_type_ids', which example 0 lacks",
    ),
    "label key spelled two ways": (
        [{"input_ids": [1], "labels": 0}, {"input_ids": [3], "label": 1}],
        r"example 1 has 'label', which example 0 lacks",
    ),
    # (b) floats would be truncated
    "float id in a list": (
        [{"input_ids": [1, 2]}, {"input_ids": [3, 5.7]}],
        r"example 1's input_ids holds 5\.7 at position 1.*integers",
    ),
    "numpy float ids": (
        [{"input_ids": np.array([1.0, 2.5])}],
        r"example 0's input_ids holds 1\.0 at position 0, which is a float",  # whole or not
    ),
    "torch float ids": (
        [{"input_ids": torch.tensor([1, 2])}, {"input_ids": torch.tensor([4.2])}],
        r"example 1's input_ids holds 4\.19",
    ),
    "float token_type_ids": (
        [{"input_ids": [1, 2], "token_type_ids": [0, 0.5]}],
        r"example 0's token_type_ids holds 0\.5 at position 1",
    ),
    "float attention_mask": (
        [{"input_ids": [1, 2], "attention_mask": [1, 0.5]}],
        r"example 0's attention_mask holds 0\.5 at position 1",
    ),
    # (c) ids beyond int64 would wrap; negative ids index nothing
    "uint64 id above 2**63": (
        [{"input_ids": np.array([1, BIG], dtype=np.uint64)}],
        rf"example 0's input_ids holds {BIG} at position 1.*2\*\*63",
    ),
    "Python int id above 2**63": (
        [{"input_ids": [1]}, {"input_ids": [2, BIG]}],
        rf"example 1's input_ids holds {BIG} at position 1",
    ),
    "negative id": (
        [{"input_ids": [1, 2]}, {"input_ids": [-1]}],
        r"example 1's input_ids holds -1 at position 0.*negative",
    ),
    "numpy negative token type": (
        [{"input_ids": np.array([1, 2]), "token_type_ids": np.array([0, -3])}],
        r"example 0's token_type_ids holds -3 at position 1",
    ),
    # labels: class ids beyond int64 wrap (uint64) or turn into float targets (a mix of ints)
    "uint64 label above 2**63": (
        [{"input_ids": [1], "labels": np.uint64(BIG)}, {"input_ids": [2], "labels": np.uint64(1)}],
        rf"example 0's labels is {BIG}.*2\*\*63",
    ),
    "Python int label above 2**63 among ints": (
        [{"input_ids": [1], "labels": 1}, {"input_ids": [2], "labels": BIG}],
        rf"example 1's labels is {BIG}",
    ),
}


@pytest.mark.parametrize("name", list(BAD_FEATURES))
@pytest.mark.parametrize("collator", list(COLLATORS))
def test_collators_refuse_what_they_would_change(collator, name):
    features, message = BAD_FEATURES[name]
    if collator == "packing" and "attention_mask" in name:
        message = r"attention_mask"  # packing builds its own mask: a given one must be all ones
    with pytest.raises(TextBatchError, match=message):
        COLLATORS[collator](features)


def test_packing_keeps_or_refuses_keys_it_used_to_drop():
    collate = PackingCollator(0, capacity=8)
    with pytest.raises(
        TextBatchError, match=r"example 1.s attention_mask holds 0 at position 1.*PaddingCollator"
    ):
        collate(
            [
                {"input_ids": [1, 2], "attention_mask": [1, 1]},
                {"input_ids": [3, 4], "attention_mask": [1, 0]},
            ]
        )
    batch = collate(
        [
            {
                "input_ids": [2, 5, 3],
                "special_tokens_mask": [1, 0, 1],
                "attention_mask": [1, 1, 1],
                "idx": 7,
            },
            {
                "input_ids": [2, 3],
                "special_tokens_mask": [1, 1],
                "attention_mask": [1, 1],
                "idx": 8,
            },
        ]
    )
    assert batch["special_tokens_mask"].tolist() == [[1, 0, 1, 1, 1, 1, 1, 1]]
    assert batch["idx"].tolist() == [7, 8]  # one per sequence, like labels


@pytest.mark.parametrize("collator", list(COLLATORS))
def test_exact_values_are_still_accepted(collator):
    """Lossless input keeps working: bools, small unsigned ids, mixed int/float regression
    targets (float32), ids just below 2**63, -100 labels, the streaming ``length`` key."""
    features = [
        {"input_ids": np.array([2, 2**63 - 1], dtype=np.uint64), "labels": 1, "length": 2},
        {"input_ids": [True, np.True_, 5], "labels": 2.5},
    ]
    batch = COLLATORS[collator](features)
    assert batch["input_ids"].dtype == torch.int64
    assert 2**63 - 1 in batch["input_ids"].flatten().tolist()
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [1.0, 2.5]
    assert COLLATORS[collator]([{"input_ids": [1], "labels": -100}])["labels"].tolist() == [-100]
