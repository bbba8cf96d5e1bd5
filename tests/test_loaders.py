"""make_loader: the sampler takes what the collator asks for, through sampler_options()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textbatch import PackingCollator, PaddingCollator, TextBatchError, TextBatchWarning
from textbatch.batching.loaders import make_loader, sampler_options


class Toy(torch.utils.data.Dataset):
    """Examples of the given lengths (tokens), for loaders that need only ``lengths``."""

    def __init__(self, lengths):
        self.lengths = np.asarray(lengths)

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, index):
        return {"input_ids": [5] * int(self.lengths[index]), "labels": index % 2}


def plain_collate(features):
    return PaddingCollator(0)(features)


@pytest.mark.parametrize(
    ("collate", "expected"),
    [
        (PaddingCollator(0), {"pad_to_multiple_of": None}),
        (PaddingCollator(0, pad_to_multiple_of=16), {"pad_to_multiple_of": 16}),
        (PackingCollator(0, capacity=64), {"packing_capacity": 64, "oversized": "error"}),
        (
            PackingCollator(0, capacity=64, overlong="truncate"),
            {"packing_capacity": 64, "oversized": "truncate"},
        ),
        (
            PackingCollator(0, capacity=64, overlong="split"),  # a plan cannot count split pieces
            {"packing_capacity": 64, "oversized": "error"},
        ),
        (PackingCollator(0), {"packing_capacity": None, "oversized": "error"}),
        (plain_collate, {}),  # a plain function asks for nothing: the sampler's defaults
    ],
)
def test_sampler_options(collate, expected):
    assert sampler_options(collate) == expected


def test_the_token_budget_counts_the_collators_rounding():
    # 9 tokens each: 7 fit 64 tokens unrounded, 4 once rounded up to 16.
    loader = make_loader(Toy([9] * 40), PaddingCollator(0, pad_to_multiple_of=16), max_tokens=64)
    batches = list(loader)
    assert all(batch["input_ids"].numel() <= 64 for batch in batches)
    assert [len(batch["input_ids"]) for batch in batches] == [4] * 10


def test_a_plain_collate_fn_gets_the_defaults():
    batches = list(make_loader(Toy([3, 4, 5, 6] * 5), plain_collate, batch_size=4))
    assert sorted(len(batch["labels"]) for batch in batches) == [4] * 5


def test_a_packing_collator_without_a_plan_packs_each_padded_plan_batch():
    collate = PackingCollator(0, capacity=16)
    batches = list(make_loader(Toy([3, 4, 5, 6] * 5), collate, batch_size=4))
    assert sum(len(batch["labels"]) for batch in batches) == 20
    assert all(batch["input_ids"].shape[1] == 16 for batch in batches)


def test_packed_plans_follow_the_collators_overlong():
    data = Toy([10, 40, 12, 8] * 4)  # 40 tokens do not fit a row of 32
    truncate = PackingCollator(0, capacity=32, overlong="truncate")
    batches = list(make_loader(data, truncate, max_tokens=64, packing_capacity=32))
    assert sum(len(batch["labels"]) for batch in batches) == 16
    assert all(batch["input_ids"].shape[0] <= 2 for batch in batches)  # rows, as planned
    with pytest.raises(TextBatchError, match="more than the row capacity packing_capacity=32"):
        make_loader(data, PackingCollator(0, capacity=32), max_tokens=64, packing_capacity=32)


@pytest.mark.parametrize(
    ("collate", "options", "message"),
    [
        (PaddingCollator(0), {}, r"pack with PackingCollator\(capacity=32\).*not PaddingCollator"),
        (PackingCollator(0, capacity=16), {}, r"PackingCollator\(capacity=32\) to lay"),
        (plain_collate, {}, r"PackingCollator\(capacity=32\) to lay the planned rows out, not"),
        (PackingCollator(0, capacity=32), {"sampler": "random"}, "planned by the 'bucket'"),
    ],
)
def test_packing_needs_a_packing_collator_of_the_same_capacity(collate, options, message):
    with pytest.raises(TextBatchError, match=message):
        make_loader(Toy([3] * 8), collate, max_tokens=64, packing_capacity=32, **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size=0 must be a positive int"),
        ({"max_tokens": 2.5}, "max_tokens=2.5 must be a positive int"),
        ({"packing_capacity": True}, "packing_capacity=True must be a positive int"),
        ({"num_workers": -1}, "num_workers=-1 must be a non-negative int"),
        ({"seed": -3}, "seed=-3 must be a non-negative int"),
        ({"sampler": "longest"}, "sampler='longest' must be one of bucket, random, sorted"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(TextBatchError, match=message):
        make_loader(Toy([3] * 8), PaddingCollator(0), **options)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PaddingCollator(0, pad_to_multiple_of=0), "pad_to_multiple_of=0 .* no rounding"),
        (lambda: PaddingCollator(0, max_length=0), "max_length=0 .*most tokens per example"),
        (lambda: PackingCollator(0, capacity=-4), "capacity=-4 .*one flat row"),
        (lambda: PackingCollator(0, position_offset=-1), "position_offset=-1 .*non-negative"),
    ],
)
def test_collator_options_say_what_they_count(make, message):
    with pytest.raises(TextBatchError, match=message):
        make()


def rounding_collate(features):
    """A PaddingCollator that rounds widths up to 16, in a function that hides it."""
    return PaddingCollator(0, pad_to_multiple_of=16)(features)


def test_make_loader_warns_when_batches_are_padded_past_the_budget():
    """A collator in a function hides its rounding, and the budget counted unrounded widths."""
    import warnings

    from textbatch.training.loop import describe_loader

    data = Toy(np.random.default_rng(0).integers(3, 60, size=300))
    kept = make_loader(data, PaddingCollator(0, pad_to_multiple_of=16), max_tokens=200)
    hidden = make_loader(data, rounding_collate, max_tokens=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(b["input_ids"].numel() <= 200 for b in kept)
    budget = r"padded to \d+ tokens, \d+ against the token budget max_tokens=200"
    with pytest.warns(TextBatchWarning, match=budget):
        sizes = [b["input_ids"].numel() for b in hidden]
    assert max(sizes) > 200  # what the warning is about
    assert describe_loader(hidden)["collate"] == "rounding_collate"  # the caller's, not the check
