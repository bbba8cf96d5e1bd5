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
        dist.barrier()  # both ranks done before the group is torn down
    finally:
        dist.destroy_process_group()


def ddp_fit_worker(
    rank: int, world_size: int, folder: str, out: str = "out", stop_after_steps: int | None = None
) -> None:
    """Train the small classifier with fit() in a 2-process gloo group on the CPU, into
    ``folder/out`` (resuming whatever is there; stopping after ``stop_after_steps``)."""
    import json

    from textbatch import PaddingCollator, TextDataset, load_tokenizer
    from textbatch.batching.loaders import make_loader
    from textbatch.models.classifiers import TextClassifier
    from textbatch.training.loop import fit

    path = Path(folder)
    dist.init_process_group(
        "gloo", init_method=f"file://{path / 'rendezvous'}", rank=rank, world_size=world_size
    )
    try:
        tokenizer = load_tokenizer(path / "tokenizer")
        records = json.loads((path / "data.json").read_text())
        train = TextDataset.from_records(records[:300], tokenizer)
        evaluation = TextDataset.from_records(
            records[300:], tokenizer, label_names=train.label_names
        )
        collate = PaddingCollator.from_tokenizer(tokenizer)
        train_loader = make_loader(train, collate, batch_size=16)
        eval_loader = make_loader(evaluation, collate, batch_size=32, shuffle=False)
        torch.manual_seed(0)
        model = TextClassifier(len(tokenizer), train.num_labels, dim=32)
        history = fit(
            model,
            train_loader,
            eval_loader,
            epochs=2,
            lr=1e-2,
            out_dir=path / out,
            resume=True,
            checkpoint_every=4,
            stop_after_steps=stop_after_steps,
            progress=False,
        )
        for record in history:
            for timing in ("seconds", "thread_seconds", "tokens_per_second"):
                record.pop(timing)
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(
            {"weights": weights, "history": history, "batches": len(train_loader)},
            path / f"{out}-rank{rank}.pt",
        )
        dist.barrier()  # both ranks done before the group is torn down
    finally:
        dist.destroy_process_group()
