"""``torch.distributed`` helpers: who am I, how many of us are there, and which records of a
stream are mine."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

from textbatch.checks import non_negative_int, positive_int
from textbatch.errors import TextBatchError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


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
    num_replicas = positive_int("num_replicas", num_replicas, allow_none=False)
    if non_negative_int("rank", rank) >= num_replicas:
        raise TextBatchError(f"rank={rank!r} must be an int in [0, num_replicas={num_replicas}).")
    return int(rank), num_replicas


def dataloader_worker() -> tuple[int, int]:
    """``(worker, num_workers)`` of this ``DataLoader`` worker process; ``(0, 1)`` outside one.

    In a worker it also turns the tokenizers' Rust thread pool off for this process
    (``TOKENIZERS_PARALLELISM=false``): the pool is not fork-safe, so workers tokenise serially.
    """
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    if info is None:
        return 0, 1
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return info.id, info.num_workers


def this_shard(num_replicas: int, rank: int) -> tuple[int, int]:
    """``(stride, offset)`` of this process's share of a stream split round-robin between
    ``num_replicas`` ranks and, within each rank, between its ``DataLoader`` workers: record
    ``i`` (counting from 0) is this process's when ``i % stride == offset``, so every record
    goes to exactly one process."""
    worker, workers = dataloader_worker()
    return num_replicas * workers, rank * workers + worker


def shard_records(
    records: Iterable[T], num_replicas: int, rank: int, start: int = 0
) -> Iterator[tuple[int, T]]:
    """``(position, record)`` for this process's records (see :func:`this_shard`), where
    ``records`` is the stream from position ``start`` on (a resumed source)."""
    stride, offset = this_shard(num_replicas, rank)
    for position, record in enumerate(records, start=start):
        if position % stride == offset:
            yield position, record


def barrier() -> None:
    """Wait for every rank (a no-op when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def is_main_process() -> bool:
    """True on rank 0, or when not distributed."""
    return world()[0] == 0


def init_distributed(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes (NCCL on CUDA, gloo on CPU), if any."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_available() and dist.is_initialized()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    return True


def is_hf_iterable(source: object) -> bool:
    """True for a ``datasets.IterableDataset``, which splits itself between ``DataLoader``
    workers (by its shards), but not between ranks unless split by node."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        return False
    return isinstance(source, datasets.IterableDataset)


def hf_rank_share(source: T, num_replicas: int, rank: int) -> T:
    """This rank's share of a ``datasets.IterableDataset``, by
    ``datasets.distributed.split_dataset_by_node``; ``source`` as it is on one rank, or when it
    was split by node already (as that rank of that many, which must agree with ``rank`` and
    ``num_replicas`` where those are more than one: split again, it lost examples)."""
    split = getattr(source, "_distributed", None)
    if split is not None:
        if num_replicas > 1 and (split.rank, split.world_size) != (rank, num_replicas):
            raise TextBatchError(
                f"the datasets.IterableDataset was split by node as rank {split.rank} of "
                f"{split.world_size}, but this is rank {rank} of {num_replicas}: split it as "
                "this rank, or pass it unsplit (textbatch splits it)."
            )
        return source
    if num_replicas == 1:
        return source
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(source, rank=rank, world_size=num_replicas)
