"""Build a DataLoader for a TextDataset with a batching strategy chosen by name."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from textbatch.collate import PackingCollator, PaddingCollator
from textbatch.distributed import resolve_rank
from textbatch.errors import TextBatchError
from textbatch.sampling import BucketBatchSampler

SAMPLERS = ("bucket", "random", "sorted")


def make_loader(
    dataset: Any,
    collate: PaddingCollator | PackingCollator,
    *,
    sampler: str = "bucket",
    batch_size: int | None = None,
    max_tokens: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    device: torch.device | None = None,
    drop_last: bool = False,
    packing_capacity: int | None = None,
) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` with one of the strategies in ``SAMPLERS``:

    - ``"bucket"``: ``BucketBatchSampler`` (batch size and/or token budget; 32 examples when
      neither is given), reshuffled per epoch when ``shuffle``; sorted by length otherwise.
    - ``"random"``: shuffled batches of ``batch_size``, padded to their longest example (what
      ``DataLoader(shuffle=True)`` gives; ``DistributedSampler`` across ranks).
    - ``"sorted"``: a full sort by length, the same every epoch.

    With ``packing_capacity`` (bucket sampler only) the sampler plans packed rows of that many
    tokens, ``max_tokens`` per batch, for a ``PackingCollator`` of the same capacity.
    Memory is pinned when ``device`` is a GPU, for non-blocking copies.
    """
    if sampler not in SAMPLERS:
        raise TextBatchError(f"sampler={sampler!r} must be one of {', '.join(SAMPLERS)}.")
    if batch_size is None and max_tokens is None:
        batch_size = 32
    if packing_capacity is not None:
        if sampler != "bucket":
            raise TextBatchError(
                "packing is planned by the 'bucket' sampler; use sampler='bucket'."
            )
        if getattr(collate, "capacity", None) != packing_capacity:
            raise TextBatchError(
                f"pack with PackingCollator(capacity={packing_capacity}) to lay the planned rows "
                f"out, not {collate!r}."
            )
        batch_size = None
    pin = device is not None and device.type == "cuda"
    options = {"collate_fn": collate, "num_workers": num_workers, "pin_memory": pin}
    if num_workers:
        options["persistent_workers"] = False
    if sampler == "random":
        if max_tokens is not None:
            raise TextBatchError(
                "a token budget (max_tokens) needs batches of similar length: use the 'bucket' "
                "or 'sorted' sampler, or give batch_size."
            )
        if batch_size is None:
            raise TextBatchError("the 'random' sampler needs batch_size.")
        rank, replicas = resolve_rank(None, None)
        # DistributedSampler (also for one process): a seeded order per epoch, via set_epoch.
        order = DistributedSampler(dataset, replicas, rank, shuffle=shuffle, seed=seed)
        batches = BatchSampler(order, batch_size, drop_last=drop_last)
        return DataLoader(dataset, batch_sampler=batches, **options)
    batches = BucketBatchSampler(
        dataset.lengths,
        batch_size=batch_size,
        max_tokens=max_tokens,
        shuffle=shuffle and sampler == "bucket",
        seed=seed,
        drop_last=drop_last,
        pad_to_multiple_of=collate.pad_to_multiple_of,
        packing_capacity=packing_capacity,
        oversized="truncate"
        if packing_capacity is not None and getattr(collate, "overlong", None) == "truncate"
        else "error",
    )
    return DataLoader(dataset, batch_sampler=batches, **options)
