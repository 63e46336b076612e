"""The ``lora`` method (peft's LoRA injected into the backbone): exact parameter counts, the
update starting at zero (the adapted model starts as the backbone), a checkpoint of only the
LoRA weights and the head that reloads to identical logits, and the options' effects."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import FIXTURES
from tinymodels import tiny_backbone

from ptcore.checkpoint import load_checkpoint
from ptcore.config import RunConfig
from ptcore.errors import ConfigError
from ptcore.model import build_model
from ptcore.train import train

H, LAYERS, LABELS = 32, 2, 3  # tiny BERT; CB has 3 labels


def _model(tmp_path, **args):
    bb = tiny_backbone("bert", tmp_path / "m")
    cfg = RunConfig(task="superglue/cb", method="lora", method_args=args, data_dir=str(FIXTURES), head_dropout=0.0)
    return bb, build_model(cfg, bb)


def _batch(n=3, t=7):
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(5, 60, (n, t), generator=g), "attention_mask": torch.ones(n, t, dtype=torch.long),
            "token_type_ids": torch.zeros(n, t, dtype=torch.long), "example_index": torch.arange(n)}


def test_parameter_counts_by_hand(tmp_path):
    head = H * LABELS + LABELS
    _, m = _model(tmp_path, r=4)  # query + value in 2 layers: A (4 x 32) + B (32 x 4) each
    assert m.param_counts()[0] == 2 * LAYERS * (4 * H + H * 4) + head
    _, m = _model(tmp_path, r=2, target_modules=["query", "key", "value"], layers=[1])
    assert m.param_counts()[0] == 3 * 1 * (2 * H + H * 2) + head
    bb, m = _model(tmp_path, r=4, bias="all", train_layernorm=True)
    biases = sum(p.numel() for n, p in bb.model.named_parameters() if n.endswith("bias") and "lora_" not in n)
    ln_weights = sum(p.numel() for n, p in bb.model.named_parameters() if "LayerNorm.weight" in n)
    assert m.param_counts()[0] == 2 * LAYERS * 8 * H + head + biases + ln_weights
    total = sum(p.numel() for p in m.parameters())
    assert m.param_counts()[1] == total


def test_starts_as_the_backbone(tmp_path):
    """B = 0 at init: the adapted encoder's hidden states equal the plain backbone's."""
    bb, m = _model(tmp_path, r=4)
    plain = tiny_backbone("bert", tmp_path / "p")  # same seed: same weights
    m.eval()
    b = _batch()
    with torch.no_grad():
        ours = m.encoder(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        ref = plain.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"]).last_hidden_state
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_checkpoint_holds_lora_and_head_and_reloads_to_identical_logits(tmp_path):
    bb = tiny_backbone("bert", tmp_path / "m")
    model_dir = tmp_path / "hub"
    bb.model.save_pretrained(model_dir)
    bb.tokenizer.save_pretrained(model_dir)
    cfg = RunConfig(task="superglue/cb", method="lora", model=str(model_dir), method_args={"r": 4}, data_dir=str(FIXTURES),
                    epochs=2, batch_size=4, lr=1e-2)
    class Keep:
        def on_epoch_end(self, epoch, metrics, model, state):
            self.model = model
            return False

    keep = Keep()
    train(cfg, output=tmp_path / "out", progress=False, callbacks=(keep,))  # leaves the best epoch's weights in the model
    state = load_file(str(tmp_path / "out" / "checkpoint" / "trainable.safetensors"))
    assert state and all("lora_" in k or k.startswith("head.") for k in state), sorted(state)[:5]
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)  # B trained away from 0
    reloaded = load_checkpoint(tmp_path / "out" / "checkpoint")  # a fresh backbone from disk + the file
    trained = keep.model.eval()
    batch = _batch()
    with torch.no_grad():
        assert torch.equal(reloaded(batch), trained(batch))


def test_unknown_target_module_names_the_linear_layers(tmp_path):
    with pytest.raises(ConfigError, match=r"method 'lora': .*this backbone's linear layers: .*query.*value"):
        _model(tmp_path, target_modules=["q_proj"])
