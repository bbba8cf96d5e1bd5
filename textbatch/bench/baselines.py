"""The batching strategies people use today, as plain index plans to compare textbatch against."""

from __future__ import annotations

import numpy as np

from textbatch.batching.stats import as_lengths


def random_batches(num_examples: int, batch_size: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffled batches of ``batch_size`` indices: what ``DataLoader(shuffle=True)`` gives."""
    order = np.random.default_rng(seed).permutation(num_examples)
    return np.array_split(order, range(batch_size, num_examples, batch_size))


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of a full sort by length: the least padding at a fixed batch size, no randomness."""
    lengths = as_lengths(lengths)
    order = np.argsort(lengths, kind="stable")
    return np.array_split(order, range(batch_size, len(order), batch_size))


def hf_length_grouped_batches(
    lengths: np.ndarray, batch_size: int, seed: int = 0
) -> list[list[int]]:
    """Batches from ``transformers``' ``get_length_grouped_indices`` (``group_by_length``)."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    generator = torch.Generator().manual_seed(seed)
    order = get_length_grouped_indices(
        as_lengths(lengths).tolist(), batch_size, generator=generator
    )
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
