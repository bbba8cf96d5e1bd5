"""Training under CPU contention: one epoch of the small Transformer on bucketed and on random
batches, on a quiet machine and beside a busy process, under each OpenMP thread policy.

Small, variable-width batches (what bucketing makes) run many short ops; with OpenMP's default
spin-waiting, a thread that loses its core to another process stalls every op's barrier. This
script measures how much, and which policy avoids it. Each setting runs in a fresh process (the
OpenMP runtime reads its environment once, when torch loads), interleaved and repeated; the
busy process is a bounded loop (it stops at the end of the run, or after --busy-seconds).

Settings (the training process's environment, and fit's ``threads``):
  default      what a plain torch loop gets: torch's thread count, OpenMP spin-waiting
               (fit(threads=None))
  textbatch    what ``fit`` and ``textbatch train`` do by default: fit(threads="auto") times a
               few passes at torch's thread count and at fewer, and trains with the fastest
  passive      OMP_WAIT_POLICY=PASSIVE (threads sleep at a barrier instead of spinning)
  short_spin   GOMP_SPINCOUNT=10000 (spin briefly, then sleep; the default spins 300,000 times)
  one_thread   OMP_NUM_THREADS=1
  fit_one      fit(threads=1): one thread, set by fit after torch has loaded

Run: python benchmarks/contention.py [--examples 6000] [--max-length 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import save

SETTINGS = {  # name: (environment, fit's threads)
    "default": ({}, None),
    "textbatch": ({}, "auto"),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "short_spin": ({"GOMP_SPINCOUNT": "10000"}, None),
    "one_thread": ({"OMP_NUM_THREADS": "1"}, None),
    "fit_one": ({}, "1"),
}


def worker(examples: int, max_length: int, sampler: str, threads: str | None) -> None:
    """One epoch; prints its seconds as JSON (run in a fresh process per setting)."""
    import torch

    from textbatch import PaddingCollator
    from textbatch.batching.loaders import make_loader
    from textbatch.data.prepare import corpus_train_eval
    from textbatch.models.classifiers import TextClassifier
    from textbatch.training.loop import fit

    train, _, tokenizer = corpus_train_eval(size=examples, max_length=max_length)
    loader = make_loader(
        train, PaddingCollator.from_tokenizer(tokenizer), sampler=sampler, batch_size=32
    )
    torch.manual_seed(0)
    model = TextClassifier(
        len(tokenizer), train.num_labels, dim=64, encoder="transformer", num_layers=1,
        max_length=max_length,
    )  # fmt: skip
    history = fit(model, loader, epochs=1, lr=3e-3, progress=False, log=True, threads=threads)
    print(json.dumps({"seconds": history[0]["seconds"], "threads": history[0]["threads"]}))


def busy_loop(seconds: float) -> subprocess.Popen:
    """A process that keeps one core busy for ``seconds`` (or until killed)."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def run_once(name: str, args: argparse.Namespace, sampler: str, busy: bool) -> dict:
    from textbatch.training.threads import USER_THREAD_VARIABLES

    environment, threads = SETTINGS[name]
    env = {k: v for k, v in os.environ.items() if k not in USER_THREAD_VARIABLES}
    env.update(environment)
    command = [sys.executable, __file__, "--worker", sampler, "--examples", str(args.examples)]
    command += ["--max-length", str(args.max_length), "--threads", str(threads)]
    loop = busy_loop(args.busy_seconds) if busy else None
    try:
        started = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - started
    finally:
        if loop is not None:
            loop.kill()
            loop.wait()
    lines = result.stdout.strip().splitlines()
    record = json.loads(lines[-1])
    choice = [line for line in lines if line.startswith("threads: ")]  # fit's log, when it chose
    return {**record, "wall": wall, "choice": choice[0] if choice else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=6000)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy-seconds", type=float, default=600.0)
    parser.add_argument("--samplers", nargs="+", default=["bucket", "random"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/contention.json)")
    args = parser.parse_args()
    if args.worker:
        threads = None if args.threads == "None" else args.threads
        threads = int(threads) if threads and threads.isdigit() else threads
        worker(args.examples, args.max_length, args.worker, threads)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    runs: dict[str, list[float]] = {}
    choices: dict[str, list[str | None]] = {}
    cases = [
        (sampler, name, busy)
        for sampler in args.samplers
        for busy in (False, True)
        for name in args.settings
    ]
    for repeat in range(args.repeats):
        for sampler, name, busy in cases[repeat % len(cases) :] + cases[: repeat % len(cases)]:
            record = run_once(name, args, sampler, busy)
            key = f"{sampler}/{name}/{'busy' if busy else 'quiet'}"
            runs.setdefault(key, []).append(record["seconds"])
            choices.setdefault(key, []).append(record["choice"])
            print(f"{key:28s} {record['seconds']:7.1f} s (threads {record['threads']})", flush=True)
            if record["choice"]:
                print(f"    {record['choice']}", flush=True)

    table = []
    print(
        f"\n{'sampler':8s} {'setting':11s} {'quiet s':>8s} {'busy s':>8s} {'busy/quiet':>10s} "
        f"{'busy/default quiet':>18s}"
    )
    for sampler in args.samplers:
        for name in args.settings:
            quiet = statistics.median(runs[f"{sampler}/{name}/quiet"])
            busy = statistics.median(runs[f"{sampler}/{name}/busy"])
            row = {"sampler": sampler, "setting": name, "quiet": quiet, "busy": busy}
            row["busy_over_quiet"] = busy / quiet
            default_runs = runs.get(f"{sampler}/default/quiet")  # absent unless measured
            default_quiet = statistics.median(default_runs) if default_runs else float("nan")
            row["quiet_over_default_quiet"] = quiet / default_quiet
            row["busy_over_default_quiet"] = busy / default_quiet
            table.append(row)
            print(
                f"{sampler:8s} {name:11s} {quiet:8.1f} {busy:8.1f} {busy / quiet:10.2f} "
                f"{busy / default_quiet:18.2f}"
            )
    save(
        "contention",
        {
            "examples": args.examples,
            "max_length": args.max_length,
            "repeats": args.repeats,
            "settings": SETTINGS,
            "runs": runs,
            "choices": choices,
            "table": table,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
