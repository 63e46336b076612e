"""What a study will write, estimated before it starts (:func:`estimate`): its output
directory's parts in bytes, and what its trials hold in the temp dir at once.

Almost all of it is checkpoints. A checkpoint holds a run's trainable tensors
(:func:`ptcore.checkpoint.save_checkpoint`: ``trainable_state_dict()``, fp32, so 4 bytes a
parameter; ``checkpoint_bytes`` in a result is the same sum). The count comes from the real
model: :func:`ptcore.model.build_model` around the backbone built from its config alone, on
torch's ``meta`` device (shapes, no memory, no weights read), once per distinct backbone,
layers, task, method and method options, cached. A method that cannot be built on ``meta``
counts the whole backbone (every weight: an upper bound), and the breakdown says so.

Where the copies are (see :mod:`orchestrator.execution.trial`, ``worker`` and
:mod:`orchestrator.ledger.disk`):

* ``checkpoints``: every final run's checkpoint is logged to MLflow (``mlartifacts/``) and kept,
  less those above ``tracking.max_checkpoint_mb``; search runs' are never kept.
* ``Ray checkpoint copies``: a trial's Ray Train run (``<storage>/<run>``) holds its reported
  checkpoints until the trial ends (then it is deleted): at most ``budget.max_concurrent``
  trials at once, the biggest assumed; all of them with ``ray.keep_train_checkpoints``. A
  search trial in a reused local trial process persists nothing unless
  ``ray.checkpoint_every_epoch`` or ``ray.max_failures`` asks; a final trial keeps each run's
  whole output (checkpoint, predictions, ``result.json``); every epoch's checkpoint with
  ``checkpoint_every_epoch`` (with the training state, ~4x more, with ``max_failures``).
* ``predictions``: each final run's per-item metric inputs (``predictions/*.json``), a few
  bytes per reported item (val and test, after ``max_eval_examples``).
* ``MLflow + ledgers``: a fixed allowance for ``mlflow.db``, ``optuna.db``, ``results.csv``,
  ``state/``, Tune's records and the tokenized ``cache/``, plus a little per run.
* ``tmp``: each running trial writes its run's output (checkpoint, predictions JSONL) into a
  temp dir before Ray moves it, plus Ray's session directory (logs).

Everything is an upper bound where the plan does not decide: a searched method option
(prompt length, depth, LoRA rank) counts its largest checkpoint, for search and final runs.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any, Optional

from orchestrator.common.labels import human_bytes
from orchestrator.study.plan import Cell, LoadedStudy, compose_run, final_seeds, final_packs
from ptcore.backbones import load_backbone
from ptcore.config import make_run_config, split_settings, task_names
from ptcore.errors import PtcoreError
from ptcore.tasks import get_task, load_splits

BYTES_PER_PARAM = 4  # fp32: autocast (bf16/fp16) computes in low precision, the parameters stay fp32
STATE_FACTOR = 5  # a resumable epoch checkpoint: the weights + ptcore.trainstate's (weights, best, AdamW's 2 moments)
RUN_FILES = 32_000  # run_config.json + result.json (epoch history, provenance) of a run's output
PREDICTION_BYTES = 8  # per item in predictions/*.json (measured: 3.5 kB for SST-2's 872 val items)
JSONL_BYTES = 200  # per item in a run's predictions/<split>.jsonl (id, prediction, label, digest), temp only
LEDGER_FIXED = 16_000_000  # mlflow.db, optuna.db, results.csv, state/, Tune's records, cache/ (scale_sweep: ~8 MB)
LEDGER_PER_RUN = 32_000  # MLflow params/metrics/tags, a results.csv row with its epoch curve, an Optuna trial
RAY_SESSION = 64_000_000  # Ray's session directory in the temp dir: logs of the driver, raylet and workers
MAX_COMBOS = 64  # searched method options: every combination of their ends up to this many, else the top ends


@dataclass(frozen=True)
class Part:
    """One part of what a study writes: ``bytes`` in directory ``where``; ``detail`` its biggest
    contributors (label, bytes); ``transient``: held while trials run, deleted after."""

    name: str
    bytes: int
    where: str
    detail: tuple[tuple[str, int], ...] = ()
    transient: bool = False

    def describe(self) -> str:
        text = f"{self.name} {human_bytes(self.bytes)}"
        shown = [f"{label} {human_bytes(b)}" for label, b in self.detail if b]
        return text + (f": {', '.join(shown)}" if shown else "")


@dataclass(frozen=True)
class Footprint:
    """A study's estimated disk use: ``parts`` under the output directory (and the Ray storage,
    where that is local), ``tmp`` bytes at once in the temp dir ``tmp_dir`` (0: not on this
    machine, a cluster's nodes), and ``notes`` on what is an upper bound or unknown."""

    output_dir: str
    parts: tuple[Part, ...]
    tmp: int
    tmp_dir: str
    tmp_detail: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = ()
    runs: int = 0  # planned runs: search trials and final runs
    largest: tuple[tuple[str, int], ...] = ()  # (method label, the largest checkpoint one of its runs writes), biggest first

    @property
    def breakdown(self) -> dict[str, int]:
        """Part name -> bytes."""
        return {p.name: p.bytes for p in self.parts}

    @property
    def total(self) -> int:
        return sum(p.bytes for p in self.parts)


def temp_dir() -> str:
    """Ray's temp dir (its sessions, and the lock of local-Ray studies): ``$RAY_TMPDIR``, else
    ``$TMPDIR``, else ``/tmp``."""
    return os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"


# ------------------------------------------------------------------ one run's checkpoint, counted on meta

_COUNTS: dict[tuple, tuple[Optional[int], Optional[str]]] = {}  # build key -> (checkpoint bytes, why an upper bound / unknown)


def _key(cfg) -> tuple:
    """What decides a model's trainable tensors: backbone, layers, task (its heads), method,
    method options, pooling. Seeds, learning rates and data settings do not."""
    args = cfg.method_args
    args = args.model_dump() if hasattr(args, "model_dump") else dict(args or {})  # the method's config class (resolved)
    opts = tuple(sorted((k, repr(v)) for k, v in args.items()))
    return (cfg.model, cfg.layers, cfg.trust_remote_code, cfg.task, cfg.method, opts, cfg.pooling)


def checkpoint_bytes(cfg) -> tuple[Optional[int], Optional[str]]:
    """Bytes of the checkpoint a run of ``cfg`` (a :class:`ptcore.config.RunConfig`) writes:
    its model's trainable tensors, counted on torch's meta device; cached per :func:`_key`.
    ``(bytes, None)``; ``(bytes, why)`` for the upper bound of a method that cannot be built on
    meta (every weight of the backbone); ``(None, why)`` where the backbone cannot be read here."""
    key = _key(cfg)
    if key not in _COUNTS:
        _COUNTS[key] = _count(cfg)
    return _COUNTS[key]


_BACKBONES: dict[tuple, Any] = {}  # (model, layers, trust_remote_code) -> a meta Backbone, or the line why it cannot load


def _meta_backbone(cfg):
    """The run's backbone built from its config alone on the meta device (ptcore's own loader
    and layer truncation), once per (model, layers); each build gets a copy, as each run does."""
    import torch  # deferred: only a starting study or --dry-run pays for torch (seconds), never `orchestrate validate`

    key = (cfg.model, cfg.layers, cfg.trust_remote_code)
    if key not in _BACKBONES:
        try:
            with torch.device("meta"):
                _BACKBONES[key] = load_backbone(cfg.model, cfg.layers, config_only=True, trust_remote_code=cfg.trust_remote_code)
        except Exception as e:  # not readable here (a hub id outside the cache): the runs download it
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            _BACKBONES[key] = f"{cfg.model}: size unknown, its config cannot be read here ({first[:120]})"
    return _BACKBONES[key]


def _count(cfg) -> tuple[Optional[int], Optional[str]]:
    import torch  # deferred: see _meta_backbone

    from ptcore.model import build_model  # deferred: ptcore.model imports torch (see _meta_backbone)

    backbone = _meta_backbone(cfg)
    if isinstance(backbone, str):
        return None, backbone
    try:
        with torch.device("meta"):
            model = build_model(cfg, backbone.copy())
        return _tensor_bytes(model.trainable_state_dict().values()), None
    except Exception as e:  # a method that needs real tensors to build: every weight, an upper bound
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return (_tensor_bytes(backbone.model.state_dict().values()),
                f"{cfg.method} on {cfg.model}: counted as the whole backbone (an upper bound; not buildable on meta: {first[:80]})")


def _tensor_bytes(tensors) -> int:
    """The checkpoint's own sum (``checkpoint_bytes`` in ptcore.train): a backbone built from
    its config has fp32 parameters, :data:`BYTES_PER_PARAM` each."""
    return sum(t.numel() * t.element_size() for t in tensors)


def _option_combos(cell: Cell) -> list[dict[str, Any]]:
    """The searched values whose checkpoints could differ: every combination of the ends of
    the searched method options (run settings such as lr change no shape), or, beyond
    :data:`MAX_COMBOS`, the top end of each."""
    _, opts = split_settings({k: None for k in cell.method.search})
    ends = {k: cell.method.search[k].ends() for k in opts}
    if not ends:
        return [{}]
    n = 1
    for v in ends.values():
        n *= len(v)
    if n > MAX_COMBOS:
        return [{k: v[-1] for k, v in ends.items()}]
    return [dict(zip(ends, combo)) for combo in itertools.product(*ends.values())]


@dataclass
class _CellSize:
    ckpt: int  # the largest checkpoint a run of the cell writes (bytes)
    epochs: int  # the most epochs a run of the cell trains
    eval_rows: int  # items a final run reports (val + test of each task, capped by max_eval_examples)


def _cell_size(ls: LoadedStudy, cell: Cell, sizes: dict[str, dict[str, int]], notes: set[str], unknown: set[str]) -> _CellSize:
    best, epochs, cfgs = 0, 1, []
    for params in _option_combos(cell):
        try:
            cfgs.append(make_run_config(compose_run(ls, cell, params)))
        except PtcoreError:  # a combination of ends the method refuses (each end alone was validated)
            continue
    if not cfgs:
        cfgs.append(make_run_config(compose_run(ls, cell)))
    for cfg in cfgs:
        b, why = checkpoint_bytes(cfg)
        if b is None:
            unknown.add(cfg.model)
        elif why:
            notes.add(why)
        best = max(best, b or 0)
        epochs = max(epochs, int(cfg.epochs))
    cap = cfgs[0].max_eval_examples
    rows = 0
    for t in task_names(cell.task):
        for split in ("val", "test"):
            n = sizes.get(t, {}).get(split)
            if n is not None:
                rows += min(n, cap) if cap else n
    return _CellSize(best, epochs, rows)


def split_sizes(ls: LoadedStudy, tasks: Optional[list[str]] = None) -> tuple[dict[str, dict[str, int]], Optional[str]]:
    """Each task's split sizes, read by the runs' own reader; (sizes, why unknown)."""
    if ls.data_dir is None:
        return {}, "predictions: eval sizes unknown (no data_dir: the runs read the hub)"
    out = {}
    for t in tasks or []:
        try:
            splits, _ = load_splits(get_task(t), ls.data_dir)
        except PtcoreError:
            continue
        out[t] = {s: len(x) for s, x in splits.items()}
    return out, None


def _local_artifacts(uri: str) -> bool:
    """A tracking store without an artifact server of its own keeps the artifacts in the output
    directory (the rule of orchestrator.tracking.tracker.local_artifacts, a room above this one)."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    return scheme in ("", "file") or scheme.startswith(("sqlite", "postgresql", "mysql", "mssql"))


def _run_local_mode(ls: LoadedStudy) -> bool:
    # orchestrator.execution.trial.runs_locally's rule (a room above): one CPU worker, or forced
    res, mode = ls.study.resources, ls.study.ray.trial_mode
    if mode != "auto":
        return mode == "local"
    return res.workers_per_trial == 1 and not res.gpus_per_worker


# ------------------------------------------------------------------ the estimate


def estimate(ls: LoadedStudy, sizes: Optional[dict[str, dict[str, int]]] = None, cluster: bool = False) -> Footprint:
    """What ``ls`` will write (see the module's docstring). ``sizes``: each task's split sizes
    (task -> split -> items; read here when not given). ``cluster``: the trials run on a
    cluster's nodes, so their temp files are not on this machine."""
    s = ls.study
    cells = ls.cells()
    notes: set[str] = set()
    tasks = sorted({t for c in cells for t in task_names(c.task)})
    if sizes is None or any(t not in sizes for t in tasks):
        read, why = split_sizes(ls, [t for t in tasks if t not in (sizes or {})])
        sizes = {**(sizes or {}), **read}
        if why:
            notes.add(why)
    unknown: set[str] = set()  # backbones whose config cannot be read here
    size = {c.id: _cell_size(ls, c, sizes, notes, unknown) for c in cells}
    out = str(ls.output_dir)
    ray_where = ls.storage_path if "://" not in ls.storage_path else None
    if ray_where is None:
        notes.add(f"Ray checkpoint copies go to {ls.storage_path} (not counted)")

    # final runs' checkpoints, kept as MLflow artifacts (less those over tracking.max_checkpoint_mb)
    limit = getattr(s.tracking, "max_checkpoint_mb", None)
    by_method: dict[str, int] = {}
    largest: dict[str, int] = {}
    n_final = n_search = 0
    pred = 0
    for c in cells:
        k = len(final_seeds(s, c))
        n_final += k
        n_search += s.budget.trials_per_cell if c.method.search else 0
        cb = size[c.id].ckpt
        largest[c.method.display()] = max(largest.get(c.method.display(), 0), cb)
        if limit is None or cb / 1e6 <= limit:
            by_method[c.method.display()] = by_method.get(c.method.display(), 0) + k * cb
        pred += k * size[c.id].eval_rows * PREDICTION_BYTES
    parts: list[Part] = []
    if _local_artifacts(ls.mlflow_uri):
        top = tuple(sorted(by_method.items(), key=lambda kv: -kv[1]))
        parts.append(Part("checkpoints", sum(by_method.values()), out, top[:3]))
    else:
        notes.add("final checkpoints go to the MLflow server's artifact store (not counted)")

    # Ray Train's copies while trials run
    local = _run_local_mode(ls)
    every_epoch = s.ray.checkpoint_every_epoch or s.ray.max_failures > 0
    factor = STATE_FACTOR if s.ray.max_failures > 0 else 1

    def run_bytes(c: Cell, final: bool) -> int:
        z = size[c.id]
        b = z.ckpt + RUN_FILES + (z.eval_rows * JSONL_BYTES if final else 0)
        return b + (z.epochs * z.ckpt * factor if every_epoch else 0)

    trials: list[int] = []  # bytes each trial's Ray Train run holds when it ends
    if not local or every_epoch:  # a local-mode search trial persists nothing otherwise
        for c in cells:
            trials += [run_bytes(c, False)] * (s.budget.trials_per_cell if c.method.search else 0)
    trials += [sum(run_bytes(j.cell, True) * len(j.runs) for j in pack) for pack in final_packs(ls)]
    trials.sort(reverse=True)
    held = trials if s.ray.keep_train_checkpoints else trials[: s.budget.max_concurrent]
    if ray_where is not None:
        name = "Ray checkpoint copies" + ("" if s.ray.keep_train_checkpoints else f" of {len(held)} running trials")
        parts.append(Part(name, sum(held), ray_where, transient=not s.ray.keep_train_checkpoints))

    parts.append(Part("predictions", pred, out))
    parts.append(Part("MLflow + ledgers", LEDGER_FIXED + (n_search + n_final) * LEDGER_PER_RUN, out))

    # the temp dir: each running trial's current run output before Ray moves it, or an epoch's
    # checkpoint being reported (one at a time in a trial); the same cell's trials may run at once
    tmp, tmp_detail = 0, ()
    if not cluster:
        lane = max((max(size[c.id].ckpt + RUN_FILES + size[c.id].eval_rows * JSONL_BYTES,
                        size[c.id].ckpt * factor if every_epoch else 0) for c in cells), default=0)
        tmp_detail = ((f"{s.budget.max_concurrent} running trials' outputs", s.budget.max_concurrent * lane),
                      ("Ray's session logs", RAY_SESSION))
        tmp = sum(b for _, b in tmp_detail)
    else:
        notes.add("temp files are on the cluster's nodes (not counted here)")
    if unknown:
        notes.add(f"checkpoints of {', '.join(sorted(unknown))} count 0 (config not readable here): the estimate is a lower bound")
    return Footprint(out, tuple(parts), tmp, temp_dir(), tmp_detail, tuple(sorted(notes)), n_search + n_final,
                     tuple(sorted(largest.items(), key=lambda kv: -kv[1])))

