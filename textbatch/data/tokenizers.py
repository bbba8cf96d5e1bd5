"""Load any local fast tokenizer, or train a small WordPiece one on the user's own text."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textbatch.data.columns import is_blank
from textbatch.errors import TextBatchError

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
# Names under which tokenizer.json files commonly store their special tokens.
_KNOWN_SPECIAL = {
    "pad_token": ("[PAD]", "<pad>", "<|pad|>", "<|padding|>"),
    "unk_token": ("[UNK]", "<unk>", "<|unk|>"),
    "cls_token": ("[CLS]", "<s>"),
    "sep_token": ("[SEP]", "</s>"),
    "mask_token": ("[MASK]", "<mask>"),
}
_MODEL_INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]
# train_tokenizer learns from the first this many characters of a text (cut at a space): tens of
# thousands of words teach a text's vocabulary, and a 50 MB line would cost minutes and gigabytes.
TRAIN_TEXT_CHARS = 100_000


def load_tokenizer(source: Any) -> Any:
    """Return a fast ``transformers`` tokenizer from ``source``, never downloading anything.

    ``source`` may be a directory written by ``save_pretrained``, a ``tokenizer.json`` file,
    a ``transformers`` tokenizer object, or a ``tokenizers.Tokenizer``.
    """
    import tokenizers
    from transformers import PreTrainedTokenizerBase

    if isinstance(source, PreTrainedTokenizerBase):
        if not getattr(source, "is_fast", False):
            raise TextBatchError(
                f"{type(source).__name__} is a slow (Python) tokenizer; textbatch needs a fast "
                "one. Load it with AutoTokenizer.from_pretrained(path, use_fast=True)."
            )
        return source
    if isinstance(source, tokenizers.Tokenizer):
        return _wrap(source)
    if isinstance(source, str | os.PathLike):
        return _load_path(Path(source))
    raise TextBatchError(
        f"cannot load a tokenizer from {type(source).__name__} {source!r}; pass a directory saved "
        "with save_pretrained, a tokenizer.json file, a transformers tokenizer or a "
        "tokenizers.Tokenizer."
    )


def makes_token_types(tokenizer: Any) -> bool:
    """Whether ``tokenizer``'s own ``__call__`` returns ``token_type_ids`` (its
    ``model_input_names`` name them, as BERT's do and RoBERTa's and DistilBERT's do not): a
    dataset carries them exactly then, for single texts and pairs, so that its batches hold the
    keys that ``DataCollatorWithPadding`` gives."""
    return "token_type_ids" in tokenizer.model_input_names


def _load_path(path: Path) -> Any:
    from transformers import AutoTokenizer

    if path.is_file():
        if path.suffix != ".json":
            raise TextBatchError(
                f"tokenizer file {str(path)!r} is not a tokenizer.json; pass the tokenizer.json "
                "file or the directory that save_pretrained wrote."
            )
        import tokenizers

        try:
            return _wrap(tokenizers.Tokenizer.from_file(str(path)))
        except Exception as error:  # the Rust error says what is wrong with the file
            raise TextBatchError(f"cannot read tokenizer file {str(path)!r}: {error}") from error
    if not path.is_dir():
        raise TextBatchError(
            f"tokenizer path {str(path)!r} does not exist; textbatch never downloads from the "
            "Hugging Face Hub, so pass a local directory or tokenizer.json file, or train one with "
            "textbatch.train_tokenizer()."
        )
    if (path / "tokenizer_config.json").is_file():
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as error:
            raise TextBatchError(
                f"cannot load a tokenizer from directory {str(path)!r}: {error}"
            ) from error
        return load_tokenizer(tokenizer)
    if (path / "tokenizer.json").is_file():
        return _load_path(path / "tokenizer.json")
    raise TextBatchError(
        f"directory {str(path)!r} holds no tokenizer.json or tokenizer_config.json; save a "
        "tokenizer there with tokenizer.save_pretrained(path)."
    )


def _wrap(backend: Any, **options: Any) -> Any:
    """Wrap a ``tokenizers.Tokenizer`` as a fast ``transformers`` tokenizer, special tokens set."""
    from transformers import PreTrainedTokenizerFast

    vocab = backend.get_vocab()
    special: dict[str, str] = {}
    for role, candidates in _KNOWN_SPECIAL.items():
        for token in candidates:
            if token in vocab:
                special[role] = token
                break
    padding = backend.padding
    if padding and padding.get("pad_token"):
        special["pad_token"] = padding["pad_token"]
    if padding or backend.truncation:  # a copy: the caller's tokenizer keeps its settings
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())
        backend.no_padding()  # padding is the collator's job, not the tokenizer's
        backend.no_truncation()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_input_names=list(_MODEL_INPUT_NAMES),
        **special,
        **options,
    )


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8000,
    *,
    lowercase: bool = True,
    min_frequency: int = 2,
    model_max_length: int = 512,
) -> Any:
    """Train a BERT-style WordPiece tokenizer on ``texts`` and return it as a fast tokenizer.

    The vocabulary holds at most ``vocab_size`` tokens, starting with [PAD] (id 0), [UNK], [CLS],
    [SEP] and [MASK]. Every text is encoded as ``[CLS] text [SEP]`` and every pair as
    ``[CLS] a [SEP] b [SEP]`` with token type ids 0 and 1. ``model_max_length`` (tokens) is
    the default truncation length of datasets built with it.

    A text longer than ``TRAIN_TEXT_CHARS`` (100,000) characters is learnt from its start, cut
    at a space, so that one huge line costs no more than that.

    The same texts and options always give the same tokenizer, in any process. (The
    ``tokenizers`` trainer alone does not: it numbers the ``##`` word pieces of the alphabet in
    hash-map order, and that numbering breaks ties between equally frequent merges,
    huggingface/tokenizers#1794. Here every character's ``##`` piece is numbered up front, in
    code-point order, and the vocabulary is rebuilt from the trained one.)
    """
    from tokenizers import models
    from tokenizers.trainers import WordPieceTrainer

    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise TextBatchError(
            f"vocab_size={vocab_size} is too small: it must exceed the {len(SPECIAL_TOKENS)} "
            "special tokens; use a few thousand for real text."
        )
    if isinstance(texts, str):
        raise TextBatchError("texts is one string; pass a list (or iterable) of texts.")

    backend = _bert_style(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]), lowercase)
    counted = _CountingIterator(texts)
    kept = list(counted)
    if counted.count == 0:
        raise TextBatchError("train_tokenizer got no texts; pass at least one non-empty text.")
    # Every character as it looks after normalisation, in code-point order: its ## piece gets
    # its id before training, so that no id (nor any tie between merges) depends on hash order.
    alphabet = sorted(set(backend.normalizer.normalize_str("".join(set("".join(kept))))))
    pieces = [f"##{c}" for c in alphabet if not c.isspace()]
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS.values(), *pieces],
        show_progress=False,
    )
    backend.train_from_iterator(kept, trainer=trainer)
    trained = backend.get_vocab()
    # The pieces were "special" only to be numbered first: rebuilt as plain vocabulary.
    return wordpiece_tokenizer(
        sorted(trained, key=trained.__getitem__),
        lowercase=lowercase,
        model_max_length=model_max_length,
    )


def wordpiece_tokenizer(
    vocab: Iterable[str], *, lowercase: bool = True, model_max_length: int = 512
) -> Any:
    """A BERT-style WordPiece tokenizer over a given vocabulary (``##`` marks word pieces),
    exactly as :func:`train_tokenizer` builds one, but fully determined by its input: the
    special tokens come first, then ``vocab`` in order."""
    from tokenizers import models

    tokens = list(SPECIAL_TOKENS.values())
    tokens += [t for t in dict.fromkeys(vocab) if t not in SPECIAL_TOKENS.values()]
    model = models.WordPiece(
        {token: i for i, token in enumerate(tokens)}, unk_token=SPECIAL_TOKENS["unk_token"]
    )
    return _finish_bert_style(_bert_style(model, lowercase), model_max_length)


def _bert_style(model: Any, lowercase: bool) -> Any:
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers

    backend = Tokenizer(model)
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    return backend


def _finish_bert_style(backend: Any, model_max_length: int) -> Any:
    """[CLS]/[SEP] around each text and pair, then the ``transformers`` wrapper."""
    from tokenizers import processors

    cls_id = backend.token_to_id(SPECIAL_TOKENS["cls_token"])
    sep_id = backend.token_to_id(SPECIAL_TOKENS["sep_token"])
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return _wrap(backend, model_max_length=model_max_length)


class _CountingIterator:
    """Yields texts (rejecting non-strings, cutting those over ``TRAIN_TEXT_CHARS``) and counts
    them."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = texts
        self.count = 0

    def __iter__(self):
        for i, text in enumerate(self._texts):
            if not isinstance(text, str):
                raise TextBatchError(
                    f"text #{i} is {type(text).__name__} {text!r}, not a string; pass strings only."
                )
            if len(text) > TRAIN_TEXT_CHARS:
                space = text.rfind(" ", TRAIN_TEXT_CHARS // 2, TRAIN_TEXT_CHARS + 1)
                text = text[: space if space > 0 else TRAIN_TEXT_CHARS]
            self.count += not is_blank(text)
            yield text
