"""fit() and evaluate(): a short training loop on CPU, CUDA or several processes (DDP).

AdamW with linear warm-up and decay, gradient clipping and accumulation, mixed precision on
CUDA, a checkpoint per epoch (and every ``checkpoint_every`` steps) that resumes exactly where it
stopped, mid-epoch included. Only rank 0 prints and writes.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from textbatch.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from textbatch.errors import TextBatchError
from textbatch.io import write_json


class TrainingDiverged(TextBatchError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------------- set-up


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when present (this rank's GPU under torchrun), else the CPU."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TextBatchError(f"device={str(device)!r} but CUDA is not available; use 'cpu'.")
    return device


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def is_main_process() -> bool:
    """True on rank 0, or when not distributed."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def init_distributed(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes (NCCL on CUDA, gloo on CPU), if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_available() and dist.is_initialized()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    return True


def _autocast(device: torch.device, amp: bool) -> Any:
    if device.type != "cuda" or not amp:
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _uses_fp16(device: torch.device, amp: bool) -> bool:
    return device.type == "cuda" and amp and not torch.cuda.is_bf16_supported()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch; ``non_blocking`` overlaps the copy with compute from pinned memory."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


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


def _tokens(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(real tokens, padded tokens) of a padded or packed batch."""
    padded = batch["input_ids"].numel()
    if "sequence_ids" in batch:  # packed: row padding has sequence id -1
        return int((batch["sequence_ids"] >= 0).sum()), padded
    mask = batch.get("attention_mask")
    return (int(mask.sum()) if mask is not None else padded), padded


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# ---------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: Any, device: str | torch.device = "auto", amp: bool = True
) -> dict[str, float]:
    """Accuracy, macro-F1 (over the classes present in labels or predictions) and mean loss per
    example, over all ranks' shares of ``loader``."""
    device = resolve_device(device)
    model.to(device).eval()
    num_labels = _unwrap(model).num_labels
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.float64, device=device)
    loss_sum = 0.0
    for batch in loader:
        batch = to_device(batch, device)
        if "labels" not in batch:
            raise TextBatchError("the evaluation data has no labels; give it a label column.")
        with _autocast(device, amp):
            out = model(**batch)
        loss_sum += float(out.loss) * len(batch["labels"])
        predicted = out.logits.argmax(-1)
        confusion += torch.bincount(
            batch["labels"] * num_labels + predicted, minlength=num_labels**2
        ).reshape(num_labels, num_labels)
    if dist.is_available() and dist.is_initialized():
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


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module, loader: Any, device: str | torch.device = "auto"
) -> Iterator[torch.Tensor]:
    """Class probabilities (B, num_labels) for each batch of ``loader``, in its order."""
    device = resolve_device(device)
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
    lr: float = 1e-3,
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
) -> list[dict[str, Any]]:
    """Train ``model`` on ``train_loader`` for ``epochs`` epochs; return the history.

    Args:
        lr, weight_decay: AdamW's; the rate warms up linearly over the first ``warmup``
            fraction of steps, then decays linearly to 0.
        max_grad_norm: clip gradients to this norm (None: no clipping).
        grad_accum: batches per optimizer step.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        amp: mixed precision on CUDA (bfloat16 where supported, else float16 with loss
            scaling); ignored on the CPU.
        out_dir: where ``history.json`` and ``checkpoints/`` go (rank 0 writes); None writes
            nothing.
        resume: continue from the newest checkpoint in ``out_dir``, exactly where it stopped.
        checkpoint_every: also checkpoint every this many optimizer steps (mid-epoch).
        stop_after_steps: stop (with a checkpoint) after this many optimizer steps in all;
            the schedule still spans every epoch, so a resumed run ends as an unbroken one.
        seed: seeds Python, numpy and torch (dropout); the sampler has its own seed.
        progress: show a progress bar with the loss, tokens per second and padding.
        log: print a line per epoch (and when resuming).
        batches_per_epoch: for a loader without a length (a stream), about how many batches an
            epoch holds, so that the learning-rate schedule knows its span.

    The history holds one record per epoch: ``train_loss`` (mean per sequence), the
    evaluation's ``eval_accuracy``, ``eval_macro_f1`` and ``eval_loss``, ``seconds``,
    ``tokens_per_second`` (real tokens) and ``padding`` (share of padded positions).
    On the CPU the same seed gives the same result.
    """
    for name, value in (("epochs", epochs), ("grad_accum", grad_accum)):
        if not isinstance(value, int) or value < 1:
            raise TextBatchError(f"{name}={value!r} must be a positive int.")
    if resume and out_dir is None:
        raise TextBatchError("resume=True needs out_dir, where the checkpoints are.")
    device = resolve_device(device)
    set_seed(seed)
    main = is_main_process()
    model.to(device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    try:
        known = len(train_loader)
    except TypeError:  # a stream
        known = None
    if known is None and dist.is_available() and dist.is_initialized():
        raise TextBatchError(
            "a stream cannot promise every rank the same number of batches, and DDP would hang "
            "on the rank that runs out first; train on a map-style dataset across ranks."
        )
    if batches_per_epoch is None:
        if known is None:
            raise TextBatchError(
                "train_loader has no length (a stream); pass batches_per_epoch=<about how many "
                "batches an epoch holds> so that the learning-rate schedule knows its span."
            )
        batches_per_epoch = known
    steps_per_epoch = math.ceil(batches_per_epoch / grad_accum)
    total_steps = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(_parameter_groups(model, weight_decay), lr=lr)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, round(warmup * total_steps), total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=_uses_fp16(device, amp))
    objects = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    options = {"epochs": epochs, "lr": lr, "grad_accum": grad_accum, "batches": batches_per_epoch}
    checkpoints = None if out_dir is None else Path(out_dir) / "checkpoints"

    state: dict[str, Any] = {"epoch": 0, "position": 0, "step": 0, "history": [], "meter": None}
    resumed_rng = None
    if resume and checkpoints is not None and (path := latest_checkpoint(checkpoints)):
        state, resumed_rng = load_checkpoint(path, _unwrap(model), objects)
        _check_options(state.get("options", {}), options, path)
        sampler = _batch_sampler(train_loader)
        if sampler is not None and state.get("sampler") is not None:
            sampler.load_state_dict(state["sampler"])
        if main and log:
            print(f"resuming from {path} (epoch {state['epoch'] + 1}, step {state['step']})")

    epoch_rng: dict[str, Any] = {}  # the RNG states when the current epoch began

    def checkpoint(meter: dict[str, float] | None) -> None:
        if checkpoints is None or not main:
            return
        sampler = _batch_sampler(train_loader)
        saved = {
            **state,
            "options": options,
            "meter": meter,
            "sampler": None if sampler is None else sampler.state_dict(position=state["position"]),
        }
        now = rng_states()
        rng = {"now": now, "epoch_start": epoch_rng if state["position"] else now}
        save_checkpoint(checkpoints, state["step"], _unwrap(model), objects, saved, rng)

    def optimizer_step(meter: dict[str, float], started: float) -> bool:
        """Step, count, checkpoint when due; True when training should stop here."""
        _optimizer_step(model, optimizer, scheduler, scaler, max_grad_norm)
        state["step"] += 1
        stop = stop_after_steps is not None and state["step"] >= stop_after_steps
        if stop or (checkpoint_every and state["step"] % checkpoint_every == 0):
            # The saved meter counts the time so far; the live one adds it at the epoch's end.
            checkpoint({**meter, "seconds": meter["seconds"] + time.perf_counter() - started})
        return stop

    for epoch in range(state["epoch"], epochs):
        _set_epoch(train_loader, epoch)
        if resumed_rng is not None:  # the epoch's first draws as they were, e.g. its order
            set_rng_states(resumed_rng["epoch_start"])
        epoch_rng = rng_states()
        iterator = iter(train_loader)
        if state["position"] and _batch_sampler(train_loader) is None:
            for _ in range(state["position"]):  # no sampler state: replay the order
                next(iterator)
        if resumed_rng is not None:  # then carry on from where the run stopped
            set_rng_states(resumed_rng["now"])
            resumed_rng = None
        meter = state["meter"] or {"loss": 0.0, "sequences": 0.0, "real": 0.0, "padded": 0.0}
        meter.setdefault("seconds", 0.0)
        started = time.perf_counter()
        model.train()
        bar = _progress(progress and main, batches_per_epoch - state["position"], epoch, epochs)
        accumulated = 0
        for batch in iterator:
            real, padded = _tokens(batch)  # on the CPU, before the copy
            batch = to_device(batch, device)
            sync = accumulated + 1 == grad_accum or state["position"] + 1 == batches_per_epoch
            with _no_sync(model, sync), _autocast(device, amp):
                loss = model(**batch).loss
            if loss is None:
                raise TextBatchError("training batches need labels; give the data a label column.")
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {float(loss.detach())} at epoch {epoch + 1}, step "
                    f"{state['step']}; training stopped. Lower the learning rate (lr={lr}), "
                    "keep gradient clipping on (max_grad_norm), or check the data for empty "
                    "examples."
                )
            with _no_sync(model, sync):
                scaler.scale(loss / grad_accum).backward()
            accumulated += 1
            state["position"] += 1
            sequences = len(batch["labels"]) if "labels" in batch else len(batch["input_ids"])
            meter["loss"] += float(loss.detach()) * sequences
            meter["sequences"] += sequences
            meter["real"] += real
            meter["padded"] += padded
            if bar is not None:
                _show(bar, meter, meter["seconds"] + time.perf_counter() - started)
            if sync:
                accumulated = 0
                if optimizer_step(meter, started):
                    if bar is not None:
                        bar.close()
                    return state["history"]
        stopped = bool(accumulated) and optimizer_step(meter, started)  # a stream's last one
        if bar is not None:
            bar.close()
        if stopped:
            return state["history"]
        meter["seconds"] += time.perf_counter() - started
        record = _epoch_record(epoch, meter, device)
        if eval_loader is not None:
            metrics = evaluate(model, eval_loader, device, amp)
            record.update({f"eval_{k}": v for k, v in metrics.items() if k != "examples"})
        state["history"].append(record)
        state.update(epoch=epoch + 1, position=0, meter=None)
        if main:
            if log:
                print(_describe(record, epochs))
            if out_dir is not None:
                write_json(Path(out_dir) / "history.json", state["history"])
        checkpoint(None)
    return state["history"]


def _show(bar: Any, meter: dict[str, float], elapsed: float) -> None:
    """The progress bar's step: running loss, real tokens per second, padding so far."""
    bar.update(1)
    bar.set_postfix(
        loss=f"{meter['loss'] / meter['sequences']:.4f}",
        tok_s=f"{meter['real'] / max(elapsed, 1e-9):,.0f}",
        pad=f"{1 - meter['real'] / meter['padded']:.1%}",
    )


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and embeddings."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        plain = parameter.ndim < 2 or "embed" in name or "norm" in name.lower()
        (no_decay if plain else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
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


def _check_options(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    differences = [
        f"{k}={saved.get(k)!r} in the checkpoint, {v!r} now"
        for k, v in current.items()
        if saved.get(k) != v
    ]
    if differences:
        raise TextBatchError(
            f"cannot resume from {str(path)!r}: " + "; ".join(differences) + ". Resume with the "
            "options the run started with, or start afresh in another --out directory."
        )


def _epoch_record(epoch: int, meter: dict[str, float], device: torch.device) -> dict[str, Any]:
    loss, sequences, real, padded = _all_reduce(
        [meter["loss"], meter["sequences"], meter["real"], meter["padded"]], device
    )
    seconds = meter["seconds"]
    return {
        "epoch": epoch + 1,
        "train_loss": loss / max(sequences, 1),
        "seconds": seconds,
        "tokens_per_second": real / max(seconds, 1e-9),
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
    return line + (
        f" | {record['seconds']:.1f} s, {record['tokens_per_second']:,.0f} tokens/s, "
        f"padding {record['padding']:.1%}"
    )


def _progress(enabled: bool, total: int, epoch: int, epochs: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
