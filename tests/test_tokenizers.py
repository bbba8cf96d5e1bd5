from __future__ import annotations

import os

import pytest

from textbatch import TextBatchError, load_tokenizer, train_tokenizer

SAMPLES = ["The match ended in a draw.", "Parliament passed the budget bill today!"]


def ids(tok, text, pair=None):
    return tok(text, pair)["input_ids"]


def test_trained_tokenizer_has_bert_special_tokens(tokenizer):
    assert tokenizer.is_fast
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    assert tokenizer.pad_token == "[PAD]" and tokenizer.pad_token_id == 0
    assert tokenizer.unk_token == "[UNK]"
    assert tokenizer.cls_token_id == 2 and tokenizer.sep_token_id == 3


def test_single_text_is_wrapped_in_cls_and_sep(tokenizer):
    encoded = ids(tokenizer, "the match")
    assert encoded[0] == tokenizer.cls_token_id and encoded[-1] == tokenizer.sep_token_id
    assert len(encoded) >= 4


def test_pair_gets_two_seps_and_token_types(tokenizer):
    encoded = tokenizer("the match", "a draw", return_token_type_ids=True)
    tokens = encoded["input_ids"]
    assert tokens[0] == tokenizer.cls_token_id
    assert tokens.count(tokenizer.sep_token_id) == 2 and tokens[-1] == tokenizer.sep_token_id
    types = encoded["token_type_ids"]
    first_sep = tokens.index(tokenizer.sep_token_id)
    assert types[: first_sep + 1] == [0] * (first_sep + 1)
    assert types[first_sep + 1 :] == [1] * (len(tokens) - first_sep - 1)


def test_lowercase_option(corpus_records):
    texts = [r["text"] for r in corpus_records[:200]]
    lower = train_tokenizer(texts, vocab_size=500, lowercase=True)
    cased = train_tokenizer(texts, vocab_size=500, lowercase=False)
    assert ids(lower, "MATCH") == ids(lower, "match")
    assert ids(cased, "MATCH") != ids(cased, "match")


@pytest.mark.parametrize("form", ["directory", "tokenizer.json", "backend", "object"])
def test_save_and_load_round_trips(tokenizer, tmp_path, form):
    tokenizer.save_pretrained(tmp_path / "tok")
    source = {
        "directory": tmp_path / "tok",
        "tokenizer.json": tmp_path / "tok" / "tokenizer.json",
        "backend": tokenizer.backend_tokenizer,
        "object": tokenizer,
    }[form]
    loaded = load_tokenizer(source)
    assert loaded.is_fast
    assert loaded.pad_token_id == tokenizer.pad_token_id
    for text in SAMPLES:
        assert ids(loaded, text) == ids(tokenizer, text)
        assert ids(loaded, text, "second text") == ids(tokenizer, text, "second text")
    assert (
        loaded("a", "b", return_token_type_ids=True)["token_type_ids"]
        == tokenizer("a", "b", return_token_type_ids=True)["token_type_ids"]
    )


def test_load_accepts_str_paths(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    assert ids(load_tokenizer(str(tmp_path / "tok")), SAMPLES[0]) == ids(tokenizer, SAMPLES[0])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p / "empty-dir", "holds no tokenizer.json"),
        (lambda p: p / "vocab.txt", "not a tokenizer.json"),
        (lambda p: p / "bad.json", "cannot read tokenizer file"),
        (lambda p: "bert-base-uncased", "never downloads"),
    ],
)
def test_load_errors_name_the_path(tmp_path, make, message):
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    (tmp_path / "bad.json").write_text("{not json")
    source = make(tmp_path)
    with pytest.raises(TextBatchError, match=message) as info:
        load_tokenizer(source)
    assert str(source).split("/")[-1] in str(info.value)


def test_load_rejects_other_objects():
    with pytest.raises(TextBatchError, match="cannot load a tokenizer from int"):
        load_tokenizer(42)


@pytest.mark.parametrize(
    ("texts", "kwargs", "message"),
    [
        (["fine", 3], {}, "text #1 is int"),
        ([], {}, "got no texts"),
        ([" ", "\u200b\ufeff"], {}, "got no texts"),  # blank: whitespace, invisible
        ("one string", {}, "one string"),
        (["a b c"], {"vocab_size": 3}, "vocab_size=3"),
    ],
)
def test_train_tokenizer_bad_input(texts, kwargs, message):
    with pytest.raises(TextBatchError, match=message):
        train_tokenizer(texts, **kwargs)


def test_wordpiece_tokenizer_from_a_vocabulary_is_fully_determined():
    from textbatch.data.tokenizers import wordpiece_tokenizer

    vocab = ["the", "match", "ended", "draw", "in", "a", "##s", "."]
    first, second = wordpiece_tokenizer(vocab), wordpiece_tokenizer(list(vocab))
    assert first.get_vocab() == second.get_vocab()
    assert first.convert_ids_to_tokens([0, 1, 2, 3, 4, 5]) == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the",
    ]  # fmt: skip
    encoded = first("The matchs ended in a draw.")["input_ids"]
    assert first.convert_ids_to_tokens(encoded) == [
        "[CLS]", "the", "match", "##s", "ended", "in", "a", "draw", ".", "[SEP]",
    ]  # fmt: skip


TRAIN_IN_A_PROCESS = """
import hashlib, json, sys
from textbatch import make_corpus, train_tokenizer
texts = [r["text"] for r in make_corpus(3000, seed=4)] + ["Ünïcödé wörds, naïve café", "日本語"]
tok = train_tokenizer(texts, vocab_size=int(sys.argv[1]))
print(hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest())
"""


@pytest.mark.parametrize("vocab_size", [600, 8000])  # the vocabulary full, and not
def test_training_gives_the_same_tokenizer_in_every_process(vocab_size):
    """The tokenizers trainer alone numbers pieces in hash-map order (a new one per process),
    so that two runs of the same command trained different tokenizers."""
    import subprocess
    import sys

    digests = {
        subprocess.run(
            [sys.executable, "-c", TRAIN_IN_A_PROCESS, str(vocab_size)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout.strip()
        for seed in (1, 2)
    }
    assert len(digests) == 1, digests


def test_a_data_file_s_tokenizer_is_trained_once_and_checked(tmp_path, monkeypatch):
    """stats, bench and every fresh train trained the same WordPiece tokenizer again (10 s for
    a 74 MB csv on 2 cores). It is kept by the hash of the file's bytes and the options."""
    import json

    import textbatch.data.prepare as prepare
    from textbatch import TextBatchWarning, make_corpus
    from textbatch.data.prepare import trained_tokenizer

    trainings = []
    real = prepare.train_tokenizer
    monkeypatch.setattr(
        prepare, "train_tokenizer", lambda *a, **k: trainings.append(1) or real(*a, **k)
    )
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_corpus(300, seed=3)))
    cache = tmp_path / "cache"
    first = trained_tokenizer(data, vocab_size=500, cache_dir=cache)
    again = trained_tokenizer(data, vocab_size=500, cache_dir=cache)
    assert len(trainings) == 1
    assert again.get_vocab() == first.get_vocab() and len(first) == 500
    fresh = real(prepare.texts_of(prepare.load_file(data, cache), "text"), vocab_size=500)
    assert first.get_vocab() == fresh.get_vocab()
    text = "The striker scored a late goal."
    assert first(text)["input_ids"] == fresh(text)["input_ids"]
    trained_tokenizer(data, vocab_size=400, cache_dir=cache)  # another vocabulary size
    assert len(trainings) == 2
    data.write_text(data.read_text().replace("the", "teh"))  # other bytes, same path
    assert "teh" in trained_tokenizer(data, vocab_size=500, cache_dir=cache).get_vocab()
    assert len(trainings) == 3
    (kept,) = [f for f in cache.glob("tokenizers/*/tokenizer.json") if "teh" in f.read_text()]
    kept.write_text(kept.read_text().replace('"teh"', '"tex"'))  # same size, other bytes
    with pytest.warns(TextBatchWarning, match="trains the tokenizer of .* again: .* damaged"):
        repaired = trained_tokenizer(data, vocab_size=500, cache_dir=cache)
    assert len(trainings) == 4 and "teh" in repaired.get_vocab()


def test_a_kept_tokenizer_is_one_of_the_bytes_it_is_kept_for(tmp_path, monkeypatch):
    """A file rewritten while its tokenizer trained was kept under the old bytes' key (a later
    run of the old bytes read its words as [UNK]); a process that lost the race to keep the
    same tokenizer crashed (Directory not empty); an unwritable cache was a traceback."""
    import errno
    import json

    import textbatch.data.prepare as prepare
    from textbatch import make_corpus
    from textbatch.data.prepare import trained_tokenizer

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_corpus(200, seed=4)))
    cache = tmp_path / "cache"
    real_train, real_keep = prepare._train_on_file, prepare.atomic_folder

    def rewritten_meanwhile(path, *args):
        tokenizer = real_train(path, *args)
        path.write_text(path.read_text().replace("the", "teh"))
        return tokenizer

    monkeypatch.setattr(prepare, "_train_on_file", rewritten_meanwhile)
    trained_tokenizer(data, vocab_size=300, cache_dir=cache)
    assert not list(cache.glob("tokenizers/*/tokenizer.json"))
    monkeypatch.setattr(prepare, "_train_on_file", real_train)

    def lost_the_race(folder, fill):
        real_keep(folder, fill)  # the other process's
        raise OSError(errno.ENOTEMPTY, "Directory not empty", str(folder))

    monkeypatch.setattr(prepare, "atomic_folder", lost_the_race)
    assert len(trained_tokenizer(data, vocab_size=300, cache_dir=cache)) == 300

    def unwritable(folder, fill):
        raise PermissionError(errno.EACCES, "Permission denied", str(folder.parent / ".x"))

    monkeypatch.setattr(prepare, "atomic_folder", unwritable)
    with pytest.raises(TextBatchError, match="cannot write to the cache folder"):
        trained_tokenizer(data, vocab_size=301, cache_dir=cache)
