"""Attention masks for packed rows, shared by the packing collator and the models that read
packed batches."""

from __future__ import annotations

import torch


def block_diagonal_mask(sequence_ids: torch.Tensor) -> torch.Tensor:
    """(R, 1, W, W) bool: a token may attend to the tokens of its own sequence; row padding
    (sequence id -1) attends only to itself, so that no softmax row is empty."""
    same = sequence_ids[:, :, None] == sequence_ids[:, None, :]  # (R, W, W)
    real = (sequence_ids >= 0)[:, :, None]
    own = torch.eye(sequence_ids.shape[1], dtype=torch.bool, device=sequence_ids.device)
    return ((same & real) | own).unsqueeze(1)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``allowed`` (bool, True where a token may attend) as the additive float mask that every
    attention implementation of a Hugging Face model reads alike: 0 where a token may attend,
    the lowest value of ``dtype`` where it may not. sdpa reads a bool 4-D mask, but eager
    attention adds a mask to the scores: a bool one adds 1 or 0 and blocks nothing."""
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill_(~allowed, torch.finfo(dtype).min)
