"""``kill -9`` in the middle of a study, ``--resume``, Ctrl-C in the middle of that, and
``--resume`` again: finished trials are never re-run, the results table ends complete,
MLflow has no RUNNING run and no duplicate, Optuna learned from every finished trial.

The scenario and its checks are :func:`orch_study_helpers.kill_resume_scenario`, shared with
the PostgreSQL run of it (``test_postgres.py``); here the study tracks to its SQLite files."""

from __future__ import annotations

import pytest

from orch_study_helpers import SQLITE, kill_points_scenario, kill_resume_scenario, tiny_bert  # noqa: F401  (tiny_bert: fixture)


@pytest.mark.slow
def test_kill9_mid_study_then_resume(tiny_bert, tmp_path):  # noqa: F811
    times = kill_resume_scenario(tiny_bert, tmp_path, SQLITE)
    print("kill -9 / resume on SQLite:", ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))


@pytest.mark.slow
def test_kill9_at_named_points_then_resume(tiny_bert, tmp_path):  # noqa: F811
    """kill -9 during the search, during the final seeds and while the report is written."""
    times = kill_points_scenario(tiny_bert, tmp_path, SQLITE)
    print("kill -9 at points / resume on SQLite:", ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
