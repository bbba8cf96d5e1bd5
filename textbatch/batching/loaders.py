"""Build a DataLoader for a TextDataset with a batching strategy chosen by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from textbatch.batching.budget import BudgetCheck
from textbatch.batching.sampler import BucketBatchSampler
from textbatch.checks import non_negative_int, positive_int
from textbatch.distributed import resolve_rank
from textbatch.errors import TextBatchError

SAMPLERS = ("bucket", "random", "sorted")
# The BucketBatchSampler options that only a packing plan takes.
PACKING_OPTIONS = ("packing_capacity", "oversized")


def sampler_options(collate: Callable[..., Any]) -> dict[str, Any]:
    """The ``BucketBatchSampler`` keyword arguments that ``collate`` asks for through its
    ``sampler_options()`` (``PaddingCollator``, ``PackingCollator``); none for a plain
    function, which gets the sampler's defaults."""
    ask = getattr(collate, "sampler_options", None)
    return dict(ask()) if callable(ask) else {}


def make_loader(
    dataset: Any,
    collate: Callable[..., Any],
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
    - ``"random"``: batches of ``batch_size`` in random order (dataset order when not
      ``shuffle``), whatever their lengths: what ``DataLoader(shuffle=True)`` gives
      (``DistributedSampler`` across ranks).
    - ``"sorted"``: a full sort by length, the same every epoch.

    ``collate`` is a ``PaddingCollator``, a ``PackingCollator`` or any ``collate_fn``; the
    bucket and sorted samplers take the options that it asks for with ``sampler_options()``
    (e.g. ``pad_to_multiple_of``, so that a token budget counts padded batches right); a plain
    function asks for none. With ``packing_capacity`` (bucket sampler only) the sampler plans
    packed rows of that many tokens, ``max_tokens`` per batch, for a ``PackingCollator`` of the
    same capacity; without it, a ``PackingCollator`` packs each batch as it comes.
    Memory is pinned when ``device`` is a GPU, for non-blocking copies (never run on a GPU
    yet). The loader has its own random generator, seeded by ``seed``.
    """
    if sampler not in SAMPLERS:
        raise TextBatchError(f"sampler={sampler!r} must be one of {', '.join(SAMPLERS)}.")
    batch_size = positive_int("batch_size", batch_size)
    max_tokens = positive_int("max_tokens", max_tokens)
    packing_capacity = positive_int("packing_capacity", packing_capacity)
    seed = non_negative_int("seed", seed)
    num_workers = non_negative_int("num_workers", num_workers)
    if batch_size is None and max_tokens is None:
        batch_size = 32
    wanted = sampler_options(collate)
    if packing_capacity is not None:
        if sampler != "bucket":
            raise TextBatchError(
                "packing is planned by the 'bucket' sampler; use sampler='bucket'."
            )
        if wanted.get("packing_capacity") != packing_capacity:
            raise TextBatchError(
                f"pack with PackingCollator(capacity={packing_capacity}) to lay the planned rows "
                f"out, not {collate!r}."
            )
        batch_size = None
    else:  # padded batches: a PackingCollator packs each as it comes, with no plan to follow
        wanted = {k: v for k, v in wanted.items() if k not in PACKING_OPTIONS}
    pin = device is not None and device.type == "cuda"
    # Its own generator (worker seeds): iterating never draws from the global RNG.
    generator = torch.Generator().manual_seed(seed)
    options = {
        "collate_fn": collate,
        "num_workers": num_workers,
        "pin_memory": pin,
        "generator": generator,
    }
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
        **wanted,
    )
    if max_tokens is not None and packing_capacity is None:
        options["collate_fn"] = budget_checked(collate, batches)
    return DataLoader(dataset, batch_sampler=batches, **options)


def budget_checked(collate: Callable[..., Any], sampler: BucketBatchSampler) -> BudgetCheck:
    """``collate`` with its padded batches checked against ``sampler``'s token budget."""
    options = sampler.options
    return BudgetCheck(
        collate, options.max_tokens, options.pad_to_multiple_of, options.quadratic_length
    )
