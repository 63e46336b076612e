"""Every field of the run config has a test that fails when the code ignores it.

:data:`FIELD_TESTS` maps each ``RunConfig`` field to the test that covers it: a test of this
file (``test_name``, or a parametrized case ``test_name[id]``), or an existing test elsewhere
(``tests/path.py::test_name``) that fails when the field is ignored.
:func:`test_every_field_is_covered` fails for a field without an entry, so a field added
without a test fails CI (a gap like multi-task training silently ignoring ``grad_accum_steps``).

Each behavioural test runs the real code path (``ptcore.train.train`` on a tiny random BERT
and a small synthetic CB / SST-2 data directory) with the field at two or more values, and
checks the effect the field promises, on exact quantities where there are any: optimizer
steps, rows per forward, token lengths, learning rates per step, gradient norms, sizes of
splits, the first AdamW step's size. :class:`Watch` records what a run did.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

import ptcore.train as train_mod
from tinymodels import WORDS, save_tiny, tiny_backbone

from ptcore.config import RunConfig
from ptcore.kernels import FastDropout
from ptcore.methods import METHODS, get_method
from ptcore.model import TaskModel
from ptcore.tasks import get_task
from ptcore.train import draw_tasks, train

REPO = Path(__file__).resolve().parents[2]
HERE = "tests/core/test_run_config_fields.py"

# field -> the test that fails when the code ignores it
FIELD_TESTS: dict[str, str] = {
    "preset": "tests/core/test_presets.py::test_the_preset_fills_in_what_the_run_does_not_give",
    "task": "test_task_picks_the_data_and_the_head",
    "method": "test_method_picks_the_encoder",
    "model": "test_model_and_layers_load_that_backbone",
    "layers": "test_model_and_layers_load_that_backbone",
    "trust_remote_code": "tests/core/test_safe_loading.py::test_trust_remote_code_is_off_by_default_and_on_only_when_set",
    "method_args": "test_method_args_reach_the_encoder",
    "data_dir": "test_data_dir_is_where_the_examples_come_from",
    "seed": "test_seed_same_run_again_other_seed_other_run",
    "epochs": "test_epochs_and_batch_size_set_the_steps",
    "batch_size": "test_epochs_and_batch_size_set_the_steps",
    "grad_accum_steps": "test_grad_accum_steps_slices_each_step",
    "precision": "test_precision_is_the_autocast_dtype",
    "eval_batch_size": "test_eval_batch_size_sets_the_evaluation_batches",
    "lr": "test_lr_is_the_first_step_size",
    "weight_decay": "test_weight_decay_shrinks_decayed_weights_only",
    "warmup_ratio": "test_warmup_ratio_shapes_the_schedule",
    "warmup_steps": "tests/core/test_optimizer.py::test_schedule_settings_reach_train",
    "optimizer": "tests/core/test_optimizer.py::test_adafactor_run_trains_and_resumes_exactly",
    "lr_schedule": "tests/core/test_optimizer.py::test_schedule_settings_reach_train",
    "max_grad_norm": "test_max_grad_norm_clips_every_step",
    "patience": "test_patience_stops_after_epochs_without_improvement",
    "max_train_examples": "test_train_subsets_set_the_examples_trained_on",
    "train_size": "test_train_subsets_set_the_examples_trained_on",
    "data_seed": "test_data_seed_draws_the_sample",
    "dev_size": "test_dev_size_is_the_selection_set",
    "mixing": "test_mixing_sets_the_task_of_each_step",
    "mixing_temperature": "test_mixing_sets_the_task_of_each_step",
    "init_from": "test_init_from_starts_from_the_checkpoint",
    "max_eval_examples": "test_eval_caps_set_the_evaluated_examples",
    "max_dev_examples": "test_eval_caps_set_the_evaluated_examples",
    "max_length": "test_max_length_is_the_token_limit",
    "pooling": "test_pooling_is_what_the_head_reads",
    "head_dropout": "test_head_dropout_drops_head_inputs_in_training",
    "device": "test_device_is_where_the_run_runs",
    "threads": "tests/core/test_train.py::test_threads_setting_applied_and_compute_recorded",
    "kernels": "test_kernels_pick_dropout_and_attention",
    "format": "tests/families/test_text_kinds.py::test_format_picks_the_kind_a_task_trains_with",
    "template": "tests/families/test_text_kinds.py::test_a_template_override_is_what_the_model_reads",
    "verbalizer": "tests/families/test_text_kinds.py::test_a_verbalizer_override_is_what_the_model_scores",
}


def test_every_field_is_covered():
    """Each RunConfig field has an entry, and each entry names a test that exists."""
    fields = set(RunConfig.model_fields)
    missing, stale = sorted(fields - set(FIELD_TESTS)), sorted(set(FIELD_TESTS) - fields)
    assert not missing, f"RunConfig fields without a test that fails when they are ignored: {missing}; add one to FIELD_TESTS"
    assert not stale, f"FIELD_TESTS names fields RunConfig no longer has: {stale}"
    for name, where in FIELD_TESTS.items():
        path, _, test = where.rpartition("::") if "::" in where else (HERE, "", where)
        test = test.split("[")[0]
        assert test.startswith("test_"), f"{name}: {where!r} is not a test"
        source = (REPO / path).read_text() if (REPO / path).is_file() else ""
        assert re.search(rf"^def {re.escape(test)}\(", source, re.M), f"{name}: {where!r}: no such test function in {path}"


# ====================================================================== data, models, what a run did

NLI3 = ("entailment", "contradiction", "neutral")
CB_TRAIN, CB_VAL, SST_TRAIN, SST_VAL = 40, 12, 12, 6  # CB's dev: 10% of train carved (4), train 36; SST-2: 1 and 11


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def write_data(root: Path, cb_train: int = CB_TRAIN, seed: int = 0) -> Path:
    """A data directory in the official formats: SuperGLUE CB (jsonl) and GLUE SST-2 (tsv),
    labels balanced, texts of 3 to 24 words from the tiny vocabulary."""
    rng = random.Random(seed)
    cb = root / "superglue" / "CB"
    cb.mkdir(parents=True)
    for name, n in (("train.jsonl", cb_train), ("val.jsonl", CB_VAL)):
        rows = [{"premise": _text(rng, 3, 24), "hypothesis": _text(rng, 2, 6), "label": NLI3[i % 3], "idx": i} for i in range(n)]
        (cb / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    sst = root / "glue" / "SST-2"
    sst.mkdir(parents=True)
    for name, n in (("train.tsv", SST_TRAIN), ("dev.tsv", SST_VAL)):
        (sst / name).write_text("sentence\tlabel\n" + "".join(f"{_text(rng, 2, 10)} \t{i % 2}\n" for i in range(n)))
    return root


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny runs go fastest on one thread (and on a shared machine, much faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def bb(tmp_path_factory):
    return tiny_backbone("bert", tmp_path_factory.mktemp("model"))  # dropout 0 in the backbone


def config(data: Path, **kw) -> RunConfig:
    values = dict(task="superglue/cb", method="ptuning_v2", method_args={"prompt_length": 3, "prefix_dropout": 0.0},
                  data_dir=str(data), epochs=1, batch_size=4, seed=0, lr=1e-2, head_dropout=0.0, device="cpu")
    values.update(kw)
    return RunConfig(**values)


@dataclass
class Forward:
    training: bool  # a training forward (evaluation runs in inference mode)
    task: str
    step: int  # the optimizer step this forward feeds (training)
    rows: int
    lengths: list[int]  # real tokens of each row
    ids: list[tuple[int, ...]]  # each row's real token ids
    dtype: torch.dtype
    out_dim: int
    device: str


@dataclass
class Step:
    lr: float  # the learning rate this optimizer step uses
    grad_norm: float  # of every trainable gradient, as the step sees it (after clipping)


@dataclass
class Watch:
    """What one ``train`` call did: its model, the trainable weights just before the first
    optimizer step (the start, init_from applied), every forward and every optimizer step."""

    model: Any = None
    start: Optional[dict[str, torch.Tensor]] = None
    forwards: list[Forward] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    pooled: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (hidden, mask, head input)
    head_dropped: list[float] = field(default_factory=list)  # training: share of the head's dropout outputs that are 0

    def train(self) -> list[Forward]:
        return [f for f in self.forwards if f.training]

    def evals(self) -> list[Forward]:
        return [f for f in self.forwards if not f.training]

    def final(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.trainable_state_dict().items()}


@pytest.fixture
def run(monkeypatch):
    """``run(cfg, backbone=..., **train_kwargs) -> (result, Watch)``: one ``train`` call, watched."""
    current: list[Watch] = []
    real_build, real_forward = train_mod.build_model, TaskModel.forward

    def build(cfg, backbone):
        model = real_build(cfg, backbone)
        w = current[-1]
        w.model = model
        mask: list[torch.Tensor] = []
        hidden: list[torch.Tensor] = []
        model.encoder.register_forward_hook(lambda m, a, out: hidden.append(out.detach()))
        for view in [model.view(t) for t in getattr(model, "tasks", [cfg.task])]:
            view.register_forward_pre_hook(lambda m, args: mask.append(args[0]["attention_mask"]))
            view.head.register_forward_pre_hook(lambda m, args: w.pooled.append((hidden[-1], mask[-1], args[0].detach())))
            drop = view.head[0]
            drop.register_forward_hook(
                lambda m, a, out: w.head_dropped.append((out == 0).float().mean().item()) if m.training else None)
        return model

    def forward(model, batch):
        out = real_forward(model, batch)
        w = current[-1]
        mask = batch["attention_mask"]
        w.forwards.append(Forward(
            training=not torch.is_inference_mode_enabled(), task=model.task_name, step=len(w.steps),
            rows=int(batch["example_index"].shape[0]), lengths=mask.sum(-1).tolist(),
            ids=[tuple(i[m.bool()].tolist()) for i, m in zip(batch["input_ids"], mask)],
            dtype=out.dtype, out_dim=out.shape[-1], device=out.device.type,
        ))  # fmt: skip
        return out

    def pre_step(optimizer, args, kwargs):
        w = current[-1]
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if w.start is None:
            w.start = {k: v.detach().clone() for k, v in w.model.trainable_state_dict().items()}
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params])).item()
        w.steps.append(Step(optimizer.param_groups[0]["lr"], norm))

    monkeypatch.setattr(train_mod, "build_model", build)
    monkeypatch.setattr(TaskModel, "forward", forward)
    handle = register_optimizer_step_pre_hook(pre_step)

    def go(cfg: RunConfig, backbone=None, **kw):
        current.append(Watch())
        result = train(cfg, backbone=backbone, progress=False, **kw)
        return result, current[-1]

    yield go
    handle.remove()


def chunks(n: int, size: int) -> list[int]:
    """The sizes of ``n`` examples cut into batches of ``size`` (sorted)."""
    return sorted([size] * (n // size) + ([n % size] if n % size else []))


def sizes_of(result) -> dict[str, int]:
    return result["data"]["sizes"]


# ====================================================================== what the run trains


@pytest.mark.parametrize("task,dims", [("superglue/cb", {"superglue/cb": 3}), ("glue/sst2", {"glue/sst2": 2}),
                                       ("superglue/cb+glue/sst2", {"superglue/cb": 3, "glue/sst2": 2})])
def test_task_picks_the_data_and_the_head(run, data, bb, task, dims):
    """The task's files are read (its split sizes), its examples trained on, its heads built
    (3 NLI classes for CB, 2 for SST-2); several tasks: a head each."""
    result, w = run(config(data, task=task, batch_size=8), bb.copy())
    assert result["task"] == task
    train_n = {"superglue/cb": CB_TRAIN - 4, "glue/sst2": SST_TRAIN - 1}
    assert {f.task: f.out_dim for f in w.forwards} == dims
    seen = Counter()
    for f in w.train():
        seen[f.task] += f.rows
    if len(dims) == 1:
        assert seen == {task: train_n[task]} and result["train_examples"] == train_n[task]
        assert sizes_of(result)["val"] == {"superglue/cb": CB_VAL, "glue/sst2": SST_VAL}[task]
    else:
        assert set(seen) == set(dims) and len(w.train()) == len(w.steps) == math.ceil(sum(train_n.values()) / 8)
        assert {t: r["train_examples"] for t, r in result["tasks"].items()} == {t: train_n[t] for t in dims}


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_method_picks_the_encoder(run, data, bb, method):
    """The method's encoder class trains, with the method's own trainable tensors."""
    result, w = run(config(data, method=method, method_args={}, max_train_examples=4), bb.copy())
    assert type(w.model.encoder) is get_method(method).encoder_cls
    assert result["method"] == method and result["config"]["method"] == method
    backbone_params = sum(p.numel() for p in bb.model.parameters())
    head = 32 * 3 + 3
    if method == "finetune":
        assert result["trainable_params"] == backbone_params + head  # the whole backbone trains
    else:
        assert head < result["trainable_params"] < backbone_params  # prompts (or adapters) + head only


def test_method_args_reach_the_encoder(run, data, bb):
    """P-Tuning v2's prompt_length: 2 (key, value) x layers x hidden trainable numbers per
    prefix slot, so 3 and 5 slots differ by exactly 2 x 2 x 2 x 32."""
    counts = {}
    for length in (3, 5):
        result, w = run(config(data, method_args={"prompt_length": length}, max_train_examples=4), bb.copy())
        assert w.model.encoder.config.prompt_length == length
        counts[length] = result["trainable_params"]
        assert counts[length] == length * 2 * 2 * 32 + (32 * 3 + 3)
    assert counts[5] - counts[3] == 2 * 2 * 2 * 32


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    return {family: str(save_tiny(family, root / family)) for family in ("bert", "roberta")}


def test_model_and_layers_load_that_backbone(run, data, saved_models):
    """``model``: the backbone trained is the one at that path (BERT vs RoBERTa); ``layers=k``:
    only its first k transformer layers run (fewer parameters), and the record says k."""
    seen, one_layer = {}, {}
    for family, path in saved_models.items():
        for layers in (None, 1):
            result, w = run(config(data, model=path, layers=layers, max_train_examples=4))
            backbone = w.model.encoder.backbone
            assert backbone.config.model_type == family and result["model"] == path
            assert len(backbone.encoder.layer) == (layers or 2) and result["layers"] == (layers or 2)
            seen[family, layers] = result["total_params"]
            one_layer.setdefault(family, sum(p.numel() for p in backbone.encoder.layer[-1].parameters()))
    for family in saved_models:
        assert seen[family, None] - seen[family, 1] == one_layer[family] + 3 * 2 * 32  # a layer + its P-Tuning v2 prefixes
    assert seen["bert", None] != seen["roberta", None]


def test_data_dir_is_where_the_examples_come_from(run, data, bb, tmp_path):
    """Another directory, other files: its split sizes and texts, and the record names it."""
    other = write_data(tmp_path / "other", cb_train=20, seed=1)
    for root, train_n in ((data, CB_TRAIN - 4), (other, 20 - 2)):
        result, w = run(config(root), bb.copy())
        assert result["data_dir"] == str(root) and sizes_of(result)["train"] == train_n
        files = {json.loads(line)["premise"] for line in (root / "superglue/CB/train.jsonl").read_text().splitlines()}
        tok = bb.tokenizer
        trained = {tok.decode(ids[1:ids.index(tok.sep_token_id)]) for f in w.train() for ids in f.ids}
        assert trained <= {tok.decode(tok(p)["input_ids"][1:-1]) for p in files}


def test_seed_same_run_again_other_seed_other_run(run, data, bb):
    """Same seed: the same start, the same order of examples, the same weights; another seed:
    another start (prompt and head init) and another order."""
    runs = {}
    for key, seed in (("a", 3), ("b", 3), ("c", 4)):
        _, w = run(config(data, seed=seed, epochs=2), bb.copy())
        runs[key] = (w.start, [f.ids for f in w.train()], w.final())
    for i in (0, 2):
        assert all(torch.equal(runs["a"][i][k], runs["b"][i][k]) for k in runs["a"][i])
        assert not all(torch.equal(runs["a"][i][k], runs["c"][i][k]) for k in runs["a"][i])
    assert runs["a"][1] == runs["b"][1] and runs["a"][1] != runs["c"][1]


# ====================================================================== steps, batches, schedule


@pytest.mark.parametrize("epochs,batch_size", [(1, 4), (3, 4), (2, 5), (2, 36)])
def test_epochs_and_batch_size_set_the_steps(run, data, bb, epochs, batch_size):
    """epochs x ceil(n / batch_size) optimizer steps, each on one batch of batch_size (one
    smaller remainder per epoch), every training example once per epoch."""
    n = CB_TRAIN - 4
    result, w = run(config(data, epochs=epochs, batch_size=batch_size), bb.copy())
    assert result["epochs_run"] == len(result["history"]) == epochs
    assert len(w.steps) == epochs * math.ceil(n / batch_size)
    assert sorted(f.rows for f in w.train()) == sorted(chunks(n, batch_size) * epochs)
    assert result["data"]["epochs"] == epochs and result["data"]["batch_size"] == batch_size


@pytest.mark.parametrize("task", ["superglue/cb", "superglue/cb+glue/sst2"])
@pytest.mark.parametrize("k", [2, 3])
def test_grad_accum_steps_slices_each_step(run, data, bb, task, k):
    """grad_accum_steps = k, single task and multi-task schedules alike: the same optimizer
    steps on the same batches, each batch now k forward/backward slices (min(k, rows)) of
    at most ceil(B / k) rows, which together are exactly the batch."""
    per_step = {}
    for accum in (1, k):
        result, w = run(config(data, task=task, batch_size=4, epochs=2, grad_accum_steps=accum), bb.copy())
        by_step: dict[int, list[Forward]] = {}
        for f in w.train():
            by_step.setdefault(f.step, []).append(f)
        assert sorted(by_step) == list(range(len(w.steps)))  # every optimizer step trained, none twice
        per_step[accum] = by_step
    one, acc = per_step[1], per_step[k]
    assert len(acc) == len(one)  # the same number of optimizer steps
    for step, (whole,) in one.items():
        slices = acc[step]
        assert len(slices) == min(k, whole.rows) and max(s.rows for s in slices) <= -(-whole.rows // k)
        assert sorted(i for s in slices for i in s.ids) == sorted(whole.ids) and {s.task for s in slices} == {whole.task}


def test_eval_batch_size_sets_the_evaluation_batches(run, data, bb):
    """Each evaluated split is cut into batches of eval_batch_size: dev after every epoch,
    val once at the end."""
    for ebs in (3, 5, 64):
        result, w = run(config(data, epochs=2, eval_batch_size=ebs), bb.copy())
        s = sizes_of(result)
        assert sorted(f.rows for f in w.evals()) == sorted(chunks(s["dev"], ebs) * 2 + chunks(s["val"], ebs))


@pytest.mark.parametrize("lr", [1e-3, 3e-2, None])
def test_lr_is_the_first_step_size(run, data, bb, lr):
    """AdamW's first step moves every weight with a gradient by lr (m / sqrt(v) = sign(g)),
    no warmup, no decay; lr None: the method's default."""
    result, w = run(config(data, lr=lr, max_train_examples=4, weight_decay=0.0, warmup_ratio=0.0), bb.copy())
    want = lr if lr is not None else get_method("ptuning_v2").config_cls.default_lr
    assert len(w.steps) == 1 and w.steps[0].lr == pytest.approx(want) and result["config"]["lr"] == want
    moved = max((w.final()[k] - w.start[k]).abs().max().item() for k in w.start)
    assert moved == pytest.approx(want, rel=1e-3)


def test_weight_decay_shrinks_decayed_weights_only(run, data, bb):
    """One step with weight_decay wd vs 0: decayed weights end lr x wd x w0 lower (AdamW's
    decoupled decay), biases (no decay) end the same."""
    lr, wd = 1e-2, 0.5
    finals = {}
    for decay in (0.0, wd):
        _, w = run(config(data, lr=lr, weight_decay=decay, max_train_examples=4, warmup_ratio=0.0), bb.copy())
        finals[decay], start = w.final(), w.start
    decayed = 0
    for k, w0 in start.items():
        diff = finals[0.0][k] - finals[wd][k]
        if k.endswith("bias"):
            assert torch.equal(diff, torch.zeros_like(diff)), k
        else:
            torch.testing.assert_close(diff, lr * wd * w0, rtol=1e-3, atol=1e-7)
            decayed += 1
    assert decayed >= 2  # the prefixes and the head's weight


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5])
def test_warmup_ratio_shapes_the_schedule(run, data, bb, ratio):
    """w = int(ratio x T) warmup steps: lr x k / w, then linear decay lr x (T - k) / (T - w)."""
    lr = 1e-2
    _, w = run(config(data, lr=lr, warmup_ratio=ratio, epochs=2, batch_size=9), bb.copy())
    total = len(w.steps)
    assert total == 2 * 4
    warm = int(ratio * total)
    want = [lr * k / warm if k < warm else lr * (total - k) / (total - warm) for k in range(total)]
    assert [s.lr for s in w.steps] == pytest.approx(want)


def test_max_grad_norm_clips_every_step(run, data, bb):
    """Every step's gradient norm is at most max_grad_norm: a tiny limit makes each norm the
    limit itself, a large one leaves the gradients as they are."""
    norms = {}
    for limit in (1e-4, 1e4):
        _, w = run(config(data, max_grad_norm=limit, epochs=2), bb.copy())
        norms[limit] = [s.grad_norm for s in w.steps]
    assert norms[1e-4] == pytest.approx([1e-4] * len(norms[1e-4]), rel=1e-3)
    assert min(norms[1e4]) > 1e-2


@pytest.mark.parametrize("patience", [None, 1, 2])
def test_patience_stops_after_epochs_without_improvement(run, data, bb, patience):
    """With an lr too small to move a float32 weight the dev score never improves after epoch
    1: patience p stops after 1 + p epochs, no patience runs every epoch."""
    result, _ = run(config(data, patience=patience, lr=1e-12, weight_decay=0.0, epochs=5, max_train_examples=4), bb.copy())
    scores = {h["dev_primary"] for h in result["history"]}
    assert len(scores) == 1  # no epoch better than the first
    assert result["epochs_run"] == (5 if patience is None else 1 + patience)
    assert result["best_epoch"] == 1


# ====================================================================== data budget


@pytest.mark.parametrize("setting,n", [({}, CB_TRAIN - 4), ({"max_train_examples": 7}, 7), ({"train_size": 6}, 6),
                                       ({"train_size": 9}, 9)])
def test_train_subsets_set_the_examples_trained_on(run, data, bb, setting, n):
    """max_train_examples / train_size: exactly that many training examples, each trained on
    once per epoch; train_size stratified by label (CB's three balanced labels)."""
    result, w = run(config(data, epochs=2, **setting), bb.copy())
    assert result["train_examples"] == sizes_of(result)["train"] == n
    assert sum(f.rows for f in w.train()) == 2 * n and len({i for f in w.train() for i in f.ids}) <= n
    if "train_size" in setting:
        assert result["data"]["train_label_counts"] == {"0": n // 3, "1": n // 3, "2": n // 3}


def test_data_seed_draws_the_sample(run, data, bb):
    """train_size's sample (and dev_size's carve) is drawn with data_seed: the same seed, the
    same examples; another seed, others. The run seed does not move it."""
    samples = {}
    for key, data_seed, seed in (("a", 0, 0), ("b", 0, 5), ("c", 1, 0)):
        _, w = run(config(data, train_size=6, dev_size=3, data_seed=data_seed, seed=seed), bb.copy())
        samples[key] = ({i for f in w.train() for i in f.ids}, {i for f in w.evals()[:1] for i in f.ids})
    assert samples["a"] == samples["b"]
    assert samples["a"][0] != samples["c"][0] and samples["a"][1] != samples["c"][1]


def test_dev_size_is_the_selection_set(run, data, bb):
    """dev_size k: the dev evaluated every epoch is k examples carved from train outside the
    sample (not the task's dev split)."""
    dev_sizes = {}
    for dev_size in (None, 3, 7):
        result, w = run(config(data, train_size=6, dev_size=dev_size, epochs=2), bb.copy())
        dev_sizes[dev_size] = sizes_of(result)["dev"]
        dev_rows = [f for f in w.evals()][:-1]  # all but the last: the val at the end (one batch of 12)
        assert sum(f.rows for f in dev_rows) == 2 * dev_sizes[dev_size]
        if dev_size is not None:
            trained = {i for f in w.train() for i in f.ids}
            assert not trained & {i for f in dev_rows for i in f.ids}
    assert dev_sizes == {None: 4, 3: 3, 7: 7}


@pytest.mark.parametrize("caps,want", [({}, {"dev": 4, "val": CB_VAL}), ({"max_eval_examples": 5}, {"dev": 4, "val": 5}),
                                       ({"max_eval_examples": 3}, {"dev": 3, "val": 3}),
                                       ({"max_dev_examples": 2}, {"dev": 2, "val": CB_VAL}),
                                       ({"max_dev_examples": 2, "max_eval_examples": 5}, {"dev": 2, "val": 5})])
def test_eval_caps_set_the_evaluated_examples(run, data, bb, caps, want):
    """max_eval_examples caps dev and val, max_dev_examples dev only: the sizes recorded,
    the examples evaluated and the reported predictions."""
    result, w = run(config(data, epochs=2, **caps), bb.copy())
    s = sizes_of(result)
    assert {k: s[k] for k in want} == want and s["train"] == CB_TRAIN - 4
    assert sum(f.rows for f in w.evals()) == 2 * want["dev"] + want["val"]
    assert len(result["predictions"]["val"]["predictions"]) == want["val"]


@pytest.mark.parametrize("max_length", [8, 13, None])
def test_max_length_is_the_token_limit(run, data, bb, max_length):
    """Every input is cut to max_length tokens (texts of up to 30 tokens reach it); None: the
    task's limit (CB: 256), capped by the tiny BERT's 160 - 2 positions, cuts nothing here."""
    result, w = run(config(data, max_length=max_length), bb.copy())
    limit = max_length or min(get_task("superglue/cb").max_length, bb.config.max_position_embeddings - 2)
    assert result["data"]["max_length"] == limit
    longest = max(n for f in w.forwards for n in f.lengths)
    if max_length is not None:
        assert longest == limit and result["data"]["truncated"]["train"] > 0
    else:
        assert 20 < longest < limit and result["data"]["truncated"]["train"] == 0


# ====================================================================== the model's details


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler", "last"])
def test_pooling_is_what_the_head_reads(run, data, bb, pooling):
    """The head's input is the masked mean of the input tokens' states, the first state, the
    backbone's pooler on it, or the last real token's state."""
    _, w = run(config(data, pooling=pooling, max_train_examples=4), bb.copy())
    assert w.pooled
    pooler = w.model.encoder.backbone.pooler
    for hidden, mask, head_in in w.pooled:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        last = mask.sum(1) - 1  # right padding: the last real token
        want = {"mean": lambda: (hidden * m).sum(1) / m.sum(1), "cls": lambda: hidden[:, 0],
                "pooler": lambda: pooler.activation(pooler.dense(hidden[:, 0])),
                "last": lambda: hidden[torch.arange(hidden.shape[0]), last]}[pooling]()
        torch.testing.assert_close(head_in, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_head_dropout_drops_head_inputs_in_training(run, data, bb, p):
    """head_dropout p: the head's dropout zeroes about p of its inputs in training (none at 0)."""
    _, w = run(config(data, head_dropout=p, epochs=2), bb.copy())
    assert w.model.head[0].p == p
    dropped = sum(w.head_dropped) / len(w.head_dropped)
    assert dropped == 0.0 if p == 0.0 else abs(dropped - p) < 0.1


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16),
                                             ("auto", torch.float32)])
def test_precision_is_the_autocast_dtype(run, data, bb, precision, dtype):
    """The logits of training and evaluation come out in the precision's autocast dtype
    (auto on the CPU: fp32); the record says which ran."""
    result, w = run(config(data, precision=precision, max_train_examples=4), bb.copy())
    assert {f.dtype for f in w.forwards} == {dtype}
    assert result["precision"] == ("fp32" if precision == "auto" else precision)
    assert all(p.dtype == torch.float32 for p in w.model.parameters())  # weights stay fp32


def test_device_is_where_the_run_runs(run, data, bb):
    """device: the model and batches live there (on a machine without CUDA, asking for it fails
    instead of quietly training on the CPU)."""
    result, w = run(config(data, device="cpu", max_train_examples=4), bb.copy())
    assert result["device"] == "cpu" and {f.device for f in w.forwards} == {"cpu"}
    if torch.cuda.is_available():
        result, w = run(config(data, device="cuda", max_train_examples=4), bb.copy())
        assert result["device"] == "cuda" and {f.device for f in w.forwards} == {"cuda"}
        assert result["compute"]["gpu"] is not None
    else:
        with pytest.raises((AssertionError, RuntimeError)):
            run(config(data, device="cuda", max_train_examples=4), bb.copy())


def test_kernels_pick_dropout_and_attention(run, data, bb):
    """fast: ptcore's dropout (FastDropout) and attention; reference: torch's dropout and SDPA;
    with dropout on, the two draw other masks, so the same seed ends elsewhere."""
    finals = {}
    for kernels, drop, attention in (("fast", FastDropout, "ptcore"), ("reference", nn.Dropout, "sdpa")):
        result, w = run(config(data, kernels=kernels, head_dropout=0.3, epochs=2), bb.copy())
        assert {type(m) for m in w.model.modules() if isinstance(m, nn.Dropout)} == {drop}
        assert result["compute"]["kernels"] == kernels and result["compute"]["attention"] == attention
        finals[kernels] = w.final()
    assert not all(torch.equal(finals["fast"][k], finals["reference"][k]) for k in finals["fast"])


# ====================================================================== multi-task mixing and initialization


@pytest.mark.parametrize("mixing,temperature", [("proportional", 2.0), ("temperature", 1.5), ("temperature", 4.0)])
def test_mixing_sets_the_task_of_each_step(run, data, bb, mixing, temperature):
    """The weights p_t are n_t (proportional) or n_t ** (1 / mixing_temperature), normalized;
    each step's task is drawn from them (the schedule's generator, seeded with seed)."""
    result, w = run(config(data, task="superglue/cb+glue/sst2", mixing=mixing, mixing_temperature=temperature,
                           batch_size=4, seed=2), bb.copy())
    n = {"superglue/cb": CB_TRAIN - 4, "glue/sst2": SST_TRAIN - 1}
    power = 1.0 if mixing == "proportional" else 1.0 / temperature
    weights = {t: n[t] ** power / sum(v**power for v in n.values()) for t in n}
    assert {t: r["mixing_weight"] for t, r in result["tasks"].items()} == pytest.approx(weights)
    steps = math.ceil(sum(n.values()) / 4)
    assert [f.task for f in w.train()] == draw_tasks(weights, steps, torch.Generator().manual_seed(2))
    assert result["data"]["mixing"] == mixing and result["data"]["mixing_temperature"] == temperature


def test_init_from_starts_from_the_checkpoint(run, data, bb, tmp_path):
    """init_from: the run's first step starts from the checkpoint's prompts and head (the
    same task); without it, from the seed's fresh init."""
    from safetensors.torch import load_file

    first, _ = run(config(data, seed=1, epochs=2, lr=5e-2), bb.copy(), output=tmp_path / "a")
    ckpt = Path(first["checkpoint"])
    saved = load_file(str(ckpt / "trainable.safetensors"))
    result, w = run(config(data, init_from=str(ckpt)), bb.copy())
    assert set(w.start) == set(saved) and all(torch.equal(w.start[k], saved[k]) for k in saved)
    assert str(ckpt) in result["init_from"] and "head" in result["init_from"]
    fresh, wf = run(config(data), bb.copy())
    assert fresh["init_from"] is None and not any(torch.equal(wf.start[k], saved[k]) for k in saved)
