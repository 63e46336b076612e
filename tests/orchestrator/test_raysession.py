"""orchestrator.execution.raysession: a Ctrl-C or kill is never lost."""

import os
import signal
import sys

import pytest

from orchestrator.execution.raysession import StudyInterrupted, check_interrupt, restore_signals, signal_handlers, trap_signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_swallowed_by_a_del_is_raised_again(sig, monkeypatch):
    """Python drops an exception raised in ``__del__`` ("Exception ignored in ..."); Ray's actor
    handles have one, and a Ctrl-C landing there used to let the study run on to exit 0."""
    swallowed: list = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_type))
    saved = signal_handlers()
    try:
        trap_signals()
        check_interrupt()  # nothing pending

        class Handle:
            def __del__(self):
                os.kill(os.getpid(), sig)  # the handler runs here, inside __del__

        h = Handle()
        del h  # the StudyInterrupted it raised is swallowed
        assert swallowed == [StudyInterrupted]
        with pytest.raises(StudyInterrupted):
            check_interrupt()
        trap_signals()  # a new run starts with nothing pending
        check_interrupt()
    finally:
        restore_signals(saved)
    assert signal_handlers() == saved
