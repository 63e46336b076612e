"""Live progress of a study on the terminal: plain, timestamped lines (safe in logs and CI).

    [00:00:12] search 36 cell(s): 72 trial(s)
    [00:00:40] search  MiniLM-L2__superglue-cb__ptuning_v2 trial 4f2a9c01 ok: dev 0.7143 val 0.6964 (lr=0.0123) | cell best dev 0.7143
    [00:00:58] search done MiniLM-L2__superglue-cb__ptuning_v2: best dev 0.7143 (lr=0.0123)
    [00:01:10] search ... 2 trial(s) running (...epoch 3/5, ...epoch 2/5); cells 0/36 done; elapsed 1m10s
    [00:15:02] final 36 cell(s): 108 run(s) in 9 trial(s)
    [00:21:50] cell done (1/36) MiniLM-L2__superglue-cb__finetune: best dev 0.6 (lr=3e-05); final val 0.61 ± 0.02 over 3 seed(s)
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional
from orchestrator.ledger.results import ERROR, FINAL, SEARCH

HEARTBEAT_S = 30.0


def fmt_value(v: Any, digits: int = 4) -> str:
    """A table/progress cell: '-' for missing, floats to ``digits`` places."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


_fmt = fmt_value


def _short_params(params: dict[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


class Progress:
    def __init__(self, total_cells: int, write: Optional[Callable[[str], None]] = None):
        self.total = total_cells
        self.done = 0
        self.cell_label = ""
        self.best: dict[str, float] = {}  # cell id -> best search dev so far
        self.running: dict[str, str] = {}  # trial id -> what it is doing
        self.t0 = time.time()
        self._last_beat = time.time()
        self._write = write or (lambda s: print(s, file=sys.stdout, flush=True))

    def say(self, msg: str) -> None:
        self._write(f"[{time.strftime('%H:%M:%S')}] {msg}")

    # ---------------------------------------------------------------- cells

    def cell_start(self, label: str, target: str, what: str) -> None:
        """A Tuner starts: ``label`` is 'search' or 'final'."""
        self.cell_label = label
        self.running.clear()
        self.say(f"{label} {target}: {what}")

    def cell_end(self, cell_id: str, summary: str) -> None:
        """A cell's search is complete."""
        self.say(f"{self.cell_label} done {cell_id}: {summary}")

    def cell_skip(self, label: str, cell_id: str, why: str) -> None:
        if label == FINAL:
            self.done += 1
        self.say(f"{label} {cell_id}: {why}")

    def cell_done(self, cell_id: str, summary: str) -> None:
        self.done += 1
        self.say(f"cell done ({self.done}/{self.total}) {cell_id}: {summary}")

    # ---------------------------------------------------------------- trials

    def trial_start(self, trial_id: str, what: str) -> None:
        self.running[trial_id] = what

    def trial_epoch(self, trial_id: str, what: str) -> None:
        self.running[trial_id] = what
        self.heartbeat()

    def trial_end(self, trial_id: str) -> None:
        self.running.pop(trial_id, None)

    def run_done(self, phase: str, trial_id: str, row: dict[str, Any], params: dict[str, Any]) -> None:
        dev, cell = row.get("dev_primary"), str(row.get("cell"))
        if phase == SEARCH and dev is not None and row.get("status") != ERROR and dev > self.best.get(cell, float("-inf")):
            self.best[cell] = dev
        what = f"{cell} seed {row.get('seed')}" if phase == FINAL else f"{cell} trial {trial_id}"
        detail = row.get("error") if row.get("status") == ERROR else f"dev {_fmt(dev)} val {_fmt(row.get('val_primary'))}"
        extra = f" ({_short_params(params)})" if params and phase == SEARCH else ""
        best = f" | cell best dev {_fmt(self.best[cell])}" if phase == SEARCH and cell in self.best else ""
        self.say(f"{self.cell_label}  {what} {row.get('status')}: {detail}{extra}{best}")

    def heartbeat(self, force: bool = False) -> None:
        if not force and time.time() - self._last_beat < HEARTBEAT_S:
            return
        self._last_beat = time.time()
        el = int(time.time() - self.t0)
        doing = ", ".join(self.running.values()) or "starting"
        self.say(
            f"{self.cell_label} ... {len(self.running)} trial(s) running ({doing}); "
            f"cells {self.done}/{self.total} done; elapsed {el // 60}m{el % 60:02d}s"
        )
