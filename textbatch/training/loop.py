"""fit() and evaluate(): a short training loop on CPU, CUDA or several processes (DDP).

AdamW with linear warm-up and decay, gradient clipping and accumulation, mixed precision on
CUDA, a checkpoint per epoch (and every ``checkpoint_every`` steps) that resumes exactly where it
stopped, mid-epoch included. Only rank 0 prints and writes.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from textbatch.batching.budget import BudgetCheck
from textbatch.checks import positive_float, positive_int
from textbatch.distributed import is_main_process, world
from textbatch.errors import TextBatchError
from textbatch.files import write_json
from textbatch.models.classifiers import BackboneClassifier
from textbatch.training.checkpoint import (
    checkpoint_folders,
    checkpoint_name,
    find_checkpoint,
    load_checkpoint,
    read_trainer_state,
    remove_leftovers,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from textbatch.training.defaults import BACKBONE_HEAD_LR, BACKBONE_LR, SCRATCH_LR
from textbatch.training.threads import (
    ThreadWatch,
    candidate_threads,
    choose_threads,
    user_chose_threads,
)


class TrainingDiverged(TextBatchError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------------- set-up


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else the CPU. ``"cuda"`` without an index is this rank's
    GPU under torchrun (``LOCAL_RANK``), as with ``"auto"``."""
    if str(device) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TextBatchError(f"device={str(device)!r} but CUDA is not available; use 'cpu'.")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(device: torch.device, amp: bool) -> Any:
    if device.type != "cuda" or not amp:
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _uses_fp16(device: torch.device, amp: bool) -> bool:
    return device.type == "cuda" and amp and not torch.cuda.is_bf16_supported()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch's tensors (other values, e.g. the ints of ``hf_names`` packing, stay as
    they are); ``non_blocking`` overlaps the copy with compute from pinned memory."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def _set_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader's batch sampler, sampler and (streamed) dataset which epoch it is."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    holders = [batch_sampler, getattr(batch_sampler, "sampler", None)]
    holders += [getattr(loader, "sampler", None), getattr(loader, "dataset", None)]
    for holder in holders:
        if hasattr(holder, "set_epoch"):
            holder.set_epoch(epoch)


def _batch_sampler(loader: Any) -> Any:
    sampler = getattr(loader, "batch_sampler", None)
    return sampler if hasattr(sampler, "state_dict") else None


def _typical_batch(loader: Any, first: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch to time thread counts on: with a ``BucketBatchSampler``, its epoch's batch at
    the median of padded tokens (``typical_batch``), fetched and collated as the loader would,
    beside the loader's own iterator (nothing consumed from it); else ``first``, the epoch's
    first batch. Batches of 3 and of 500 short examples time differently, and a run's time goes
    where most of its tokens are."""
    sampler = _batch_sampler(loader)
    dataset, collate = getattr(loader, "dataset", None), getattr(loader, "collate_fn", None)
    if not callable(getattr(sampler, "typical_batch", None)) or dataset is None or collate is None:
        return first
    indices = sampler.typical_batch()
    getitems = getattr(dataset, "__getitems__", None)  # as torch's fetcher reads a batch
    with torch.random.fork_rng(devices=[]):  # a collate that draws leaves training's draws alone
        examples = getitems(indices) if callable(getitems) else [dataset[i] for i in indices]
        return collate(examples)


def _tokens(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(real tokens, padded tokens) of a padded or packed batch."""
    padded = batch["input_ids"].numel()
    if "sequence_ids" in batch:  # packed: row padding has sequence id -1
        return int((batch["sequence_ids"] >= 0).sum()), padded
    mask = batch.get("attention_mask")
    return (int(mask.sum()) if mask is not None else padded), padded


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    if world()[1] == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# ---------------------------------------------------------------------- evaluation


def evaluate(
    model: torch.nn.Module, loader: Any, device: str | torch.device = "auto", amp: bool = True
) -> dict[str, float]:
    """Accuracy, macro-F1 (over the classes present in labels or predictions) and mean loss per
    example, over all ranks' shares of ``loader``: under DDP each example counts once, not the
    repeats that keep the ranks' batch counts even. The model is evaluated in eval mode and
    left in the mode each of its modules was in (a loop of one's own that evaluates each epoch
    trained on without dropout)."""
    with _modes_kept(model):
        return _evaluate(model, loader, resolve_device(device), amp)


@contextmanager
def _modes_kept(model: torch.nn.Module) -> Iterator[None]:
    """Put every module's train or eval mode back after the block: one ``model.train(flag)``
    would not, where a pretrained backbone is in eval mode under a head in train mode."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def _evaluate(
    model: torch.nn.Module, loader: Any, device: torch.device, amp: bool
) -> dict[str, float]:
    model.to(device).eval()
    num_labels = _unwrap(model).num_labels
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.float64, device=device)
    loss_sum = 0.0
    first_uses = _FirstUses(loader) if world()[1] > 1 else None
    for k, batch in enumerate(loader):
        batch = to_device(batch, device)
        if "labels" not in batch:
            raise TextBatchError("the evaluation data has no labels; give it a label column.")
        with _autocast(device, amp):
            logits = model(**batch).logits
        labels = batch["labels"]
        losses = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
        predicted = logits.argmax(-1)
        if first_uses is not None and (keep := first_uses.mask(k)) is not None:
            keep = torch.from_numpy(keep).to(device)
            labels, predicted, losses = labels[keep], predicted[keep], losses[keep]
        loss_sum += float(losses.sum())
        confusion += torch.bincount(
            labels * num_labels + predicted, minlength=num_labels**2
        ).reshape(num_labels, num_labels)
    if world()[1] > 1:
        dist.all_reduce(confusion)
    (loss_sum,) = _all_reduce([loss_sum], device)
    confusion = confusion.cpu()
    examples = float(confusion.sum())
    if examples == 0:
        raise TextBatchError("the evaluation data yielded no batches.")
    true_positive = confusion.diag()
    support, predicted = confusion.sum(1), confusion.sum(0)
    present = (support + predicted) > 0
    f1 = 2 * true_positive / (support + predicted).clamp(min=1)
    return {
        "accuracy": float(true_positive.sum() / examples),
        "macro_f1": float(f1[present].mean()),
        "loss": loss_sum / examples,
        "examples": int(examples),
    }


class _FirstUses:
    """Which examples of each of this rank's evaluation batches are their first use over all
    ranks: samplers repeat a few examples so that every rank gets as many batches."""

    def __init__(self, loader: Any) -> None:
        from torch.utils.data import BatchSampler, DistributedSampler

        self.sampler = getattr(loader, "batch_sampler", None)
        self.masks: list[np.ndarray] | None = None
        self.distributed = None
        if isinstance(self.sampler, BatchSampler) and isinstance(
            self.sampler.sampler, DistributedSampler
        ):
            self.distributed = self.sampler.sampler

    def mask(self, k: int) -> np.ndarray | None:
        """Batch ``k``'s mask (None: keep every example)."""
        if self.masks is None:
            if hasattr(self.sampler, "first_uses"):
                # Read once the pass has begun, when the sampler knows the epoch it plays.
                self.masks = self.sampler.first_uses()
            elif self.distributed is not None:
                self.masks = _distributed_first_uses(self.distributed, self.sampler.batch_size)
            else:
                self.masks = []
        return self.masks[k] if k < len(self.masks) else None


def _distributed_first_uses(sampler: Any, batch_size: int) -> list[np.ndarray]:
    """``DistributedSampler`` pads its index list with its first examples; rank ``r`` takes
    positions ``r, r + R, ...``, so its uses past the dataset's size are repeats."""
    positions = sampler.rank + sampler.num_replicas * np.arange(sampler.num_samples)
    first = positions < len(sampler.dataset)
    return [first[i : i + batch_size] for i in range(0, len(first), batch_size)]


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module, loader: Any, device: str | torch.device = "auto"
) -> Iterator[torch.Tensor]:
    """Class probabilities (B, num_labels) for each batch of ``loader``, in its order, in eval
    mode (every module's mode put back once the batches are read, as :func:`evaluate`)."""
    device = resolve_device(device)
    with _modes_kept(model):
        model.to(device).eval()
        for batch in loader:
            batch = to_device({k: v for k, v in batch.items() if k != "labels"}, device)
            yield torch.softmax(model(**batch).logits.float(), dim=-1).cpu()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


# ---------------------------------------------------------------------- training


def fit(
    model: torch.nn.Module,
    train_loader: Any,
    eval_loader: Any = None,
    *,
    epochs: int = 3,
    lr: float | None = None,
    head_lr: float | None = None,
    weight_decay: float = 0.01,
    warmup: float = 0.06,
    max_grad_norm: float | None = 1.0,
    grad_accum: int = 1,
    device: str | torch.device = "auto",
    amp: bool = True,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    stop_after_steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: bool = True,
    batches_per_epoch: int | None = None,
    config: dict[str, Any] | None = None,
    on_epoch_end: Callable[[list[dict[str, Any]], torch.nn.Module], None] | None = None,
    threads: int | str | None = "auto",
) -> list[dict[str, Any]]:
    """Train ``model`` on ``train_loader`` for ``epochs`` epochs; return the history.

    Args:
        lr, weight_decay: AdamW's peak learning rate and weight decay; the rate warms up
            linearly over the first ``warmup`` fraction of steps, then decays linearly to 0.
            ``lr=None`` takes :func:`default_learning_rates`: 1e-3 for a model trained from
            scratch, a small rate for a pretrained backbone (1e-3 would wreck it).
        head_lr: the peak learning rate of the layers a ``BackboneClassifier`` puts on its
            backbone (``head_module()``): a new head learns faster than the pretrained
            encoder should move. None: ``lr`` (or the default head rate with ``lr=None``).
        max_grad_norm: clip gradients to this norm (None: no clipping).
        grad_accum: batches per optimizer step. Every sequence weighs the same in a step,
            whatever the batch sizes, accumulation or ranks: the loss is summed over the
            step's sequences and divided by their count over all ranks.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        amp: mixed precision on CUDA (bfloat16 where supported, else float16 with loss
            scaling); ignored on the CPU.
        out_dir: where ``history.json`` and ``checkpoints/`` go (rank 0 writes); None writes
            nothing. A run that does not resume refuses a folder that holds checkpoints.
        resume: continue from the newest valid checkpoint in ``out_dir``, exactly where it
            stopped (from the start when there is none). A damaged newest checkpoint is passed
            over with a warning; a checkpoint made with other data, batches or options is
            refused with what differs.
        checkpoint_every: also checkpoint every this many optimizer steps (mid-epoch).
        stop_after_steps: stop (with a checkpoint) after this many optimizer steps in all;
            the schedule still spans every epoch, so a resumed run ends as an unbroken one.
        seed: seeds Python, numpy and torch (dropout); the sampler has its own seed.
        progress: show a progress bar with the loss, tokens per second and padding.
        log: print a line per epoch (and when resuming).
        batches_per_epoch: for a loader without a length (a stream), about how many batches an
            epoch holds, so that the learning-rate schedule knows its span.
        config: plain JSON data that also decides the run (e.g. the data file's digest, the
            evaluation split); a resume with a different ``config`` is refused.
        on_epoch_end: called on rank 0 as ``on_epoch_end(history, model)`` after each epoch's
            evaluation (``history[-1]`` is that epoch's record) and before its checkpoint, so
            that what it writes (e.g. the best model so far) is never behind a checkpoint.
        threads: torch's intra-op threads on the CPU for the run (put back afterwards).
            ``"auto"``: time a few passes of a typical batch at torch's thread count and at
            fewer, and train with the fastest; measured again every 30 s or more, so that a
            process that starts or stops is followed (``textbatch.training.threads``). A
            resumed run goes on with the count of its checkpoint until its first measurement
            30 s in. It does nothing when the
            environment sets ``OMP_NUM_THREADS`` (or another OpenMP thread variable), on CUDA
            and across ranks. An int: that many. None: torch's setting as it is.

    The history holds one record per epoch: ``train_loss`` (mean per sequence), the
    evaluation's ``eval_accuracy``, ``eval_macro_f1`` and ``eval_loss``, ``seconds`` (the
    epoch's training time, evaluation left out), ``thread_seconds`` (of those seconds, the time
    ``threads="auto"`` spent measuring), ``tokens_per_second`` (real tokens per second of
    training, the measuring left out, so that runs compare on their batches alone), ``padding``
    (share of padded positions) and ``threads``. On the CPU the same seed and thread count
    give the same result, and a resumed run the same as an unbroken one.
    """
    positive_int("epochs", epochs, allow_none=False)
    positive_int("grad_accum", grad_accum, allow_none=False)
    positive_int("checkpoint_every", checkpoint_every)
    positive_int("stop_after_steps", stop_after_steps)
    positive_int("batches_per_epoch", batches_per_epoch)
    if resume and out_dir is None:
        raise TextBatchError("resume=True needs out_dir, where the checkpoints are.")
    _check_threads(threads)
    device = resolve_device(device)
    set_seed(seed)
    main = is_main_process()
    model.to(device)
    if world()[1] > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    given = batches_per_epoch
    batches_per_epoch = _epoch_length(train_loader, given)  # raises for a stream without it
    epoch_lengths = _epoch_lengths(train_loader, epochs)  # None for a stream
    # Every epoch's steps: under a token budget epochs differ by a batch or two, and a
    # schedule sized from the first would end before a longer run does (learning rate 0).
    scheduled = epoch_lengths if given is None and epoch_lengths else [batches_per_epoch] * epochs
    total_steps = sum(math.ceil(n / grad_accum) for n in scheduled)
    if lr is None:
        lr, default_head = default_learning_rates(model)
        head_lr = default_head if head_lr is None else head_lr
    positive_float("lr", lr)
    positive_float("head_lr", head_lr)
    optimizer = torch.optim.AdamW(_parameter_groups(model, weight_decay, lr, head_lr), lr=lr)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, round(warmup * total_steps), total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=_uses_fp16(device, amp))
    objects = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    options = {
        "epochs": epochs,
        "lr": lr,
        "head_lr": head_lr,
        "weight_decay": weight_decay,
        "warmup": warmup,
        "max_grad_norm": max_grad_norm,
        "grad_accum": grad_accum,
        "batches": batches_per_epoch,
        "seed": seed,
    }
    identity = {
        "options": options,
        "train": describe_loader(train_loader),
        "eval": None if eval_loader is None else describe_loader(eval_loader),
        "config": config or {},
    }
    generators = _loader_generators(train_loader)
    checkpoints = None if out_dir is None else Path(out_dir) / "checkpoints"
    run = _Run(model, objects, train_loader, generators, checkpoints, identity, main, epoch_lengths)

    resumed_rng = None
    if checkpoints is not None:
        if resume:
            resumed_rng = run.resume(log)
        elif checkpoint_folders(checkpoints):
            raise TextBatchError(
                f"{str(checkpoints)!r} already holds checkpoints of an earlier run; continue it "
                "with resume=True (--resume), or train into another output directory."
            )
        if main:
            remove_leftovers(checkpoints)
    state = run.state
    stepper = _Stepper(
        model,
        optimizer,
        scheduler,
        total_steps,
        scaler,
        max_grad_norm,
        grad_accum,
        device,
        amp,
        log and main,
    )
    original_threads = torch.get_num_threads()
    try:
        stepper.watch = _start_threads(threads, device, state)
        for epoch in range(state["epoch"], epochs):
            _set_epoch(train_loader, epoch)
            iterator = run.start_epoch(resumed_rng)
            resumed_rng = None
            meter = state["meter"] or {"loss": 0.0, "sequences": 0.0, "real": 0.0, "padded": 0.0}
            meter.setdefault("seconds", 0.0)
            meter.setdefault("thread_seconds", 0.0)
            length = batches_per_epoch if epoch_lengths is None else epoch_lengths[epoch]
            bar = _progress(progress and main, length - state["position"], epoch, epochs)
            stopped = _train_epoch(
                run, stepper, iterator, meter, bar, stop_after_steps, checkpoint_every
            )
            if stopped:
                break
            record = {**_epoch_record(epoch, meter, device), "threads": state["threads"]}
            if eval_loader is not None:
                metrics = evaluate(model, eval_loader, device, amp)
                record.update({f"eval_{k}": v for k, v in metrics.items() if k != "examples"})
            state["history"].append(record)
            state.update(epoch=epoch + 1, position=0, meter=None)
            if main:
                if log:
                    print(_describe(record, epochs))
                if on_epoch_end is not None:
                    on_epoch_end(state["history"], _unwrap(model))
                if out_dir is not None:
                    write_json(Path(out_dir) / "history.json", state["history"])
            run.save(None)
    finally:
        torch.set_num_threads(original_threads)
    return state["history"]


@dataclass
class _Stepper:
    """One optimizer step: forward and backward over a step's batches, then clip, step and
    schedule."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    schedule_steps: int  # optimizer steps the learning-rate schedule spans
    scaler: Any
    max_grad_norm: float | None
    grad_accum: int
    device: torch.device
    amp: bool
    log: bool
    watch: ThreadWatch | None = None  # threads="auto": when to measure the thread count
    timing_batch: dict[str, torch.Tensor] | None = None  # the batch it times

    def step(self, window: list[dict[str, torch.Tensor]], meter: dict[str, float], where: str):
        _train_window(self.model, window, self.scaler, self.device, self.amp, meter, where)
        _optimizer_step(self.model, self.optimizer, self.scheduler, self.scaler, self.max_grad_norm)

    def choose_threads(self, loader: Any, batch: dict[str, torch.Tensor], current: int | None):
        """Measure which thread count trains fastest (``threads="auto"``), set it and return
        it: on the epoch's typical batch (``_typical_batch``; ``batch``, the step's first,
        without one), kept for later measurements. ``current``: the count trained with so far
        (None at the run's start). The passes leave the model, its gradients and the RNG as
        they were."""
        assert self.watch is not None
        if self.timing_batch is None:
            typical = _typical_batch(loader, batch)
            _sequences(typical)  # a batch without labels fails here as it would in training
            self.timing_batch = to_device(typical, self.device)
        timed, available = self.timing_batch, self.watch.available
        with _leaving_no_trace(self.model):
            choice = choose_threads(
                lambda: _backward_pass(self.model, timed),
                candidate_threads(available),
                torch.set_num_threads,
            )
        self.watch.measured(choice)
        if self.log and choice.threads != (current or available):
            print(choice.describe(available, current))
        return choice.threads


def _train_epoch(
    run: _Run,
    stepper: _Stepper,
    iterator: Iterator[Any],
    meter: dict[str, float],
    bar: Any,
    stop_after_steps: int | None,
    checkpoint_every: int | None,
) -> bool:
    """Train on the rest of an epoch, checkpointing when due; True when training stops here
    (``stop_after_steps``). Adds the epoch's time to ``meter["seconds"]``."""
    state = run.state
    started = time.perf_counter()
    stepper.model.train()
    try:
        for window in _windows(iterator, stepper.grad_accum):
            if stepper.watch is not None and stepper.watch.due():  # threads="auto"
                measuring = time.perf_counter()
                state["threads"] = stepper.choose_threads(run.loader, window[0], state["threads"])
                meter["thread_seconds"] += time.perf_counter() - measuring
            where = f"epoch {state['epoch'] + 1}, step {state['step'] + 1}"
            stepper.step(window, meter, where)
            state["step"] += 1
            if state["step"] == stepper.schedule_steps + 1 and run.main:
                warnings.warn(
                    f"optimizer step {state['step']} is past the {stepper.schedule_steps} steps "
                    "the learning-rate schedule spans, so it and the steps after it train at "
                    "learning rate 0: the stream holds more batches than batches_per_epoch "
                    "said; pass a larger batches_per_epoch.",
                    stacklevel=2,
                )
            state["position"] += len(window)
            elapsed = meter["seconds"] + time.perf_counter() - started
            if bar is not None:
                _show(bar, len(window), meter, elapsed)
            stop = stop_after_steps is not None and state["step"] >= stop_after_steps
            if stop or (checkpoint_every and state["step"] % checkpoint_every == 0):
                # The saved meter counts the time so far; the live one adds it at the epoch's end.
                run.save({**meter, "seconds": elapsed})
            if stop:
                return True
    finally:
        if bar is not None:
            bar.close()
    meter["seconds"] += time.perf_counter() - started
    return False


class _Run:
    """A run's progress (epoch, position in it, optimizer steps, history) and what saving and
    resuming it needs: checkpoints, RNG states, the identity a resume must match."""

    def __init__(
        self,
        model: torch.nn.Module,
        objects: dict[str, Any],
        loader: Any,
        generators: dict[str, torch.Generator],
        checkpoints: Path | None,
        identity: dict[str, Any],
        main: bool,
        epoch_lengths: list[int] | None,
    ) -> None:
        self.model, self.objects, self.loader = model, objects, loader
        self.epoch_lengths = epoch_lengths  # batches of each epoch (None: a stream)
        self.generators, self.checkpoints = generators, checkpoints
        self.identity, self.main = identity, main
        self.state: dict[str, Any] = {
            "epoch": 0,
            "position": 0,  # batches of the current epoch consumed
            "step": 0,  # optimizer steps
            "history": [],
            "meter": None,
            "threads": None,  # torch's thread count for the run (fit's threads)
            "run_id": uuid.uuid4().hex,
        }
        self.epoch_rng: dict[str, Any] = {}  # the RNG states when the current epoch began
        self.order_restored = False  # the loader continues from a saved state (no replay)

    def resume(self, log: bool) -> dict[str, Any] | None:
        """Load the newest valid checkpoint, if any; return this rank's RNG states from it."""
        assert self.checkpoints is not None
        path = find_checkpoint(self.checkpoints)
        if path is None:
            if self.main and log:
                print(f"no checkpoint in {self.checkpoints}: starting from the beginning")
            return None
        _check_identity(read_trainer_state(path).get("identity"), self.identity, path)
        self.state, rng = load_checkpoint(path, _unwrap(self.model), self.objects)
        if isinstance(self.state.get("meter"), list):  # each rank's own totals (a dict: older)
            self.state["meter"] = self.state["meter"][world()[0]]
        self.order_restored = _load_order_state(self.loader, self.state.get("order"))
        if self.main and log:
            epoch, step = self.state["epoch"] + 1, self.state["step"]
            print(f"resuming from {path} (epoch {epoch}, step {step})")
        return rng[world()[0]]

    def start_epoch(self, resumed_rng: dict[str, Any] | None) -> Iterator[Any]:
        """The epoch's batch iterator, positioned and with RNG states as an unbroken run has
        them: a resume replays the epoch's start (e.g. the DataLoader's seed draw), then carries
        on from the saved states."""
        if resumed_rng is not None:
            set_rng_states(resumed_rng["epoch_start"], self.generators)
        self.epoch_rng = rng_states(self.generators)
        position = self.state["position"]
        lengths = self.epoch_lengths
        if position and lengths is not None and position == lengths[self.state["epoch"]]:
            # Stopped after the epoch's last batch: nothing is left of it. (A StatefulDataLoader
            # applies a loaded state at its next iter(), which would move on to the next epoch.)
            iterator: Iterator[Any] = iter(())
        else:
            iterator = iter(self.loader)
            if position and not self.order_restored:
                for _ in range(position):  # no state of the order: replay it
                    next(iterator)
        if resumed_rng is not None and position:
            set_rng_states(resumed_rng["now"], self.generators)
        return iterator

    def save(self, meter: dict[str, float] | None) -> None:
        """Checkpoint the run (rank 0 writes; every rank gives its RNG states)."""
        if self.checkpoints is None:
            return
        now = rng_states(self.generators)
        at_start = not self.state["position"]
        rng = _gather({"now": now, "epoch_start": now if at_start else self.epoch_rng})
        # every rank's running totals of the epoch (rank 0's alone, restored on every rank,
        # counted its part twice and the others' never in a resumed epoch's record)
        meters = None if meter is None else _gather(meter)
        if not self.main:
            return
        saved = {
            **self.state,
            "meter": meters,
            "identity": self.identity,
            "order": _order_state(self.loader, self.state["position"]),
        }
        name = checkpoint_name(self.state["step"], end_of_epoch=at_start)
        save_checkpoint(self.checkpoints, name, _unwrap(self.model), self.objects, saved, rng)


def _order_state(loader: Any, position: int) -> dict[str, Any] | None:
    """What continues the loader's order after ``position`` batches, through the
    ``state_dict`` protocol: the loader's own state (torchdata's ``StatefulDataLoader``), else
    its batch sampler's; None when neither has one (a resume then replays the order)."""
    if callable(getattr(loader, "state_dict", None)):
        return {"loader": loader.state_dict()}
    sampler = _batch_sampler(loader)
    if sampler is not None:
        return {"sampler": sampler.state_dict(position=position)}
    return None


def _load_order_state(loader: Any, state: dict[str, Any] | None) -> bool:
    """Restore what :func:`_order_state` saved; True when the loader continues from it."""
    if state is None:
        return False
    if "loader" in state:
        if not callable(getattr(loader, "load_state_dict", None)):
            raise TextBatchError(
                "the checkpoint holds a stateful loader's state (torchdata's StatefulDataLoader)"
                f" but the loader is a {type(loader).__name__}; resume with the same loader."
            )
        loader.load_state_dict(state["loader"])
    else:
        sampler = _batch_sampler(loader)
        if sampler is None:
            raise TextBatchError(
                "the checkpoint holds a batch sampler's state but the loader has no resumable "
                "batch sampler; resume with the same loader."
            )
        sampler.load_state_dict(state["sampler"])
    return True


def _windows(iterator: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """The batches of each optimizer step: ``size`` at a time, the last step what is left."""
    while window := list(itertools.islice(iterator, size)):
        yield window


def _train_window(
    model: torch.nn.Module,
    window: list[dict[str, torch.Tensor]],
    scaler: Any,
    device: torch.device,
    amp: bool,
    meter: dict[str, float],
    where: str,
) -> None:
    """Forward and backward passes over one optimizer step's batches.

    Each batch's loss (a mean over its sequences) is scaled to its share of the step's sequences
    over all ranks, so that the gradient is the mean over every sequence of the step, as one
    batch of them all would give (DDP then averages over ranks, hence the world size)."""
    counts = [_sequences(batch) for batch in window]
    (total,) = _all_reduce([float(sum(counts))], device)
    _, size = world()
    for i, (batch, count) in enumerate(zip(window, counts, strict=True)):
        real, padded = _tokens(batch)  # on the CPU, before the copy
        batch = to_device(batch, device)
        with _no_sync(model, sync=i == len(window) - 1):
            with _autocast(device, amp):
                loss = model(**batch).loss
            if loss is None:
                raise TextBatchError("training batches need labels; give the data a label column.")
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {float(loss.detach())} at {where}; training stopped. "
                    "Lower the learning rate (lr), keep gradient clipping on (max_grad_norm), or "
                    "check the data for empty examples."
                )
            scaler.scale(loss * (count * size / total)).backward()
        meter["loss"] += float(loss.detach()) * count
        meter["sequences"] += count
        meter["real"] += real
        meter["padded"] += padded


def _check_threads(threads: Any) -> None:
    valid = threads is None or threads == "auto"
    valid |= isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1
    if not valid:
        raise TextBatchError(
            f"threads={threads!r} must be 'auto' (measure at the start), a positive int or None "
            "(leave torch's setting)."
        )


def _start_threads(
    threads: int | str | None, device: torch.device, state: dict[str, Any]
) -> ThreadWatch | None:
    """Set torch's thread count for the run and record it in ``state["threads"]`` (None there:
    ``"auto"`` measures it at the first batch). Returns when ``"auto"`` measures, or None."""
    available = torch.get_num_threads()
    measurable = threads == "auto" and device.type == "cpu" and world()[1] == 1
    measurable = measurable and not user_chose_threads() and available > 1
    if isinstance(threads, int):
        torch.set_num_threads(threads)
    elif threads == "auto" and state.get("threads"):
        torch.set_num_threads(state["threads"])  # a resumed run: what its checkpoint trained with
        return ThreadWatch(available).later() if measurable else None
    elif measurable:
        state["threads"] = None
        return ThreadWatch(available)
    state["threads"] = torch.get_num_threads()
    return None


@contextmanager
def _leaving_no_trace(model: torch.nn.Module) -> Iterator[None]:
    """Passes that change nothing: dropout off, the RNG and every gradient put back after."""
    gradients = [(parameter, parameter.grad) for parameter in model.parameters()]
    with _modes_kept(model):
        model.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                yield
        finally:
            for parameter, gradient in gradients:
                parameter.grad = gradient


def _backward_pass(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()


def _sequences(batch: dict[str, torch.Tensor]) -> int:
    if "labels" not in batch:
        raise TextBatchError("training batches need labels; give the data a label column.")
    return len(batch["labels"])


def _length(loader: Any) -> int | None:
    """Batches per epoch, or None for a stream."""
    try:
        return len(loader)
    except TypeError:
        return None


def _epoch_lengths(loader: Any, epochs: int) -> list[int] | None:
    """Batches of each of the run's epochs, as the loader will yield them (None for a stream):
    a ``BucketBatchSampler`` under a token budget plans every epoch to count them."""
    sampler = getattr(loader, "batch_sampler", None)
    if callable(getattr(sampler, "epoch_lengths", None)):
        return sampler.epoch_lengths(epochs)
    known = _length(loader)
    return None if known is None else [known] * epochs


def _epoch_length(loader: Any, batches_per_epoch: int | None) -> int:
    known = _length(loader)
    if known is None and world()[1] > 1:
        raise TextBatchError(
            "a stream cannot promise every rank the same number of batches, and DDP would hang "
            "on the rank that runs out first; train on a map-style dataset across ranks."
        )
    if batches_per_epoch is not None:
        return batches_per_epoch
    if known is None:
        raise TextBatchError(
            "train_loader has no length (a stream); pass batches_per_epoch=<about how many "
            "batches an epoch holds> so that the learning-rate schedule knows its span."
        )
    return known


def _loader_generators(loader: Any) -> dict[str, torch.Generator]:
    """The DataLoader's own random generators (its worker seeds, a RandomSampler's order)."""
    found: dict[str, torch.Generator] = {}
    for name, holder in (("loader", loader), ("sampler", getattr(loader, "sampler", None))):
        generator = getattr(holder, "generator", None)
        if isinstance(generator, torch.Generator) and all(
            generator is not g for g in found.values()
        ):
            found[name] = generator
    return found


def describe_loader(loader: Any) -> dict[str, Any]:
    """Plain data that decides a loader's batches: the data's content digest, how examples are
    ordered and batched, and the collator. Two loaders with the same description give the same
    batches."""
    from torch.utils.data import BatchSampler

    dataset = getattr(loader, "dataset", None)
    description: dict[str, Any] = {
        "data": f"{DIGEST_SCHEME}:{dataset.content_digest()}"
        if hasattr(dataset, "content_digest")
        else type(dataset).__name__,
        "examples": len(dataset) if hasattr(dataset, "__len__") else None,
    }
    batch_sampler = getattr(loader, "batch_sampler", None)
    if hasattr(batch_sampler, "state_dict") and hasattr(batch_sampler, "plan"):
        description["batches"] = {
            "kind": type(batch_sampler).__name__,
            **batch_sampler.state_dict(position=0)["options"],
        }
    elif isinstance(batch_sampler, BatchSampler):
        description["batches"] = {
            "kind": "BatchSampler",
            "batch_size": batch_sampler.batch_size,
            "drop_last": batch_sampler.drop_last,
            "order": _describe_order(batch_sampler.sampler),
        }
    else:
        description["batches"] = {"kind": type(batch_sampler).__name__}
    collate = getattr(loader, "collate_fn", None)
    if isinstance(collate, BudgetCheck):  # make_loader's check around the caller's collator
        collate = collate.collate
    own = type(collate).__module__.startswith("textbatch")
    description["collate"] = (
        repr(collate) if own else getattr(collate, "__qualname__", type(collate).__qualname__)
    )
    return description


def _describe_order(sampler: Any) -> dict[str, Any]:
    from torch.utils.data import DistributedSampler, RandomSampler

    if isinstance(sampler, DistributedSampler):
        return {
            "kind": "DistributedSampler",
            "shuffle": sampler.shuffle,
            "seed": sampler.seed,
            "num_replicas": sampler.num_replicas,
            "drop_last": sampler.drop_last,
        }
    if isinstance(sampler, RandomSampler):
        return {
            "kind": "RandomSampler",
            "replacement": sampler.replacement,
            "num_samples": sampler.num_samples,
        }
    return {"kind": type(sampler).__name__}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


# What a loader description's data digest is: TextDataset.content_digest of the examples alone.
# Older checkpoints hold a bare digest that also hashed the Arrow chunks.
DIGEST_SCHEME = "examples-xxh3"


def _older_digest(saved: Any, now: Any) -> bool:
    """Whether a checkpoint's data digest ``saved`` is of the older scheme, beside ``now``'s."""
    return (
        isinstance(saved, str)
        and isinstance(now, str)
        and now.startswith(f"{DIGEST_SCHEME}:")
        and len(saved) == 32
        and ":" not in saved
    )


def _check_identity(saved: dict[str, Any] | None, current: dict[str, Any], path: Path) -> None:
    """Refuse to resume a run whose data, batches or options differ, naming each difference."""
    if saved is None:
        raise TextBatchError(
            f"cannot resume from {str(path)!r}: it was written by an older textbatch that did "
            "not record the run's data and options; start afresh in another output directory."
        )
    old, new = _flatten(saved), _flatten(current)
    differences = []
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k, "<none>") != new.get(k, "<none>")]
    # The caller's own options (``config``, e.g. the command line's flags), or else another
    # world size, explain the options and batches derived from them, which are left out.
    own = any(k.startswith("config.") for k in keys)
    ranks = [] if own else [k for k in keys if k.endswith("num_replicas")]
    if ranks:
        before, now = old[ranks[0]], new[ranks[0]]
        differences.append(
            f"it was written by {before} processes (ranks) and this run has {now}; resume with "
            f"{before} (torchrun --nproc-per-node {before})"
        )
    if own or ranks:
        keys = [k for k in keys if k.startswith("config.") or k.endswith(".data")]
    for key in keys:
        before, now = old.get(key, "<none>"), new.get(key, "<none>")
        name = key.removeprefix("options.")
        if key.endswith(".data") and _older_digest(before, now):
            differences.append(
                "it was written by an older textbatch, whose digest of the data also hashed how "
                "Arrow had stored the rows (until 2026-12-05), so this one cannot tell the data "
                "are the same; resume with the textbatch that wrote it"
            )
        elif key.endswith(".data"):
            what = "training" if key.startswith("train") else "evaluation"
            differences.append(
                f"the {what} data differ from the checkpoint's (other rows, order, split or "
                "tokenizer)"
            )
        else:
            differences.append(f"{name}={before!r} in the checkpoint, {now!r} now")
    differences = list(dict.fromkeys(differences))  # the same words for train and eval once
    if differences:
        raise TextBatchError(
            f"cannot resume from {str(path)!r}: " + "; ".join(differences) + ". Resume with the "
            "data and options the run started with, or start afresh in another output directory."
        )


def _gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, by rank, on rank 0 (other ranks get a list they do not use)."""
    rank, size = world()
    if size == 1:
        return [obj]
    gathered: list[Any] = [None] * size
    dist.gather_object(obj, gathered if rank == 0 else None, dst=0)
    return gathered


def _show(bar: Any, batches: int, meter: dict[str, float], elapsed: float) -> None:
    """The progress bar's step: running loss, real tokens per second, padding so far."""
    bar.update(batches)
    bar.set_postfix(
        loss=f"{meter['loss'] / meter['sequences']:.4f}",
        tok_s=f"{meter['real'] / max(elapsed - meter['thread_seconds'], 1e-9):,.0f}",
        pad=f"{1 - meter['real'] / meter['padded']:.1%}",
    )


def default_learning_rates(model: torch.nn.Module) -> tuple[float, float | None]:
    """The (body, head) peak learning rates ``fit`` uses when given none: for a
    ``BackboneClassifier``, :data:`BACKBONE_LR` for the pretrained encoder and
    :data:`BACKBONE_HEAD_LR` for its new head; else :data:`SCRATCH_LR` for every parameter."""
    if isinstance(_unwrap(model), BackboneClassifier):
        return BACKBONE_LR, BACKBONE_HEAD_LR
    return SCRATCH_LR, None


def _parameter_groups(
    model: torch.nn.Module, weight_decay: float, lr: float, head_lr: float | None
) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and embeddings; ``head_lr`` for the parameters of the
    model's ``head_module()`` (when it has one and ``head_lr`` is given)."""
    inner = _unwrap(model)
    head = set()
    if head_lr is not None and hasattr(inner, "head_module"):
        head = {id(p) for p in inner.head_module().parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        plain = parameter.ndim < 2 or "embed" in name or "norm" in name.lower()
        groups.setdefault((id(parameter) in head, plain), []).append(parameter)
    return [
        {
            "params": params,
            "weight_decay": 0.0 if plain else weight_decay,
            "lr": head_lr if in_head else lr,
        }
        for (in_head, plain), params in sorted(groups.items())
    ]


def _no_sync(model: torch.nn.Module, sync: bool) -> Any:
    if not sync and hasattr(model, "no_sync"):
        return model.no_sync()  # DDP: gradients are averaged once, at the optimizer step
    return nullcontext()


def _optimizer_step(model, optimizer, scheduler, scaler, max_grad_norm) -> None:
    if max_grad_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _epoch_record(epoch: int, meter: dict[str, float], device: torch.device) -> dict[str, Any]:
    loss, sequences, real, padded = _all_reduce(
        [meter["loss"], meter["sequences"], meter["real"], meter["padded"]], device
    )
    seconds, measuring = meter["seconds"], meter.get("thread_seconds", 0.0)
    return {
        "epoch": epoch + 1,
        "train_loss": loss / max(sequences, 1),
        "seconds": seconds,
        "thread_seconds": measuring,
        "tokens_per_second": real / max(seconds - measuring, 1e-9),
        "padding": 1 - real / max(padded, 1),
        "real_tokens": int(real),
        "padded_tokens": int(padded),
    }


def _describe(record: dict[str, Any], epochs: int) -> str:
    line = f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f}"
    if "eval_accuracy" in record:
        line += (
            f", eval accuracy {record['eval_accuracy']:.4f}, macro-F1 "
            f"{record['eval_macro_f1']:.4f}, loss {record['eval_loss']:.4f}"
        )
    measuring = record["thread_seconds"]
    seconds = f"{record['seconds']:.1f} s"
    if measuring >= 0.05:
        seconds += f" ({measuring:.1f} s of it choosing threads)"
    return line + (
        f" | {seconds}, {record['tokens_per_second']:,.0f} tokens/s, "
        f"padding {record['padding']:.1%}"
    )


def _progress(enabled: bool, total: int, epoch: int, epochs: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
