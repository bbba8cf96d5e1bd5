"""Shared fixtures: a tiny tokenizer trained here, and a cache that lives in the test's tmp_path."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# CI (CI=true) replays the same Hypothesis examples every run: a red build is never luck.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Nothing in the tests may reach the Hugging Face Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def corpus_records():
    from textbatch.data.corpus import make_corpus

    return make_corpus(600, seed=1)


@pytest.fixture(scope="session")
def tokenizer(corpus_records):
    """A WordPiece tokenizer over the words of a few hundred sentences of the embedded corpus.

    Built from a vocabulary rather than trained, because WordPiece training in ``tokenizers``
    breaks ties in an unspecified order: tests must see the same tokenizer every run.
    """
    import string
    from collections import Counter

    from textbatch.data.tokenizers import wordpiece_tokenizer

    words = Counter(
        w.strip(string.punctuation) for r in corpus_records for w in r["text"].lower().split()
    )
    frequent = sorted((w for w in words if w), key=lambda w: (-words[w], w))[:700]
    characters = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    return wordpiece_tokenizer([*characters, *(f"##{c}" for c in characters), *frequent])


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test caches tokenised files under its own tmp_path, never under ~/.cache."""
    path = tmp_path / "textbatch-cache"
    monkeypatch.setenv("TEXTBATCH_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tokenizer):
    """A tiny BERT encoder (random weights) saved the way Hugging Face models are."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def fixed_threads(monkeypatch):
    """Tests that compare two runs bit for bit need both to train with the same thread count:
    with ``OMP_NUM_THREADS`` set, ``fit(threads="auto")`` keeps torch's count instead of
    timing the machine (tests of the measuring itself remove it)."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
