"""Pre-start checks: what a loaded study points at (output directory, tracking stores,
backbones, every task's data) is usable, before anything starts (:func:`preflight`)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from orchestrator.common.files import tree_size
from orchestrator.common.labels import human_bytes
from orchestrator.common.stores import is_postgres, postgres_problem, same_database
from orchestrator.study.backbones import _offline, backbone_layers
from orchestrator.study.footprint import Footprint, estimate
from orchestrator.study.plan import LoadedStudy, _resolve_model
from orchestrator.study.schema import PG_EXAMPLE, Study
from orchestrator.study.validate import study_error
from ptcore.errors import PtcoreError
from ptcore.tasks import get_task, load_splits


def unwritable(path: Path) -> Optional[str]:
    """Why a directory cannot be made or written at ``path``, without creating anything
    (None: it can): the path or an ancestor is a file, or the nearest existing directory is
    not writable."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a directory"
        return None if os.access(path, os.W_OK | os.X_OK) else f"{path} is not writable"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{path} cannot be created: {parent} is a file, not a directory"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{path} cannot be created: {parent} is not writable"
            return None
    return None


def check_output(ls: LoadedStudy) -> None:
    """The output directory (and a local MLflow store or Ray storage elsewhere) can be
    created and written, checked before anything is: one line naming the key and the fix."""
    fix = "pass --output-dir DIR" if ls.output_source == "--output-dir" else "set output_dir (or pass --output-dir DIR)"
    why = unwritable(ls.output_dir)
    if why:
        raise study_error(ls.path, ls.output_source, f"{why}; {fix} to a directory you can write")
    for key, uri in (("mlflow_uri", ls.mlflow_uri), ("optuna_storage", ls.optuna_storage)):
        if uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///") :])
            why = unwritable(db.parent)
            if why:
                raise study_error(ls.path, f"tracking.{key}", f"{why}; point the sqlite store at a directory you can write (or drop {key})")
    sp = ls.study.ray.storage_path
    if sp and "://" not in sp:
        why = unwritable(Path(ls.storage_path))
        if why:
            raise study_error(ls.path, "ray.storage_path", f"{why}; point storage_path at a directory you can write (or drop it)")


def check_stores(ls: LoadedStudy) -> None:
    """The tracking stores can be used from here, before anything starts: MLflow and Optuna
    each have a database of their own, and a PostgreSQL one has its driver installed, its
    server answering and its database there (one line naming the key and the fix)."""
    if same_database(ls.mlflow_uri, ls.optuna_storage):
        raise study_error(
            ls.path, "tracking.optuna_storage",
            "is the database of tracking.mlflow_uri: MLflow and Optuna each keep their schema version in a table "
            "alembic_version and cannot share one database; give Optuna its own (CREATE DATABASE optuna; "
            f"{PG_EXAMPLE.format(db='optuna')}), or drop optuna_storage for the sqlite file in the output directory",
        )
    for key, uri in (("mlflow_uri", ls.mlflow_uri), ("optuna_storage", ls.optuna_storage)):
        if is_postgres(uri):
            why = postgres_problem(uri)
            if why:
                raise study_error(ls.path, f"tracking.{key}", why)


def check_backbones(ls: LoadedStudy, starting: bool) -> list[str]:
    """Backbones whose config could not be read here (hub ids not in the local cache):
    a line each. ``starting`` (a real study, not a plan): refused where HF_HUB_OFFLINE=1
    makes them impossible to load, before anything starts."""
    notes = []
    base = ls.path.parent.resolve() if ls.path is not None else None
    for i, bb in enumerate(ls.study.backbones):
        n, why = backbone_layers(bb.id, _resolve_model(bb.id, base))
        if why is None:
            continue
        if starting and _offline():
            raise study_error(ls.path, f"backbones.{i}.id", why)
        notes.append(why)
    return notes


def preflight(ls: LoadedStudy, starting: bool = False, sizes: Optional[dict[str, dict[str, int]]] = None) -> tuple[list[str], list[str]]:
    """Everything checked before a study starts (after the file itself, :func:`load_study`):
    the output directory can be written, the tracking stores answer (:func:`check_stores`),
    the backbones can load, every task's data exist and parse. Returns (data lines, backbone
    notes); raises :class:`StudyError` on one line. ``sizes``: filled with each task's split
    sizes, for :func:`disk_budget` (which a starting study and ``--dry-run`` check, ``validate`` not)."""
    check_output(ls)
    check_stores(ls)
    notes = check_backbones(ls, starting)
    return check_data(ls, sizes), notes


def check_data(ls: LoadedStudy, sizes: Optional[dict[str, dict[str, int]]] = None) -> list[str]:
    """Every task's files exist and parse, read by the same code the runs use, before
    anything starts (no output directory, no Ray, no model). Returns a line per task (its
    split sizes; also put in ``sizes``, task -> split -> items, when given); raises
    :class:`StudyError` naming the study file, the task and the fix.

    Without a data directory the runs download from the hub: that is refused up front where
    ``HF_HUB_OFFLINE=1`` forbids it, and otherwise left unchecked (a download is not a check)."""
    fix = "set the study's data_dir or PTCORE_DATA_DIR to the directory holding the official files"
    if ls.data_dir is None:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise study_error(ls.path, "data_dir", f"not set (nor PTCORE_DATA_DIR), and HF_HUB_OFFLINE forbids downloading the tasks; {fix}")
        return [f"{t}: from the Hugging Face hub (not checked before the runs)" for t in ls.study.tasks]
    lines = []
    for t in ls.study.tasks:
        try:
            splits, _ = load_splits(get_task(t), ls.data_dir)
        except PtcoreError as e:
            raise study_error(ls.path, f"tasks: {t}", f"{e} (data directory {ls.data_dir}, from {ls.data_source})") from None
        if not {"val", "test"} & set(splits):  # nothing to report on: the runs would select and stop
            spec = get_task(t)
            expected = ", ".join(str(Path(ls.data_dir) / spec.local.path / spec.local.files[r]) for r in ("val", "test") if r in spec.local.files)
            raise study_error(
                ls.path, f"tasks: {t}", f"task {t}: the official file the study reports on is missing (expected {expected}); "
                f"put it there (data directory {ls.data_dir}, from {ls.data_source})",
            )
        lines.append(f"{t}: " + ", ".join(f"{s} {len(x):,}" for s, x in splits.items()))
        if sizes is not None:
            sizes[t] = {s: len(x) for s, x in splits.items()}
    return lines


# ------------------------------------------------------------------ the disk budget

MARGIN = 0.10  # the estimate is rough: a filesystem must hold it plus a tenth
MARGIN_BYTES = 50_000_000  # and a little more (logs, the report, what else writes there meanwhile)
FULL_CHECKPOINT = 10_000_000  # a run's checkpoint above this holds every weight (fine-tuning), not prompts (kB)


@dataclass(frozen=True)
class Place:
    """One filesystem the study writes to: its first directory (``path``), the bytes the study
    needs there (``need``), what they are (``what``), and the free bytes (``free``)."""

    path: str
    need: int
    free: int
    what: tuple[str, ...]
    tmp: bool  # the temp dir is on it
    out: bool  # the output directory (or the Ray storage) is on it

    @property
    def fits(self) -> bool:
        return self.free >= self.need * (1 + MARGIN) + MARGIN_BYTES


def _existing(path: str) -> Path:
    """``path`` or its nearest existing ancestor (the output directory may not exist yet)."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def disk_budget(ls: LoadedStudy, sizes: Optional[dict[str, dict[str, int]]] = None, resume: bool = False,
                cluster: bool = False) -> tuple[Footprint, list[Place]]:
    """The study's estimated footprint (:func:`orchestrator.study.footprint.estimate`) and, for
    each filesystem it writes to (the output directory, a local Ray storage elsewhere, the temp
    dir), what it needs there against what is free (``shutil.disk_usage``). ``resume``: the
    output directory already holds part of it (see below). ``cluster``: trials run elsewhere."""
    fp = estimate(ls, sizes, cluster=cluster)
    groups: dict[int, dict] = {}

    def add(path: str, need: int, what: str, tmp: bool = False) -> None:
        root = _existing(path)
        g = groups.setdefault(root.stat().st_dev, {"path": path, "root": root, "need": 0, "what": [], "tmp": False, "out": False})
        g["need"] += need
        if need:
            g["what"].append(f"{what} {human_bytes(need)}")
        g["tmp"] |= tmp
        g["out"] |= not tmp

    for p in fp.parts:
        add(p.where, p.bytes, p.name)
    if resume and os.path.isdir(ls.output_dir):
        # --resume needs only what the remaining runs write; counting those needs the ledger (a
        # room above this one), so: the full estimate less what the output directory already
        # holds (its finished runs' checkpoints, predictions and ledgers), never below zero
        key = _existing(str(ls.output_dir)).stat().st_dev
        held = tree_size(ls.output_dir)  # bytes already there (symlinks not followed)
        groups[key]["need"] = max(0, groups[key]["need"] - held)
        groups[key]["what"].append(f"less {human_bytes(held)} already there")
    if fp.tmp:
        add(fp.tmp_dir, fp.tmp, "temp", tmp=True)
    places = [Place(g["path"], g["need"], shutil.disk_usage(g["root"]).free, tuple(g["what"]), g["tmp"], g["out"])
              for g in groups.values()]
    return fp, places


def disk_lines(fp: Footprint, places: list[Place]) -> list[str]:
    """The dry run's lines: the estimate in the output directory (its biggest parts), what
    stays once the trials are done, and the temp dir's, each with the free space."""
    out_place = next((p for p in places if p.out), None)
    shown = sorted((p for p in fp.parts if p.bytes), key=lambda p: -p.bytes)[:4]
    kept = sum(p.bytes for p in fp.parts if not p.transient)
    line = (f"  disk         ~{human_bytes(fp.total)} in {fp.output_dir} at most, ~{human_bytes(kept)} kept once trials end "
            f"({'; '.join(p.describe() for p in shown)})")
    if out_place is not None:
        line += f", free {human_bytes(out_place.free)}" + ("" if out_place.fits else " (does NOT fit)")
    lines = [line]
    if fp.tmp:
        tp = next((p for p in places if p.tmp), None)
        parts = ", ".join(f"{what} {human_bytes(b)}" for what, b in fp.tmp_detail)
        line = f"  temp         ~{human_bytes(fp.tmp)} in {fp.tmp_dir} at once ({parts})"
        if tp is not None:
            line += f", free {human_bytes(tp.free)}" + (" (the output directory's disk)" if tp.out else "") + ("" if tp.fits else " (does NOT fit)")
        lines.append(line)
    lines += [f"  disk note    {n}" for n in fp.notes]
    return lines


def _exists(dotted: str) -> bool:
    """Whether the study schema has the setting ``a.b`` (a fix names only real settings)."""
    model: type = Study
    for name in dotted.split("."):
        fields = getattr(model, "model_fields", {})
        if name not in fields:
            return False
        model = fields[name].annotation
    return True


def _fixes(ls: LoadedStudy, fp: Footprint, place: Place) -> list[str]:
    """The settings that shrink what ``place`` needs, those that apply to this study; each
    named only where the study schema has it."""
    s = ls.study
    fixes: list[str] = []

    def fix(setting: str, text: str) -> None:
        if _exists(setting.split(":")[0]):
            fixes.append(text)

    if place.out:
        big = [label for label, b in fp.largest if b > FULL_CHECKPOINT]  # every weight per run: fine-tuning
        limit = getattr(s.tracking, "max_checkpoint_mb", None)
        if big and (limit is None or limit * 1e6 > FULL_CHECKPOINT):
            fix("tracking.max_checkpoint_mb", f"tracking.max_checkpoint_mb: {FULL_CHECKPOINT // 1_000_000} "
                f"(keeps the {', '.join(big)} checkpoints out of MLflow)")
        fix("final.seeds", "fewer final.seeds (each keeps a checkpoint per cell)")
        if big:
            fix("methods", f"methods without full checkpoints (drop or restrict {', '.join(big)}: every weight per run)")
        if s.ray.keep_train_checkpoints:
            fix("ray.keep_train_checkpoints", "ray.keep_train_checkpoints: false")
        if s.ray.checkpoint_every_epoch:
            fix("ray.checkpoint_every_epoch", "ray.checkpoint_every_epoch: false")
        if s.ray.max_failures > 0:
            fix("ray.max_failures", "ray.max_failures: 0 (retries keep every epoch's training state)")
        fix("budget.max_concurrent", "a lower budget.max_concurrent (fewer Ray copies at once)")
        if s.ray.storage_path and any(w.startswith("Ray checkpoint copies") for w in place.what):
            fix("ray.storage_path", "ray.storage_path on a disk with more space")
        fix("output_dir", "--output-dir (or output_dir) on a disk with more space")
    if place.tmp:
        fixes.append("RAY_TMPDIR (or TMPDIR) on a disk with more space")
        if not place.out:
            fix("budget.max_concurrent", "a lower budget.max_concurrent")
    return fixes


def check_disk(ls: LoadedStudy, fp: Footprint, places: list[Place]) -> None:
    """Refuse a study whose estimated footprint does not fit a filesystem it writes to, before
    anything starts: one line naming what it needs, what is free and where, and the settings
    that shrink it."""
    for place in places:
        if place.fits:
            continue
        where = place.path + (f" (temp dir {fp.tmp_dir} too)" if place.tmp and place.out else "")
        raise study_error(
            ls.path, "disk",
            f"not enough space: need ~{human_bytes(place.need)} ({', '.join(place.what)}; plus a {MARGIN:.0%} + "
            f"{human_bytes(MARGIN_BYTES)} margin), free {human_bytes(place.free)}, at {where}; to need less: "
            + "; ".join(_fixes(ls, fp, place)),
        )
