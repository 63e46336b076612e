"""Named places where a test can ``kill -9`` a process, to prove the study survives it.

A kill from outside lands wherever the process happens to be. The windows that matter most
(between logging a run to MLflow and writing its results row, half-way through the report
files, right after a worker reported an epoch) last milliseconds, so the reliability tests
name them instead::

    PTCORE_FAILPOINTS=record.final.before_row,report.mid   (which points are armed)
    PTCORE_FAILPOINTS_DIR=/tmp/x                           (where each point notes it fired)

An armed point fires once per ``PTCORE_FAILPOINTS_DIR`` (a marker file, created
exclusively, so a retried worker or a resumed study passes it the second time): the
process sends itself SIGKILL, exactly what ``kill -9 <pid>`` does. Nothing is armed unless
both variables are set; then :func:`hit` costs one dictionary lookup.

A point armed as ``NAME=enospc`` raises ``OSError(ENOSPC)`` there instead (once, the same
way): the disk-full tests' way to fill a disk where no small filesystem can be mounted;
``NAME=oom`` raises ``MemoryError``.

Points (grep for ``failpoints.hit``):

* ``record.<phase>.before_row``: the driver has logged a run's metrics, tags and checkpoint
  to MLflow but not written its ``results.csv`` row;
* ``record.<phase>.after_row``: the row is written, the MLflow run not yet ended;
* ``report.mid``: the driver has written the first report file of several;
* ``worker.<phase>.run<i>.epoch<e>``: a training process (a Ray Train worker, or the Tune
  trial process in local mode) has reported epoch ``e`` of the trial's run ``i``;
* ``ledger.write``: the driver is about to rewrite ``results.csv``;
* ``checkpoint.persist``: a trial is about to move a reported checkpoint into the study's storage.

Lane timing, for the tests that a study's selection does not depend on it::

    PTCORE_JITTER=salt   PTCORE_JITTER_MAX_S=1.5

makes every worker sleep after each epoch report for a time drawn from the salt, the run's
configuration and the epoch (:func:`jitter`), so two runs of one study with other salts see
their trials report in other orders. Unset, it costs one environment lookup.
"""

from __future__ import annotations

import errno
import os
import signal

ARMED = "PTCORE_FAILPOINTS"
MARKERS = "PTCORE_FAILPOINTS_DIR"


def armed() -> dict[str, str]:
    """Armed point -> its action (``kill``, or ``enospc``)."""
    spec = os.environ.get(ARMED, "")
    if not spec or not os.environ.get(MARKERS):
        return {}
    out = {}
    for p in spec.split(","):
        name, _, action = p.strip().partition("=")
        if name:
            out[name] = action or "kill"
    return out


def hit(name: str, path: str = "") -> None:
    """SIGKILL this process (or raise ENOSPC about ``path``) if ``name`` is armed and has not
    fired yet."""
    action = armed().get(name)
    if action is None:
        return
    directory = os.environ[MARKERS]
    os.makedirs(directory, exist_ok=True)
    try:
        fd = os.open(os.path.join(directory, f"{name}.fired"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return  # fired once already
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path or name)
    if action == "oom":
        raise MemoryError(f"failpoint {name}")
    os.kill(os.getpid(), signal.SIGKILL)


JITTER = "PTCORE_JITTER"
JITTER_MAX = "PTCORE_JITTER_MAX_S"


def jitter(key: str) -> None:
    """Sleep a salted pseudo-random time (0 to ``PTCORE_JITTER_MAX_S``, default 1 s) for ``key``
    when ``PTCORE_JITTER`` is set: a test's way to change the order trials report in."""
    salt = os.environ.get(JITTER)
    if not salt:
        return
    import time
    import zlib

    top = float(os.environ.get(JITTER_MAX, "1.0"))
    time.sleep(top * (zlib.crc32(f"{salt}|{key}".encode()) % 1000) / 1000.0)
