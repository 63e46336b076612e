"""Safe defaults: nothing ptcore reads is unpickled (the tokenized-data cache is JSON; backbone
weights are safetensors only) and remote code stays off unless a run or study sets it."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest
from tinymodels import save_tiny, tiny_backbone

from ptcore.backbones import load_backbone
from ptcore.config import RunConfig
from ptcore.data import CACHE_FORMAT, cache_path, encode_split, read_cache
from ptcore.errors import ConfigError
from ptcore.tasks import get_task, load_splits
from ptcore.tasks.kinds import get_kind
from ptcore.train import prepare_data

from conftest import FIXTURES


class Planted:
    """A pickle whose loading creates ``marker``: proof that someone unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _v1_name(spec, tokenizer, max_length, split, examples) -> str:
    """Where the old (pickle) cache kept this split: its key hashed the examples' pickle."""
    h = hashlib.sha256()
    h.update(json.dumps([spec.name, getattr(tokenizer, "name_or_path", ""), len(tokenizer), max_length, split]).encode())
    h.update(pickle.dumps(examples, protocol=4))
    return f"{spec.name.replace('/', '_')}-{split}-{h.hexdigest()[:20]}.pkl"


def test_feature_cache_never_unpickles_a_planted_file(tmp_path):
    """A pickle at the new cache path and one at the old (v1) cache name: neither is loaded
    (no marker file), the features are tokenized again and equal fresh ones, the cache path
    then holds JSON, and the v1 file is gone."""
    spec = get_task("glue/sst2")
    kind = get_kind(spec.kind)
    examples = load_splits(spec, data_dir=FIXTURES)[0]["train"]
    tokenizer = tiny_backbone("bert", tmp_path / "tok").tokenizer
    cache, marker = tmp_path / "cache", tmp_path / "UNPICKLED"
    cache.mkdir()
    path = cache_path(cache, spec, tokenizer, 32, "train", examples)
    v1 = cache / _v1_name(spec, tokenizer, 32, "train", examples)
    for p in (path, v1):
        p.write_bytes(pickle.dumps([Planted(marker)], protocol=4))
    pickle.loads(v1.read_bytes())  # the planted file works: loading it makes the marker
    assert marker.exists()
    marker.unlink()

    features = encode_split(kind, spec, examples, tokenizer, 32, "train", str(cache))
    assert not marker.exists()
    assert features == kind.encode(examples, tokenizer, 32)
    assert json.loads(path.read_text())["format"] == CACHE_FORMAT and read_cache(path) == features
    assert not v1.exists()
    assert encode_split(kind, spec, examples, tokenizer, 32, "train", str(cache)) == features  # a hit now
    assert not marker.exists() and sorted(p.name for p in cache.iterdir()) == [path.name]


@pytest.mark.parametrize("task", ["glue/sst2", "glue/stsb", "superglue/copa", "superglue/record", "ner/wnut17", "qa/squad_v2"])
def test_feature_cache_round_trips_every_kind(task, tmp_path):
    """What the cache gives back is exactly what tokenizing gives: ints, float labels, None
    labels and offsets, nested lists (multiple choice, QA offsets), per kind."""
    cfg = RunConfig(task=task, method="finetune", data_dir=str(FIXTURES), max_length=64)
    backbone = tiny_backbone("bert", tmp_path / "m")
    fresh = prepare_data(cfg, backbone, 0).features
    cache = str(tmp_path / "cache")
    written = prepare_data(cfg, backbone, 0, cache).features
    files = sorted((tmp_path / "cache").iterdir())
    assert files and all(p.name.endswith(".features.json") for p in files)
    read = prepare_data(cfg, backbone, 0, cache).features
    assert fresh == written == read
    assert sorted((tmp_path / "cache").iterdir()) == files


def test_unreadable_cache_file_is_rebuilt(tmp_path):
    spec = get_task("glue/sst2")
    kind = get_kind(spec.kind)
    examples = load_splits(spec, data_dir=FIXTURES)[0]["train"]
    tokenizer = tiny_backbone("bert", tmp_path / "tok").tokenizer
    path = cache_path(tmp_path, spec, tokenizer, 32, "train", examples)
    for junk in (b"\xff\xfe not json", b'{"format": "other", "features": []}', b"[1, 2]"):
        path.write_bytes(junk)
        assert encode_split(kind, spec, examples, tokenizer, 32, "train", str(tmp_path)) == kind.encode(examples, tokenizer, 32)
        assert json.loads(path.read_text())["format"] == CACHE_FORMAT


def test_cache_key_is_stable_and_content_based(tmp_path):
    spec = get_task("glue/sst2")
    examples = load_splits(spec, data_dir=FIXTURES)[0]["train"]
    tokenizer = tiny_backbone("bert", tmp_path / "tok").tokenizer
    a = cache_path(tmp_path, spec, tokenizer, 32, "train", examples)
    assert a == cache_path(tmp_path, spec, tokenizer, 32, "train", [dict(reversed(list(e.items()))) for e in examples])
    changed = [dict(examples[0], text_a=examples[0]["text_a"] + " x")] + examples[1:]
    assert a != cache_path(tmp_path, spec, tokenizer, 32, "train", changed)
    assert a != cache_path(tmp_path, spec, tokenizer, 33, "train", examples)


# ------------------------------------------------------------------ backbone weights: safetensors only


def test_saved_tiny_models_and_packaged_minilm_are_safetensors(tmp_path):
    from ptcore.backbones import packaged_path

    d = save_tiny("bert", tmp_path / "m")
    assert (d / "model.safetensors").is_file() and not list(d.glob("*.bin"))
    minilm = packaged_path("sentence-transformers/all-MiniLM-L6-v2")
    if minilm is not None:
        assert (minilm / "model.safetensors").is_file()


def test_bin_only_backbone_is_refused_and_never_unpickled(tmp_path, monkeypatch):
    """A model directory whose weights are only ``pytorch_model.bin`` (a pickle; here one that
    would create a marker file when loaded): one ConfigError saying how to convert it, and
    nothing unpickled, with transformers' own loader asked too (``use_safetensors=True``)."""
    import ptcore.backbones as B

    d = save_tiny("bert", tmp_path / "m")
    (d / "model.safetensors").unlink()
    marker = tmp_path / "UNPICKLED"
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": Planted(marker)}, protocol=4))
    with pytest.raises(ConfigError, match=r"has no safetensors weights.*pytorch_model\.bin.*never loads.*save_pretrained") as e:
        load_backbone(str(d))
    assert "\n" not in str(e.value) and not marker.exists()

    # without ptcore's own check, transformers is still told to read safetensors only
    monkeypatch.setattr(B, "SAFE_WEIGHTS", ("pytorch_model.bin",))
    seen = _spy(monkeypatch)
    with pytest.raises(ConfigError, match="weights could not be loaded"):
        load_backbone(str(d))
    assert not marker.exists()
    assert [kw.get("use_safetensors") for name, kw in seen if name == "AutoModel.from_pretrained"] == [True]


# ------------------------------------------------------------------ trust_remote_code: off unless set


def _spy(monkeypatch):
    """Record the keyword arguments of every transformers Auto* loading call."""
    import transformers

    seen = []
    for name in ("AutoConfig", "AutoTokenizer", "AutoModel"):
        cls = getattr(transformers, name)
        for meth in ("from_pretrained", "from_config"):
            if not hasattr(cls, meth):
                continue
            real = getattr(cls, meth)

            def wrapper(*args, _real=real, _name=f"{name}.{meth}", **kwargs):
                seen.append((_name, dict(kwargs)))
                return _real(*args, **kwargs)

            monkeypatch.setattr(cls, meth, wrapper)
    return seen


def test_trust_remote_code_is_off_by_default_and_on_only_when_set(tmp_path, monkeypatch):
    from ptcore.train import train

    from ptcore.checkpoint import load_checkpoint

    d = save_tiny("bert", tmp_path / "m")
    calls = _spy(monkeypatch)

    def trusted():
        out = [kw.get("trust_remote_code", "absent") for _, kw in calls]
        calls.clear()
        assert out
        return set(out)

    load_backbone(str(d))
    load_backbone(str(d), config_only=True)
    names = {n for n, _ in calls}
    assert {"AutoConfig.from_pretrained", "AutoTokenizer.from_pretrained", "AutoModel.from_pretrained", "AutoModel.from_config"} <= names
    assert trusted() == {False}
    load_backbone(str(d), trust_remote_code=True)
    assert trusted() == {True}

    # through a run's config: default off, on when the run sets it; not part of the config hash
    assert RunConfig(task="glue/sst2").trust_remote_code is False
    base = dict(task="glue/sst2", method="finetune", model=str(d), data_dir=str(FIXTURES), epochs=1, max_train_examples=4,
                max_eval_examples=4, device="cpu")
    for setting in (False, True):
        cfg = RunConfig(**base, **({"trust_remote_code": True} if setting else {}))
        train(cfg, output=str(tmp_path / f"run{setting}"), progress=False)
        assert trusted() == {setting}
        load_checkpoint(tmp_path / f"run{setting}" / "checkpoint")  # the checkpoint's config carries it
        assert trusted() == {setting}
    assert RunConfig(**base).config_hash() == RunConfig(**base, trust_remote_code=True).config_hash()
