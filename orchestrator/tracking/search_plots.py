"""A cell's search, drawn: Optuna's parameter importances and parallel coordinates.

Saved as PNGs (matplotlib, Agg) under the cell's MLflow run, artifact folder ``search/``,
when the cell's search is over; the report's search table points there. Drawn from the
cell's own Optuna study (``<study>/<cell id>`` in the study's Optuna storage): its completed
trials, the dev score each reached. Importances are fANOVA's (Optuna's default evaluator,
a random forest over the trials): with a handful of trials they say little, and the
figure says how many trials it rests on. A cell with fewer than two completed trials, or
nothing searched, draws nothing; a figure Optuna cannot draw (e.g. every trial tied) is
left out with its reason, never failing the study.
"""

from __future__ import annotations

from pathlib import Path

MIN_TRIALS = 2


def draw(storage: str, study_name: str, out: Path) -> tuple[list[Path], list[str]]:
    """(PNG files written into ``out``, reasons for figures not drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization.matplotlib import plot_parallel_coordinate, plot_param_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    params = sorted({k for t in done for k in t.params})
    if len(done) < MIN_TRIALS or not params:
        return [], [f"{len(done)} completed trial(s), {len(params)} searched parameter(s): nothing to draw"]
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    figures = (("parallel_coordinates.png", plot_parallel_coordinate), ("param_importances.png", plot_param_importances))
    for name, plot in figures:
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                ax = plot(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.suptitle(f"{study_name}: {len(done)} completed trials, objective = dev score", fontsize=9)
            fig.savefig(out / name, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(out / name)
        except Exception as e:  # noqa: BLE001  (a figure is never worth a failed study)
            skipped.append(f"{name}: {type(e).__name__}: {e}")
    return written, skipped
