"""Study files: what to run, validated once, before anything starts.

A study is ``backbones x tasks x methods`` *cells*. Each cell is searched (Ray Tune +
Optuna over the method's ``search`` space, selection on dev only), then its best
configuration is re-run with every ``final.seeds`` seed. See ``studies/*.yaml``.

Every error names the file and the path of the offending key, on one line::

    studies/x.yaml: methods.0.search.lrr: unknown key for method 'ptuning_v2'; did you mean 'lr'? ...

Structure and types are checked by pydantic (``extra="forbid"`` everywhere); names and
keys are then checked against ptcore's registries (tasks, methods, run settings, method
options), and every method's fixed settings and the ends of its search ranges are built
into real :class:`ptcore.config.RunConfig` objects so a bad value fails here, not in
trial 17 an hour later. Each backbone's config (no weights) gives its layer count, against
which ``layers`` and every ``depth`` (fixed, range ends, choices) are checked.
:func:`orchestrator.study.preflight.preflight` then checks what the file points at before a study starts: the output
directory can be written, the tracking stores answer, the backbones can load, every task's
data exist and parse.

Modules (each imports only those above it):

* ``schema``: the typed study (pydantic models, cell keys, :class:`StudyError`).
* ``yamlio``: the line-aware YAML reader (:func:`read_yaml`) and :func:`file_hash`.
* ``backbones``: a backbone's layer count from its config alone (:func:`backbone_layers`).
* ``plan``: cells, each run's RunConfig values, final packs, the plan (:class:`LoadedStudy`).
* ``validate``: one-line errors, registry and RunConfig checks (:func:`parse_study`).
* ``load``: read, validate and resolve directories (:func:`load_study`).
* ``footprint``: what the study will write, from its models built on the meta device (:func:`estimate`).
* ``preflight``: pre-start checks of output, stores, backbones, data and the disk budget (:func:`preflight`).
"""

from orchestrator.study.load import load_study
from orchestrator.study.plan import Cell, LoadedStudy, compose_run, final_seeds, pack_runs
from orchestrator.study.preflight import unwritable  # not the function preflight: that name is the module's
from orchestrator.study.schema import Regime, ReportSettings, StudyError
from orchestrator.study.validate import parse_study
from orchestrator.study.yamlio import read_yaml

__all__ = [
    "Cell",
    "LoadedStudy",
    "Regime",
    "ReportSettings",
    "StudyError",
    "compose_run",
    "final_seeds",
    "load_study",
    "pack_runs",
    "parse_study",
    "read_yaml",
    "unwritable",
]
