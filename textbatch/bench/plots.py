"""Pictures of a benchmark: the length histogram with the batch boundaries, waste and throughput
per strategy. Needs matplotlib (``pip install textbatch[plot]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from textbatch.files import atomic_write


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
    return path


def plot_results(
    out: Path,
    lengths: np.ndarray,
    results: list[Any],
    max_length: int,
    train: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``lengths.png``, ``waste.png`` and (with training numbers, ``train`` saying how
    they were measured) ``throughput.png``."""
    plt = _pyplot()
    written = [_lengths_plot(plt, out, lengths, results, max_length)]

    figure, axes = plt.subplots(figsize=(8, 4.5))
    names = [r.name for r in results]
    axes.barh(names, [100 * r.waste for r in results], color="#55a868")
    for i, r in enumerate(results):
        axes.text(100 * r.waste, i, f" {r.waste:.1%}", va="center")
    axes.set(xlabel="padding, % of padded tokens", title="Padding waste by strategy")
    axes.set_xlim(0, 100 * max(r.waste for r in results) * 1.18 + 1)
    axes.invert_yaxis()
    figure.tight_layout()
    written.append(_save(figure, out / "waste.png"))
    plt.close(figure)

    if all(r.train_tokens_per_second is not None for r in results):
        written.append(_throughput_plot(plt, out, results, train or {}))
    return written


def _lengths_plot(
    plt: Any, out: Path, lengths: np.ndarray, results: list[Any], max_length: int
) -> Path:
    """The real token lengths, and the widths the bucketed batches pad them to: a second
    histogram (each example counted at its batch's width), so padding shows as the gap."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    bins = np.linspace(0, max(int(lengths.max()), max_length) + 1, 81)
    axes.hist(lengths, bins=bins, color="#4c72b0", label="token lengths (real tokens)")
    bucket = next((r for r in results if r.name == "bucket"), None)
    if bucket is not None:
        widths = np.concatenate([np.full(len(b), lengths[b].max()) for b in bucket.plan])
        axes.hist(
            widths,
            bins=bins,
            histtype="step",
            color="#dd8452",
            linewidth=1.5,
            label=f"padded widths of the {len(bucket.plan):,} bucketed batches",
        )
    axes.axvline(
        max_length, color="black", linestyle="--", linewidth=1,
        label=f"--max-length {max_length} (truncation)",
    )  # fmt: skip
    axes.set_yscale("log")
    axes.set(xlabel="tokens per example", ylabel="examples (log scale)", title="Token lengths")
    axes.legend()
    figure.tight_layout()
    path = _save(figure, out / "lengths.png")
    plt.close(figure)
    return path


def _throughput_plot(plt: Any, out: Path, results: list[Any], train: dict[str, Any]) -> Path:
    """Median training throughput per strategy, with the range of its runs, values on bars."""
    figure, axes = plt.subplots(figsize=(8, 4.8))
    names = [r.name for r in results]
    medians = np.array([r.train_tokens_per_second for r in results])
    low = medians - np.array([min(r.train_runs) for r in results])
    high = np.array([max(r.train_runs) for r in results]) - medians
    axes.barh(names, medians, xerr=[low, high], color="#c44e52", capsize=3)
    fastest = int(np.argmax(medians))
    for i, r in enumerate(results):
        note = "  (within the noise of the fastest)" if r.train_within_noise_of_fastest else ""
        note = "  (fastest)" if i == fastest else note
        axes.text(max(r.train_runs), i, f" {medians[i]:,.0f}{note}", va="center")
    axes.set_xlim(0, max(max(r.train_runs) for r in results) * 1.9)  # room for the notes
    model = train.get("model", "the small classifier")
    steps = train.get("steps", "?")
    if isinstance(steps, int) and any((r.train_steps or steps) < steps for r in results):
        steps = f"up to {steps}"  # a plan with fewer batches trained on all of them
    how = f"{steps} batches x {train.get('repeats', '?')} runs"
    axes.set(
        xlabel="real tokens per second (median; line: min to max of the runs)",
        title=f"Training throughput: {model}\n{how} per strategy, interleaved",
    )
    axes.invert_yaxis()
    figure.tight_layout()
    path = _save(figure, out / "throughput.png")
    plt.close(figure)
    return path
