from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from contracts import check_save_load_state
from hypothesis import given, settings
from hypothesis import strategies as st

from textbatch import BucketBatchSampler, PackingCollator, PaddingCollator, TextBatchError
from textbatch.batching.loaders import make_loader
from textbatch.batching.masks import block_diagonal_mask
from textbatch.batching.packing import best_fit_decreasing, next_fit, pack_rows
from textbatch.batching.stats import packing_stats
from textbatch.models.classifiers import BackboneClassifier, TextClassifier
from textbatch.training.loop import fit

FEATURES = [
    {"input_ids": [2, 11, 12, 3], "token_type_ids": [0, 0, 0, 0], "labels": 0},
    {"input_ids": [2, 21, 22, 23, 24, 3], "token_type_ids": [0, 0, 0, 1, 1, 1], "labels": 1},
    {"input_ids": [2, 31, 3], "token_type_ids": [0, 0, 0], "labels": 2},
    {"input_ids": [2, 41, 3], "token_type_ids": [0, 0, 0], "labels": 3},
]


def long_tailed(n, seed=0, cap=512):
    rng = np.random.default_rng(seed)
    short = rng.lognormal(np.log(30), 0.7, n)
    long = rng.lognormal(np.log(200), 0.6, n)
    return np.clip(np.where(rng.random(n) < 0.1, long, short), 3, cap).astype(np.int64)


# ------------------------------------------------------------------ hand-made layouts


def test_layout_by_hand():
    batch = PackingCollator(0, capacity=8, mask=True)(FEATURES)
    # best-fit decreasing: [6], [4, 3], [3]; next-fit in order: [4], [6], [3, 3]: three rows each,
    # so next-fit (the given order) is kept
    assert batch["input_ids"].tolist() == [
        [2, 11, 12, 3, 0, 0, 0, 0],
        [2, 21, 22, 23, 24, 3, 0, 0],
        [2, 31, 3, 2, 41, 3, 0, 0],
    ]
    assert batch["position_ids"].tolist() == [
        [0, 1, 2, 3, 0, 0, 0, 0],
        [0, 1, 2, 3, 4, 5, 0, 0],
        [0, 1, 2, 0, 1, 2, 0, 0],
    ]
    assert batch["sequence_ids"].tolist() == [
        [0, 0, 0, 0, -1, -1, -1, -1],
        [1, 1, 1, 1, 1, 1, -1, -1],
        [2, 2, 2, 3, 3, 3, -1, -1],
    ]
    assert batch["token_type_ids"][1].tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    assert batch["cu_seqlens"].tolist() == [0, 4, 10, 13, 16]
    assert batch["cu_seqlens"].dtype == torch.int32
    assert int(batch["max_seqlen"]) == 6
    assert batch["packed_order"].tolist() == [0, 1, 2, 3]
    assert batch["labels"].tolist() == [0, 1, 2, 3]
    mask = batch["attention_mask"]  # additive: eager attention adds it to the scores
    assert mask.shape == (3, 1, 8, 8) and mask.dtype == torch.float32
    allowed = mask == 0
    assert bool((mask[~allowed] == torch.finfo(torch.float32).min).all())
    assert allowed[2, 0, 0].tolist() == [True, True, True, False, False, False, False, False]
    assert allowed[2, 0, 4].tolist() == [False, False, False, True, True, True, False, False]
    assert allowed[0, 0, 5].tolist() == [False] * 5 + [True] + [False] * 2  # padding: itself


def test_the_dense_mask_is_opt_in():
    plain = PackingCollator(0, capacity=8)(FEATURES)
    assert "attention_mask" not in plain
    masked = PackingCollator(0, capacity=8, mask=True)(FEATURES)
    assert set(masked) - set(plain) == {"attention_mask"}
    for key, value in plain.items():
        assert torch.equal(value, masked[key]), key


def test_flat_row_and_position_offset():
    batch = PackingCollator(1, position_offset=2)(FEATURES[:2])
    assert batch["input_ids"].tolist() == [[2, 11, 12, 3, 2, 21, 22, 23, 24, 3]]
    assert batch["position_ids"].tolist() == [[2, 3, 4, 5, 2, 3, 4, 5, 6, 7]]


def test_best_fit_decreasing_is_used_when_it_needs_fewer_rows():
    features = [{"input_ids": [1] * n} for n in (5, 5, 3, 3)]  # next-fit: [5], [5, 3], [3]
    batch = PackingCollator(0, capacity=8)(features)
    assert batch["input_ids"].shape == (2, 8)  # best fit: [5, 3], [5, 3]
    assert sorted(batch["sequence_ids"].tolist()) == [
        [0, 0, 0, 0, 0, 2, 2, 2],
        [1, 1, 1, 1, 1, 3, 3, 3],
    ]


def test_overlong_sequences():
    with pytest.raises(
        TextBatchError, match=r"example 1 has 6 tokens, more than the row capacity 4"
    ):
        PackingCollator(0, capacity=4)(FEATURES[:2])
    truncated = PackingCollator(0, capacity=4, overlong="truncate")(FEATURES[:2])
    assert truncated["input_ids"].tolist() == [[2, 11, 12, 3], [2, 21, 22, 23]]
    assert truncated["labels"].tolist() == [0, 1]
    split = PackingCollator(0, capacity=4, overlong="split")(FEATURES[:2])
    assert split["example_ids"].tolist() == [0, 1, 1]
    assert split["labels"].tolist() == [0, 1, 1]
    assert split["input_ids"].tolist() == [[2, 11, 12, 3], [2, 21, 22, 23], [24, 3, 0, 0]]


@pytest.mark.parametrize("overlong", ["truncate", "split"])
def test_an_empty_example_beside_an_overlong_one_keeps_its_label(overlong):
    """With overlong="split" an empty example once got no piece, and its label was lost."""
    empty = {"input_ids": [], "token_type_ids": [], "labels": 7}
    alone = PackingCollator(0, capacity=4, overlong=overlong)([empty, FEATURES[0]])
    beside = PackingCollator(0, capacity=4, overlong=overlong)([empty, FEATURES[1]])
    assert alone["labels"].tolist()[0] == beside["labels"].tolist()[0] == 7
    assert alone["example_ids"].tolist()[0] == beside["example_ids"].tolist()[0] == 0
    assert int(beside["cu_seqlens"][1]) == 0  # an empty sequence first, then the others


def test_packing_bad_input():
    with pytest.raises(TextBatchError, match="empty batch"):
        PackingCollator(0, capacity=8)([])
    with pytest.raises(TextBatchError, match="'input_ids' key"):
        PackingCollator(0, capacity=8)([{"length": 4}])
    with pytest.raises(TextBatchError, match="capacity=0"):
        PackingCollator(0, capacity=0)
    with pytest.raises(TextBatchError, match="overlong='drop'"):
        PackingCollator(0, capacity=8, overlong="drop")
    with pytest.raises(TextBatchError, match="mask=1 must be True or False"):
        PackingCollator(0, mask=1)
    with pytest.raises(TextBatchError, match=r"one flat row.*capacity=None, not 8"):
        PackingCollator(0, capacity=8, hf_names=True)


# ------------------------------------------------------------------ Hugging Face's names


def hf_flattening(features, position_offset=0):
    from transformers import DataCollatorWithFlattening

    start = {"position_ids_start": position_offset} if position_offset else {}
    collate = DataCollatorWithFlattening(
        return_flash_attn_kwargs=True, return_seq_idx=True, **start
    )
    return collate([{"input_ids": f["input_ids"]} for f in features])


def hf_position_offsets():
    """Position offsets to compare: HF's ``position_ids_start`` is newer than transformers 5.0
    (the lowest version allowed, which ``scripts/check-floors.sh`` tests)."""
    import inspect

    from transformers import DataCollatorWithFlattening

    parameters = inspect.signature(DataCollatorWithFlattening.__init__).parameters
    return [0, 2] if "position_ids_start" in parameters else [0]


HF_KEYS = (
    "input_ids", "position_ids", "seq_idx", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q",
    "max_length_k",
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=12), st.sampled_from(hf_position_offsets())
)
def test_hf_names_equal_data_collator_with_flattening(lengths, offset):
    rng = np.random.default_rng(len(lengths))
    features = [{"input_ids": rng.integers(0, 1000, n).tolist()} for n in lengths]
    ours = PackingCollator(0, position_offset=offset, hf_names=True)(features)
    theirs = hf_flattening(features, offset)
    for key in HF_KEYS:
        if isinstance(theirs[key], torch.Tensor):
            assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key
        else:  # max_length_q/k: Python ints, as flash attention takes them
            assert type(ours[key]) is type(theirs[key]) and ours[key] == theirs[key], key
    # textbatch's own names stay, with the same data
    assert torch.equal(ours["cu_seqlens"], ours["cu_seq_lens_q"])
    assert torch.equal(ours["sequence_ids"], ours["seq_idx"].long())
    assert int(ours["max_seqlen"]) == ours["max_length_q"] == max(lengths)


def test_hf_names_keep_one_label_per_sequence():
    """The documented difference: DataCollatorWithFlattening makes token-level language-model
    labels (-100 at each sequence's first token); textbatch keeps one class per sequence."""
    batch = PackingCollator(0, hf_names=True)(FEATURES)
    assert batch["labels"].tolist() == [0, 1, 2, 3]
    theirs = hf_flattening(FEATURES)["labels"]
    assert theirs.shape == batch["input_ids"].shape and theirs[0, 0] == -100
    assert batch["token_type_ids"].shape == batch["input_ids"].shape  # kept; HF drops them


def test_a_hugging_face_decoder_reads_the_packed_row():
    """A Llama-style model given the hf_names row (position_ids restart per sequence) attends
    within each sequence only: its logits equal those of every sequence run alone."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    features = [{"input_ids": s} for s in SEQUENCES]
    batch = PackingCollator(0, hf_names=True)(features)
    with torch.no_grad():
        packed = model(**batch, use_cache=False).logits[0]  # (W, vocab)
        alone = torch.cat([model(input_ids=torch.tensor([s])).logits[0] for s in SEQUENCES])
        unpacked = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    assert not torch.allclose(unpacked, alone, atol=1e-3)  # without the positions it would not


# ------------------------------------------------------------------ the packing rule


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=80), st.integers(50, 120))
def test_pack_rows_properties(lengths, capacity):
    for rows in (best_fit_decreasing(lengths, capacity), next_fit(lengths, capacity)):
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= capacity for row in rows)
    best = pack_rows(lengths, capacity)
    assert len(best) <= min(
        len(best_fit_decreasing(lengths, capacity)), len(next_fit(lengths, capacity))
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=6), min_size=1, max_size=12))
def test_next_fit_never_needs_more_rows_than_a_plan_listed_row_by_row(planned):
    capacity = max(sum(row) for row in planned)
    lengths = [n for row in planned for n in row]
    assert len(pack_rows(lengths, capacity)) <= len(planned)


# ------------------------------------------------------------------ models on packed batches


def packed_and_padded(features, capacity):
    return PackingCollator(0, capacity=capacity)(features), PaddingCollator(0)(features)


SEQUENCES = [[2, 17, 40, 9, 33, 3], [2, 8, 3], list(range(2, 30)), [2, 5, 5, 5, 3], [2, 9, 3]]


@pytest.mark.parametrize("encoder", ["mean", "transformer"])
@pytest.mark.parametrize("capacity", [32, 64, None])
def test_text_classifier_packed_equals_padded(encoder, capacity):
    torch.manual_seed(0)
    model = TextClassifier(100, 4, dim=32, encoder=encoder).eval()
    packed, padded = packed_and_padded([{"input_ids": s} for s in SEQUENCES], capacity)
    with torch.no_grad():
        torch.testing.assert_close(
            model(**packed).logits, model(**padded).logits, atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("mask", [False, True])  # the model builds the mask, or the collator
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_backbone_packed_matches_padded(tiny_bert_dir, pooling, mask):
    torch.manual_seed(0)
    model = BackboneClassifier.from_pretrained(tiny_bert_dir, num_labels=3, pooling=pooling).eval()
    features = [{"input_ids": s, "token_type_ids": [0] * len(s)} for s in SEQUENCES]
    packed = PackingCollator(0, capacity=32, mask=mask)(features)
    padded = PaddingCollator(0)(features)
    assert ("attention_mask" in packed) == mask
    with torch.no_grad():
        torch.testing.assert_close(
            model(**packed).logits, model(**padded).logits, atol=1e-4, rtol=0
        )


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("mask", [False, True])
def test_packed_batches_are_isolated_whatever_the_attention(tiny_bert_dir, attention, mask):
    """Eager attention adds a 4-D mask to the scores: a bool block-diagonal mask added 1 or 0
    and blocked nothing, so packed sequences attended to each other (MiniLM: logits off by
    0.2). The collator's mask, and the one the model builds, are additive."""
    from transformers import AutoModel, BertModel

    torch.manual_seed(0)
    backbone = AutoModel.from_pretrained(tiny_bert_dir, attn_implementation=attention)
    model = BackboneClassifier(backbone, num_labels=3, pooling="mean").eval()
    features = [{"input_ids": s, "token_type_ids": [0] * len(s)} for s in SEQUENCES]
    packed = PackingCollator(0, capacity=32, mask=mask)(features)
    with torch.no_grad():
        torch.testing.assert_close(
            model(**packed).logits, model(**PaddingCollator(0)(features)).logits, atol=1e-4, rtol=0
        )
        packed["attention_mask"] = block_diagonal_mask(packed["sequence_ids"])  # a bool one
        torch.testing.assert_close(
            model(**packed).logits, model(**PaddingCollator(0)(features)).logits, atol=1e-4, rtol=0
        )
    # a plain Hugging Face encoder given the collator's mask: each sequence as it is alone
    plain = BertModel.from_pretrained(tiny_bert_dir, attn_implementation=attention).eval()
    batch = PackingCollator(0, capacity=None, mask=True)(features)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        hidden = plain(**inputs).last_hidden_state[0]  # (W, H)
        for n, sequence in enumerate(SEQUENCES):
            alone = plain(input_ids=torch.tensor([sequence])).last_hidden_state[0]
            place = batch["sequence_ids"][0] == n
            torch.testing.assert_close(hidden[place], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("make", "pooling"),
    [("mean", None), ("transformer", None), ("backbone", "cls"), ("backbone", "mean")],
)
def test_an_empty_last_sequence_keeps_its_row_of_logits(make, pooling, tiny_bert_dir):
    """An empty example owns no position of a packed batch: sized by the largest sequence id,
    the logits lost the last one's row (3 rows of probabilities for 4 examples in predict)."""
    torch.manual_seed(0)
    if make == "backbone":
        model = BackboneClassifier.from_pretrained(tiny_bert_dir, num_labels=3, pooling=pooling)
    else:
        model = TextClassifier(100, 3, dim=32, encoder=make)
    features = [{"input_ids": s} for s in [*SEQUENCES[:3], [], SEQUENCES[3], []]]
    batch = PackingCollator(0, capacity=32)(features)
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
        assert logits.shape[0] == len(features)
        for i, feature in enumerate(features):  # a row per example, in the examples' order
            if feature["input_ids"]:
                alone = model(**PaddingCollator(0)([feature])).logits[0]
                torch.testing.assert_close(logits[i], alone, atol=1e-4, rtol=0)


@pytest.mark.parametrize("make", ["transformer", "backbone"])
def test_no_attention_across_sequences(make, tiny_bert_dir):
    torch.manual_seed(0)
    if make == "transformer":
        model = TextClassifier(100, 4, dim=32, encoder="transformer").eval()
    else:
        model = BackboneClassifier.from_pretrained(tiny_bert_dir, num_labels=4).eval()
    collate = PackingCollator(0, capacity=64)
    changed = [list(s) for s in SEQUENCES]
    changed[2] = [2, *([77] * 25), 3]  # the same length, other tokens
    with torch.no_grad():
        before = model(**collate([{"input_ids": s} for s in SEQUENCES])).logits
        after = model(**collate([{"input_ids": s} for s in changed])).logits
    assert collate([{"input_ids": s} for s in SEQUENCES])["input_ids"].shape[0] == 1  # one row
    others = [0, 1, 3, 4]
    torch.testing.assert_close(after[others], before[others], atol=1e-5, rtol=0)
    assert not torch.allclose(after[2], before[2])


def test_backbone_with_a_position_offset_refuses_unshifted_positions(tiny_bert_dir):
    model = BackboneClassifier.from_pretrained(tiny_bert_dir, num_labels=2)
    model.position_offset = 2  # as a RoBERTa-style model has
    with pytest.raises(TextBatchError, match=r"PackingCollator\(position_offset=2\)"):
        model(**PackingCollator(0, capacity=16)([{"input_ids": [2, 5, 3]}]))


@pytest.mark.parametrize("offset", [1, 2])
@pytest.mark.parametrize("make", ["transformer", "backbone"])
def test_positions_shifted_past_the_models_offset_are_refused(tiny_bert_dir, make, offset):
    """Only a lower offset was refused: BERT packed with position_offset=1 gave logits off by
    1.4, and TextClassifier (no check at all) off by 0.07."""
    if make == "backbone":
        model = BackboneClassifier.from_pretrained(tiny_bert_dir, num_labels=2)
    else:
        model = TextClassifier(100, 2, dim=32, encoder="transformer")
    with pytest.raises(
        TextBatchError, match=r"starts at position .*PackingCollator\(position_offset=0\)"
    ):
        model(**PackingCollator(0, capacity=16, position_offset=offset)([{"input_ids": [2, 5, 3]}]))


# ------------------------------------------------------------------ the sampler plans packed rows


@pytest.mark.parametrize(("capacity", "max_tokens"), [(512, 4096), (256, 4096), (1024, 8192)])
def test_planned_rows_are_at_least_98_percent_real_tokens(capacity, max_tokens):
    lengths = long_tailed(20_000, seed=1, cap=capacity)
    sampler = BucketBatchSampler(lengths, max_tokens=max_tokens, packing_capacity=capacity)
    for epoch in range(2):
        batches = sampler.batches(epoch)
        assert Counter(i for b in batches for i in b) == Counter(range(len(lengths)))
        stats = packing_stats(lengths, batches, capacity)
        assert stats.real_tokens / stats.padded_tokens >= 0.98
        assert stats.max_batch_tokens <= max_tokens
    assert sampler.batches(0) != sampler.batches(1)


def test_collator_lays_out_the_planned_batches_within_budget(tokenizer, corpus_records):
    from textbatch import TextDataset

    ds = TextDataset.from_records(corpus_records, tokenizer, max_length=128)
    sampler = BucketBatchSampler(ds.lengths, max_tokens=1024, packing_capacity=128)
    collate = PackingCollator.from_tokenizer(tokenizer, capacity=128)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate)
    real = 0
    for indices, batch in zip(sampler.batches(0), loader, strict=True):
        rows = pack_rows(ds.lengths[indices], 128)
        assert batch["input_ids"].shape == (len(rows), 128)
        assert batch["input_ids"].numel() <= 1024
        real += int((batch["sequence_ids"] >= 0).sum())
        assert batch["labels"].tolist() == [ds[i]["labels"] for i in indices]
    assert real == int(ds.lengths.sum())


@pytest.mark.parametrize(
    "options",
    [{}, {"num_replicas": 3, "rank": 2}, {"num_replicas": 2, "rank": 0, "drop_last": True}],
)
def test_packed_plans_resume_and_shard(options):
    lengths = long_tailed(3000, seed=2, cap=256)

    def make():
        return BucketBatchSampler(lengths, max_tokens=1024, packing_capacity=256, **options)

    check_save_load_state(make, epochs=2, stop_epoch=1)
    replicas = options.get("num_replicas", 1)
    if replicas > 1:
        samplers = [
            BucketBatchSampler(
                lengths,
                max_tokens=1024,
                packing_capacity=256,
                num_replicas=replicas,
                rank=r,
                drop_last=options.get("drop_last", False),
            )
            for r in range(replicas)
        ]
        per_rank = [s.batches() for s in samplers]
        assert len({len(b) for b in per_rank}) == 1
        used = [i for batches in per_rank for b in batches for i in b]
        assert len(used) == len(set(used)) == len(lengths) - samplers[0].num_dropped


def test_packing_sampler_bad_input():
    lengths = np.array([10, 20, 300])
    with pytest.raises(TextBatchError, match="give batch_size"):
        BucketBatchSampler(lengths, packing_capacity=256)
    with pytest.raises(TextBatchError, match=r"needs max_tokens.*at least 256"):
        BucketBatchSampler(lengths, max_tokens=100, packing_capacity=256)
    with pytest.raises(
        TextBatchError, match="example 2 has 300 tokens, more than the row capacity"
    ):
        BucketBatchSampler(lengths, max_tokens=1024, packing_capacity=256)
    with pytest.raises(TextBatchError, match="batch_size does not apply"):
        BucketBatchSampler([5, 6], batch_size=4, max_tokens=1024, packing_capacity=256)
    truncated = BucketBatchSampler(
        lengths, max_tokens=1024, packing_capacity=256, oversized="truncate"
    )
    assert sorted(i for b in truncated.batches() for i in b) == [0, 1, 2]


# ------------------------------------------------------------------ training on packed batches


@pytest.mark.parametrize("encoder", ["mean", "transformer"])
def test_fit_on_packed_batches(tokenizer, corpus_records, encoder):
    from textbatch import TextDataset

    train = TextDataset.from_records(corpus_records[:500], tokenizer, max_length=128)
    evaluation = TextDataset.from_records(
        corpus_records[500:], tokenizer, max_length=128, label_names=train.label_names
    )
    collate = PackingCollator.from_tokenizer(tokenizer, capacity=128)
    loaders = [
        make_loader(data, collate, max_tokens=1024, packing_capacity=128, shuffle=shuffle)
        for data, shuffle in ((train, True), (evaluation, False))
    ]
    torch.manual_seed(0)
    model = TextClassifier(len(tokenizer), 8, dim=32, encoder=encoder, num_layers=1, max_length=128)
    history = fit(model, *loaders, epochs=3, lr=5e-2 if encoder == "mean" else 3e-3, progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["real_tokens"] == int(train.lengths.sum())
    assert history[-1]["padding"] < 0.05
    if encoder == "mean":  # the small Transformer learns more slowly from 500 examples
        assert history[-1]["eval_accuracy"] > 0.3


def test_packing_review_regressions():
    from textbatch.batching.packing import next_fit

    assert next_fit([0, 3], 4) == [[0, 1]]  # an empty first sequence
    with pytest.raises(TextBatchError, match="example 0 has 4 token_type_ids but 3 input_ids"):
        PackingCollator(0, capacity=8)([{"input_ids": [1, 2, 3], "token_type_ids": [0, 0, 0, 1]}])
    assert PackingCollator(0, capacity=np.int64(8)).capacity == 8
