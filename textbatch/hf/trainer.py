"""BucketTrainer: Hugging Face ``Trainer`` with textbatch's length-bucketed training batches.

The sampler shards by rank itself (every example exactly once per epoch over the ranks, the
same number of steps on every rank), so the training ``DataLoader`` is not handed to
``accelerator.prepare``: Accelerate would shard it a second time (its ``BatchSamplerShard``
deals whole batches round-robin and, for a sampler with a ``batch_size``, drops or repeats the
batches of other sizes). ``Trainer`` moves each batch to the device itself. With a token
budget, every epoch is made as long as the run's longest (``textbatch.hf.steps``), since
``Trainer`` counts an epoch's steps once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments

from textbatch.batching.loaders import budget_checked
from textbatch.batching.sampler import BucketBatchSampler
from textbatch.checks import positive_int
from textbatch.errors import TextBatchError
from textbatch.hf.lengths import token_lengths
from textbatch.hf.steps import EvenSteps, longest_epoch


def collator_rounding(collator: Any) -> int | None:
    """The padded width's rounding of ``collator`` (tokens): textbatch collators say it in
    ``sampler_options()``, Hugging Face's ``DataCollatorWithPadding`` in ``pad_to_multiple_of``."""
    ask = getattr(collator, "sampler_options", None)
    if callable(ask):
        wanted = dict(ask())
        if wanted.get("packing_capacity") is not None:
            raise TextBatchError(
                f"{collator!r} packs rows of a fixed capacity, which needs a packing plan; use "
                "PackingCollator(capacity=None) (one flat row per batch) or make_loader(..., "
                "packing_capacity=...) outside Trainer."
            )
        return wanted.get("pad_to_multiple_of")
    return getattr(collator, "pad_to_multiple_of", None)


def bucket_sampler_for(
    dataset: Any,
    args: TrainingArguments,
    *,
    max_tokens: int | None = None,
    lengths: np.ndarray | None = None,
    collator: Any = None,
    **options: Any,
) -> BucketBatchSampler:
    """A ``BucketBatchSampler`` for training on ``dataset`` with the settings of ``args``.

    From ``args``: ``per_device_train_batch_size`` (examples per batch, unless ``max_tokens``
    is given: then the token budget alone decides, and ``batch_size=`` in ``options`` caps
    it), the seed (``data_seed``, else ``seed``), ``dataloader_drop_last``, and the rank
    layout (``world_size``, ``process_index``). Lengths come from :func:`token_lengths` unless
    given. ``collator`` tells the padded width's rounding (``pad_to_multiple_of``), so that a
    token budget counts padded batches right. Other ``options`` go to ``BucketBatchSampler``.
    """
    max_tokens = positive_int("max_tokens", max_tokens)
    if max_tokens is None:
        options.setdefault("batch_size", args.per_device_train_batch_size)
    if collator is not None:
        options.setdefault("pad_to_multiple_of", collator_rounding(collator))
    seed = args.data_seed if args.data_seed is not None else args.seed
    options.setdefault("seed", seed)
    options.setdefault("drop_last", args.dataloader_drop_last)
    return BucketBatchSampler(
        token_lengths(dataset) if lengths is None else lengths,
        max_tokens=max_tokens,
        num_replicas=max(1, args.world_size),
        rank=args.process_index,
        **options,
    )


def epochs_to_train(args: TrainingArguments, steps: int) -> int:
    """How many epochs (started ones included) ``Trainer`` runs with ``args`` when an epoch
    has ``steps`` batches, or at most that many when epochs may be longer."""
    if args.max_steps > 0:
        updates = -(-steps // args.gradient_accumulation_steps)  # optimizer steps per epoch
        return -(-args.max_steps // updates)
    return math.ceil(args.num_train_epochs)


class BucketDataLoader(DataLoader):
    """A ``DataLoader`` over ``EvenSteps`` whose ``set_epoch`` reaches the sampler, as
    ``Trainer`` calls it at the start of every epoch."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


class EpochToSampler(TrainerCallback):
    """Sets the training batches' epoch at the start of every epoch, from ``state.epoch``
    (whole epochs, or where a resumed checkpoint stands within one).

    ``Trainer`` calls the loader's ``set_epoch`` itself, but on a resume mid-epoch it first
    wraps the loader with accelerate's ``skip_first_batches``, a plain ``DataLoader`` without
    ``set_epoch``. transformers 5.25 then reaches the batch sampler through it; 5.0 did not,
    and the sampler replayed epoch 0's batches in a resumed later epoch."""

    def __init__(self, batches: Callable[[], EvenSteps | None]) -> None:
        self.batches = batches

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        batches = self.batches()
        if batches is not None:
            batches.set_epoch(math.floor(state.epoch or 0))


class BucketTrainer(Trainer):
    """``transformers.Trainer`` whose training batches come from a ``BucketBatchSampler``:
    examples of similar length batched together, reshuffled every epoch, each example once
    per epoch across ranks.

    Takes every argument of ``Trainer``, and:

    Args:
        max_tokens: a token budget per batch and device (examples x padded width) instead of
            ``args.per_device_train_batch_size`` examples.
        lengths: tokens per example of ``train_dataset``; default: ``TextDataset.lengths``, or
            the Arrow offsets of a tokenised ``datasets.Dataset``'s ``input_ids``.
        sampler_options: more ``BucketBatchSampler`` options (``mix``, ``batch_size`` as a cap
            with ``max_tokens``, ``quadratic_length``, ``longest_first``, ...).

    The sampler of the latest training run is ``trainer.train_sampler``. Evaluation and
    prediction keep ``Trainer``'s own loaders, and ``args.train_sampling_strategy`` is not
    used for training.
    """

    def __init__(
        self,
        *args: Any,
        max_tokens: int | None = None,
        lengths: np.ndarray | None = None,
        sampler_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.bucket_max_tokens = positive_int("max_tokens", max_tokens)
        self.bucket_lengths = lengths
        self.bucket_options = dict(sampler_options or {})
        self.train_sampler: BucketBatchSampler | None = None
        self.train_batches: EvenSteps | None = None
        super().__init__(*args, **kwargs)
        self.add_callback(EpochToSampler(lambda: self.train_batches))

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        """The loss of a batch with one label per sequence, weighted so that every sequence
        weighs the same in an optimizer step: the model's mean over the batch's sequences,
        times the batch's sequences over ``num_items_in_batch`` (the step's sequences, over
        every rank with ``average_tokens_across_devices``), as ``Trainer`` expects when it
        passes that count. A sequence classifier of ``transformers`` (or textbatch) takes
        ``**kwargs`` but does not use the count, so ``Trainer`` left its loss per batch and
        did not divide it by the accumulation steps: with ``gradient_accumulation_steps=4``
        every update was 4x the mean gradient, and under a token budget a sequence's weight
        depended on its batch's size. Other labels (per token) and ``compute_loss_func`` or
        label smoothing go to ``Trainer``'s own ``compute_loss``."""
        labels = inputs.get("labels")
        per_sequence = (
            torch.is_tensor(labels)
            and labels.ndim == 1
            and num_items_in_batch is not None
            and self.compute_loss_func is None
            and self.label_smoother is None
        )
        if not per_sequence:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        outputs = model(**inputs)
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs[0]
        loss = loss * labels.ne(-100).sum() / num_items_in_batch
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.accelerator.num_processes  # DDP averages the ranks' gradients
        return (loss, outputs) if return_outputs else loss

    def get_train_dataloader(self) -> DataLoader:
        """The training ``DataLoader``: ``Trainer``'s column handling and worker settings, with
        a ``BucketBatchSampler`` for its batches, not passed through ``accelerator.prepare``."""
        dataset = self.train_dataset
        if dataset is None:
            raise TextBatchError("BucketTrainer needs a train_dataset to train.")
        if isinstance(dataset, torch.utils.data.IterableDataset):
            raise TextBatchError(
                f"a {type(dataset).__name__} has no lengths to bucket ahead of time; use "
                "Trainer with it, or textbatch.BucketedStream in your own loop."
            )
        accelerate = self.args.accelerator_config
        if getattr(accelerate, "dispatch_batches", None) or getattr(
            accelerate, "split_batches", False
        ):
            raise TextBatchError(
                "BucketTrainer shards batches by rank itself; set accelerator_config's "
                "dispatch_batches and split_batches to False (or leave them unset)."
            )
        collator: Callable[..., Any] = self.data_collator
        try:
            import datasets

            is_arrow = isinstance(dataset, datasets.Dataset)
        except ImportError:  # pragma: no cover - datasets is a dependency
            is_arrow = False
        if is_arrow:
            dataset = self._remove_unused_columns(dataset, description="training")
        else:
            collator = self._get_collator_with_removed_columns(collator, description="training")
        options = dict(self.bucket_options)
        if self.bucket_max_tokens is None:
            options.setdefault("batch_size", self._train_batch_size)
        self.train_sampler = bucket_sampler_for(
            dataset,
            self.args,
            max_tokens=self.bucket_max_tokens,
            lengths=self.bucket_lengths,
            collator=self.data_collator,
            **options,
        )
        steps = len(self.train_sampler.planner.plan(0).steps)
        if self.train_sampler.max_tokens is not None:  # epochs differ by a batch or two
            steps = longest_epoch(self.train_sampler, epochs_to_train(self.args, steps))
        batches = self.train_batches = EvenSteps(self.train_sampler, steps)
        if self.train_sampler.max_tokens is not None:
            collator = budget_checked(collator, self.train_sampler)
        return BucketDataLoader(dataset, batch_sampler=batches, **self._loader_options(collator))

    def _loader_options(self, collator: Callable[..., Any]) -> dict[str, Any]:
        """``Trainer``'s ``DataLoader`` settings (workers, pinning, worker seeds)."""
        from transformers.trainer_utils import seed_worker

        args = self.args
        workers = args.dataloader_num_workers
        options: dict[str, Any] = {
            "collate_fn": collator,
            "num_workers": workers,
            "pin_memory": args.dataloader_pin_memory,
            "worker_init_fn": partial(seed_worker, num_workers=workers, rank=args.process_index),
        }
        if workers:
            options["persistent_workers"] = args.dataloader_persistent_workers
            options["prefetch_factor"] = args.dataloader_prefetch_factor
            options["multiprocessing_context"] = args.dataloader_multiprocessing_context
        return options
