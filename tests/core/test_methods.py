"""Conformance: every method x every task kind x several backbone families."""

from __future__ import annotations

import pytest
import torch

from conftest import FIXTURES
from tinymodels import tiny_backbone

from ptcore.config import RunConfig
from ptcore.data import make_loader
from ptcore.methods import METHODS
from ptcore.tasks import TASKS
from ptcore.model import build_model
from ptcore.train import prepare_data

# one fixture task per task kind
KIND_TASKS = {
    "classification": "superglue/cb",
    "regression": "glue/stsb",
    "multiple_choice": "superglue/copa",
    "token_classification": "ner/wnut17",
    "extractive_qa": "qa/squad",
}
SMALL = {
    "finetune": {},
    "prompt_tuning": {"prompt_length": 4},
    "ptuning_v2": {"prompt_length": 4},
    "dynamic": {"prompt_length": 4},
    "lora": {"r": 4},
}


def method_args(name: str) -> dict:
    return SMALL.get(name, {})


def setup(method: str, task: str, family: str, tmp_path, **extra):
    if task not in TASKS:
        pytest.skip(f"task {task} not registered")
    bb = tiny_backbone(family, tmp_path)
    args = method_args(method)
    if family == "deberta" and method == "dynamic":  # relative positions only: no position choice (refused), length instead
        args = {**args, "position": "none", "length": "instance"}
    cfg = RunConfig(task=task, method=method, method_args=args, data_dir=str(FIXTURES), seed=0, **extra)
    model = build_model(cfg, bb)
    data = prepare_data(cfg, bb, model.encoder.extra_tokens)
    loader = make_loader(data.features["train"], model.kind, bb.tokenizer.pad_token_id, batch_size=4, shuffle=False)
    return bb, model, next(iter(loader))


def train_steps(model, batch, steps: int, lr: float) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model.kind.loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("family", ["bert", "deberta"])
@pytest.mark.parametrize("kind", list(KIND_TASKS))
@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_every_kind(method, kind, family, tmp_path):
    """Also on DeBERTa-v3-style disentangled attention: prompt methods leave its weights bit-identical."""
    bb, model, batch = setup(method, KIND_TASKS[kind], family, tmp_path)
    # weights a method adds inside the backbone (LoRA's lora_A / lora_B); everything else there is the backbone's own
    added = {n for n, _ in bb.model.named_parameters() if ".lora_" in n}
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    losses = train_steps(model, batch, steps=12, lr=1e-3 if method == "finetune" else 3e-2)
    assert all(map(lambda x: x == x, losses)), losses  # no NaN
    assert min(losses[-3:]) < losses[0], f"{method}/{kind}: loss did not fall: {losses}"
    after = bb.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if METHODS.get(method).config_cls.trains_backbone:
        assert changed, "fine-tuning must update the backbone"
    else:
        frozen_changed = [k for k in changed if k not in added]
        assert frozen_changed == [], f"{method} changed frozen backbone weights: {frozen_changed[:3]}"


@pytest.mark.parametrize("family", ["bert", "roberta", "electra", "deberta"])
@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_runs_every_family(method, family, tmp_path):
    bb, model, batch = setup(method, "superglue/rte", family, tmp_path)
    losses = train_steps(model, batch, steps=8, lr=1e-3 if method == "finetune" else 3e-2)
    assert min(losses[-3:]) < losses[0], losses


def test_output_aligned_with_input_tokens(tmp_path):
    """Prompts are stripped: every method returns one hidden state per input token."""
    bb = tiny_backbone("bert", tmp_path)
    ids = torch.tensor([[2, 10, 11, 12, 3, 0], [2, 13, 3, 14, 3, 0]])
    mask = (ids != 0).long()
    for method in METHODS.names():
        cfg = RunConfig(task="superglue/rte", method=method, method_args=method_args(method))
        enc = build_model(cfg, bb).encoder
        assert enc(ids, mask, torch.zeros_like(ids)).shape == (2, 6, 32), method


def test_multiple_choice_with_varying_choice_counts(tmp_path):
    """ReCoRD examples have different numbers of candidate entities."""
    bb, model, batch = setup("ptuning_v2", "superglue/record", "bert", tmp_path)
    counts = batch["choice_mask"].sum(1)
    assert counts.min() < counts.max(), "fixture should mix choice counts"
    logits = model.eval()(batch)
    assert logits.shape == batch["choice_mask"].shape
    assert (logits[~batch["choice_mask"]] <= -1e4).all()
    assert batch["label"].lt(counts).all()


def test_readme_lists_every_method_note():
    """README "Departures from the papers" is the registry's notes, word for word: a note
    added to a method (or changed) without the README fails here."""
    from pathlib import Path

    from ptcore.methods import METHODS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Departures from the papers", 1)[1].split("\n## ", 1)[0]
    for name in METHODS.names():
        for note in METHODS.get(name).notes:
            assert f"* {note}" in section, f"README misses a note of {name!r}: {note}"
    assert any(METHODS.get(n).notes for n in METHODS.names())
