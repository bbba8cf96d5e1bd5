"""Functions run in spawned processes by the distributed tests (they must be importable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


def gloo_sampler_worker(rank: int, world_size: int, folder: str) -> None:
    """Join a gloo group and save this rank's batches of one epoch, by size and by tokens."""
    from textbatch import BucketBatchSampler

    path = Path(folder)
    dist.init_process_group(
        "gloo", init_method=f"file://{path / 'rendezvous'}", rank=rank, world_size=world_size
    )
    try:
        lengths = np.load(path / "lengths.npy")
        by_size = BucketBatchSampler(lengths, batch_size=16)  # rank and world from the group
        by_tokens = BucketBatchSampler(lengths, max_tokens=2048)
        assert (by_size.rank, by_size.num_replicas) == (rank, world_size)
        counts = torch.tensor([len(by_size), len(by_tokens)])
        gathered = [torch.zeros_like(counts) for _ in range(world_size)]
        dist.all_gather(gathered, counts)  # the ranks agree on the number of batches
        assert all(torch.equal(g, counts) for g in gathered)
        torch.save({"size": list(by_size), "tokens": list(by_tokens)}, path / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
