import pytest
import torch
from safetensors.torch import load_file

from conftest import FIXTURES
from tinymodels import tiny_backbone

from ptcore.checkpoint import WEIGHTS, load_checkpoint, save_checkpoint
from ptcore.config import RunConfig
from ptcore.data import make_loader
from ptcore.methods import METHODS
from ptcore.model import build_model
from ptcore.train import prepare_data

ARGS = {"prompt_tuning": {"prompt_length": 3}, "ptuning_v2": {"prompt_length": 3, "reparameterize": True}, "dynamic": {"prompt_length": 4}}


@pytest.mark.parametrize("method", METHODS.names())
def test_round_trip_gives_identical_logits(method, tmp_path):
    bb = tiny_backbone("bert", tmp_path)
    cfg = RunConfig(task="superglue/cb", method=method, method_args=ARGS.get(method, {}), data_dir=str(FIXTURES))
    model = build_model(cfg, bb)
    data = prepare_data(cfg, bb, model.encoder.extra_tokens)
    batch = next(iter(make_loader(data.features["val"], model.kind, 0, 8, shuffle=False)))
    # a few steps so the weights differ from their seeded init
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = model.kind.loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        expected = model(batch)
    save_checkpoint(model, cfg, tmp_path / "ckpt")
    saved = set(load_file(str(tmp_path / "ckpt" / WEIGHTS)))
    trains_backbone = METHODS.get(method).config_cls.trains_backbone
    if not trains_backbone:  # prompt methods store only prompts + head (LoRA: + its lora_A/B), never the backbone's weights
        assert not any(k.startswith("encoder.backbone.") and ".lora_" not in k for k in saved), sorted(saved)[:3]
    # fine-tuning restores the backbone from the checkpoint: start it from other random weights
    (tmp_path / "fresh").mkdir()
    fresh = tiny_backbone("bert", tmp_path / "fresh", seed=1) if trains_backbone else bb
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=fresh)
    with torch.no_grad():
        got = loaded(batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_not_a_checkpoint(tmp_path):
    from ptcore.errors import DataError

    with pytest.raises(DataError, match="not a ptcore checkpoint"):
        load_checkpoint(tmp_path)
