"""Per-cell search behind one Tuner: suggestions and results stay within their cell."""

from types import SimpleNamespace

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("ray.tune")

from optuna.distributions import FloatDistribution  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, TrialScheduler  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from orchestrator.execution.search import CELL_KEY, CellASHA, CellSearch  # noqa: E402
from orchestrator.execution.trial import searched_values  # noqa: E402


def _optuna(tmp_path, name, space):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    return OptunaSearch(space=space, metric="dev_primary", mode="max", sampler=optuna.samplers.TPESampler(seed=0),
                        study_name=name, storage=storage), storage


def test_cells_served_in_order_and_results_routed(tmp_path):
    s0, storage = _optuna(tmp_path, "s/a", {"lr": FloatDistribution(1e-3, 1e-1, log=True)})
    s1, _ = _optuna(tmp_path, "s/b", {"tau0": FloatDistribution(0.5, 2.0)})
    search = CellSearch({0: s0, 7: s1}, {0: 2, 7: 1}, metric="dev_primary", mode="max")
    configs = [search.suggest(f"t{i}") for i in range(3)]
    assert [c[CELL_KEY] for c in configs] == [0, 0, 7]
    assert set(searched_values(configs[0])) == {"lr"} and set(searched_values(configs[2])) == {"tau0"}
    assert search.suggest("t3") == Searcher.FINISHED
    for i, dev in enumerate([0.5, 0.7, 0.6]):
        search.on_trial_complete(f"t{i}", result={"dev_primary": dev, **configs[i]})
    a = optuna.load_study(study_name="s/a", storage=storage)
    b = optuna.load_study(study_name="s/b", storage=storage)
    assert sorted(t.value for t in a.trials) == [0.5, 0.7] and [t.value for t in b.trials] == [0.6]


def test_asha_compares_trials_of_one_cell_only():
    asha = lambda: ASHAScheduler(time_attr="epoch", metric="dev_primary", mode="max", max_t=5, grace_period=1, reduction_factor=2)  # noqa: E731
    sched = CellASHA({0: asha(), 1: asha()})
    trial = lambda tid, cell: SimpleNamespace(trial_id=tid, config={CELL_KEY: cell, "lr": 0.1})  # noqa: E731
    strong, weak_same, weak_other = trial("a", 0), trial("b", 0), trial("c", 1)
    for t in (strong, weak_same, weak_other):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, strong, {"epoch": 1, "dev_primary": 0.9}) == TrialScheduler.CONTINUE
    # a poor trial of another cell is alone in its rung: it goes on
    assert sched.on_trial_result(None, weak_other, {"epoch": 1, "dev_primary": 0.1}) == TrialScheduler.CONTINUE
    # the same score in the strong trial's cell is below that rung's cutoff: stopped
    assert sched.on_trial_result(None, weak_same, {"epoch": 1, "dev_primary": 0.1}) == TrialScheduler.STOP
    sched.on_trial_complete(None, weak_same, {"epoch": 1, "dev_primary": 0.1})
    sched.on_trial_error(None, weak_other)
    assert "2 cells" in sched.debug_string()


def test_cells_draw_different_first_points_and_a_cell_the_same_ones():
    """Per-cell TPE seeds: two cells with the same space start from different points (one
    seed for all would try the same configurations everywhere); the same cell and study seed
    give the same points (reproducible); a resumed cell (trials already held) draws anew."""
    import optuna

    from orchestrator.execution.search import cell_seed

    def first_points(seed: int) -> list[float]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        return [study.ask().suggest_float("lr", 1e-5, 1e-2, log=True) for _ in range(3)]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    a, b = cell_seed(7, "L2/glue/sst2/ptuning_v2"), cell_seed(7, "L4/glue/sst2/ptuning_v2")
    assert first_points(a) != first_points(b)
    assert first_points(a) == first_points(cell_seed(7, "L2/glue/sst2/ptuning_v2"))
    assert cell_seed(7, "L2/glue/sst2/ptuning_v2", n_before=3) != a
