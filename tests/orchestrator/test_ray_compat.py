"""Every private Ray API behind orchestrator/execution/ray_compat.py, and the public fallback.

- no other module of ``orchestrator/`` or ``ptcore/`` imports a private Ray module, touches a
  private attribute of a Ray object or overrides a private method of a Ray class (read from the
  source with ``ast``, so a function-local import counts too);
- ``fast_path()``: False with ``PTCORE_RAY_FAST_PATH=0``, with a Ray version outside
  ``FAST_PATH_RAY`` or when a private import fails, True on the tested Ray; one notice per process;
- the fallback's pieces without a Ray cluster: a local trial reports every epoch to Tune
  (``ray.tune.report``, checkpoints persisted first) and a retried one resumes from storage;
- the searcher and scheduler count from public hooks what Ray's private state held before.
(Real trials through Ray on the fallback: ``PTCORE_RAY_FAST_PATH=0`` over
tests/orchestrator/test_trial_local.py, a line of .ci/run.)
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.tune")

import orchestrator  # noqa: E402
import ptcore  # noqa: E402
from orchestrator.execution import ray_compat  # noqa: E402

ROOTS = [Path(orchestrator.__file__).resolve().parent, Path(ptcore.__file__).resolve().parent]
COMPAT = Path(ray_compat.__file__).resolve()
# private state of Ray objects the orchestrator read before ray_compat (and the unwrapped guard)
PRIVATE_ATTRS = {"_trial_info", "_num_stopped", "_ot_trials", "_ot_study", "__wrapped__", "_brackets", "_metric_op",
                 "_create_default_callbacks", "_get_local_controller", "_set_train_fn_utils", "_get_last_metrics"}


def _private_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "ray" and any(p.startswith("_") for p in parts[1:])


def _ray_object(dotted: str):
    """The Ray class (or module) ``dotted`` names, or None."""
    module, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr) if module else importlib.import_module(dotted)
    except (ImportError, AttributeError):
        return None


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def private_ray_uses(source: str, filename: str = "<src>") -> list[str]:
    """Where ``source`` imports a private Ray module or name, touches one of :data:`PRIVATE_ATTRS`
    (as an attribute, a ``getattr`` string or a method it defines), or overrides a private
    method of the Ray class it subclasses."""
    tree = ast.parse(source, filename=filename)
    hits: list[str] = []
    imported: dict[str, str] = {}  # local name -> dotted Ray name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _private_module(a.name):
                    hits.append(f"{filename}:{node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module and node.module.split(".")[0] == "ray":
            if _private_module(node.module):
                hits.append(f"{filename}:{node.lineno}: from {node.module} import ...")
            for a in node.names:
                if a.name.startswith("_"):
                    hits.append(f"{filename}:{node.lineno}: from {node.module} import {a.name}")
                imported[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRS:
            hits.append(f"{filename}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Constant) and node.value in PRIVATE_ATTRS:
            hits.append(f"{filename}:{node.lineno}: {node.value!r}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in PRIVATE_ATTRS:
            hits.append(f"{filename}:{node.lineno}: def {node.name}")
    for cls in ast.walk(tree):  # a method of ours that overrides a private one of its Ray base class
        if not isinstance(cls, ast.ClassDef):
            continue
        for base in cls.bases:
            dotted = _dotted(base)
            if dotted is None:
                continue
            head, _, rest = dotted.partition(".")
            ray_name = imported.get(head, head if head == "ray" else None)
            ray_cls = _ray_object(f"{ray_name}.{rest}" if ray_name and rest else ray_name) if ray_name else None
            if ray_cls is None:
                continue
            for fn in cls.body:
                if (isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name.startswith("_")
                        and not (fn.name.startswith("__") and fn.name.endswith("__")) and hasattr(ray_cls, fn.name)):
                    hits.append(f"{filename}:{fn.lineno}: {cls.name}.{fn.name} overrides {dotted}.{fn.name}")
    return hits


def test_private_ray_api_only_in_ray_compat():
    hits = []
    for root in ROOTS:
        for path in sorted(root.rglob("*.py")):
            if path.resolve() == COMPAT:
                continue
            hits += private_ray_uses(path.read_text(), str(path.relative_to(root.parent)))
    assert not hits, "private Ray API outside orchestrator/execution/ray_compat.py:\n" + "\n".join(hits)


def test_the_checker_sees_private_ray_api():
    """The checker itself: it finds what ray_compat holds, and each kind of use in a sample."""
    assert len(private_ray_uses(COMPAT.read_text())) >= 5
    sample = (
        "import ray._private.utils\n"
        "from ray.train.v2._internal.execution import x\n"
        "from ray.tune.search.optuna import OptunaSearch\n"
        "def f(s, search):\n"
        "    import ray.train\n"
        "    return s._num_stopped, getattr(search, '_ot_trials', {}), ray.train.report.__wrapped__\n"
        "class Ours(OptunaSearch):\n"
        "    def _define(self, trial):\n"  # a private method of our own: fine
        "        return None\n"
        "    def suggest(self, trial_id):\n"  # a public one: fine
        "        return None\n"
        "    def _setup_study(self, mode):\n"  # OptunaSearch's own: an override of a private method
        "        return None\n"
    )
    found = private_ray_uses(sample)
    assert any("import ray._private.utils" in h for h in found)
    assert any("from ray.train.v2._internal.execution" in h for h in found)
    assert any("._num_stopped" in h for h in found) and any("'_ot_trials'" in h for h in found)
    assert any(".__wrapped__" in h for h in found)
    assert any("Ours._setup_study overrides OptunaSearch._setup_study" in h for h in found)
    assert not any("_define" in h or "suggest" in h for h in found), found
    assert len(found) == 6, found


# ------------------------------------------------------------------ the switch


@pytest.fixture
def fresh_notice(monkeypatch):
    monkeypatch.setattr(ray_compat, "_noticed", False)
    monkeypatch.delenv(ray_compat.FAST_PATH_ENV, raising=False)


def test_fast_path_on_the_tested_ray(fresh_notice, capsys):
    import ray

    if ".".join(ray.__version__.split(".")[:2]) not in ray_compat.FAST_PATH_RAY:
        pytest.skip(f"Ray {ray.__version__} is not a fast-path version")
    assert ray_compat.fast_path() is True
    assert capsys.readouterr().err == ""


def test_fast_path_off_by_env(fresh_notice, monkeypatch):
    monkeypatch.setenv(ray_compat.FAST_PATH_ENV, "0")
    assert ray_compat.fast_path() is False
    assert ray_compat.fallback_reason() == "PTCORE_RAY_FAST_PATH=0"
    monkeypatch.setenv(ray_compat.FAST_PATH_ENV, "1")
    assert ray_compat.fallback_reason() != "PTCORE_RAY_FAST_PATH=0"


def test_fast_path_off_for_an_untested_ray(fresh_notice, monkeypatch):
    import ray

    tested = ", ".join(ray_compat.FAST_PATH_RAY)
    untested = [v for v in ("2.59.1", "2.61.0", "2.99.0", "3.0.0") if ".".join(v.split(".")[:2]) not in ray_compat.FAST_PATH_RAY]
    assert untested
    for version in untested:
        monkeypatch.setattr(ray, "__version__", version)
        assert ray_compat.fast_path() is False
        assert f"Ray {version} is not one of the fast-path versions tested ({tested})" in ray_compat.fallback_reason()
    monkeypatch.setattr(ray, "__version__", f"{ray_compat.FAST_PATH_RAY[0]}.3")  # a patch release of a tested minor
    monkeypatch.setattr(ray_compat, "_private_import_problem", lambda: "ImportError: No module named 'ray.train.v2._internal'")
    assert ray_compat.fast_path() is False and "private Train API" in ray_compat.fallback_reason()


def test_the_notice_is_one_line_once_per_process(fresh_notice, monkeypatch, capsys):
    from orchestrator.execution.trial import runs_locally

    monkeypatch.setenv(ray_compat.FAST_PATH_ENV, "0")
    cpu = {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}
    assert runs_locally(cpu)  # the driver's question: the notice comes before the trials start
    assert ray_compat.fast_path() is False and ray_compat.fast_path() is False
    ray_compat.notice_if_fallback()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: PTCORE_RAY_FAST_PATH=0: trials use Ray's public API only"), err


def test_no_notice_on_the_fast_path(fresh_notice, capsys):
    if ray_compat.fallback_reason() is not None:
        pytest.skip("the installed Ray is not a fast-path version")
    ray_compat.notice_if_fallback()
    assert ray_compat.fast_path()
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ the fallback's pieces, without Ray running


def test_fallback_local_trial_reports_each_epoch_to_tune(tmp_path, monkeypatch):
    """The public path of a local trial: the loop's reports reach ``ray.tune.report`` (the final
    one with its checkpoint persisted into storage under ``checkpoint_path``), and a retried
    trial finds that checkpoint in storage and numbers its next checkpoints on."""
    import ray.tune

    from orchestrator.execution import worker
    from orchestrator.execution.trial import CHECKPOINT_PATH, TuneReports

    tuned = []
    monkeypatch.setattr(ray.tune, "report", lambda metrics, **kw: tuned.append((metrics, kw)))

    def fake_train(cfg, callbacks, output, **kwargs):
        class Model:
            encoder = SimpleNamespace(backbone=SimpleNamespace(config=SimpleNamespace(num_hidden_layers=2)))

            def param_counts(self):
                return 10, 100

        state = SimpleNamespace(save=lambda d: Path(d, "train_state.pt").write_text("state"))
        for epoch in (1, 2):
            callbacks[0].on_epoch_end(epoch, {"dev_primary": 0.5 + epoch / 10}, Model(), state)
        Path(output, "result.json").write_text("{}")
        return {"epochs_run": 2, "dev": {"primary": 0.7}, "config": cfg.resolved()}

    class Backbone:
        def copy(self):
            return self

    monkeypatch.setattr("ptcore.train.train", fake_train)
    monkeypatch.setattr("ptcore.checkpoint.save_checkpoint", lambda model, cfg, d: Path(d, "trainable.safetensors").write_text("w"))
    monkeypatch.setattr(worker.PROCESS_CACHE, "backbone", lambda *args: Backbone())
    storage = str(tmp_path / "storage")
    sink = TuneReports(storage, "study__cb__final__t1", persist=True)
    loop = {"runs": [{"task": "superglue/cb", "method": "finetune"}], "phase": "final", "local": True, "resumable": True,
            "threads": 1}
    with worker.local_channel(sink):
        worker.run_all(loop)
    assert [m["epoch"] for m, _ in tuned] == [1, 2, 2] and [m["final"] for m, _ in tuned] == [0, 0, 1]
    assert all(kw == {} for _, kw in tuned)  # checkpoints travel as paths, as TuneReportCallback hands them on
    final = tuned[-1][0]
    assert final[CHECKPOINT_PATH] == str(tmp_path / "storage" / "study__cb__final__t1" / "checkpoint_000002")
    assert Path(final[CHECKPOINT_PATH], "result.json").is_file() and json.loads(final["result_json"])["epochs_run"] == 2
    # the process died after its final report: the retried trial resumes from storage, reports
    # that report again and trains nothing more
    tuned.clear()
    again = TuneReports(storage, "study__cb__final__t1", persist=True)
    assert again.reports == 3 and Path(again.get_checkpoint().path).name == "checkpoint_000002"
    with worker.local_channel(again):
        worker.run_all(loop)
    assert [(m["final"], m["epoch"]) for m, _ in tuned] == [(1, 2)]
    assert tuned[0][0][CHECKPOINT_PATH].endswith("checkpoint_000003")


def test_a_local_run_without_a_channel_says_so():
    from orchestrator.execution import worker

    with pytest.raises(RuntimeError, match="no report channel"):
        worker.train_report(True)


def test_trainer_class_is_rays_own_on_the_fallback(monkeypatch):
    from ray.train.torch import TorchTrainer

    from orchestrator.execution.trial import _trainer_class

    monkeypatch.setattr(ray_compat, "_noticed", True)
    monkeypatch.setenv(ray_compat.FAST_PATH_ENV, "0")
    assert _trainer_class() is TorchTrainer
    monkeypatch.delenv(ray_compat.FAST_PATH_ENV)
    if ray_compat.fast_path():
        assert _trainer_class() is not TorchTrainer and issubclass(_trainer_class(), TorchTrainer)


# ------------------------------------------------------------------ search: public state only


def test_cell_asha_counts_the_stops_asha_makes():
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from orchestrator.execution.search import CELL_KEY, CellASHA

    asha = ASHAScheduler(time_attr="epoch", metric="dev_primary", mode="max", max_t=9, grace_period=1, reduction_factor=2)
    sched = CellASHA({0: asha})
    trials = [SimpleNamespace(trial_id=f"t{i}", config={CELL_KEY: 0}) for i in range(6)]
    for t in trials:
        sched.on_trial_add(None, t)
    actions = [sched.on_trial_result(None, t, {"epoch": 1, "dev_primary": 1.0 - i / 10}) for i, t in enumerate(trials)]
    stops = actions.count(TrialScheduler.STOP)
    assert stops > 0 and sched.stopped == stops
    assert re.search(r"num_stopped=(\d+)", asha.debug_string()).group(1) == str(stops)  # ASHA's own count agrees
    assert f"{stops} trial(s) stopped early" in sched.debug_string()
    # a trial ended twice (completed, then removed or errored) reaches ASHA once: no KeyError
    sched.on_trial_complete(None, trials[0], {"epoch": 1, "dev_primary": 1.0})
    sched.on_trial_remove(None, trials[0])
    sched.on_trial_error(None, trials[0])
    sched.on_trial_error(None, trials[1])
    sched.on_trial_complete(None, trials[1], {"epoch": 1, "dev_primary": 0.9})
    assert sched.live == {t.trial_id for t in trials[2:]}


def test_optuna_search_draws_as_before_and_names_the_tune_trial(tmp_path):
    """The define-by-run space draws exactly what Ray's dict space drew with the same seed (a
    study resumed across this change keeps its points), and marks each Optuna trial with its
    Tune trial id (the resumed search's cross-reference)."""
    optuna = pytest.importorskip("optuna")
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.execution.search import _Search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"lr": FloatDistribution(1e-5, 1e-2, log=True), "prompt_length": IntDistribution(4, 32),
             "tau0": FloatDistribution(0.5, 2.0), "reparam": CategoricalDistribution(["mlp", "none", 3])}

    def draws(cls, name):
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / (name + '.db')}")
        search = cls(space=space, metric="dev_primary", mode="max", sampler=optuna.samplers.TPESampler(seed=3),
                     study_name=name, storage=storage)
        out = []
        for i in range(14):  # past TPE's random start-up (10 trials): its model draws too
            cfg = search.suggest(f"trial{i}")
            out.append(cfg)
            search.on_trial_complete(f"trial{i}", result={"dev_primary": float(cfg["tau0"]) - cfg["lr"] * 10, **cfg})
        return out, optuna.load_study(study_name=name, storage=storage)

    ours, study = draws(_Search, "ours")
    rays, _ = draws(OptunaSearch, "rays")
    assert ours == rays
    assert [t.user_attrs.get("tune_trial_id") for t in study.trials] == [f"trial{i}" for i in range(14)]
