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


def plot_results(out: Path, lengths: np.ndarray, results: list[Any], max_length: int) -> list[Path]:
    """Write ``lengths.png``, ``waste.png`` and (with training numbers) ``throughput.png``."""
    plt = _pyplot()
    written = []

    figure, axes = plt.subplots(figsize=(8, 4.5))
    axes.hist(lengths, bins=min(100, int(lengths.max())), color="#4c72b0")
    bucket = next((r for r in results if r.name == "bucket"), None)
    if bucket is not None:  # where bucketed batches cut the distribution: their widths
        widths = sorted({int(lengths[b].max()) for b in bucket.plan})
        for width in widths:
            axes.axvline(width, color="#dd8452", alpha=0.25, linewidth=0.8)
        axes.plot(
            [], [], color="#dd8452", label=f"widths of the {len(bucket.plan)} bucketed batches"
        )
        axes.legend()
    axes.axvline(max_length, color="black", linestyle="--", linewidth=1)
    axes.set(xlabel="tokens per example", ylabel="examples", title="Token lengths")
    written.append(_save(figure, out / "lengths.png"))
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(8, 4.5))
    names = [r.name for r in results]
    axes.barh(names, [100 * r.waste for r in results], color="#55a868")
    for i, r in enumerate(results):
        axes.text(100 * r.waste, i, f" {r.waste:.1%}", va="center")
    axes.set(xlabel="padding, % of padded tokens", title="Padding waste by strategy")
    axes.invert_yaxis()
    figure.tight_layout()
    written.append(_save(figure, out / "waste.png"))
    plt.close(figure)

    if all(r.train_tokens_per_second is not None for r in results):
        figure, axes = plt.subplots(figsize=(8, 4.5))
        axes.barh(names, [r.train_tokens_per_second for r in results], color="#c44e52")
        axes.set(xlabel="real tokens per second (training)", title="Training throughput")
        axes.invert_yaxis()
        figure.tight_layout()
        written.append(_save(figure, out / "throughput.png"))
        plt.close(figure)
    return written
