"""Getting instances into the cache: one retrieval job per series at a time, many waiters.

Asking for one uncached instance retrieves its whole series, because series-level transfer costs
about half as much as per-instance transfer (issue #3). A PACS such as Orthanc sends one instance
at a time per association and waits for each C-STORE response; where that round trip is the
ceiling (a slow link), the ``parallel`` option splits a large series into *parts* (IMAGE-level
retrievals of a list of SOP Instance UIDs, PS3.4 C.4.2.2.1) on parallel associations. Each waiter
is released as soon as *its* instance has landed (``seriesjob``); a reader whose instance is far
down the stream (by the send order learnt from what has arrived, see ``sendorder``) gets it
*hurried*: retrieved on its own, ahead of the queue, at most ``sendorder.MAX_HURRIED`` times per
series. A retrieval lasts while it makes progress; a job whose readers see none for long is
abandoned, so the next reader starts a new one.

This module only schedules: how a part is retrieved (C-MOVE or C-GET, fallbacks, statuses) is the
``core.ports.RetrieveService``'s business (``dimse.strategy``), and which C-STOREs are let in the
receiver's (``core.ports.Expectations``).

Workers take tasks from one priority queue, so retrieval associations never exceed the number of
workers. Lock order: ``RetrievalScheduler._lock`` before ``SeriesJob._cond``, never the other way;
receiver callbacks (``landed``/``lost``) take only ``SeriesJob._cond``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from dicomfs.core.errors import FailedFast, RetrievalFailed
from dicomfs.core.failures import RecentFailures
from dicomfs.core.model import SeriesRef
from dicomfs.core.ports import Expectations, RetrieveService, SeriesRetrieval
from dicomfs.core.sendorder import MAX_HURRIED
from dicomfs.core.seriesjob import SeriesJob, Stalled
from dicomfs.core.store import InstanceStore

__all__ = ["MIN_PART_SIZE", "InFlight", "RetrievalScheduler", "SeriesRef"]

LOGGER = logging.getLogger(__name__)

#: A series smaller than this is retrieved in one SERIES-level request: parallel parts would not
#: pay for their extra associations.
MIN_PART_SIZE = 24

PRIORITY_HURRIED, PRIORITY_PART = 0, 1


@dataclass(frozen=True)
class InFlight:
    """A series retrieval under way, as ``dicomfs status`` shows it.

    Attributes
    ----------
    series_uid : str
        Its Series Instance UID.
    expected : int
        Instances the job expects (the series' listing).
    received : int
        Instances that have landed in this job so far.
    received_bytes : int
        Their size in bytes.
    running_s : float
        Seconds since a worker first worked for it; 0 while it is queued.
    """

    series_uid: str
    expected: int
    received: int
    received_bytes: int
    running_s: float


@dataclass(order=True)
class _Task:
    priority: int
    sequence: int
    job: SeriesJob | None = field(compare=False)  # None tells a worker to stop
    sop_uids: tuple[str, ...] = field(compare=False)  # () means the whole series
    retrieval: SeriesRetrieval | None = field(compare=False, default=None)


class RetrievalScheduler:
    """Single-flight series retrievals, split into parts, on a bounded set of workers.

    Parameters
    ----------
    service : RetrieveService
        Retrieves parts (``dimse.strategy.DimseRetrieval``); its ``health`` says whether the PACS
        answers.
    expectations : Expectations
        The receiver's admission: a job's instances are expected while it runs.
    store : InstanceStore
        Where instances land; a cached one is never retrieved again.
    workers : int
        Worker threads, hence at most this many retrieval associations at once.
    timeout : float
        Seconds; a reader whose job shows no progress for ``2 * timeout + 5`` abandons it.
    parallel : int
        Parts a large series is split into (at most ``workers - 1``).
    """

    def __init__(
        self,
        service: RetrieveService,
        expectations: Expectations,
        store: InstanceStore,
        *,
        workers: int,
        timeout: float,
        parallel: int = 1,
    ) -> None:
        self._service = service
        self._expectations = expectations
        self._store = store
        self._workers = workers
        self._timeout = timeout
        # One worker stays free of series parts, for hurried instances and for other series.
        # On loopback one association per series is fastest (Python, not the round trip, is the
        # limit: two parts took 8.5 s where one took 3.0 s for 500 CT images); over a slow link
        # the round trip is, and parts pay.
        self._parts = max(1, min(parallel, workers - 1))
        self._jobs: dict[SeriesRef, tuple[SeriesJob, SeriesRetrieval]] = {}
        # While the PACS is unreachable every series fails at once (``service.health``); after
        # a failed retrieval its series fails at once for a moment (``failures``).
        self._failures = RecentFailures()
        self._lock = threading.Lock()
        self._queue: queue.PriorityQueue[_Task] = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the workers (from FUSE init(), after libfuse has daemonized)."""
        for number in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"retrieve-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the workers and fail every waiting reader (unmount); running retrievals end."""
        for _thread in self._threads:
            self._queue.put(_Task(99, next(self._sequence), None, ()))
        self._threads.clear()
        with self._lock:
            jobs = [job for job, _retrieval in self._jobs.values()]
            self._jobs.clear()
        for job in jobs:
            job.finish("dicomfs is shutting down")

    def in_flight(self) -> list[InFlight]:
        """The retrievals under way (a snapshot, read-only), longest running first."""
        now = time.monotonic()
        with self._lock:
            jobs = [job for job, _retrieval in self._jobs.values()]
            progress = [(job, job.received()) for job in jobs]  # job locks after ours (lock order)
        snapshot = [
            InFlight(
                job.ref.series_uid,
                len(job.expected),
                received,
                received_bytes,
                now - job.started_at if job.started_at else 0.0,
            )
            for job, (received, received_bytes) in progress
        ]
        return sorted(snapshot, key=lambda flight: -flight.running_s)

    # -- for readers ---------------------------------------------------------------------------

    def busy(self, ref: SeriesRef) -> bool:
        """Whether ``ref`` is being retrieved now (waiting for it costs the PACS nothing more)."""
        with self._lock:
            return ref in self._jobs

    def fetch(self, ref: SeriesRef, sop_uid: str, series_sop_uids: Sequence[str]) -> int:
        """Make sure an instance is cached, retrieving its series if need be; its size.

        Parameters
        ----------
        ref : SeriesRef
            The instance's series.
        sop_uid : str
            Its SOP Instance UID.
        series_sop_uids : sequence of str
            Every SOP Instance UID of the series in listing order (the job's expectations and
            send-order positions); empty for just this one.

        Returns
        -------
        int
            Its size in bytes, as cached.

        Raises
        ------
        FailedFast
            Without asking the PACS: it is unreachable, or the series failed moments ago.
        Stalled
            The job showed no progress for ``2 * timeout + 5`` s; it is abandoned.
        RetrievalFailed
            The instance did not arrive whole (the message names the cause).
        """
        size = self._store.size_of(ref.instance(sop_uid))
        if size is not None:
            return size
        job, retrieval = self._job_for(ref, series_sop_uids or [sop_uid])
        try:
            return job.wait_for(
                sop_uid, stall_s=2 * self._timeout + 5, hurry=lambda: self._hurry(job, retrieval, sop_uid)
            )
        except Stalled as exc:
            self._abandon(job, str(exc))
            raise

    def _abandon(self, job: SeriesJob, reason: str) -> None:
        """End a job that makes no progress: its waiters fail, the next reader starts a new one.

        Its running retrievals see ``job.finished`` and are cancelled (C-CANCEL, then A-ABORT:
        ``dimse.progress``), which frees their workers.
        """
        with self._lock:
            if job.finished:  # another waiter of the job abandoned it first (one log line)
                return
            current = self._jobs.get(job.ref)
            if current is not None and current[0] is job:
                del self._jobs[job.ref]
                self._expectations.forget(job.ref.key, job.expected)
            job.finish(reason)
        LOGGER.warning("series %s: retrieval abandoned: %s", job.ref.series_uid, reason)

    def _job_for(self, ref: SeriesRef, sop_uids: Sequence[str]) -> tuple[SeriesJob, SeriesRetrieval]:
        health = self._service.health
        with self._lock:
            current = self._jobs.get(ref)
            if current is not None:
                return current
            down = health.down_reason
            if down is not None:  # checked again in the background, at most once a second
                raise FailedFast(f"series {ref.series_uid}: the PACS is unreachable ({down})")
            if self._failures.refuses(ref, health.epoch):
                raise FailedFast(f"series {ref.series_uid}: the last retrieval failed moments ago")
            if not self._threads:
                raise RetrievalFailed("retrieval is not running")
            job = SeriesJob(ref, sop_uids, cached=self._store)
            retrieval = self._service.series(ref, job.order, job)
            self._jobs[ref] = (job, retrieval)
            self._expectations.expect(ref.key, job.expected, job)
            job.parts = self._split(job.order)
            for part in job.parts:
                self._submit(job, retrieval, part, PRIORITY_PART)
            return job, retrieval

    def _split(self, order: tuple[str, ...]) -> list[tuple[str, ...]]:
        parts = min(self._parts, len(order) // MIN_PART_SIZE)
        if parts <= 1:
            return [()]
        size = -(-len(order) // parts)
        return [order[start : start + size] for start in range(0, len(order), size)]

    def _hurry(self, job: SeriesJob, retrieval: SeriesRetrieval, sop_uid: str) -> None:
        """Retrieve one instance on its own, ahead of the queued parts (see ``sendorder``)."""
        with self._lock:
            if not job.mark_hurried(sop_uid):
                return
            self._submit(job, retrieval, (sop_uid,), PRIORITY_HURRIED)
        # At most sendorder.MAX_HURRIED lines per series.
        LOGGER.info(
            "series %s: hurrying %s ahead of the stream (%d of at most %d)",
            job.ref.series_uid,
            sop_uid,
            len(job.hurried),
            MAX_HURRIED,
        )

    def _submit(
        self, job: SeriesJob, retrieval: SeriesRetrieval, sop_uids: tuple[str, ...], priority: int
    ) -> None:
        """Queue a part of ``job``; the caller holds ``_lock``."""
        job.pending_parts += 1
        self._queue.put(_Task(priority, next(self._sequence), job, sop_uids, retrieval))

    # -- workers --------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            job, retrieval = task.job, task.retrieval
            if job is None or retrieval is None:
                return
            error: str | None = None
            try:
                if not job.finished:
                    if task.priority == PRIORITY_PART:
                        job.begin(task.sop_uids)
                    else:
                        job.touch()
                    error = retrieval.retrieve(task.sop_uids)
            except Exception as exc:  # a worker must always finish its part, or waiters would hang
                LOGGER.exception("retrieval of series %s crashed", job.ref.series_uid)
                error = f"internal error: {exc}"
            self._part_done(job, error)

    def _part_done(self, job: SeriesJob, error: str | None) -> None:
        with self._lock:
            if error:
                job.errors.append(error)
            job.pending_parts -= 1
            if job.pending_parts > 0 or job.finished:
                return
            missing = job.missing(job.order)
            final = None if not missing else (job.errors[-1] if job.errors else "the PACS did not send it")
            self._expectations.forget(job.ref.key, job.expected)
            current = self._jobs.get(job.ref)
            if current is not None and current[0] is job:
                del self._jobs[job.ref]
            if final is None:
                self._failures.succeeded(job.ref)
            else:
                self._failures.failed(job.ref, self._service.health.epoch)
            job.finish(final)
        elapsed = time.monotonic() - job.started_at if job.started_at else 0.0
        if final:
            # One line per failed retrieval (not per file): its cause, and the fix where known.
            LOGGER.warning(
                "series %s: %s (%d of %d instances arrived)",
                job.ref.series_uid,
                final,
                len(job.expected) - len(missing),
                len(job.expected),
            )
        else:
            LOGGER.info("series %s: %d instances in %.2f s", job.ref.series_uid, len(job.sizes), elapsed)
