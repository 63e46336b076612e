"""Waiting out a tracking store that went away, for a bounded time.

A study on a PostgreSQL server (or a SQLite file on a network disk) must survive the server
restarting: :class:`StoreRetry` runs each store call; where it fails because the store
cannot be reached (:func:`faults.is_store_outage`) it retries with a bounded exponential
backoff (0.5 s, doubling, at most 30 s between tries) until ``outage_s`` (``tracking.outage_s``)
have passed since the first failure of this outage, then raises
:class:`faults.StoreUnavailable` (exit 3: ``--resume`` continues), chained from the last
error. Any other error propagates at once. It says one line when an outage starts and one
when a retried call gets through; nothing else, however many calls and threads wait.

* :meth:`StoreRetry.call` ``(fn, *args, **kwargs)``: one call;
* :meth:`StoreRetry.wrap` ``(obj, methods=None)``: a proxy whose public methods go through it;
* :func:`retrying_optuna_storage` ``(storage, retry)``: an Optuna storage (a URL, an
  ``RDBStorage``, any ``BaseStorage``) whose every method goes through it, usable wherever
  Optuna takes a storage instance.

A retried call that wrote and lost only the reply (the server went down between the commit
and its acknowledgement) runs twice. Store writes are upserts, except three Optuna ones: a
retried ``set_trial_state_values`` that finds the trial already in the state and values it
was asked for returns True (it is what the first try did); a retried ``create_new_study``
that finds the study created returns its id; a retried ``create_new_trial`` may leave one
extra trial RUNNING, which resuming closes (``ledger.outdir.reconcile_optuna``).

The success path costs one function call and one ``try``: no clock read, no lock, no sleep.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Optional

from .faults import StoreUnavailable, is_store_outage, short_reason

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0


def say_on_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 10 or float(seconds).is_integer() else f"{seconds:.1f}"


class StoreRetry:
    """Retries of one store's calls through its outages (see the module's docstring).

    ``say`` gets the two lines an outage prints; ``sleep`` and ``clock`` are what tests fake.
    Thread-safe: the outage (when it started, whether it was announced) is shared by every
    thread calling through this object, under a lock; each call backs off on its own."""

    def __init__(self, store: str, url_redacted: str, outage_s: float, say: Callable[[str], None] = say_on_stderr,
                 sleep: Callable[[float], Any] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 first_delay_s: float = FIRST_DELAY_S, max_delay_s: float = MAX_DELAY_S):
        self.store, self.url_redacted, self.outage_s = store, url_redacted, float(outage_s)
        self.say, self.sleep, self.clock = say, sleep, clock
        self.first_delay_s, self.max_delay_s = float(first_delay_s), float(max_delay_s)
        self._lock = threading.Lock()
        self._down_since: Optional[float] = None  # clock() at the first failure of the current outage
        self._announced = False
        self._waiting = 0  # calls now retrying

    # pickled with what it wraps (an Optuna study travels to Ray actors): a fresh lock, no outage
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        state["_down_since"], state["_announced"], state["_waiting"] = None, False, 0
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StoreRetry({self.store!r}, {self.url_redacted!r}, outage_s={self.outage_s:g})"

    @property
    def down(self) -> bool:
        """Whether an outage is in progress (a call is retrying and none has got through since)."""
        return self._down_since is not None

    # ------------------------------------------------------------------ calls

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, retried through a store outage of up to ``outage_s``;
        :class:`~orchestrator.common.faults.StoreUnavailable` after it."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not is_store_outage(e):
                raise
            error = e
        return self._retry(fn, args, kwargs, error)

    def _retry(self, fn: Callable[..., Any], args: tuple, kwargs: dict, error: Exception) -> Any:
        """Only a retried call that gets through ends an outage: a first try that succeeds
        during one may not have reached the store at all (Optuna answers some calls from
        its cache)."""
        with self._lock:
            self._waiting += 1
        try:
            delay = self.first_delay_s
            while True:
                now = self.clock()
                since = self._failed(now, error)
                left = since + self.outage_s - now
                if left <= 0:
                    raise StoreUnavailable(self.store, self.url_redacted, now - since, short_reason(error)) from error
                self.sleep(min(delay, left))
                delay = min(delay * 2, self.max_delay_s)
                try:
                    result = fn(*args, **kwargs)
                except Exception as e:
                    if not is_store_outage(e):
                        self._back()  # the store answered, with an error of another kind
                        raise
                    error = e
                    continue
                self._back()
                return result
        finally:
            with self._lock:
                self._waiting -= 1
                if not self._waiting:  # the last waiter gave up (or was interrupted): a later failure is a new outage
                    self._down_since, self._announced = None, False

    def _failed(self, now: float, error: BaseException) -> float:
        """Note a failure at ``now``; when the current outage started (announced once)."""
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                self._announced = False
            if not self._announced and self.outage_s > 0:
                self._announced = True
                self._say(f"tracking store {self.store} ({self.url_redacted}) unreachable: {short_reason(error)}; "
                          f"retrying for up to {_fmt_s(self.outage_s)} s")
            return self._down_since

    def _back(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            down = self.clock() - self._down_since
            announced = self._announced
            self._down_since, self._announced = None, False
            if announced:
                self._say(f"tracking store {self.store} is back after {_fmt_s(down)} s")

    def _say(self, line: str) -> None:
        try:
            self.say(line)
        except Exception:  # a closed stderr must not turn an outage into a crash
            pass

    # ------------------------------------------------------------------ proxies

    def wrap(self, obj: Any, methods: Optional[set[str]] = None) -> "RetryProxy":
        """A proxy of ``obj`` whose public methods (those named in ``methods``; all public
        callables when None) go through :meth:`call`; other attributes read through."""
        if methods is not None:
            missing = sorted(m for m in methods if not hasattr(obj, m))
            if missing:
                raise AttributeError(f"{type(obj).__name__} has no {', '.join(missing)} to retry")
        return RetryProxy(obj, self, None if methods is None else frozenset(methods))


class RetryProxy:
    """What :meth:`StoreRetry.wrap` returns: attribute reads pass through to the wrapped
    object, its public methods are retried, writes go to the wrapped object."""

    __slots__ = ("_target", "_retry", "_methods")

    def __init__(self, target: Any, retry: StoreRetry, methods: Optional[frozenset]):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_retry", retry)
        object.__setattr__(self, "_methods", methods)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name.startswith("_") or not callable(value) or (self._methods is not None and name not in self._methods):
            return value
        retry = self._retry

        def retried(*args: Any, **kwargs: Any) -> Any:
            return retry.call(value, *args, **kwargs)

        retried.__name__ = name
        retried.__doc__ = getattr(value, "__doc__", None)
        return retried

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __repr__(self) -> str:
        return f"<retrying {self._target!r} via {self._retry!r}>"


# ------------------------------------------------------------------ Optuna

_OPTUNA_CLASSES: dict[bool, type] = {}
_HEARTBEAT = ("record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback")


def retrying_optuna_storage(storage: Any, retry: StoreRetry) -> Any:
    """An ``optuna.storages.BaseStorage`` whose every method goes through ``retry.call``.

    ``storage``: a URL, an ``RDBStorage`` (wrapped in Optuna's cache, as
    ``optuna.create_study`` would: it returns an instance of another class as it is) or any
    other storage. The result is a storage instance for ``optuna.create_study`` /
    ``load_study`` (and a heartbeat storage where the wrapped one is); it pickles with its
    retry (an Optuna study sent to a Ray actor)."""
    # deferred: optuna is heavy, only studies need it
    import optuna

    if getattr(storage, "_retry_inner", None) is not None:  # already retrying: not twice
        storage = storage._retry_inner
    inner = retry.call(optuna.storages.get_storage, storage)  # a URL connects (and may create tables) here
    try:
        from optuna.storages._heartbeat import BaseHeartbeat
    except ImportError:  # a future Optuna: no heartbeat to pass on
        BaseHeartbeat = None
    heartbeat = BaseHeartbeat is not None and isinstance(inner, BaseHeartbeat)
    cls = _OPTUNA_CLASSES.get(heartbeat)
    if cls is None:
        cls = _OPTUNA_CLASSES[heartbeat] = _optuna_class(optuna, BaseHeartbeat if heartbeat else None)
    return cls(inner, retry)


def _optuna_class(optuna: Any, heartbeat_base: Optional[type]) -> type:
    base = optuna.storages.BaseStorage
    names = {n for n in dir(base) if not n.startswith("_") and callable(getattr(base, n))}
    if heartbeat_base is not None:
        names |= {n for n in _HEARTBEAT if hasattr(heartbeat_base, n)}

    def delegate(name: str) -> Callable[..., Any]:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return self._retry_call(getattr(self._retry_inner, name), *args, **kwargs)

        method.__name__ = method.__qualname__ = name
        method.__doc__ = getattr(getattr(base, name, None), "__doc__", None)
        return method

    body: dict[str, Any] = {n: delegate(n) for n in sorted(names)}

    def __init__(self: Any, inner: Any, retry: StoreRetry) -> None:
        self._retry_inner, self._retry_retry = inner, retry
        self._retry_call = retry.call

    def __getattr__(self: Any, name: str) -> Any:  # anything else (an RDBStorage's engine...) reads through
        if name.startswith("_retry_"):
            raise AttributeError(name)
        return getattr(self._retry_inner, name)

    def __reduce__(self: Any) -> tuple:
        return retrying_optuna_storage, (self._retry_inner, self._retry_retry)

    def __repr__(self: Any) -> str:
        return f"<retrying {self._retry_inner!r} via {self._retry_retry!r}>"

    def set_trial_state_values(self: Any, trial_id: int, state: Any, values: Any = None) -> bool:
        tries = 0

        def once() -> bool:
            nonlocal tries
            tries += 1
            return self._retry_inner.set_trial_state_values(trial_id, state, values)

        try:
            return self._retry_call(once)
        except optuna.exceptions.UpdateFinishedTrialError:
            if tries > 1:  # the first try was committed and only its reply lost?
                trial = self._retry_inner.get_trial(trial_id)
                if trial.state == state and (values is None or list(trial.values or []) == list(values)):
                    return True
            raise

    def create_new_study(self: Any, directions: Any, study_name: Optional[str] = None) -> int:
        tries = 0

        def once() -> int:
            nonlocal tries
            tries += 1
            return self._retry_inner.create_new_study(directions, study_name)

        try:
            return self._retry_call(once)
        except optuna.exceptions.DuplicatedStudyError:
            if tries > 1 and study_name is not None:  # the first try was committed and only its reply lost
                return self._retry_call(self._retry_inner.get_study_id_from_name, study_name)
            raise

    body.update(__init__=__init__, __getattr__=__getattr__, __reduce__=__reduce__, __repr__=__repr__,
                set_trial_state_values=set_trial_state_values, create_new_study=create_new_study,
                __module__=__name__, __doc__="An Optuna storage whose calls go through a StoreRetry.")
    bases = (base,) if heartbeat_base is None else (base, heartbeat_base)
    cls = type("RetryingOptunaStorage" if heartbeat_base is None else "RetryingOptunaHeartbeatStorage", bases, body)
    if getattr(cls, "__abstractmethods__", None):
        raise TypeError(f"{cls.__name__} leaves {sorted(cls.__abstractmethods__)} undelegated (a new Optuna?)")
    return cls
