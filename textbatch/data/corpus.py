"""The embedded corpus: a seeded generator of labelled news-like text with long-tailed lengths.

Every word list below was written for textbatch. Each example is a few sentences of common words
mixed with words of its topic (and some words that two topics share, so that short examples can
be ambiguous). Lengths follow a mixture of two log-normal laws: most examples are a few dozen
tokens long, about one in twelve is a long article of a few hundred tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from textbatch.errors import TextBatchError

TOPICS: dict[str, str] = {
    "sports": """match season league coach goal striker defender keeper tournament final
        championship stadium referee penalty transfer midfield tackle sprint marathon relay
        medal podium rally serve racket innings wicket batsman pitcher homerun touchdown
        quarterback dribble rebound playoff fixture derby squad captain trophy athlete gym
        training fitness score draw victory defeat fans ticket jersey olympic cyclist swimmer""",
    "politics": """election parliament senate minister president vote ballot campaign party
        coalition opposition policy reform legislation bill amendment constitution governor
        mayor council referendum debate candidate poll manifesto diplomat embassy treaty
        sanctions cabinet lawmaker veto caucus lobby constituency incumbent electorate
        democracy regime protest rally decree ministry spokesperson summit delegation""",
    "technology": """software hardware startup smartphone laptop processor chip semiconductor
        cloud server database algorithm encryption browser app update firmware network
        bandwidth router wireless broadband developer programmer code compiler open-source
        platform cybersecurity malware hacker password gadget device robot drone sensor
        battery display touchscreen keyboard silicon datacenter bug patch""",
    "science": """research experiment laboratory scientist physics chemistry biology molecule
        protein genome cell telescope galaxy planet orbit asteroid quantum particle electron
        fossil species evolution climate ocean glacier volcano earthquake hypothesis theory
        journal peer-reviewed specimen microscope enzyme bacteria virus vaccine neutron
        isotope spectrum satellite expedition geology""",
    "business": """market stock shares investor earnings revenue profit quarterly dividend
        merger acquisition ceo shareholder bank loan interest inflation economy trade export
        import tariff currency bond portfolio retail supplier consumer demand forecast
        bankruptcy startup valuation ipo venture capital audit accounting fiscal budget
        layoffs payroll commodity oil""",
    "health": """patient doctor nurse hospital clinic treatment therapy diagnosis symptom
        disease infection surgery medicine prescription dose vaccine diet nutrition exercise
        sleep stress anxiety depression heart blood pressure diabetes cancer tumor recovery
        wellness pharmacy allergy immune chronic pain rehabilitation screening outbreak
        epidemic hygiene vitamin cholesterol""",
    "travel": """flight airport airline passenger luggage passport visa hotel resort hostel
        booking itinerary destination tourist sightseeing beach island mountain trail hiking
        cruise ferry train station railway road trip journey backpack guidebook museum
        landmark cathedral village coast harbor souvenir currency jetlag boarding terminal
        departure arrival vacation""",
    "food": """recipe kitchen chef restaurant menu dish flavor spice sauce garlic onion
        tomato pasta noodle rice bread bakery oven grill roast fry simmer dessert chocolate
        cheese butter salad soup vegetarian vegan ingredient seasoning tasting dinner lunch
        breakfast brunch coffee tea wine cuisine street-food""",
}

# Words that two topics share: they make short examples ambiguous, as real text is.
SHARED: dict[tuple[str, str], str] = {
    ("technology", "business"): "startup valuation platform growth users subscription",
    ("science", "health"): "study trial researchers vaccine clinical data",
    ("sports", "health"): "injury fitness recovery muscle training",
    ("travel", "food"): "local market street taste tour",
    ("politics", "business"): "tax budget regulation economy trade",
    ("science", "technology"): "data model lab engineers innovation",
}

COMMON_WORDS = """
    the a an of to in on for with by at from about after before over under between into
    through during without within this that these those it its they them their we our you
    your he she his her is are was were be been being has have had do does did will would
    can could should may might must not no yes very more most less many much some any each
    every other another such same new old first last next good great small large big long
    short high low early late recent local national global public private major minor main
    people year years day days week month time times today yesterday tomorrow report reports
    said says told according news officials group team part number way plan plans state city
    country world region area home life work place case point fact change issue issues
    question questions result results level interest value side end start while since
    because although however also still just even only again already often never always then
    now here there where when what which who how why well back up down out off around made
    make makes making took take takes taking gave give gives giving found find seen see
    looked look came come went go going known know thought think expected expect announced
    announce continued continue began begin showed show according statement"""
COMMON = COMMON_WORDS.split()


def make_corpus(n: int = 20_000, seed: int = 0) -> list[dict[str, Any]]:
    """Generate ``n`` labelled examples ``{"text": str, "label": str}``; same seed, same corpus.

    Labels are the topic names in ``TOPICS`` (eight classes, close to balanced). Lengths are
    long-tailed: median about 35 tokens, a tail of several hundred (at most about 1,000 words).
    """
    if n < 1:
        raise TextBatchError(f"corpus size n={n} must be at least 1.")
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)
    topic_words = [TOPICS[t].split() for t in topics]
    shared_words = [[] for _ in topics]
    for (a, b), words in SHARED.items():
        for name in (a, b):
            shared_words[topics.index(name)].extend(words.split())

    labels = rng.integers(len(topics), size=n)
    # Two log-normal regimes: short snippets and long articles (lengths in words).
    is_long = rng.random(n) < 0.08
    words_per_example = np.where(
        is_long,
        rng.lognormal(np.log(170.0), 0.55, size=n),
        rng.lognormal(np.log(26.0), 0.6, size=n),
    )
    words_per_example = np.clip(words_per_example, 3, 1000).astype(np.int64)
    total = int(words_per_example.sum())
    example_of_word = np.repeat(np.arange(n), words_per_example)
    label_of_word = labels[example_of_word]

    # Each word is a topic word (12%), a shared word of the topic (5%) or a common word.
    kind = rng.random(total)
    common = np.array(COMMON, dtype=object)
    words = common[rng.integers(len(COMMON), size=total)]
    for t in range(len(topics)):
        own = label_of_word == t
        topic_pick = own & (kind < 0.12)
        shared_pick = own & (kind >= 0.12) & (kind < 0.17)
        own_vocab = np.array(topic_words[t], dtype=object)
        words[topic_pick] = own_vocab[rng.integers(len(own_vocab), size=int(topic_pick.sum()))]
        if shared_words[t]:
            vocab = np.array(shared_words[t], dtype=object)
            words[shared_pick] = vocab[rng.integers(len(vocab), size=int(shared_pick.sum()))]
    # Sentences end after about 12 words; a few words become numbers.
    ends = rng.random(total) < 1 / 12
    numbers = rng.random(total) < 0.01
    words[numbers] = rng.integers(1, 2030, size=int(numbers.sum())).astype(str)
    words[ends] = words[ends] + "."

    offsets = np.concatenate([[0], np.cumsum(words_per_example)])
    records = []
    for i in range(n):
        text = " ".join(words[offsets[i] : offsets[i + 1]])
        records.append({"text": text[0].upper() + text[1:], "label": topics[labels[i]]})
    return records


def corpus_dataset(n: int = 20_000, seed: int = 0) -> Any:
    """The embedded corpus as a Hugging Face ``datasets.Dataset`` with ``text`` and ``label``."""
    import datasets

    return datasets.Dataset.from_list(make_corpus(n, seed))
