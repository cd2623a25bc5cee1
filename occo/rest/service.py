"""The background work of the REST service: builds started by ``POST /infrastructures/`` and
the maintenance of every infrastructure marked maintained.

Nothing here orchestrates: a build is :meth:`occo.api.Occopus.build` in a thread, and each
replica is a member of the maintainer fleet (:mod:`occo.fleet`), beside any
``occopus-manage --all -c``: every infrastructure marked maintained in Redis (from its build
on, until ``detach``) gets a pass every ``interval`` seconds from one of them, under the same
per-infrastructure leases as ``occopus-manage``, and when a replica dies the others take its
share over.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from occo.errors import (BuildCancelled, DescriptionError, NotImplementedYet, OccoError,
                         UnknownInfrastructure, UsageError, describe_error)
from occo.redact import mask_known

log = logging.getLogger('occo.rest')

#: seconds a POST waits for its build to store the infrastructure (or to fail its checks)
SUBMIT_WAIT = 60.0
#: seconds the reason of a failed background build is kept for GET
OUTCOME_TTL = 86400.0
#: progress lines of a background build kept with its outcome
OUTCOME_LINES = 50
#: builds under way at once in one service (each holds threads and cloud calls)
MAX_BUILDS = 32
#: seconds between looks at the cancel requests of the builds under way here
CANCEL_CHECK = 0.5
#: seconds a cancel request stays (longer than any lease, so the builder sees it)
CANCEL_TTL = 600.0


class Busy(OccoError):
    """The service runs as many builds as it may; the request can be made again later."""


@dataclass
class BuildJob:
    """A build running in this service."""

    infra_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    submitted: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: Optional[BaseException] = None
    lines: List[str] = field(default_factory=list)


class Service:
    """Background builds and maintenance over one :class:`~occo.api.Occopus` session."""

    def __init__(self, session: Any, *, interval: float = 10.0, parallelize: bool = False) -> None:
        self.session = session
        self.interval = interval
        self.parallelize = parallelize
        self.jobs: Dict[str, BuildJob] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.fleet = session.fleet(interval=interval, stop=self._stop, parallelize=parallelize,
                                   skip=lambda infra_id: infra_id in self.jobs,  # built here now
                                   told=lambda line: log.info('%s', line))
        self._thread: Optional[threading.Thread] = None

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start maintaining (at once: a replica that starts resumes what Redis marks), and
        watching for requests to cancel the builds that run here."""
        self._thread = threading.Thread(target=self.fleet.run, name='occo-maintainer', daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch_cancels, name='occo-cancels', daemon=True).start()

    def _watch_cancels(self) -> None:
        """Stop the builds of this service whose infrastructure a DELETE (on any replica)
        asked to cancel."""
        while not self._stop.wait(CANCEL_CHECK):
            with self._lock:
                jobs = dict(self.jobs)
            if not jobs:
                continue
            try:
                for infra_id in self.session.store.cancel_requested(sorted(jobs)):
                    jobs[infra_id].stop.set()
            except Exception as exc:  # noqa: BLE001 - the watcher never dies
                log.warning('cannot read the cancel requests: %s', describe_error(exc))
                self._stop.wait(self.interval)  # say it once an interval, not twice a second

    def close(self, wait: float = 60.0) -> None:
        """Stop maintaining, cancel the builds under way (they roll back) and wait for them."""
        self._stop.set()
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.stop.set()
        deadline = time.monotonic() + wait
        for job in jobs:
            job.done.wait(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:  # the passes under way stop after the action under way
            self._thread.join(max(0.0, deadline - time.monotonic()))

    # -- builds --------------------------------------------------------------------------------

    def submit(self, text: str) -> str:
        """Start building the infrastructure described by ``text``; returns its id once it is
        stored (state ``building``).

        :raises OccoError: at once if the description is invalid or cannot be built (nothing
            is stored then).
        """
        job = BuildJob(str(uuid.uuid4()))
        with self._lock:
            if len(self.jobs) >= MAX_BUILDS:
                raise Busy(f'{len(self.jobs)} builds are under way in this service (at most '
                           f'{MAX_BUILDS}); try again when one has finished')
            self.jobs[job.infra_id] = job
        threading.Thread(target=self._build, args=(job, text), name=f'occo-build-{job.infra_id[:8]}',
                         daemon=True).start()
        if not job.submitted.wait(SUBMIT_WAIT):
            job.stop.set()
            raise OccoError(f'the build of {job.infra_id} did not start within {SUBMIT_WAIT:g} s; '
                            'it was cancelled')
        if job.error is not None and not self._exists(job.infra_id):
            raise job.error
        return job.infra_id

    def _build(self, job: BuildJob, text: str) -> None:
        def report(line: str) -> None:
            job.lines = (job.lines + [mask_known(line)])[-OUTCOME_LINES:]
            log.info('%s: %s', job.infra_id, line)

        def submitted(infra_id: str) -> None:
            job.submitted.set()  # marked maintained by the build from its start

        def failed(exc: BaseException) -> None:
            if not isinstance(exc, BuildCancelled):
                self._keep_outcome(job, exc)
        try:
            self.session.build('<request body>', text=text, infra_id=job.infra_id,
                               parallelize=self.parallelize, stop=job.stop, report=report,
                               on_submitted=submitted, on_failure=failed)
        except BaseException as exc:  # noqa: BLE001 - told through GET and the outcome
            job.error = exc
        finally:
            job.submitted.set()
            job.done.set()
            with self._lock:
                self.jobs.pop(job.infra_id, None)

    def _keep_outcome(self, job: BuildJob, exc: BaseException) -> None:
        """Keep why the build failed, before it is rolled back: who asks about the
        infrastructure from then on hears it (while it exists, its own record wins)."""
        try:
            self.session.store.put_outcome(job.infra_id, {
                'state': 'failed', 'reason': mask_known(describe_error(exc)),
                'failed_at': round(time.time(), 3), 'lines': job.lines}, OUTCOME_TTL)
        except OccoError as failure:
            log.warning('%s: could not keep why its build failed: %s', job.infra_id, failure)

    def _exists(self, infra_id: str) -> bool:
        try:
            return self.session.store.infra(infra_id) is not None
        except OccoError:
            return True  # unknown: assume it is there rather than hide it

    def delete(self, infra_id: str) -> None:
        """Destroy an infrastructure; a build of it under way here is cancelled first (it rolls
        back what it made).  Returns once nothing of it is left.

        :raises UnknownInfrastructure: if there is no such infrastructure (nor a failed build's
            outcome of it).
        """
        with self._lock:
            job = self.jobs.get(infra_id)
        cancelled = job is not None
        if job is not None:
            job.stop.set()
            job.done.wait()
        elif self._exists(infra_id):  # a build of it on another replica stops too
            self.session.store.request_cancel(infra_id, CANCEL_TTL)
            cancelled = True
        try:
            self.session.destroy(infra_id, report=lambda line: log.info('%s: %s', infra_id, line))
        except UnknownInfrastructure:
            # gone already: rolled back by its build (cancelled), or a failed build's outcome
            if not (self.session.store.forget_outcome(infra_id) or cancelled):
                raise
        self.session.store.forget_outcome(infra_id)

#: errors that mean the request itself is wrong (HTTP 400)
BAD_INPUT = (DescriptionError, UsageError, NotImplementedYet)
