from __future__ import annotations

import json
import warnings

import datasets
import numpy as np
import pytest
import torch

from textbatch import PaddingCollator, StreamingTextDataset, TextBatchError, TextDataset
from textbatch.errors import TextBatchWarning

RECORDS = [
    {"text": "The striker scored a late goal.", "label": "sports"},
    {"text": "Parliament passed the budget.", "label": "politics"},
    {"text": "A new chip doubles battery life for every smartphone maker.", "label": "tech"},
    {"text": "The coach praised the defender after the final whistle.", "label": "sports"},
]


def write(path, records, fmt):
    """Write records as a data file of format ``fmt``; return its path."""
    path = path.with_suffix("." + fmt)
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        lines = [sep.join(records[0])]
        for r in records:
            lines.append(
                sep.join(json.dumps(v) if isinstance(v, str) else str(v) for v in r.values())
            )
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif fmt == "json":
        path.write_text(json.dumps(records))
    elif fmt == "parquet":
        datasets.Dataset.from_list(records).to_parquet(str(path))
    elif fmt == "txt":
        path.write_text("".join(r["text"] + "\n" for r in records))
    return path


def python_lengths(ds):
    """Ground truth for ds.lengths, computed the slow way."""
    return np.array([len(ds[i]["input_ids"]) for i in range(len(ds))])


# ------------------------------------------------------------------ building and reading


def test_from_records_tokenises_and_maps_labels(tokenizer):
    ds = TextDataset.from_records(RECORDS, tokenizer)
    assert len(ds) == 4
    assert ds.label_names == ["politics", "sports", "tech"]
    assert [ds[i]["labels"] for i in range(4)] == [1, 0, 2, 1]
    first = ds[0]
    assert first["input_ids"] == tokenizer(RECORDS[0]["text"])["input_ids"]
    assert isinstance(first["input_ids"], list) and isinstance(first["labels"], int)
    assert set(first) == {"input_ids", "token_type_ids", "labels"}
    assert ds[-1]["input_ids"] == ds[3]["input_ids"]
    with pytest.raises(IndexError):
        ds[4]


def test_lengths_come_from_arrow_and_match_rows(tokenizer, corpus_records):
    ds = TextDataset.from_records(corpus_records, tokenizer)
    assert ds.lengths.dtype == np.int64
    np.testing.assert_array_equal(ds.lengths, python_lengths(ds))


def test_lengths_include_special_tokens_and_truncation(tokenizer):
    ds = TextDataset.from_records(RECORDS, tokenizer, max_length=8)
    expected = [min(len(tokenizer(r["text"])["input_ids"]), 8) for r in RECORDS]
    np.testing.assert_array_equal(ds.lengths, expected)
    assert ds.lengths.max() == 8
    assert ds[2]["input_ids"][-1] == tokenizer.sep_token_id  # truncation keeps [SEP]


def test_getitems_reads_the_same_examples_as_getitem(tokenizer, corpus_records):
    ds = TextDataset.from_records(corpus_records, tokenizer)
    indices = [5, 0, 77, 5, 599]
    batch = ds.__getitems__(indices)
    assert len(batch) == len(indices)
    for example, index in zip(batch, indices, strict=True):
        single = ds[index]
        assert set(example) == set(single)
        assert example["input_ids"].tolist() == single["input_ids"]
        assert example["token_type_ids"].tolist() == single["token_type_ids"]
        assert example["labels"] == single["labels"]


def test_label_names_fix_the_order_and_reject_unknown_labels(tokenizer):
    names = ["tech", "sports", "politics", "weather"]
    ds = TextDataset.from_records(RECORDS, tokenizer, label_names=names)
    assert ds.label_names == names
    assert [ds[i]["labels"] for i in range(4)] == [1, 2, 0, 1]
    with pytest.raises(TextBatchError, match=r"label 'politics' \(row 1, column 'label'\)"):
        TextDataset.from_records(RECORDS, tokenizer, label_names=["sports", "tech"])


def test_integer_labels_sort_numerically(tokenizer):
    records = [{"text": f"text number {i}", "label": v} for i, v in enumerate([10, 2, 1, 2])]
    ds = TextDataset.from_records(records, tokenizer)
    assert ds.label_names == ["1", "2", "10"]
    assert [ds[i]["labels"] for i in range(4)] == [2, 1, 0, 1]
    # the same integers are found in label_names given as strings or ints
    again = TextDataset.from_records(records, tokenizer, label_names=[10, 2, 1])
    assert [again[i]["labels"] for i in range(4)] == [0, 1, 2, 1]


def test_classlabel_column_uses_its_names(tokenizer):
    hf = datasets.Dataset.from_dict(
        {"text": ["good film", "bad film", "fine"], "label": [1, 0, 1]},
        features=datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
        ),
    )
    ds = TextDataset.from_hf(hf, tokenizer)
    assert ds.label_names == ["neg", "pos"]
    assert [ds[i]["labels"] for i in range(3)] == [1, 0, 1]


def test_text_pairs_carry_token_types(tokenizer):
    records = [{"q": "who won", "a": "the home side", "label": "yes"}]
    ds = TextDataset.from_records(records, tokenizer, text="q", text_pair="a")
    assert ds[0]["input_ids"] == tokenizer("who won", "the home side")["input_ids"]
    assert set(ds[0]["token_type_ids"]) == {0, 1}


def test_pairs_carry_token_types_only_where_the_tokenizer_makes_them(tokenizer, tmp_path):
    """A RoBERTa- or DistilBERT-like tokenizer (``model_input_names`` without token_type_ids)
    returns none for pairs either: the batches have the keys ``DataCollatorWithPadding`` gives,
    where they carried token_type_ids that such models do not take."""
    from transformers import AutoTokenizer, DataCollatorWithPadding

    tokenizer.save_pretrained(tmp_path)
    plain = AutoTokenizer.from_pretrained(
        tmp_path, model_input_names=["input_ids", "attention_mask"]
    )
    records = [{"q": "who won", "a": "the home side", "label": "yes"},
               {"q": "when", "a": "at the final whistle today", "label": "no"}]  # fmt: skip
    ds = TextDataset.from_records(records, plain, text="q", text_pair="a")
    batch = PaddingCollator.from_tokenizer(plain)(ds.__getitems__([0, 1]))
    features = [{**plain(r["q"], r["a"]), "labels": i} for i, r in enumerate(records)]
    expected = DataCollatorWithPadding(plain, return_tensors="pt")(features)
    assert set(batch) == set(expected) == {"input_ids", "attention_mask", "labels"}
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    streamed = StreamingTextDataset(
        records, plain, text="q", text_pair="a", label_names=["no", "yes"]
    )
    assert all("token_type_ids" not in example for example in streamed)


def test_unlabelled_data_for_prediction(tokenizer):
    texts = [{"text": r["text"]} for r in RECORDS]
    ds = TextDataset.from_records(texts, tokenizer)
    assert not ds.has_labels and ds.label_names is None
    assert "labels" not in ds[0]
    explicit = TextDataset.from_records(RECORDS, tokenizer, label=None)
    assert not explicit.has_labels


def test_input_with_an_indices_mapping(tokenizer):
    hf = datasets.Dataset.from_list(RECORDS).select([3, 1])
    ds = TextDataset.from_hf(hf, tokenizer)
    assert [ds[i]["input_ids"] for i in range(2)] == [
        tokenizer(RECORDS[3]["text"])["input_ids"],
        tokenizer(RECORDS[1]["text"])["input_ids"],
    ]


def test_select_keeps_label_names(tokenizer):
    ds = TextDataset.from_records(RECORDS, tokenizer)
    part = ds.select([2, 0])
    assert part.label_names == ds.label_names
    assert part[0]["input_ids"] == ds[2]["input_ids"]
    np.testing.assert_array_equal(part.lengths, ds.lengths[[2, 0]])


def test_select_writes_no_unchecked_cache_file(tokenizer, tmp_path):
    """A split (select, as --eval-fraction makes) flattened its rows into a file of datasets'
    own in the cache, without a checksum: a damaged one was read back as it was, and training
    went on with other tokens. A selection now maps rows of the checked copy."""
    from textbatch.data.hashing import checksum_path

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    cache = tmp_path / "cache"
    ds = TextDataset.from_file(data, tokenizer, cache_dir=cache)
    part = ds.select([3, 1, 2])
    again = TextDataset.from_file(data, tokenizer, cache_dir=cache).select([3, 1, 2])
    unchecked = [f for f in cache.rglob("*.arrow") if not checksum_path(f).exists()]
    assert unchecked == []
    assert [again[i]["input_ids"] for i in range(3)] == [ds[i]["input_ids"] for i in (3, 1, 2)]
    assert part[0] == ds[3] and part.__getitems__([2, 0])[1]["labels"] == ds[3]["labels"]
    np.testing.assert_array_equal(part.lengths, ds.lengths[[3, 1, 2]])
    assert len(part) == 3 and part.select([1])[0] == ds[1]
    with pytest.raises(IndexError, match="index 3 is out of range"):
        part.__getitems__([3])


def test_the_digest_is_of_the_examples_not_their_storage(tokenizer):
    """Equal examples give equal digests, whether selected from a bigger dataset, read in other
    chunks, or built from their records alone."""
    ds = TextDataset.from_records(RECORDS, tokenizer)
    order = [3, 0, 2]
    alone = TextDataset.from_records(
        [RECORDS[i] for i in order], tokenizer, label_names=ds.label_names
    )
    assert ds.select(order).content_digest() == alone.content_digest()
    assert ds.select(range(len(ds))).content_digest() == ds.content_digest()
    table = ds.hf.data.table
    chunked = datasets.Dataset(table.from_batches(table.to_batches(max_chunksize=2)))
    assert TextDataset(chunked, label_names=ds.label_names).content_digest() == ds.content_digest()
    assert ds.select([0, 2, 3]).content_digest() != ds.select(order).content_digest()


def test_transform_is_applied_on_read(tokenizer):
    def drop_last_token(example):
        return {**example, "input_ids": example["input_ids"][:-1]}

    plain = TextDataset.from_records(RECORDS, tokenizer)
    ds = TextDataset.from_records(RECORDS, tokenizer, transform=drop_last_token)
    assert ds[0]["input_ids"] == plain[0]["input_ids"][:-1]
    assert ds.__getitems__([1])[0]["input_ids"] == plain[1]["input_ids"][:-1]
    np.testing.assert_array_equal(ds.lengths, plain.lengths)  # stored lengths are unchanged


def test_a_transform_sees_the_same_example_through_a_dataloader(tokenizer):
    """A transform got lists from ds[i] but read-only numpy arrays from __getitems__ (every
    DataLoader batch): ``ids + [4]`` appended 4 on one path and added 4 to every id on the
    other, and an in-place edit raised on the batch path only."""

    def append_four(example):
        example["input_ids"].append(4)
        example.pop("token_type_ids", None)  # left out, to stay aligned with input_ids
        return {**example, "input_ids": example["input_ids"] + [4]}

    from torch.utils.data import DataLoader

    ds = TextDataset.from_records(RECORDS, tokenizer, transform=append_four)
    plain = TextDataset.from_records(RECORDS, tokenizer)
    expected = [plain[i]["input_ids"] + [4, 4] for i in range(3)]
    assert [ds[i]["input_ids"] for i in range(3)] == expected
    assert [e["input_ids"] for e in ds.__getitems__([0, 1, 2])] == expected
    loader = DataLoader(ds, batch_size=3, collate_fn=PaddingCollator.from_tokenizer(tokenizer))
    batch = next(iter(loader))
    for row, ids in zip(batch["input_ids"].tolist(), expected, strict=True):
        assert row[: len(ids)] == ids


def test_token_dropout_transform(tokenizer, corpus_records):
    from textbatch import TokenDropout

    ds = TextDataset.from_records(corpus_records[:50], tokenizer)
    drop = TokenDropout(0.5, keep_ids=[tokenizer.cls_token_id, tokenizer.sep_token_id])
    torch.manual_seed(0)
    dropped = [drop(ds[i]) for i in range(50)]
    kept = sum(len(d["input_ids"]) for d in dropped)
    assert 0.4 * ds.lengths.sum() < kept < 0.9 * ds.lengths.sum()
    for d, i in zip(dropped, range(50), strict=True):
        assert d["input_ids"][0] == tokenizer.cls_token_id
        assert d["input_ids"][-1] == tokenizer.sep_token_id
        assert len(d["token_type_ids"]) == len(d["input_ids"])
        original = ds[i]["input_ids"]
        it = iter(original)
        assert all(token in it for token in d["input_ids"])  # a subsequence, order kept
    with pytest.raises(TextBatchError, match=r"p=1\.5"):
        TokenDropout(1.5)


def test_dataloader_with_batch_sampler_uses_getitems(tokenizer, corpus_records):
    ds = TextDataset.from_records(corpus_records, tokenizer)
    collate = PaddingCollator.from_tokenizer(tokenizer)
    batches = [[0, 1, 2], [3, 4]]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=collate)
    out = list(loader)
    assert [b["input_ids"].shape[0] for b in out] == [3, 2]
    assert out[1]["input_ids"][1, : ds.lengths[4]].tolist() == ds[4]["input_ids"]


def test_unusual_text_works(tokenizer):
    records = [
        {"text": "Great match 😀🔥⚽", "label": "a"},
        {"text": "東京で試合が行われた", "label": "a"},
        {"text": "المباراة انتهت بالتعادل", "label": "b"},
        {"text": "nul\x00inside\x00text", "label": "b"},
    ]
    ds = TextDataset.from_records(records, tokenizer)
    assert len(ds) == 4
    assert (ds.lengths >= 3).all()  # [CLS], something, [SEP]


def test_megabyte_text_is_truncated(tokenizer):
    huge = "goal " * 200_000  # 1 MB
    ds = TextDataset.from_records([{"text": huge, "label": "a"}], tokenizer, max_length=64)
    assert ds.lengths.tolist() == [64]
    default = TextDataset.from_records([{"text": huge, "label": "a"}], tokenizer)
    assert default.lengths.tolist() == [tokenizer.model_max_length]


# ------------------------------------------------------------------ files and the cache


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_from_file_reads_every_format(tokenizer, tmp_path, fmt):
    path = write(tmp_path / "data", RECORDS, fmt)
    ds = TextDataset.from_file(path, tokenizer)
    expected = TextDataset.from_records(RECORDS, tokenizer)
    assert ds.label_names == expected.label_names
    assert [ds[i] for i in range(len(ds))] == [expected[i] for i in range(len(expected))]


def test_from_file_txt_is_one_unlabelled_text_per_line(tokenizer, tmp_path):
    path = write(tmp_path / "data", RECORDS, "txt")
    ds = TextDataset.from_file(path, tokenizer)
    assert len(ds) == 4 and not ds.has_labels
    assert ds[1]["input_ids"] == tokenizer(RECORDS[1]["text"])["input_ids"]


def test_second_build_from_the_same_file_reuses_the_cache(tokenizer, tmp_path, monkeypatch):
    import textbatch.data.dataset

    path = write(tmp_path / "data", RECORDS, "csv")
    first = TextDataset.from_file(path, tokenizer)
    assert not first.from_cache

    def no_tokenizing(self, batch):
        raise AssertionError("tokenised again despite the cache")

    monkeypatch.setattr(textbatch.data.dataset._TokenizeBatch, "__call__", no_tokenizing)
    second = TextDataset.from_file(path, tokenizer)
    assert second.from_cache
    assert [second[i] for i in range(4)] == [first[i] for i in range(4)]
    np.testing.assert_array_equal(second.lengths, first.lengths)


@pytest.mark.parametrize("change", ["max_length", "file", "tokenizer"])
def test_cache_misses_when_anything_changes(tokenizer, corpus_records, tmp_path, change):
    from textbatch import train_tokenizer

    path = write(tmp_path / "data", RECORDS, "csv")
    TextDataset.from_file(path, tokenizer)
    options = {}
    other_tokenizer = tokenizer
    if change == "max_length":
        options["max_length"] = 6
    elif change == "file":
        write(tmp_path / "data", [*RECORDS, {"text": "one more", "label": "tech"}], "csv")
    else:
        other_tokenizer = train_tokenizer([r["text"] for r in corpus_records[:100]], 300)
    again = TextDataset.from_file(path, other_tokenizer, **options)
    assert not again.from_cache
    if change == "file":
        assert len(again) == 5


# ------------------------------------------------------------------ bad input


def test_empty_inputs(tokenizer, tmp_path):
    with pytest.raises(TextBatchError, match="empty"):
        TextDataset.from_records([], tokenizer)
    with pytest.raises(TextBatchError, match="empty"):
        TextDataset.from_hf(datasets.Dataset.from_dict({"text": [], "label": []}), tokenizer)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(TextBatchError, match=r"empty\.csv.*is empty"):
        TextDataset.from_file(empty, tokenizer)
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(TextBatchError, match="empty"):
        TextDataset.from_file(header_only, tokenizer)


def test_missing_columns_list_the_columns_there_are(tokenizer):
    with pytest.raises(TextBatchError, match=r"'body' is not in the data.*\['text', 'label'\]"):
        TextDataset.from_records(RECORDS, tokenizer, text="body")
    with pytest.raises(TextBatchError, match=r"'topic' is not in the data.*\['text', 'label'\]"):
        TextDataset.from_records(RECORDS, tokenizer, label="topic")
    with pytest.raises(TextBatchError, match="'answer' is not in the data"):
        TextDataset.from_records(RECORDS, tokenizer, text_pair="answer")


@pytest.mark.parametrize(
    ("bad_text", "what"),
    [(None, "missing"), ("", "empty"), ("   ", "empty"), (7, "int 7, not a string")],
)
def test_invalid_text_names_row_and_column(tokenizer, bad_text, what):
    records = [*RECORDS[:2], {"text": bad_text, "label": "sports"}, RECORDS[3]]
    with pytest.raises(TextBatchError, match=rf"row 2, column 'text' is {what}") as info:
        TextDataset.from_records(records, tokenizer)
    assert "drop_invalid=True" in str(info.value)


# Texts of nothing but whitespace and invisible characters: a zero-width space alone was
# tokenised to [CLS][SEP] and trained on with its label. A visible character keeps a text.
BLANK_TEXTS = ["\u200b", " \u200b\ufeff ", "\u00ad", "\u2060\t", "\u3000", "\x1c"]
KEPT_TEXTS = ["\u200bx", "\u00e9", "\U0001f600", "\u0301a"]


@pytest.mark.parametrize("blank", BLANK_TEXTS)
def test_invisible_text_is_empty(tokenizer, blank):
    records = [*RECORDS[:2], {"text": blank, "label": "sports"}, RECORDS[3]]
    with pytest.raises(TextBatchError, match=r"row 2, column 'text' is empty"):
        TextDataset.from_records(records, tokenizer)
    with pytest.warns(TextBatchWarning, match="dropped 1 of 4"):
        kept = TextDataset.from_records(records, tokenizer, drop_invalid=True)
    assert len(kept) == 3 and kept.num_dropped == 1
    pairs = [{**r, "pair": blank if i == 1 else "fine"} for i, r in enumerate(RECORDS)]
    with pytest.raises(TextBatchError, match=r"row 1, column 'pair' is empty"):
        TextDataset.from_records(pairs, tokenizer, text_pair="pair")
    with pytest.raises(TextBatchError, match=r"record 2, column 'text' is str"):
        list(StreamingTextDataset(records, tokenizer, label_names=["politics", "sports", "tech"]))


@pytest.mark.parametrize("text", KEPT_TEXTS)
def test_a_visible_character_is_a_text(tokenizer, text):
    ds = TextDataset.from_records([{"text": text, "label": "a"}], tokenizer)
    assert ds[0]["input_ids"] == tokenizer(text)["input_ids"]


def test_invalid_text_in_a_file(tokenizer, tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"fine text",a\n,b\n"more text",a\n')
    with pytest.raises(TextBatchError, match="row 1, column 'text' is missing"):
        TextDataset.from_file(path, tokenizer)


def test_missing_label_is_an_invalid_row(tokenizer):
    records = [*RECORDS[:3], {"text": "no label here", "label": None}]
    with pytest.raises(TextBatchError, match="row 3, column 'label' is missing"):
        TextDataset.from_records(records, tokenizer)


def test_drop_invalid_drops_and_reports(tokenizer):
    records = [
        RECORDS[0],
        {"text": None, "label": "sports"},
        {"text": "", "label": "sports"},
        {"text": 5, "label": "tech"},
        RECORDS[1],
        {"text": "unlabelled", "label": None},
    ]
    with pytest.warns(UserWarning, match="dropped 4 of 6 rows"):
        ds = TextDataset.from_records(records, tokenizer, drop_invalid=True)
    assert len(ds) == 2 and ds.num_dropped == 4
    assert ds[1]["input_ids"] == tokenizer(RECORDS[1]["text"])["input_ids"]


def test_drop_invalid_with_nothing_left(tokenizer):
    with pytest.raises(TextBatchError, match="nothing is left"):
        TextDataset.from_records([{"text": "", "label": "a"}], tokenizer, drop_invalid=True)


def test_mixed_label_types(tokenizer):
    records = [{"text": "a b", "label": 1}, {"text": "c d", "label": "one"}]
    with pytest.raises(TextBatchError, match="mixes int and string labels"):
        TextDataset.from_records(records, tokenizer)


def test_non_integer_numeric_labels(tokenizer):
    hf = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0.0, 0.5]})
    with pytest.raises(TextBatchError, match=r"non-integer number 0\.5"):
        TextDataset.from_hf(hf, tokenizer)


@pytest.mark.parametrize(
    ("names", "message"),
    [([], "empty"), (["a", "a"], "repeats"), ("abc", "one string")],
)
def test_bad_label_names(tokenizer, names, message):
    with pytest.raises(TextBatchError, match=message):
        TextDataset.from_records(RECORDS, tokenizer, label_names=names)


def test_file_errors(tokenizer, tmp_path):
    with pytest.raises(TextBatchError, match=r"unsupported file type '\.xlsx'.*\.csv"):
        TextDataset.from_file(tmp_path / "data.xlsx", tokenizer)
    with pytest.raises(TextBatchError, match="does not exist"):
        TextDataset.from_file(tmp_path / "nope.csv", tokenizer)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_max_length(tokenizer, bad):
    with pytest.raises(TextBatchError, match=f"max_length={bad}"):
        TextDataset.from_records(RECORDS, tokenizer, max_length=bad)


def test_not_records(tokenizer):
    with pytest.raises(TextBatchError, match="list of dicts"):
        TextDataset.from_records({"text": ["a"]}, tokenizer)
    with pytest.raises(TextBatchError, match="record 1 is str"):
        TextDataset.from_records([RECORDS[0], "text"], tokenizer)
    with pytest.raises(TextBatchError, match="DatasetDict"):
        TextDataset.from_hf(
            datasets.DatasetDict({"train": datasets.Dataset.from_list(RECORDS)}), tokenizer
        )


# ------------------------------------------------------------------ regressions found in review


def test_cache_key_follows_the_rows_that_survive(tokenizer, tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"good film",pos\n"bad film",\n"fine film",pos\n"dull film",\n')
    labelled = TextDataset.from_file(path, tokenizer, drop_invalid=True)
    unlabelled = TextDataset.from_file(path, tokenizer, label=None, drop_invalid=True)
    assert len(labelled) == 2 and len(unlabelled) == 4  # not the labelled run's cache
    again = TextDataset.from_file(path, tokenizer, drop_invalid=True)
    assert again.from_cache and [again[i] for i in range(2)] == [labelled[i] for i in range(2)]


@pytest.mark.parametrize(
    ("values", "names"),
    [([True, False, True], ["false", "true"]), ([1.0, 0.0, float("nan")], ["0", "1"])],
)
def test_boolean_and_float_labels(tokenizer, values, names):
    records = [{"text": f"text {i}", "label": v} for i, v in enumerate(values)]
    ds = TextDataset.from_records(records, tokenizer, drop_invalid=True)
    assert ds.label_names == names
    same = TextDataset.from_records(records, tokenizer, label_names=values[:2], drop_invalid=True)
    assert [same[i]["labels"] for i in range(len(same))] == [0, 1, 0][: len(same)]


def test_infinite_label_is_refused(tokenizer):
    hf = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1.0, float("inf")]})
    with pytest.raises(TextBatchError, match="non-integer number inf"):
        TextDataset.from_hf(hf, tokenizer)


@pytest.mark.parametrize("huge", [1e19, -1e19, 2.0**63, 1e300])
def test_a_float_label_beyond_64_bits_is_refused(tokenizer, huge):
    """A whole float past int64 wrapped in astype: 1e19 and 2e19 became one class
    (-9223372036854775808) without a word."""
    hf = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [3.0, huge, 2 * huge]})
    with pytest.raises(TextBatchError, match=r"holds .*e\+?\d+ \(row 1\), which does not fit"):
        TextDataset.from_hf(hf, tokenizer)
    fits = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [3.0, -(2.0**63)]})
    assert TextDataset.from_hf(fits, tokenizer).label_names == [str(-(2**63)), "3"]


def test_numpy_and_python_ints_are_one_kind_of_label(tokenizer):
    records = [{"text": "a b", "label": np.int64(1)}, {"text": "c d", "label": 2}]
    assert TextDataset.from_records(records, tokenizer).label_names == ["1", "2"]


def test_classlabel_minus_one_is_a_missing_label(tokenizer):
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    hf = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, -1]}, features=features)
    with pytest.raises(TextBatchError, match="row 1, column 'label' is missing"):
        TextDataset.from_hf(hf, tokenizer)
    with pytest.warns(UserWarning, match="dropped 1"):
        assert len(TextDataset.from_hf(hf, tokenizer, drop_invalid=True)) == 1


def test_pickled_dataset_carries_no_token_arrays(tokenizer, corpus_records, tmp_path):
    import pickle

    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in corpus_records))
    ds = TextDataset.from_file(path, tokenizer)
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < len(pickle.dumps(ds.hf)) + 5000
    assert [clone[i] for i in (0, 5, 599)] == [ds[i] for i in (0, 5, 599)]
    np.testing.assert_array_equal(clone.lengths, ds.lengths)


def test_select_with_a_boolean_mask(tokenizer):
    ds = TextDataset.from_records(RECORDS, tokenizer)
    part = ds.select(np.array([True, False, True, False]))
    assert part[1]["input_ids"] == ds[2]["input_ids"] and len(part) == 2


# ------------------------------------------------------------------ malformed delimited files


MALFORMED = [
        # Every row one field over: pandas made the first field the index, and the text
        # "terrible, do not buy" became " do not buy".
        ("every.csv", "text,label\nterrible, do not buy,neg\ngreat, love it,pos\n",
         r"row 0 \(line 2\) of .* has 3 fields, more than the header's 2"),
        ("first.csv", "text,label\nterrible, do not buy,neg\ngreat love it,pos\n",
         r"row 0 \(line 2\) .* has 3 fields"),
        ("later.csv", "text,label\nfine,pos\nterrible, do not buy,neg\n",
         r"Expected 2 fields in line 3, saw 3"),
        ("unclosed.csv", 'text,label\n"unclosed,pos\nfine,neg\n', r"EOF inside string"),
        ("twice.csv", "text,label,text\na,b,c\n", r"names column 'text' 2 times"),
        # A quote meant as text opened a field that ran on, joining three rows into one.
        ("two.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"} {"text": "c"}\n',
         r"line 3 of .* holds more than one JSON object"),
        ("joined.tsv", 'text\tlabel\n"meh, not for me\tneg\nfine film\tpos\n"bad" film\tneg\n',
         r"not valid tsv at lines 2 to 4 .*QUOTE_NONE"),
        ("closed.tsv", 'text\tlabel\n"meh\tneg\nfine film\tpos\nbad film"\tneg\n',
         r"row 0 of .*, column 'text', holds tabs and 2 line breaks"),
        # A stray quote joined rows 0 to 2 into one text labelled "pos", and pandas read on
        # without a word; a quoted word at a field's start lost its quotes the same way.
        ("stray.csv", 'text,label\n"Best app ever,tech\nfine,neg\n"Top" coach wins,pos\n',
         r"not valid csv at lines 2 to 4 \(',' expected after '\"'\).* rows were joined"),
        ("word.csv", 'text,label\nfine,neg\n"Top" coach wins,pos\n',
         r"not valid csv at line 3 .*double the quotes in it"),
        # The check went by the suffix ".jsonl" alone: upper case, and .json files written as
        # JSON Lines (Dataset.to_json, pandas' lines=True), were read as two rows.
        ("upper.JSONL", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"} {"text": "c"}\n',
         r"line 2 of .* holds more than one JSON object"),
        ("lines.json", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"} {"text": "c"}\n',
         r"line 2 of .* holds more than one JSON object"),
        # Python's json keeps the last of a key given twice, silently
        ("twice.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "text": "c", "label": "y"}\n',
         r"specified twice in row 1; give each key once|line 2 of .* key 'text' is given twice"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "message"), MALFORMED)
def test_a_malformed_delimited_file_is_an_error_not_other_rows(tokenizer, tmp_path, name,
                                                                content, message):  # fmt: skip
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TextBatchError, match=message):
        TextDataset.from_file(path, tokenizer)
    with pytest.raises(TextBatchError, match=message):  # not served from a cache the next time
        TextDataset.from_file(path, tokenizer)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [case for case in MALFORMED if not case[0].endswith(("twice.csv", "unclosed.csv"))],
)
def test_a_malformed_delimited_file_is_an_error_when_streamed_too(tokenizer, tmp_path, name,
                                                                   content, message):  # fmt: skip
    """A stream cut a row's extra fields off with a warning ("terrible, do not buy" trained
    as "terrible", labelled " do not buy"), joined a tsv's rows, or raised pandas' error."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TextBatchError, match=message):
        list(StreamingTextDataset.from_file(path, tokenizer, label_names=["neg", "pos"]))


def test_quoted_tabs_and_line_breaks_in_a_tsv_are_text(tokenizer, tmp_path):
    path = tmp_path / "quoted.tsv"
    path.write_text('text\tlabel\n"a\ttab"\tpos\n"two\nlines"\tneg\n"said ""hi"""\tpos\n')
    ds = TextDataset.from_file(path, tokenizer)
    texts = ["a\ttab", "two\nlines", 'said "hi"']
    assert [ds[i]["input_ids"] for i in range(3)] == [tokenizer(t)["input_ids"] for t in texts]
    streamed = StreamingTextDataset.from_file(path, tokenizer, label_names=["neg", "pos"])
    assert [e["input_ids"] for e in streamed] == [ds[i]["input_ids"] for i in range(3)]


def test_unusable_labels_are_named(tokenizer, tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "x"}\n')
    # datasets >= 5 reads the column as JSON values; older ones cannot read the file
    named = r"int at row 0 \(1\) and str at row 1 \('x'\)|Column\(/label\) changed .* row 1"
    with pytest.raises(TextBatchError, match=named):
        TextDataset.from_file(mixed, tokenizer)
    with pytest.raises(TextBatchError, match=r"label 1180591620717411303424 does not fit"):
        TextDataset.from_records([{"text": "a", "label": 2**70}], tokenizer)


def test_labels_that_differ_only_by_spaces_around_them_are_refused(tokenizer, tmp_path):
    """ "business" and "business " were two classes: 16 for 8 in a user's csv, macro-F1 0.42."""
    path = tmp_path / "spaces.csv"
    path.write_text('text,label\na,pos\nb,neg\nc,"pos "\nd,neg\n')
    with pytest.raises(TextBatchError, match=r"labels 'pos' \(row 0\) and 'pos ' \(row 2\)"):
        TextDataset.from_file(path, tokenizer)
    # the same spaces on every row of a label are one label, as written
    spaced = [{"text": "a", "label": " pos"}, {"text": "b", "label": "neg"}]
    assert TextDataset.from_records(spaced, tokenizer).label_names == [" pos", "neg"]
    # names given by the caller are the caller's
    given = TextDataset.from_records(spaced, tokenizer, label_names=["neg", " pos", "pos"])
    assert given.label_names == ["neg", " pos", "pos"]


def test_csv_cells_are_read_as_the_text_they_are(tokenizer, tmp_path):
    """pandas guessed types: labels "1", "01" and "001" became one integer, "True" became
    "true", a column of numbers was not text, and one that turned to words after 10,000 rows
    of numbers could not be read at all."""
    labels = tmp_path / "labels.csv"
    labels.write_text("text,label\na,1\nb,01\nc,2\nd,001\n")
    assert TextDataset.from_file(labels, tokenizer).label_names == ["001", "01", "1", "2"]
    words = tmp_path / "words.csv"
    words.write_text("text,label\na,True\nb,1e3\nc,1000\n")
    assert TextDataset.from_file(words, tokenizer).label_names == ["1000", "1e3", "True"]
    years = tmp_path / "years.csv"
    years.write_text("text,label\n1999,a\n2024,b\n")
    assert TextDataset.from_file(years, tokenizer)[0]["input_ids"] == tokenizer("1999")["input_ids"]
    late = tmp_path / "late.csv"
    late.write_text("text,label\n" + "x,0\n" * 10_000 + "y,other\n")
    assert TextDataset.from_file(late, tokenizer).label_names == ["0", "other"]


def test_labels_written_as_integers_sort_as_integers_in_every_format(tokenizer, tmp_path):
    records = [{"text": t, "label": v} for t, v in zip("abc", ["10", "2", "9"], strict=True)]
    as_ints = [{**r, "label": int(r["label"])} for r in records]
    for name, rows in (("strings.jsonl", records), ("ints.jsonl", as_ints)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    write(tmp_path / "table", records, "csv")
    for path in ("strings.jsonl", "ints.jsonl", "table.csv"):
        assert TextDataset.from_file(tmp_path / path, tokenizer).label_names == ["2", "9", "10"]


@pytest.mark.parametrize("blank", ["", "\n", "   \n", "\r\n"])
def test_one_number_among_jsonl_texts_is_that_row_alone(tokenizer, tmp_path, blank):
    """datasets reads a jsonl column of strings and one number as JSON values: every row was
    taken for a non-string (drop_invalid dropped them all, the error was a StopIteration).
    With a blank line in the file, datasets 5 could not read it at all ("changed from string
    to number"): blank lines are not records, and the row alone is invalid."""
    rows = [{"text": 42 if i == 3 else f"the match {i}", "label": "ab"[i % 2]} for i in range(8)]
    path = tmp_path / "one_number.jsonl"
    lines = [json.dumps(r) + "\n" for r in rows]
    path.write_text("".join([*lines[:2], blank, *lines[2:], blank]))
    with pytest.raises(TextBatchError) as refused:
        TextDataset.from_file(path, tokenizer)
    if int(datasets.__version__.split(".")[0]) < 5:  # it cannot read such a file
        assert "Column(/text) changed from string to number in row 3" in str(refused.value)
        return
    assert "row 3, column 'text' is int 42, not a string; 1 of" in str(refused.value)
    with pytest.warns(TextBatchWarning, match="dropped 1 of 8"):
        ds = TextDataset.from_file(path, tokenizer, drop_invalid=True)
    kept = [r["text"] for r in rows if isinstance(r["text"], str)]
    assert [ds[i]["input_ids"] for i in range(len(ds))] == [tokenizer(t)["input_ids"] for t in kept]
    assert [ds[i]["labels"] for i in range(len(ds))] == [i % 2 for i in range(8) if i != 3]
    again = TextDataset.from_file(path, tokenizer, drop_invalid=True)  # from the cache
    assert again.from_cache and len(again) == 7


def test_a_bad_line_beside_blank_lines_is_named_in_the_user_s_file(tokenizer, tmp_path):
    """A file read from a copy without its blank lines named the copy, and the copy's line."""
    if int(datasets.__version__.split(".")[0]) < 5:  # it cannot read a number among texts
        return
    path = tmp_path / "blanks.jsonl"
    path.write_text(
        '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n\n\n\n'
        '{"text": "c", "label": "x"}\n{"text": 42, "label": "y"}\n{"text": "d", "label": "x"}\n'
        '{"text": "e", "text": "f", "label": "y"}\n'
    )
    with pytest.raises(TextBatchError) as refused:
        TextDataset.from_file(path, tokenizer, drop_invalid=True)
    assert f"line 9 of {str(path)!r}" in str(refused.value) and "twice" in str(refused.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_texts_that_are_json_themselves_are_read_as_written(tokenizer, tmp_path, suffix):
    """Beside one number, datasets keeps a text that is itself JSON as that JSON: "123" came
    back as 123, "null" as None, '"great"' as great, so rows with text were dropped as
    non-strings or missing, or trained on other text."""
    texts = ['"Great" movie', '"great"', "null", "123", "true", "[1, 2]", "a review"]
    rows = [{"text": 42, "label": "a"}] + [{"text": t, "label": "ab"[i % 2]} for i, t in
                                            enumerate(texts)]  # fmt: skip
    path = tmp_path / f"json_texts{suffix}"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TextBatchError) as refused:
        TextDataset.from_file(path, tokenizer)
    if int(datasets.__version__.split(".")[0]) < 5:  # it cannot read such a file
        assert "JSON parse error" in str(refused.value)
        return
    assert "row 0, column 'text' is int 42" in str(refused.value)
    with pytest.warns(TextBatchWarning, match="dropped 1 of 8"):
        ds = TextDataset.from_file(path, tokenizer, drop_invalid=True)
    expected = [tokenizer(t)["input_ids"] for t in texts]
    assert [ds[i]["input_ids"] for i in range(len(ds))] == expected
    again = TextDataset.from_file(path, tokenizer, drop_invalid=True)  # from the cache
    assert again.from_cache and [again[i]["input_ids"] for i in range(len(ds))] == expected
    streamed = StreamingTextDataset.from_file(
        path, tokenizer, label_names=["a", "b"], drop_invalid=True
    )
    assert [e["input_ids"] for e in streamed] == expected


def test_files_as_pandas_and_recent_pyarrow_write_them(tokenizer, tmp_path):
    """DataFrame.to_csv writes its index first, under an empty header: the read failed with
    KeyError 'Field "" does not exist in schema'. A parquet string_view column (pyarrow >= 16)
    ended in a StopIteration, and in predict in ArrowNotImplementedError."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, labels = ["a good film", "a bad film", "fine"], ["pos", "neg", "pos"]
    expected = [tokenizer(t)["input_ids"] for t in texts]
    indexed = tmp_path / "indexed.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(indexed)
    ds = TextDataset.from_file(indexed, tokenizer)
    assert [ds[i]["input_ids"] for i in range(3)] == expected and ds.label_names == ["neg", "pos"]
    if not hasattr(pa, "string_view"):
        return
    view = tmp_path / "view.parquet"
    pq.write_table(pa.table({"text": pa.array(texts, pa.string_view()),
                             "label": pa.array(labels, pa.string_view())}), view)  # fmt: skip
    if int(datasets.__version__.split(".")[0]) < 5:  # it has no feature for string_view
        with pytest.raises(TextBatchError, match="string_view"):
            TextDataset.from_file(view, tokenizer)
        return
    ds = TextDataset.from_file(view, tokenizer)
    assert [ds[i]["input_ids"] for i in range(3)] == expected
    assert [ds[i]["labels"] for i in range(3)] == [1, 0, 1]


def test_a_json_text_column_alone_with_a_number_drops_that_row(tokenizer, tmp_path):
    """The only column: replacing it (remove, then add) failed, and flatten_indices wrote a
    file into the Arrow copy's folder that every later read took for damage."""
    path = tmp_path / "alone.jsonl"
    path.write_text('{"text": "a review"}\n{"text": 42}\n{"text": "another"}\n')
    if int(datasets.__version__.split(".")[0]) < 5:  # it cannot read such a file
        with pytest.raises(TextBatchError, match="JSON parse error"):
            TextDataset.from_file(path, tokenizer, drop_invalid=True)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", TextBatchWarning)  # no "damaged" warning either
        for _ in range(2):
            with pytest.warns(TextBatchWarning, match="dropped 1 of 3"):
                ds = TextDataset.from_file(path, tokenizer, drop_invalid=True)
            assert [ds[i]["input_ids"] for i in range(2)] == [
                tokenizer(t)["input_ids"] for t in ("a review", "another")
            ]


def test_a_dataset_with_a_format_transform_is_refused(tokenizer):
    """Its texts went through the transform and its labels did not."""
    hf = datasets.Dataset.from_list(RECORDS).with_transform(lambda b: {**b, "label": ["x"] * 9})
    with pytest.raises(TextBatchError, match=r"has a transform .*dataset.map"):
        TextDataset.from_hf(hf, tokenizer)


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl"])
def test_a_byte_order_mark_is_not_text_in_any_file(tokenizer, tmp_path, suffix):
    """Excel and Notepad start UTF-8 files with a BOM. csv and jsonl readers dropped it, but a
    .txt file kept it in its first text (byte-level BPE made tokens of it)."""
    from textbatch.data.dataset import load_file

    texts = ["first line here", "second one", "third"]
    body = {
        ".txt": "\n".join(texts) + "\n",
        ".csv": "text\n" + "\n".join(texts) + "\n",
        ".jsonl": "".join(json.dumps({"text": t}) + "\n" for t in texts),
    }[suffix]
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert load_file(path, tmp_path / "cache")["text"] == texts
    expected = TextDataset.from_records([{"text": t} for t in texts], tokenizer, label=None)
    ds = TextDataset.from_file(path, tokenizer, label=None, cache_dir=tmp_path / "cache")
    assert [ds[i] for i in range(3)] == [expected[i] for i in range(3)]
    stream = StreamingTextDataset.from_file(path, tokenizer, label=None)
    assert [e["input_ids"] for e in stream] == [expected[i]["input_ids"] for i in range(3)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"},\n{"text": "c", "label": "x"}\n',
         r"line 2 is not valid JSON \(Extra data at column 28\); write one JSON object per line"),
        ('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"\n{"text": "c", "label": "x"}\n',
         r"line 2 is not valid JSON \(Expecting ',' delimiter at column 27\)"),
    ],
)  # fmt: skip
def test_a_jsonl_syntax_error_names_its_line(tokenizer, tmp_path, capsys, content, message):
    """It advised writing every value of a column in one kind, named no line, and datasets
    logged a second line on stderr."""
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TextBatchError, match=message):
        TextDataset.from_file(path, tokenizer, cache_dir=tmp_path / "cache")
    assert "Failed to load JSON" not in capsys.readouterr().err


def test_a_column_of_no_text_at_all_says_how_the_file_came_about(tokenizer, tmp_path):
    """pandas' default to_json writes one object per column, and some writers store strings as
    bytes: `textbatch train` then said "train_tokenizer got no texts"."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from textbatch.data.dataset import load_file
    from textbatch.data.prepare import texts_of

    frame = pd.DataFrame({"text": ["great match", "fast chip"], "label": ["sport", "tech"]})
    frame.to_json(tmp_path / "columns.json")  # orient="columns": {"text": {"0": ..., ...}}
    table = pa.table({"text": pa.array([b"great match", b"fast chip"]), "label": ["a", "b"]})
    pq.write_table(table, tmp_path / "bytes.parquet")
    for name, message in [
        ("columns.json", r"holds struct<.*orient='records', lines=True"),
        ("bytes.parquet", r"holds binary values, not text; bytes, .*str.decode\('utf-8'\)"),
    ]:
        with pytest.raises(TextBatchError, match=message):
            TextDataset.from_file(tmp_path / name, tokenizer, cache_dir=tmp_path / "c")
        raw = load_file(tmp_path / name, tmp_path / "c")
        with pytest.raises(TextBatchError, match=message):
            list(texts_of(raw, "text"))


@pytest.mark.parametrize(
    "content",
    ["text;label\ngreat match;sport\nfast chip;tech\n",
     "text;label\ngreat, match;sport\nfast chip;tech\n"],
)  # fmt: skip
def test_a_semicolon_separated_csv_is_named_as_one(tokenizer, tmp_path, content):
    """Excel's csv in many European locales: the error named a missing column 'text' among
    ['text;label'], or advised quoting a text that holds a comma."""
    path = tmp_path / "excel.csv"
    path.write_text(content)
    with pytest.raises(TextBatchError, match=r"header holds ';': a semicolon-separated file"):
        TextDataset.from_file(path, tokenizer, cache_dir=tmp_path / "c")


def test_labels_all_written_another_way_are_named_as_such(tokenizer):
    """A float-in-csv 1.0 against an int 1: every evaluation label was unknown, and the advice
    was to remove those rows or add examples of them."""
    train = TextDataset.from_records(
        [{"text": "a b", "label": "1.0"}, {"text": "c d", "label": "2.0"}], tokenizer
    )
    records = [{"text": "a b", "label": 1}, {"text": "c", "label": 2}]
    with pytest.raises(TextBatchError, match=r"None of its labels is known: .*1\.0 for 1"):
        TextDataset.from_records(records, tokenizer, label_names=train.label_names)
    one_unknown = [{"text": "a b", "label": "1.0"}, {"text": "c", "label": "3.0"}]
    with pytest.raises(TextBatchError, match=r"remove those rows\.$"):
        TextDataset.from_records(one_unknown, tokenizer, label_names=train.label_names)


def test_the_strict_csv_read_takes_long_cells_and_leaves_csvs_limit_alone(tokenizer, tmp_path):
    """A cell over csv's 128 KiB default is read, and the process-wide limit is raised only
    while a record is read: a stream left it at 2**31 - 1 for the whole process."""
    import csv

    path = tmp_path / "long.csv"
    rest = "".join(f"short {i},neg\n" for i in range(3000))  # the stream reads on lazily
    path.write_text("text,label\n" + '"' + "word " * 50_000 + '",pos\n' + rest)
    before = csv.field_size_limit()
    assert len(TextDataset.from_file(path, tokenizer, cache_dir=tmp_path / "c")) == 3001
    stream = StreamingTextDataset.from_file(
        path, tokenizer, label_names=["neg", "pos"], tokenize_batch_size=4
    )
    examples = iter(stream)
    next(examples)
    assert csv.field_size_limit() == before  # mid-stream
    assert len(list(examples)) == 3000 and csv.field_size_limit() == before


def test_a_stream_names_the_malformed_quote_a_full_read_names(tokenizer, tmp_path, capfd):
    """In SST-2's style a later lone '"' made pandas fail first in a stream, which then gave
    pandas' words ("EOF inside string starting at row 5") where the full read named line 3;
    and csv's "'\\t' expected" showed a literal tab."""
    path = tmp_path / "sst2.tsv"
    path.write_text(
        'sentence\tlabel\nfine .\t1\n"the" movie was bad\t0\na "great" film\t1\n" \t0\n'
    )
    expected = r"not valid tsv at line 3 \('\\t' expected after '\"'\).*QUOTE_NONE"
    with pytest.raises(TextBatchError, match=expected):
        TextDataset.from_file(path, tokenizer, text="sentence", cache_dir=tmp_path / "c")
    stream = StreamingTextDataset.from_file(
        path, tokenizer, text="sentence", label_names=["0", "1"]
    )
    with pytest.raises(TextBatchError, match=expected):
        list(stream)
    assert "Failed to read file" not in capfd.readouterr().err  # datasets' log line, muted
