"""Getting instances into the cache: one retrieval per series at a time, many waiters.

Asking for one uncached instance retrieves its whole series in one association (SERIES-level
C-MOVE or C-GET), because series-level transfer costs about half as much as per-instance transfer
(issue #3). Each waiter is released as soon as *its* instance has landed, so a reader does not
wait for the rest of the series.

Lock order: ``RetrievalScheduler._lock`` may be held while taking ``SeriesJob._cond``, never the
other way round. Receiver callbacks (``landed``/``lost``) only take ``SeriesJob._cond``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicomfs.cache import InstanceStore
from dicomfs.errors import PacsError, RetrievalFailed
from dicomfs.pacs import STATUS_SUCCESS, PacsClient, RetrieveOutcome
from dicomfs.storescp import InstanceReceiver

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesRef:
    """Enough to retrieve a series in either query model (patient root needs the Patient ID)."""

    patient_id: str
    study_uid: str
    series_uid: str


class SeriesJob:
    """One retrieval of one series, and the instances it has delivered so far."""

    def __init__(self, ref: SeriesRef, sop_uids: Sequence[str]) -> None:
        self.ref = ref
        self.expected = frozenset(sop_uids)
        self.sizes: dict[str, int] = {}
        self.lost_reasons: dict[str, str] = {}
        self.error: str | None = None
        self.finished = False
        self.started = False
        self.last_activity = time.monotonic()
        self._cond = threading.Condition()

    # InstanceSink, called from the receiving threads
    def landed(self, sop_uid: str, size: int) -> None:
        with self._cond:
            self.sizes[sop_uid] = size
            self.last_activity = time.monotonic()
            self._cond.notify_all()

    def lost(self, sop_uid: str, reason: str) -> None:
        with self._cond:
            self.lost_reasons[sop_uid] = reason
            self.last_activity = time.monotonic()
            self._cond.notify_all()

    def mark_started(self) -> None:
        with self._cond:
            self.started = True
            self.last_activity = time.monotonic()

    def finish(self, error: str | None) -> None:
        with self._cond:
            self.error = error
            self.finished = True
            self._cond.notify_all()

    def wait_for(self, sop_uid: str, stall_s: float) -> int:
        """Block until ``sop_uid`` has landed; RetrievalFailed when it cannot arrive any more.

        A running retrieval that shows no progress for ``stall_s`` counts as failed: a belt to the
        braces of the network timeouts, so that no FUSE call ever waits without bound.
        """
        with self._cond:
            while True:
                if sop_uid in self.sizes:
                    return self.sizes[sop_uid]
                if sop_uid in self.lost_reasons:
                    raise RetrievalFailed(f"{sop_uid}: {self.lost_reasons[sop_uid]}")
                if self.finished:
                    reason = self.error or "the PACS did not send it"
                    raise RetrievalFailed(f"{sop_uid}: {reason}")
                idle = time.monotonic() - self.last_activity
                if self.started and idle > stall_s:
                    raise RetrievalFailed(f"{sop_uid}: no progress for {idle:.0f} s")
                self._cond.wait(timeout=max(0.05, stall_s - idle) if self.started else 1.0)


class RetrievalScheduler:
    """Single-flight series retrievals on a bounded pool of workers."""

    def __init__(
        self,
        client: PacsClient,
        receiver: InstanceReceiver,
        store: InstanceStore,
        *,
        method: str,
        destination_aet: str,
        workers: int,
        timeout: float,
    ) -> None:
        self._client = client
        self._receiver = receiver
        self._store = store
        self._method = method
        self._destination = destination_aet
        self._workers = workers
        self._timeout = timeout
        self._jobs: dict[SeriesRef, SeriesJob] = {}
        # After a failed retrieval, further requests for the series fail at once for a while:
        # `ls -l` of a 500-file series must not wait 500 timeouts on a silent PACS.
        self._failed_until: dict[SeriesRef, float] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="retrieve")

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.finish("dicomfs is shutting down")

    def fetch(self, ref: SeriesRef, sop_uid: str, series_sop_uids: Sequence[str]) -> int:
        """Make sure ``sop_uid`` is cached and return its size; RetrievalFailed if it cannot be."""
        size = self._store.size_of(sop_uid)
        if size is not None:
            return size
        job = self._job_for(ref, series_sop_uids)
        return job.wait_for(sop_uid, stall_s=2 * self._timeout + 5)

    def _job_for(self, ref: SeriesRef, sop_uids: Sequence[str]) -> SeriesJob:
        with self._lock:
            job = self._jobs.get(ref)
            if job is not None:
                return job
            if time.monotonic() < self._failed_until.get(ref, 0.0):
                raise RetrievalFailed(f"series {ref.series_uid}: the last retrieval failed moments ago")
            if self._pool is None:
                raise RetrievalFailed("retrieval is not running")
            job = SeriesJob(ref, sop_uids)
            self._jobs[ref] = job
            self._receiver.expect(job.expected, job)
            self._pool.submit(self._run, job)
            return job

    def _run(self, job: SeriesJob) -> None:
        job.mark_started()
        started = time.monotonic()
        error: str | None = None
        try:
            error = self._attempt_all(job)
        except Exception as exc:  # a worker must always finish its job, or waiters would hang
            LOGGER.exception("retrieval of series %s crashed", job.ref.series_uid)
            error = f"internal error: {exc}"
        finally:
            self._receiver.forget(job.expected)
            with self._lock:
                self._jobs.pop(job.ref, None)
                if error is not None:
                    self._failed_until[job.ref] = time.monotonic() + self._timeout
                else:
                    self._failed_until.pop(job.ref, None)
            job.finish(error)
        elapsed = time.monotonic() - started
        if error:
            LOGGER.warning("series %s: %s (%d instances arrived)", job.ref.series_uid, error, len(job.sizes))
        else:
            LOGGER.info("series %s: %d instances in %.2f s", job.ref.series_uid, len(job.sizes), elapsed)

    def _attempt_all(self, job: SeriesJob) -> str | None:
        """Retrieve, and when sub-operations failed, try the next way; the final error or None.

        A PACS that cannot convert (dcmqrscp) fails every sub-operation whose stored transfer
        syntax is not that of the context it picked: C-MOVE uses the syntaxes it proposes, and its
        C-GET takes the first context accepted for the SOP class. So after failed sub-operations
        come C-GET with uncompressed syntaxes offered first, then with compressed ones first.
        """
        attempts = [("get", False), ("get", True)]
        if self._method == "move":
            attempts.insert(0, ("move", False))
        sop_classes: list[str] | None = None
        error: str | None = None
        for number, (service, compressed_first) in enumerate(attempts):
            if number:
                order = "compressed" if compressed_first else "uncompressed"
                LOGGER.warning(
                    "series %s: %s; trying C-GET, %s syntaxes first", job.ref.series_uid, error, order
                )
            if service == "get" and sop_classes is None:
                sop_classes = self._sop_classes(job.ref)
            try:
                outcome = self._retrieve(job.ref, service, sop_classes or [], compressed_first)
            except PacsError as exc:
                return str(exc) if error is None else f"{error}; then C-GET: {exc}"
            error = self._judge(job, outcome)
            if error is None or not outcome.failed:
                return error
        return error

    def _retrieve(
        self, ref: SeriesRef, service: str, sop_classes: Sequence[str], compressed_first: bool
    ) -> RetrieveOutcome:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        if self._client.model == "patient":
            identifier.PatientID = ref.patient_id
        identifier.StudyInstanceUID = ref.study_uid
        identifier.SeriesInstanceUID = ref.series_uid
        if service == "get":
            return self._client.get(identifier, self._receiver.handle_store, sop_classes, compressed_first)
        return self._client.move(identifier, self._destination)

    def _sop_classes(self, ref: SeriesRef) -> list[str]:
        """The series' SOP classes, so C-GET can offer each its stored syntax; [] if unknown.

        Asked only when retrieving: SOPClassUID is not an indexed key for every PACS.
        """
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        if self._client.model == "patient":
            query.PatientID = ref.patient_id
        query.StudyInstanceUID = ref.study_uid
        query.SeriesInstanceUID = ref.series_uid
        query.SOPInstanceUID = ""
        query.SOPClassUID = ""
        try:
            rows = self._client.find(query)
        except PacsError as exc:
            LOGGER.info("series %s: SOP classes unknown (%s)", ref.series_uid, exc)
            return []
        return sorted({str(row.get("SOPClassUID", "")) for row in rows} - {""})

    def _judge(self, job: SeriesJob, outcome: RetrieveOutcome) -> str | None:
        """Why the job failed, or None; logs partial deliveries (PS3.4 C.4.2.1.4 statuses)."""
        cached = {uid for uid in job.expected if uid in job.sizes or uid in self._store}
        missing = len(job.expected) - len(cached)
        if outcome.status == 0xA801:
            return f"the PACS does not know our AE title {self._destination!r} as a move destination"
        if outcome.status != STATUS_SUCCESS or outcome.failed or outcome.warning or missing:
            message = (
                f"status 0x{outcome.status:04X}, {outcome.completed} completed, {outcome.failed} failed, "
                f"{outcome.warning} warning sub-operations; {missing} of {len(job.expected)} listed "
                "instances missing"
            )
            if missing:
                return message
            LOGGER.warning("series %s: %s", job.ref.series_uid, message)
        return None
