"""A check that collated batches keep the token budget their batch sampler planned them for."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from textbatch.batching.planning import batch_cost
from textbatch.errors import TextBatchWarning


class BudgetCheck:
    """``collate`` (any ``collate_fn``), with every padded batch it makes compared to the token
    budget ``max_tokens`` its sampler planned it for, at the width the collator really padded
    it to. The sampler counts widths rounded up with the ``pad_to_multiple_of`` it was told;
    a collator that rounds further (e.g. ``DataCollatorWithPadding(pad_to_multiple_of=16)``
    wrapped in a function, which hides its rounding) made batches of up to 1.76x the budget
    without a word. The first such batch now warns, with its widths and what to do. A batch of
    one example is not checked (``oversized="alone"`` puts an example too long for the budget
    in one)."""

    def __init__(
        self,
        collate: Callable[..., Any],
        max_tokens: int,
        pad_to_multiple_of: int | None = None,
        quadratic_length: int | None = None,
    ) -> None:
        self.collate = collate
        self.max_tokens = max_tokens
        self.pad_to_multiple_of = pad_to_multiple_of
        self.quadratic_length = quadratic_length
        self.warned = False

    def __call__(self, features: list[Any]) -> Any:
        batch = self.collate(features)
        ids = batch.get("input_ids") if isinstance(batch, Mapping) else None
        if self.warned or not torch.is_tensor(ids) or ids.ndim != 2 or ids.shape[0] < 2:
            return batch
        rows, width = ids.shape
        cost = rows * float(batch_cost(width, None, self.quadratic_length))
        if cost > self.max_tokens:
            self.warned = True
            longest = max(len(f["input_ids"]) for f in features)
            warnings.warn(
                f"textbatch: a batch of {rows} examples was padded to {width} tokens, "
                f"{cost:,.0f} against the token budget max_tokens={self.max_tokens}, which its "
                f"sampler planned for width {longest} (its longest example) rounded up to a "
                f"multiple of {self.pad_to_multiple_of or 1}: the collator rounds widths up "
                "further, or the examples grew after their lengths were read. Tell the sampler "
                "the collator's rounding (pad_to_multiple_of, or BucketTrainer's "
                "sampler_options={'pad_to_multiple_of': N}), or give the collator itself rather "
                "than a function around it, so that its rounding can be read.",
                TextBatchWarning,
                stacklevel=2,
            )
        return batch

    def __repr__(self) -> str:
        return repr(self.collate)
