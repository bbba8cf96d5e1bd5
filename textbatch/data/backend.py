"""The Rust tokenizer called directly, and its token ids read out in bulk.

``tokenizer(texts, truncation=True, max_length=n)`` costs about twice what the Rust tokenizer
spends tokenising when it runs on every core: after the Rust call, ``transformers`` builds a dict
of Python lists per example on one thread, and ``datasets`` then converts those lists to Arrow.
:func:`encode_batch` makes the very call ``transformers`` makes (the same truncation, padding and
special-token settings on the backend tokenizer, the same inputs) and returns the Rust encodings;
:func:`token_arrays` reads their ids into flat numpy arrays and Arrow list arrays, one Python list
per example and nothing else. Tokenizers whose Python class changes what ``__call__`` does go
through ``__call__`` itself, as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from textbatch.errors import TextBatchError

# Post-processors that give every token of a single text token type 0 (TemplateProcessing when
# its single-text template says so).
_ZERO_TYPE_PROCESSORS = {"BertProcessing", "RobertaProcessing", "ByteLevel"}


@dataclass
class ListEncoding:
    """An example as ``__call__`` returned it (Python lists), shaped like a Rust ``Encoding``:
    ``ids``, ``type_ids`` and ``len()`` (tokens)."""

    ids: list[int]
    type_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def calls_backend_directly(tokenizer: Any) -> bool:
    """Whether ``tokenizer.__call__`` is ``transformers``' own fast path, unchanged by its class:
    then :func:`encode_batch` may make the Rust call itself and gets the same encodings."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # another transformers layout: always go through __call__
        return False
    kind = type(tokenizer)
    return (
        isinstance(tokenizer, TokenizersBackend)
        and kind.__call__ is PreTrainedTokenizerBase.__call__
        and kind._encode_plus is TokenizersBackend._encode_plus
        and kind.set_truncation_and_padding is TokenizersBackend.set_truncation_and_padding
        and not hasattr(tokenizer, "_switch_to_input_mode")  # seq2seq language codes
    )


def encode_batch(
    tokenizer: Any,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    *,
    max_length: int | None,
    add_special_tokens: bool = True,
    type_ids: bool = True,
    offsets: bool = False,
) -> list[Any]:
    """The encodings of ``tokenizer(texts, pairs, truncation=max_length is not None,
    max_length=max_length, add_special_tokens=add_special_tokens)``, one per text (or pair):
    Rust ``Encoding`` objects, or :class:`ListEncoding` for a tokenizer that must go through
    ``__call__`` (then ``type_ids`` says whether to ask for token types). With ``offsets``,
    Rust encodings carry each token's character offsets in its text (slower).

    Like ``__call__``, it leaves the backend tokenizer truncating at ``max_length`` (or not at
    all), unpadded and with the tokenizer's ``split_special_tokens``."""
    if not calls_backend_directly(tokenizer):
        encoded = tokenizer(
            list(texts),
            None if pairs is None else list(pairs),
            truncation=max_length is not None,
            max_length=max_length,
            add_special_tokens=add_special_tokens,
            return_attention_mask=False,
            return_token_type_ids=type_ids,
            verbose=False,
        )
        types = encoded["token_type_ids"] if type_ids else [[]] * len(encoded["input_ids"])
        return [ListEncoding(i, t) for i, t in zip(encoded["input_ids"], types, strict=True)]

    from transformers.tokenization_utils_base import TruncationStrategy
    from transformers.utils import PaddingStrategy

    truncation = (
        TruncationStrategy.DO_NOT_TRUNCATE
        if max_length is None
        else TruncationStrategy.LONGEST_FIRST  # truncation=True
    )
    tokenizer.set_truncation_and_padding(
        padding_strategy=PaddingStrategy.DO_NOT_PAD,
        truncation_strategy=truncation,
        max_length=max_length,
        stride=0,
        pad_to_multiple_of=None,
        padding_side=None,
    )
    backend = tokenizer.backend_tokenizer
    if backend.encode_special_tokens != tokenizer.split_special_tokens:
        backend.encode_special_tokens = tokenizer.split_special_tokens
    inputs = list(texts) if pairs is None else list(zip(texts, pairs, strict=True))
    # encode_batch_fast: the same ids as encode_batch, without the character offsets
    fast = getattr(backend, "encode_batch_fast", backend.encode_batch)
    encode = backend.encode_batch if offsets else fast
    return encode(inputs, add_special_tokens=add_special_tokens)


def single_type_ids_are_zero(tokenizer: Any) -> bool:
    """Whether every token of a single text (no pair) has token type 0 with this tokenizer, as
    its post-processor decides: then :func:`token_arrays` need not read them. True for BERT's and
    RoBERTa's processors, byte-level ones, none at all, and templates whose single-text pieces
    all say type 0; False for anything else, and for tokenizers that go through ``__call__``."""
    if not calls_backend_directly(tokenizer):
        return False
    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("post_processor")
    return _zero_types(spec)


def _zero_types(spec: dict[str, Any] | None) -> bool:
    if spec is None:
        return True
    kind = spec.get("type")
    if kind == "Sequence":
        return all(_zero_types(s) for s in spec.get("processors", ()))
    if kind == "TemplateProcessing":
        pieces = spec.get("single", ())
        return all(next(iter(piece.values())).get("type_id") == 0 for piece in pieces)
    return kind in _ZERO_TYPE_PROCESSORS


def token_arrays(encodings: Sequence[Any], *, type_ids: bool, zero_types: bool) -> dict[str, Any]:
    """``input_ids`` (int32) and, with ``type_ids``, ``token_type_ids`` (int8) of
    ``encodings`` as Arrow list arrays, one row per encoding, built from flat numpy arrays.
    ``zero_types`` (see :func:`single_type_ids_are_zero`) writes the token types as zeros
    without reading them."""
    import pyarrow as pa

    lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
    offsets = np.zeros(len(encodings) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    if total > np.iinfo(np.int32).max:
        raise TextBatchError(
            f"{total:,} tokens in one batch of {len(encodings)} texts are more than Arrow's "
            "32-bit offsets hold; pass a smaller max_length."
        )
    arrow_offsets = pa.array(offsets.astype(np.int32))
    flat: list[int] = []
    for encoding in encodings:
        flat += encoding.ids
    ids = np.array(flat, dtype=np.int32) if flat else np.zeros(0, dtype=np.int32)
    arrays = {"input_ids": pa.ListArray.from_arrays(arrow_offsets, pa.array(ids))}
    if type_ids:
        if zero_types:
            types = np.zeros(total, dtype=np.int8)
        else:
            flat = []
            for encoding in encodings:
                flat += encoding.type_ids
            types = np.array(flat, dtype=np.int8) if flat else np.zeros(0, dtype=np.int8)
        arrays["token_type_ids"] = pa.ListArray.from_arrays(arrow_offsets, pa.array(types))
    return arrays
