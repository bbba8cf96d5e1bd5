"""The one rule that splits a stream's records between ranks and DataLoader workers."""

from __future__ import annotations

import os

import pytest
import torch

from textbatch import TextBatchError
from textbatch.distributed import resolve_rank, shard_records, this_shard


@pytest.mark.parametrize(
    ("num_replicas", "rank", "expected"),
    [(1, 0, [0, 1, 2, 3, 4, 5, 6]), (2, 0, [0, 2, 4, 6]), (2, 1, [1, 3, 5]), (3, 2, [2, 5])],
)
def test_ranks_take_records_round_robin(num_replicas, rank, expected):
    assert this_shard(num_replicas, rank) == (num_replicas, rank)  # the main process
    assert [p for p, _ in shard_records("abcdefg", num_replicas, rank)] == expected


def test_positions_continue_from_start():
    # A resumed source hands out records from position 5 on: the split keeps counting there.
    assert list(shard_records("xyz", 2, 1, start=5)) == [(5, "x"), (7, "z")]


class Positions(torch.utils.data.IterableDataset):
    """Which positions of a 12-record stream each worker of a rank takes, and its settings."""

    def __init__(self, num_replicas, rank):
        self.num_replicas, self.rank = num_replicas, rank

    def __iter__(self):
        for position, _ in shard_records(range(12), self.num_replicas, self.rank):
            parallel = os.environ.get("TOKENIZERS_PARALLELISM")
            yield position, this_shard(self.num_replicas, self.rank), parallel


def test_workers_split_each_ranks_share(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    seen = {}
    for rank in range(2):
        loader = torch.utils.data.DataLoader(Positions(2, rank), batch_size=None, num_workers=2)
        for position, shard, parallel in loader:
            assert position not in seen
            seen[position] = tuple(shard)
            assert parallel == "false"  # the tokenizers' thread pool is off in workers
    # rank r, worker w of 2 ranks x 2 workers: stride 4, offset 2r + w; every position once
    assert seen == {p: (4, p % 4) for p in range(12)}
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"  # the main process keeps its pool


@pytest.mark.parametrize(
    ("num_replicas", "rank", "message"),
    [
        (0, 0, "num_replicas=0 must be a positive int"),
        (True, 0, "num_replicas=True must be a positive int"),
        (2, 2, r"rank=2 must be an int in \[0, num_replicas=2\)"),
        (2, -1, "rank=-1 must be a non-negative int"),
    ],
)
def test_bad_ranks(num_replicas, rank, message):
    with pytest.raises(TextBatchError, match=message):
        resolve_rank(num_replicas, rank)
