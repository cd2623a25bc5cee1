"""Every cloud call bounded in time, limited per endpoint, and retried when the failure may pass.

Handlers only speak their cloud's API; this module is where a slow or failing cloud is made
safe, once for all of them:

* each call runs in a thread of its own and is waited for until a deadline the engine sets
  (``create_timeout`` for a whole create, call included; ``call_timeout`` for states, drop and
  find).  A call that overruns is abandoned: its caller gets :class:`CallTimeout` naming the
  call and the limit, a create is told through its ``cancelled`` event, and what a create
  makes after all is handed to ``on_late`` (which drops it) when it finally returns;
* at most ``endpoint_limit`` calls run against one endpoint at once (an abandoned call still
  counts: the cloud is still working on it);
* :class:`TransientCloudError` (and a reset connection or a socket time-out) is retried with
  exponential backoff and full jitter (tenacity) as long as the deadline allows, each retry
  told to ``on_retry``; any other error is final at once.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, List, Optional, Set

import tenacity

from occo.errors import CallTimeout, TransientCloudError, describe_error

RETRY_FIRST = 0.5   # seconds: the first backoff's upper bound (full jitter)
RETRY_CAP = 10.0    # seconds: no backoff is longer
RETRIED = (TransientCloudError, ConnectionError, TimeoutError)
ABANDON_CHECK = 0.1  # seconds between looks at whether the command gave its calls up
#: seconds a retry must have before the call's deadline: no retry starts that could only end
#: by being given up (which would leave unknown whether the cloud acted on it)
RETRY_ROOM = 0.2
OnRetry = Callable[[str, str, int, float], None]  # what, reason, attempt, next wait


class _Worker:
    """One reusable daemon thread and the queue it takes work from."""

    def __init__(self) -> None:
        self.inbox: 'queue.SimpleQueue[Callable[[threading.Thread], None]]' = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.serve, name='occo-call', daemon=True)
        self.pool: Optional['_Threads'] = None

    def serve(self) -> None:
        assert self.pool is not None
        while True:
            try:
                work = self.inbox.get(timeout=self.pool.IDLE)
            except queue.Empty:
                if self.pool.retire(self):
                    return
                work = self.inbox.get()  # handed work just as it timed out
            work(self.thread)
            self.pool.rest(self)


class _Threads:
    """Daemon threads that run one call at a time and are reused (starting a thread per call
    costs more than many a call).  A call that never returns keeps its thread, which the
    process does not wait for at exit; a new thread is started whenever none is idle."""

    IDLE = 30.0  # seconds an idle thread waits for work before it ends

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: List[_Worker] = []

    def run(self, work: Callable[[threading.Thread], None]) -> threading.Thread:
        """Run ``work(thread)`` on an idle thread or a new one; returns the thread."""
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker()
            worker.pool = self
            worker.inbox.put(work)
            worker.thread.start()
        else:
            worker.inbox.put(work)
        return worker.thread

    def rest(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def retire(self, worker: _Worker) -> bool:
        """True if an idle ``worker`` may end (it was not handed work meanwhile)."""
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False


@dataclass
class _Call:
    """One call in its own thread: its outcome, or whether its caller stopped waiting."""

    done: threading.Event
    value: Any = None
    error: Optional[BaseException] = None
    abandoned: bool = False


class Calls:
    """Runs cloud calls for one command.

    :param endpoint_limit: calls at once per endpoint key.
    :param on_retry: told ``(what, reason, attempt, wait)`` before each retry.
    """

    def __init__(self, *, endpoint_limit: int, on_retry: Optional[OnRetry] = None,
                 stop: Optional[threading.Event] = None) -> None:
        self.endpoint_limit = max(1, endpoint_limit)
        self.on_retry = on_retry
        self.stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._endpoints: Dict[Hashable, threading.BoundedSemaphore] = {}
        self._abandoned: Set[threading.Thread] = set()
        self._threads = _Threads()
        self._generation = 0  # abandon_all() moves it on: calls started before are given up

    # -- one attempt -----------------------------------------------------------------------

    def _slot(self, endpoint: Hashable) -> threading.BoundedSemaphore:
        with self._lock:
            if endpoint not in self._endpoints:
                self._endpoints[endpoint] = threading.BoundedSemaphore(self.endpoint_limit)
            return self._endpoints[endpoint]

    def _attempt(self, what: str, fn: Callable[[], Any], deadline: float, limit: str,
                 endpoint: Hashable, cancelled: Optional[threading.Event],
                 on_late: Optional[Callable[[Any], None]]) -> Any:
        slot = self._slot(endpoint)
        if not slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise CallTimeout(f'{what} could not start within {limit}: the endpoint already '
                              f'has {self.endpoint_limit} calls under way')
        call = _Call(threading.Event())
        generation = self._generation

        def run(thread: threading.Thread) -> None:
            try:
                value = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                call.error = exc
            else:
                call.value = value
            finally:
                slot.release()
                with self._lock:  # done and abandoned are decided together, never both missed
                    late = call.abandoned
                    call.done.set()
            try:
                if late and call.error is None and on_late is not None:
                    on_late(call.value)
            except Exception:  # noqa: BLE001 - still tagged: destroy finds it
                pass
            finally:  # out only once what it made is dropped: wait_abandoned waits for that
                with self._lock:
                    self._abandoned.discard(thread)

        thread = self._threads.run(run)
        given_up = False
        while not call.done.wait(max(0.0, min(deadline - time.monotonic(), ABANDON_CHECK))):
            given_up = self._generation != generation
            if given_up or time.monotonic() >= deadline:
                break
        if not call.done.is_set():
            with self._lock:
                if not call.done.is_set():
                    call.abandoned = True
                    self._abandoned.add(thread)
            if call.abandoned:
                if cancelled is not None:
                    cancelled.set()
                if given_up:
                    raise CallTimeout(f'{what} was given up: the command is stopping')
                raise CallTimeout(f'{what} did not return within {limit}; Occopus stopped '
                                  'waiting for it')
        if call.error is not None:
            raise call.error
        return call.value

    # -- calls with retries ----------------------------------------------------------------

    def call(self, what: str, fn: Callable[[], Any], *, seconds: float, limit: str,
             endpoint: Hashable = None, retry: bool = True,
             cancelled: Optional[threading.Event] = None,
             on_late: Optional[Callable[[Any], None]] = None,
             on_retry: Optional[OnRetry] = None) -> Any:
        """``fn()`` within ``seconds`` in all (retries included), named ``what`` in messages
        (``limit`` says which setting bounds it, e.g. ``create_timeout (3 s)``).

        :raises CallTimeout: if the time ran out.
        :raises TransientCloudError: if it was still failing when no time was left for
            another try; any other error of ``fn`` at once.
        """
        deadline = time.monotonic() + seconds

        def attempt() -> Any:
            return self._attempt(what, fn, deadline, limit, endpoint, cancelled, on_late)
        if not retry:
            return attempt()
        try:
            return attempt()  # the usual case: no retry machinery at all
        except RETRIED as exc:
            first: BaseException = exc
        pending = [first]

        def again() -> Any:  # the retry loop sees the first attempt fail, then tries again
            if pending:
                raise pending.pop()
            return attempt()

        tell = on_retry or self.on_retry

        def told(state: tenacity.RetryCallState) -> None:
            if tell is not None and state.outcome is not None:
                tell(what, describe_error(state.outcome.exception()),
                              state.attempt_number, state.upcoming_sleep)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RETRIED),
            wait=tenacity.wait_random_exponential(multiplier=RETRY_FIRST, max=RETRY_CAP),
            stop=lambda state: time.monotonic() + state.upcoming_sleep >= deadline - RETRY_ROOM,
            sleep=self._sleep, before_sleep=told, reraise=True)
        try:
            return retrying(again)
        except RETRIED as exc:
            if isinstance(exc, TransientCloudError):
                raise
            raise TransientCloudError(describe_error(exc)) from None

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise CallTimeout('stopped while waiting to retry a cloud call')

    def abandon_all(self) -> None:
        """Stop waiting for every call under way (an interrupted command): creates are told
        through their ``cancelled`` event, and what they make after all goes to ``on_late``."""
        with self._lock:
            self._generation += 1

    def wait_abandoned(self, seconds: float) -> int:
        """Wait up to ``seconds`` for abandoned calls to return (so that what a late create
        made is dropped); returns how many are still out."""
        deadline = time.monotonic() + seconds
        while True:
            with self._lock:
                out = list(self._abandoned)
            if not out:
                return 0
            left = deadline - time.monotonic()
            if left <= 0:
                return len(out)
            out[0].join(min(left, 0.5))
