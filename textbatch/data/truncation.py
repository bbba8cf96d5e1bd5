"""Truncation that tokenises only as much of a text as it keeps.

``tokenizer(texts, truncation=True, max_length=n)`` tokenises every text whole and only then
drops the tokens past ``n``: one 50 MB line costs minutes and gigabytes to yield 512 tokens.
:func:`encode_truncated` gives exactly the same ids and token type ids, but first cuts each long
text to a prefix that still holds every token truncation keeps.

Why a prefix gives the same tokens. A fast tokenizer normalises the text, pre-tokenises it into
words, tokenises each word on its own (WordPiece, BPE, Unigram and WordLevel models never look
across words), then truncates and adds special tokens. Cut just before a space that follows a
letter or digit, and (for the normalizers and pre-tokenizers :func:`cuts_are_exact` accepts) the
words of the prefix are exactly the words the whole text has there, so the prefix's tokens are
the first tokens of the whole text. When the prefix yields at least as many tokens as
truncation keeps (``max_length`` less the special tokens), its truncated encoding is the whole
text's. A prefix that yields fewer is cut longer, in the end not at all; so is a text of a pair
whose share of the budget is not yet settled (see :func:`_texts_to_lengthen`). A tokenizer whose
splitting cannot be shown to be local tokenises every text whole, as before.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from textbatch.data.backend import ListEncoding, calls_backend_directly, encode_batch

# The first cut of a long text keeps this many characters per token of the budget; text has
# 3 to 6 per token, so the prefix nearly always yields enough. Texts up to twice as long are
# never cut, and a prefix that falls short is cut this many times longer.
CHARS_PER_TOKEN = 8
MIN_CUT = 256
GROWTH = 4
# Texts longer than this are counted (never encoded) a piece at a time, in bounded memory.
COUNT_CHUNK = 1 << 16

# A pair whose two texts both have more than this many budgets' worth of tokens (estimated
# from their characters: 4 per token in text with a space in every 16 characters or more, as
# in English or French, else 1, as in Chinese) is
# cut to the tokens truncation keeps before it is encoded (see _encode_pairs). tokenizers'
# longest_first truncation pairs every overflowing piece of one text with every piece of the
# other, in memory that grows with the product of their lengths: 32 pairs of 8,100 unspaced
# CJK characters, which no cut place shortens, took 5.7 GB. Below it, that product is small
# and the cut, which tokenises a pair's texts twice, would cost more than it saves.
LONG_PAIR_BUDGETS = 2
SPACED_CHARS_PER_TOKEN = 4
CHARS_PER_SPACE = 16

# A cut goes just before a space (U+0020) that follows a letter or digit, so the prefix ends
# inside no word. Left out: CJK ideographs (BertNormalizer puts spaces around them, so the
# normalised prefix would end in a space) and the letters that join a following character into
# one grapheme (Grapheme_Cluster_Break=Prepend).
_NOT_BEFORE_CUT = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
    "\u0d4e\U000111c2\U000111c3\U0001193f\U00011941\U00011a3a\U00011a84-\U00011a89"
    "\U00011d46\U00011f02"
)
_CUT = re.compile(rf"(?<=[^\W_{_NOT_BEFORE_CUT}]) ")

# Normalizers that map each character on its own, so the text before a cut normalises the same
# with or without what follows it, and the text after it the same with or without what precedes
# it. (Strip and Prepend act on the start of the text: left out, see _count_tokens.)
_LOCAL_NORMALIZERS = {
    "BertNormalizer",
    "Lowercase",
    "NFC",
    "NFD",
    "NFKC",
    "NFKD",
    "StripAccents",
}
# Pre-tokenizers that always split at a space after a letter or digit, whatever follows.
_SPLITTING_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
# Models that tokenise each word on its own (BPE too, without dropout).
_WORD_MODELS = {"WordPiece", "WordLevel", "Unigram", "BPE"}


def cuts_are_exact(tokenizer: Any) -> bool:
    """Whether cutting a text before a space (after a letter or digit) leaves the tokens before
    the cut as they are in the whole text, for this fast tokenizer: its truncation keeps the
    first tokens, its normalizer works character by character, its pre-tokenizer always splits
    there, its model tokenises words on their own, and no added token holds a space. Anything
    else (a Precompiled or regex normalizer, no pre-tokenizer, a regex Split, BPE dropout, left
    truncation) answers False: such tokenizers tokenise whole texts."""
    if getattr(tokenizer, "truncation_side", "right") != "right":
        return False
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    if model.get("type") not in _WORD_MODELS or model.get("dropout") is not None:
        return False
    for added in spec.get("added_tokens") or ():
        content = added.get("content", "")
        if not content or any(ch.isspace() for ch in content):
            return False
    return _normalizer_is_local(spec.get("normalizer")) and _splits_at_spaces(
        spec.get("pre_tokenizer")
    )


def _normalizer_is_local(spec: dict[str, Any] | None) -> bool:
    if spec is None:
        return True
    kind = spec.get("type")
    if kind == "Sequence":
        return all(_normalizer_is_local(s) for s in spec.get("normalizers", ()))
    if kind == "Replace":  # a literal without spaces cannot span a cut, nor end a prefix in one
        literal = (spec.get("pattern") or {}).get("String")
        content = spec.get("content", "")
        return bool(literal) and not any(ch.isspace() for ch in literal + content)
    return kind in _LOCAL_NORMALIZERS


def _splits_at_spaces(spec: dict[str, Any] | None) -> bool:
    if spec is None:  # the whole text is one word
        return False
    kind = spec.get("type")
    if kind == "Sequence":  # later pre-tokenizers only split the pieces of the first further
        pieces = spec.get("pretokenizers") or []
        return bool(pieces) and _splits_at_spaces(pieces[0])
    if kind == "ByteLevel":  # the GPT-2 regex: no match runs from a letter or digit into a space
        return bool(spec.get("use_regex", True))
    if kind == "Metaspace":  # each space starts a new word
        return bool(spec.get("split", True))
    return kind in _SPLITTING_PRE_TOKENIZERS


def cut_point(text: str, target: int, start: int = 0) -> int:
    """Where to cut ``text`` near ``target`` (a character position): the last cut place at or
    before it but past the middle of ``start``..``target``, else the first one after it;
    ``len(text)`` when the text ends by ``target`` or has no cut place after it."""
    if target >= len(text):
        return len(text)
    middle = start + (target - start) // 2 + 1
    low = max(middle, target - 4096)  # look near the target first: a short scan
    while True:
        last = deque(_CUT.finditer(text, low, target + 1), maxlen=1)
        if last:
            return last[0].start()
        if low == middle:
            break
        low = middle
    after = _CUT.search(text, target + 1)
    return after.start() if after is not None else len(text)


def encode_truncated(
    tokenizer: Any,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    *,
    max_length: int,
    return_token_type_ids: bool,
) -> dict[str, list[list[int]]]:
    """``tokenizer(texts, pairs, truncation=True, max_length=max_length)``'s ``input_ids`` (and
    ``token_type_ids``) as lists, from :func:`encodings_truncated`."""
    encodings = encodings_truncated(
        tokenizer, texts, pairs, max_length=max_length, type_ids=return_token_type_ids
    )
    out = {"input_ids": [encoding.ids for encoding in encodings]}
    if return_token_type_ids:
        out["token_type_ids"] = [encoding.type_ids for encoding in encodings]
    return out


def encodings_truncated(
    tokenizer: Any,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    *,
    max_length: int,
    type_ids: bool = True,
    cuts_exact: bool | None = None,
) -> list[Any]:
    """The encodings (see :func:`~textbatch.data.backend.encode_batch`) of
    ``tokenizer(texts, pairs, truncation=True, max_length=max_length)``, one per row, computed
    from prefixes of the long texts: the same ids, in time and memory bounded by ``max_length``
    (tokens) rather than by the longest text.

    Texts longer than ``2 * CHARS_PER_TOKEN`` characters per token of the budget are cut, for
    tokenizers :func:`cuts_are_exact` accepts (pass its answer as ``cuts_exact`` to call it
    once for many batches: it reads the whole tokenizer.json, 20 ms for 30,000 tokens). A
    single text is tokenised once per cut: its truncated prefix is kept when it fills
    ``max_length``. A pair's prefixes are counted first. One exception costs time (not
    memory): a pair whose texts both yield more than the budget, with an odd budget, needs to
    know which whole text is longer, so the shorter is counted to its end.
    """
    columns = [list(texts)] if pairs is None else [list(texts), list(pairs)]
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=pairs is not None)
    first_cut = max(CHARS_PER_TOKEN * budget, MIN_CUT)

    def encode(rows: list[list[str]]) -> list[Any]:
        if len(rows) == 2:
            return _encode_pairs(tokenizer, rows, max_length=max_length, type_ids=type_ids)
        return _encode(tokenizer, rows, max_length=max_length, type_ids=type_ids)

    long = [[len(t) > 2 * first_cut for t in column] for column in columns]
    if not any(map(any, long)) or not (
        cuts_are_exact(tokenizer) if cuts_exact is None else cuts_exact
    ):
        return encode(columns)

    # targets[k][i]: about how many characters of text k of row i to keep (None: all of it)
    targets = [[first_cut if is_long else None for is_long in flags] for flags in long]
    order: dict[int, int] = {}  # row -> sign(tokens of text 0 - tokens of text 1), when needed
    out: list[Any] = [None] * len(columns[0])
    todo = list(range(len(columns[0])))
    while todo:
        pieces = [
            [_prefix(column[i], column_targets[i]) for i in todo]
            for column, column_targets in zip(columns, targets, strict=True)
        ]
        cut = [
            [len(piece) < len(column[i]) for piece, i in zip(column_pieces, todo, strict=True)]
            for column, column_pieces in zip(columns, pieces, strict=True)
        ]
        if pairs is None:  # a cut text is done when its truncated prefix fills max_length
            encoded = encode(pieces)
            again = [j for j, e in enumerate(encoded) if cut[0][j] and len(e) < max_length]
            for j in again:
                targets[0][todo[j]] *= GROWTH
            for j in set(range(len(todo))).difference(again):
                out[todo[j]] = encoded[j]
            todo = [todo[j] for j in again]
            continue
        counts = _token_counts(tokenizer, pieces, cut)
        done, again = [], []
        for j, i in enumerate(todo):
            row_cut, row_counts = [flags[j] for flags in cut], [c[j] for c in counts]
            lengthen = _texts_to_lengthen(row_cut, row_counts, budget, order.get(i))
            if lengthen is None:  # which whole text is longer decides who gets the odd token
                order[i] = _compare_lengths(tokenizer, columns[0][i], columns[1][i])
                lengthen = _texts_to_lengthen(row_cut, row_counts, budget, order[i])
            for k in lengthen:
                targets[k][i] *= GROWTH
            (again if lengthen else done).append(j)
        if done:
            encoded = encode([[column_pieces[j] for j in done] for column_pieces in pieces])
            for j, encoding in zip(done, encoded, strict=True):
                out[todo[j]] = encoding
        todo = [todo[j] for j in again]
    return out


def _encode(
    tokenizer: Any, rows: list[list[str]], *, max_length: int | None, type_ids: bool = True
) -> list[Any]:
    """Every tokenizer call of this module: ``rows`` is ``[texts]`` or ``[texts, pairs]``;
    truncated at ``max_length`` with special tokens, or (None) whole without them."""
    return encode_batch(
        tokenizer,
        rows[0],
        rows[1] if len(rows) > 1 else None,
        max_length=max_length,
        add_special_tokens=max_length is not None,
        type_ids=type_ids,
    )


def _encode_pairs(
    tokenizer: Any, rows: list[list[str]], *, max_length: int, type_ids: bool
) -> list[Any]:
    """``_encode(tokenizer, rows, max_length=max_length)`` for pairs ``rows = [texts, pairs]``,
    in memory that grows with the texts' lengths, not with their product: each text of a pair
    of two long texts is tokenised alone, the tokens that truncation keeps of each are counted
    (:func:`longest_first`), and the text is cut where its first dropped token starts; the cut
    pair then needs no truncation. Its encoding is used when its two sequences are exactly the
    kept tokens (a cut inside a word, or inside a character that makes several tokens, may
    give others: byte-level BPE merges across a whole unspaced run); else the whole pair is
    encoded, one pair at a time so that only one pair's overflowing pieces are ever held, as
    it is (a chunk at a time) for a tokenizer that truncates on the left or goes through its
    own ``__call__``."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    long = LONG_PAIR_BUDGETS * max(budget, 1)
    heavy = [
        j
        for j, pair in enumerate(zip(*rows, strict=True))
        if min(map(_token_estimate, pair)) > long
    ]
    if (
        not heavy
        or getattr(tokenizer, "truncation_side", "right") != "right"
        or not calls_backend_directly(tokenizer)
    ):
        return _encode(tokenizer, rows, max_length=max_length, type_ids=type_ids)
    texts = [[rows[k][j] for j in heavy] for k in (0, 1)]
    whole = [
        encode_batch(tokenizer, column, max_length=None, add_special_tokens=False, offsets=True)
        for column in texts
    ]
    cut = [list(rows[0]), list(rows[1])]
    kept: list[tuple[list[int], list[int]]] = []
    for n, j in enumerate(heavy):
        keeps = longest_first(len(whole[0][n]), len(whole[1][n]), budget)
        for k, keep in enumerate(keeps):
            encoding = whole[k][n]
            if keep < len(encoding):
                cut[k][j] = texts[k][n][: encoding.offsets[keep][0]]
        kept.append((whole[0][n].ids[: keeps[0]], whole[1][n].ids[: keeps[1]]))
    del whole
    out = _encode(tokenizer, cut, max_length=max_length, type_ids=type_ids)
    inexact = [j for j, expected in zip(heavy, kept, strict=True) if _sequences(out[j]) != expected]
    for j in inexact:  # one at a time, overflowing pieces dropped at once: one row's worth
        (encoding,) = _encode(tokenizer, [[rows[0][j]], [rows[1][j]]], max_length=max_length)
        out[j] = ListEncoding(encoding.ids, encoding.type_ids if type_ids else [])
    return out


def _token_estimate(text: str) -> int:
    """A rough estimate of a text's tokens, from its characters (see LONG_PAIR_BUDGETS)."""
    spaced = text.count(" ") * CHARS_PER_SPACE >= len(text)
    return len(text) // SPACED_CHARS_PER_TOKEN if spaced else len(text)


def _sequences(encoding: Any) -> tuple[list[int], list[int]]:
    """The ids of the first and of the second text of a pair's encoding, special tokens out."""
    ids = zip(encoding.ids, encoding.sequence_ids, strict=True)
    pieces: tuple[list[int], list[int]] = ([], [])
    for token, sequence in ids:
        if sequence is not None:
            pieces[sequence].append(token)
    return pieces


def longest_first(first: int, second: int, budget: int) -> tuple[int, int]:
    """The tokens of each text of a pair (of ``first`` and ``second`` tokens) that truncation to
    ``budget`` tokens ("longest_first", as ``tokenizers`` does it) keeps: both whole when they
    fit; else the shorter whole when it has at most half the budget, and the longer the rest;
    else the shorter ``budget // 2`` (the first on a tie) and the longer the rest."""
    if first + second <= budget:
        return first, second
    half = budget // 2
    if first <= second:
        keep_first = min(first, half)
        return keep_first, budget - keep_first
    keep_second = min(second, half)
    return budget - keep_second, keep_second


def _prefix(text: str, target: int | None) -> str:
    return text if target is None else text[: cut_point(text, target)]


def _token_counts(
    tokenizer: Any, pieces: list[list[str]], cut: list[list[bool]]
) -> list[list[int]]:
    """Tokens (no special ones) of each text of the rows where some text was cut (-1 elsewhere:
    not needed)."""
    needed = [j for j in range(len(pieces[0])) if any(flags[j] for flags in cut)]
    counts = [[-1] * len(pieces[0]) for _ in pieces]
    for column_pieces, column_counts in zip(pieces, counts, strict=True):
        found = _count_tokens(tokenizer, [column_pieces[j] for j in needed])
        for j, count in zip(needed, found, strict=True):
            column_counts[j] = count
    return counts


def _count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    """Tokens (no special ones) of each text; a text longer than ``COUNT_CHUNK`` characters is
    counted a piece at a time (see :func:`_running_counts`)."""
    counts = [0] * len(texts)
    short = [j for j, text in enumerate(texts) if len(text) <= COUNT_CHUNK]
    if short:
        for j, count in zip(short, _lengths(tokenizer, [texts[j] for j in short]), strict=True):
            counts[j] = count
    for j, text in enumerate(texts):
        if len(text) > COUNT_CHUNK:
            counts[j] = deque(_running_counts(tokenizer, text), maxlen=1)[0]
    return counts


def _lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    """Tokens (no special ones) of each of ``texts``, tokenised whole."""
    encodings = _encode(tokenizer, [texts], max_length=None, type_ids=False)
    return [len(encoding) for encoding in encodings]


def _running_counts(tokenizer: Any, text: str) -> Iterator[int]:
    """The tokens (no special ones) of longer and longer prefixes of ``text``, the last the
    whole text, counted a piece of about ``COUNT_CHUNK`` characters at a time: each piece
    starts at a cut place, that is with a space, so (for tokenizers :func:`cuts_are_exact`
    accepts, whose normalizers and pre-tokenizers treat the start of a text like any space) it
    yields alone the tokens it yields in the text."""
    total, start = 0, 0
    while start < len(text):
        end = cut_point(text, start + COUNT_CHUNK, start)
        total += _lengths(tokenizer, [text[start:end]])[0]
        start = end
        yield total


def _compare_lengths(tokenizer: Any, first: str, second: str) -> int:
    """sign(tokens of ``first`` - tokens of ``second``), counting both a piece at a time until
    the shorter one ends and the other has passed it."""
    running = [_running_counts(tokenizer, first), _running_counts(tokenizer, second)]
    totals, ended = [0, 0], [False, False]
    while True:
        for k in (0, 1):
            if not ended[k]:
                total = next(running[k], None)
                ended[k] = total is None
                totals[k] = totals[k] if total is None else total
        if ended[0] and (ended[1] or totals[1] > totals[0]):
            return (totals[0] > totals[1]) - (totals[0] < totals[1])
        if ended[1] and totals[0] > totals[1]:
            return 1


def _texts_to_lengthen(
    cut: list[bool], counts: list[int], budget: int, order: int | None
) -> list[int] | None:
    """Which texts of a row (0, or 0 and 1 for a pair) to cut longer, given which were cut and
    how many tokens each yielded; none when truncating these prefixes gives the whole texts'
    result; None when that depends on ``order``, sign(tokens of whole text 0 - of text 1).

    A cut text must yield the whole ``budget`` (tokens less the special ones): no text can keep
    more. For a pair, truncation ("longest_first" in ``tokenizers``) keeps the shorter text
    whole when it has at most half the budget, and the longer one gets the rest; otherwise the
    shorter gets ``budget // 2`` (the first text on a tie) and the longer the rest, so with an
    odd budget the longer text gets the odd token. When both texts yield the budget, the
    prefixes must then be in the whole texts' order: a cut text is longer than a whole one when
    its prefix already yields more tokens; otherwise ``order`` says which prefix to lengthen.
    """
    short = [k for k, was_cut in enumerate(cut) if was_cut and counts[k] < budget]
    if short:
        return short
    if len(cut) == 1 or budget % 2 == 0 or not any(cut):
        return []
    if not all(cut) and counts[cut.index(True)] > counts[cut.index(False)]:
        return []
    if order is None:
        return None
    first_longer = order > 0
    if first_longer == (counts[0] > counts[1]):
        return []
    return [0] if first_longer else [1]
