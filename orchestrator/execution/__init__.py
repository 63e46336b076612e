"""Running a study on Ray: the runner and its phases, the search (Optuna, halving/ASHA), the Tune
trial and the per-run worker loop, the Tune callback that records runs, the Ray session and
process handling. Every private Ray API is in ``ray_compat``."""
