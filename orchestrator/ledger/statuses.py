"""The values a ledger row's ``status`` and ``phase`` take (a leaf: every module that reads or
writes rows, :mod:`orchestrator.ledger.halving` included, imports them from here)."""

OK, PRUNED, ERROR = "ok", "pruned", "error"  # a row's status
STATUSES = (OK, PRUNED, ERROR)
SEARCH, FINAL = "search", "final"  # a row's phase
