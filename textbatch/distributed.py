"""``torch.distributed`` helpers: who am I, and how many of us are there."""

from __future__ import annotations

from textbatch.errors import TextBatchError


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of ``torch.distributed`` when it is initialised, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_rank(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(rank, num_replicas)``: the given values, else those of the process group, checked."""
    default_rank, default_world = world()
    num_replicas = default_world if num_replicas is None else num_replicas
    rank = default_rank if rank is None else rank
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise TextBatchError(f"num_replicas={num_replicas!r} must be a positive int.")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
        raise TextBatchError(f"rank={rank!r} must be an int in [0, num_replicas={num_replicas}).")
    return rank, num_replicas


def barrier() -> None:
    """Wait for every rank (a no-op when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
