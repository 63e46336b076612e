"""Data-parallel training (``ptcore.distributed``): 2 gloo processes at global batch B follow
the loss trajectory of 1 process at batch B and end in the same trainable weights and dev
scores, for fine-tuning and for P-Tuning v2; under the prompt method the backbone stays
bit-identical on every rank; the gradients synced per step are the trainable parameters
(kilobytes for prompts) plus two scalars.

Dropout is 0 (tiny backbone, head_dropout 0, prefix_dropout 0): with dropout on, each rank draws its own masks
(as it should), and the runs agree only in distribution.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from conftest import FIXTURES
from tinymodels import tiny_backbone

from ptcore.config import RunConfig
from ptcore.distributed import Dist, spawn
from ptcore.train import train

ARGS = {"finetune": {}, "ptuning_v2": {"prompt_length": 3, "prefix_dropout": 0.0}}


def _cfg(method: str, **kw) -> RunConfig:
    base = dict(task="superglue/cb", method=method, method_args=ARGS[method], data_dir=str(FIXTURES), epochs=2,
                batch_size=4, seed=2, lr=5e-3, head_dropout=0.0)
    return RunConfig(**{**base, **kw})


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for k, v in sorted(tensors.items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Capture:
    def on_epoch_end(self, epoch, metrics, model, state):
        self.weights = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        frozen = {n: p for n, p in model.encoder.backbone.named_parameters() if not p.requires_grad}
        self.frozen = _digest(frozen) if frozen else ""
        return False


def one_run(method: str, model_dir: str, extra: dict) -> dict:
    """A run in this process (a rank, or the single worker): what the test compares."""
    bb = tiny_backbone("bert", f"{model_dir}/{os.getpid()}")  # same weights (seeded); a vocab file per process
    cap = Capture()
    result = train(_cfg(method, **extra), backbone=bb, callbacks=(cap,), progress=False)
    return {"losses": [h["train_loss"] for h in result["history"]], "dev": [h["dev_primary"] for h in result["history"]],
            "val": result["val"]["primary"], "weights": cap.weights, "frozen": cap.frozen,
            "initial_frozen": _digest({n: p for n, p in bb.model.named_parameters()}),
            "workers": result["workers"], "sync_bytes": result["sync_bytes_per_step"], "trainable": result["trainable_params"]}


@pytest.mark.parametrize("method", ["finetune", "ptuning_v2"])
def test_two_workers_equal_one_worker(method, tmp_path):
    single = one_run(method, str(tmp_path / "m"), {})
    ranks = spawn(2, one_run, method, str(tmp_path / "m"), {})
    assert single["workers"] == 1 and single["sync_bytes"] == 0
    for r in ranks:
        assert r["workers"] == 2
        assert r["losses"] == pytest.approx(single["losses"], rel=1e-5)  # the same loss trajectory
        assert r["dev"] == single["dev"] and r["val"] == single["val"]  # sharded evaluation, gathered: the same scores
        for k, w in single["weights"].items():
            # float sums in another order; AdamW divides by sqrt(v), so a weight whose gradient is
            # ~0 can move by a fraction of lr (5e-3) on that rounding: 5e-5 is 1% of lr
            torch.testing.assert_close(r["weights"][k], w, rtol=1e-4, atol=5e-5)
    # every rank took the same steps: identical weights, bit for bit
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in single["weights"])
    # what is synced: the trainable parameters + the step's loss and an inf/NaN flag, in fp32
    assert ranks[0]["sync_bytes"] == (ranks[0]["trainable"] + 2) * 4
    if method == "ptuning_v2":  # the frozen backbone is never touched: bit-identical on every rank
        assert ranks[0]["frozen"] == ranks[1]["frozen"] == single["frozen"]
        assert ranks[0]["frozen"] == ranks[0]["initial_frozen"]


def test_grad_accumulation_on_two_workers(tmp_path):
    """2 workers x 2 slices each = one worker's batch."""
    single = one_run("ptuning_v2", str(tmp_path / "m"), {})
    ranks = spawn(2, one_run, "ptuning_v2", str(tmp_path / "m"), {"grad_accum_steps": 2})
    assert ranks[0]["losses"] == pytest.approx(single["losses"], rel=1e-5)
    for k, w in single["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][k], w, rtol=1e-4, atol=5e-5)


def test_shards_and_slices():
    d = Dist(rank=1, world=3)
    assert d.shard(list(range(10))) == [3, 4, 5] and Dist(2, 3).shard(list(range(10))) == [6, 7, 8, 9]
    assert d.my_slices(list("abcdef"), 2) == ["c", "d"]
    assert Dist().shard([1, 2]) == [1, 2] and not Dist().on


def test_two_worker_runs_with_dropout_are_reproducible(tmp_path):
    """Dropout on (prefix and head): each rank draws its own masks from (seed, rank, epoch), so
    the ranks still agree with each other, and a second run repeats the first exactly."""
    extra = {"head_dropout": 0.2, "method_args": {"prompt_length": 3, "prefix_dropout": 0.3}}
    first = spawn(2, one_run, "ptuning_v2", str(tmp_path / "m"), extra)
    again = spawn(2, one_run, "ptuning_v2", str(tmp_path / "m"), extra)
    single = one_run("ptuning_v2", str(tmp_path / "m"), extra)
    assert first[0]["losses"] == again[0]["losses"] and first[0]["dev"] == again[0]["dev"]
    assert all(torch.equal(first[0]["weights"][k], again[1]["weights"][k]) for k in single["weights"])
    assert first[0]["losses"] != single["losses"]  # the masks did differ from one worker's


def test_rank_streams_differ_by_rank_and_epoch_and_repeat():
    def draw(rank, epoch):
        Dist(rank=rank, world=2).seed_epoch(7, epoch)
        return torch.rand(4)

    assert torch.equal(draw(1, 3), draw(1, 3))
    assert not torch.equal(draw(0, 3), draw(1, 3)) and not torch.equal(draw(1, 3), draw(1, 4))
    torch.manual_seed(0)
    a = torch.rand(1)
    torch.manual_seed(0)
    Dist().seed_epoch(7, 3)  # one worker: the stream is left alone
    assert torch.equal(torch.rand(1), a)
