"""Per-example transforms applied when examples are read (``TextDataset(transform=...)``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from textbatch.errors import TextBatchError

SEQUENCE_KEYS = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask")


class TokenDropout:
    """Drop each token with probability ``p`` (data augmentation), never the ``keep_ids`` tokens.

    The same tokens leave every sequence key of the example, so ``token_type_ids`` stay aligned.
    Randomness comes from torch's generator, which ``DataLoader`` seeds differently per worker.
    Lists stay lists and numpy arrays stay arrays.
    """

    def __init__(self, p: float, keep_ids: Iterable[int] = ()) -> None:
        if not 0.0 <= p < 1.0:
            raise TextBatchError(f"p={p} must be a probability in [0, 1).")
        self.p = p
        self.keep_ids = np.asarray(sorted(set(keep_ids)), dtype=np.int64)

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        ids = np.asarray(example["input_ids"])
        keep = torch.rand(len(ids)).numpy() >= self.p
        keep |= np.isin(ids, self.keep_ids)
        out = dict(example)
        for key in SEQUENCE_KEYS:
            if key in example:
                values = np.asarray(example[key])[keep]
                out[key] = values.tolist() if isinstance(example[key], list) else values
        return out

    def __repr__(self) -> str:
        return f"TokenDropout(p={self.p}, keep_ids={self.keep_ids.tolist()})"
