"""Check, in one run on a CUDA machine, the code paths that no CPU test reaches: mixed precision
(bfloat16, and float16 with loss scaling), pinned memory with non-blocking copies, the NCCL
process group (all-reduce, the RNG gather of checkpoints), `--device cuda` picking LOCAL_RANK's
GPU, and a checkpointed resume on the GPU.

    python benchmarks/gpu.py [--out FILE]

Prints one line per check (ok / FAILED and why) and writes them as JSON; exits 1 when a check
failed, 2 when there is no GPU. As of this writing it has never run: no GPU has been lent yet.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import save

CHECKS: list[tuple[str, Callable[[], str]]] = []


def check(fn: Callable[[], str]) -> Callable[[], str]:
    CHECKS.append((fn.__name__, fn))
    return fn


def _setup(max_length: int = 128):
    from textbatch import PaddingCollator
    from textbatch.data.prepare import corpus_train_eval

    train, evaluation, tok = corpus_train_eval(2000, seed=0, max_length=max_length)
    return train, evaluation, tok, PaddingCollator.from_tokenizer(tok)


def _model(tok, num_labels: int):
    from textbatch.models.classifiers import TextClassifier

    torch.manual_seed(0)
    return TextClassifier(len(tok), num_labels, dim=64, encoder="transformer", num_layers=1)


def _fit(amp: bool, **options):
    from textbatch.batching.loaders import make_loader
    from textbatch.training.loop import fit

    train, evaluation, tok, collate = _setup()
    device = torch.device("cuda", 0)
    model = _model(tok, train.num_labels)
    history = fit(
        model,
        make_loader(train, collate, batch_size=32, device=device),
        make_loader(evaluation, collate, batch_size=64, shuffle=False, device=device),
        epochs=2, lr=3e-3, device="cuda", amp=amp, progress=False, log=False, **options,
    )  # fmt: skip
    return model, history


@check
def device_from_local_rank() -> str:
    from textbatch.training.loop import resolve_device

    os.environ["LOCAL_RANK"] = "0"
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    return "cuda -> cuda:0 with LOCAL_RANK=0"


@check
def pinned_memory() -> str:
    from textbatch.batching.loaders import make_loader

    train, _, _, collate = _setup()
    loader = make_loader(train, collate, batch_size=32, device=torch.device("cuda", 0))
    batch = next(iter(loader))
    assert all(t.is_pinned() for t in batch.values()), "batch tensors are not pinned"
    moved = {k: v.to("cuda", non_blocking=True) for k, v in batch.items()}
    torch.cuda.synchronize()
    assert all(torch.equal(moved[k].cpu(), batch[k]) for k in batch)
    return "pinned batches copy to the GPU unchanged"


@check
def bfloat16_training() -> str:
    _, history = _fit(amp=True)
    loss = [h["train_loss"] for h in history]
    assert all(torch.isfinite(torch.tensor(loss))), loss
    assert loss[-1] < loss[0], f"loss did not fall: {loss}"
    accuracy = history[-1]["eval_accuracy"]
    return f"train loss {loss[0]:.3f} -> {loss[-1]:.3f}, eval accuracy {accuracy:.3f}"


@check
def float16_with_loss_scaling() -> str:
    original = torch.cuda.is_bf16_supported
    torch.cuda.is_bf16_supported = lambda *args, **kwargs: False  # take the float16 path
    try:
        _, history = _fit(amp=True)
    finally:
        torch.cuda.is_bf16_supported = original
    loss = [h["train_loss"] for h in history]
    assert loss[-1] < loss[0], f"loss did not fall: {loss}"
    return f"train loss {loss[0]:.3f} -> {loss[-1]:.3f} with GradScaler"


@check
def resume_on_the_gpu() -> str:
    with tempfile.TemporaryDirectory() as folder:
        whole, _ = _fit(amp=False)
        _fit(amp=False, out_dir=folder, stop_after_steps=40)
        resumed, _ = _fit(amp=False, out_dir=folder, resume=True)
    largest = max(
        float((a - b).abs().max())
        for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True)
    )
    # CUDA kernels are not bitwise deterministic: equal in law, close in value.
    assert largest < 1e-2, f"weights differ by up to {largest}"
    return f"resumed weights within {largest:.2e} of an unbroken run"


@check
def nccl_process_group() -> str:
    import torch.distributed as dist

    from textbatch.training.loop import _gather

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29512")
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        value = torch.ones(3, device="cuda")
        dist.all_reduce(value)
        gathered = _gather({"rank": 0})
        assert value.tolist() == [1.0, 1.0, 1.0] and gathered == [{"rank": 0}]
    finally:
        dist.destroy_process_group()
    return "NCCL all_reduce and gather_object with one rank"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON output (default benchmarks/results/gpu.json)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    results = {}
    for name, fn in CHECKS:
        try:
            results[name] = {"ok": True, "detail": fn()}
        except Exception as error:
            results[name] = {"ok": False, "detail": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        print(f"{name:28s} {'ok' if results[name]['ok'] else 'FAILED'}: {results[name]['detail']}")
    save("gpu", {"device": torch.cuda.get_device_name(0), "checks": results}, args.out)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
