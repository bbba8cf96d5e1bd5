from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from textbatch import TextBatchError, make_corpus
from textbatch.data.corpus import TOPICS, corpus_dataset


@pytest.fixture(scope="module")
def default_corpus():
    return make_corpus()


def test_default_size_and_classes(default_corpus):
    assert len(default_corpus) == 20_000
    counts = Counter(r["label"] for r in default_corpus)
    assert len(counts) == len(TOPICS) >= 6
    assert min(counts.values()) > 0.8 * 20_000 / len(counts)  # close to balanced


def test_same_seed_same_corpus_and_other_seed_other_corpus():
    assert make_corpus(300, seed=3) == make_corpus(300, seed=3)
    assert make_corpus(300, seed=3) != make_corpus(300, seed=4)
    assert len(make_corpus(123)) == 123


def test_lengths_are_long_tailed(default_corpus, tokenizer):
    lengths = np.array(
        [len(ids) for ids in tokenizer([r["text"] for r in default_corpus[:4000]])["input_ids"]]
    )
    assert 20 <= np.median(lengths) <= 60  # most examples: a few dozen tokens
    assert np.percentile(lengths, 99) >= 200  # a tail of several hundred
    assert lengths.max() >= 400
    assert lengths.mean() > 1.2 * np.median(lengths)  # skewed to the right


def test_classes_are_learnable_from_the_words(default_corpus):
    """Naive Bayes on words, trained on 4,000 examples, beats chance by far on 1,000 others."""
    train, test = default_corpus[:4000], default_corpus[4000:5000]
    counts: dict[str, Counter] = {}
    for r in train:
        counts.setdefault(r["label"], Counter()).update(r["text"].lower().split())
    vocab = set().union(*counts.values())
    totals = {label: sum(c.values()) + len(vocab) for label, c in counts.items()}

    def predict(text):
        words = text.lower().split()
        return max(
            counts, key=lambda lab: sum(math.log((counts[lab][w] + 1) / totals[lab]) for w in words)
        )

    accuracy = np.mean([predict(r["text"]) == r["label"] for r in test])
    assert accuracy > 0.8  # chance is 1/8


def test_corpus_dataset_is_a_hf_dataset():
    ds = corpus_dataset(50, seed=1)
    assert ds.column_names == ["text", "label"] and len(ds) == 50
    assert ds[0] == make_corpus(50, seed=1)[0]


def test_bad_size():
    with pytest.raises(TextBatchError, match="n=0"):
        make_corpus(0)
