"""Getting instances into the cache: one retrieval per series at a time, many waiters.

Asking for one uncached instance retrieves its whole series, because series-level transfer costs
about half as much as per-instance transfer (issue #3). A PACS such as Orthanc sends one instance
at a time per association and waits for each C-STORE response; where that round trip is the
ceiling (a slow link), the ``parallel`` option splits a large series into *parts* (IMAGE-level
retrievals of a list of SOP Instance UIDs, PS3.4 C.4.2.2.1) on parallel associations. Each waiter
is released as soon as *its* instance has landed; a reader whose instance is far down the stream
(by the send order learnt from what has arrived, see ``sendorder``) gets it *hurried*: retrieved
on its own, ahead of the queue, at most ``sendorder.MAX_HURRIED`` times per series. A retrieval
lasts while it makes progress (``pacs.ProgressWatch``); a job whose readers see none for long is
abandoned, so the next reader starts a new one.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from dicomfs.core.errors import FailedFast, PacsError, RetrievalFailed
from dicomfs.core.model import InstanceKey
from dicomfs.core.sendorder import MAX_HURRIED, Stream, updated_round_trip, worth_hurrying
from dicomfs.core.store import InstanceStore
from dicomfs.dimse.client import STATUS_SUCCESS, PacsClient, RetrieveOutcome
from dicomfs.dimse.offers import Offer, OfferPlanner
from dicomfs.dimse.receiver import InstanceReceiver

LOGGER = logging.getLogger(__name__)

#: A series smaller than this is retrieved in one SERIES-level request: parallel parts would not
#: pay for their extra associations.
MIN_PART_SIZE = 24

#: How often a waiting reader reconsiders hurrying (the stream's order and rate change as
#: instances arrive; every arrival wakes the readers, and the estimate costs a scan of the part).
HURRY_CHECK_S = 0.1

PRIORITY_HURRIED, PRIORITY_PART = 0, 1

#: After a failed retrieval of a series, its further requests fail at once for this long: the
#: rest of an `ls -l` burst, not a fixed penalty (the cadence of the PACS reachability check).
RETRY_FAILED_AFTER_S = 1.0
#: Bound of the table of recently failed series.
MAX_FAILED_SERIES = 1024
#: C-GETs one part may take after failed sub-operations: the planner rarely has more than four
#: offers (classes exactly, two or three accepted compressed syntaxes, further classes).
MAX_GET_ROUNDS = 8


@dataclass(frozen=True)
class SeriesRef:
    """Enough to retrieve a series in either query model (patient root needs the Patient ID)."""

    patient_id: str
    study_uid: str
    series_uid: str

    def instance(self, sop_uid: str) -> InstanceKey:
        """The key of one of the series' instances."""
        return InstanceKey(self.patient_id, self.study_uid, self.series_uid, sop_uid)


class Stalled(RetrievalFailed):
    """A running retrieval showed no progress for too long; its job is abandoned."""


class SeriesJob:
    """One retrieval of one series, in parts, and the instances it has delivered so far.

    ``clock`` (monotonic seconds) is injectable so the hurry policy can be tested without waiting.
    """

    def __init__(
        self, ref: SeriesRef, sop_uids: Sequence[str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ref = ref
        self.order = tuple(dict.fromkeys(sop_uids))
        self.parts: list[tuple[str, ...]] = []
        self.expected = frozenset(self.order)
        self.sizes: dict[str, int] = {}
        self.lost_reasons: dict[str, str] = {}
        self.errors: list[str] = []
        self.hurried: dict[str, float] = {}  # SOP Instance UID -> when it was hurried
        self.pending_parts = 0
        self.finished = False
        self.error: str | None = None
        self._clock = clock
        self.started_at = 0.0
        self.last_activity = clock()
        self.sop_classes: list[str] | None = None
        self.probe_lock = threading.Lock()
        self._streams: dict[str, Stream] = {}  # SOP Instance UID -> the stream that sends it
        self._round_trip: float | None = None  # measured on hurried retrievals
        self._cond = threading.Condition()

    # InstanceSink, called from the receiving threads
    def landed(self, sop_uid: str, size: int) -> None:
        with self._cond:
            now = self._clock()
            if sop_uid not in self.sizes:
                hurried_at = self.hurried.get(sop_uid)
                if hurried_at is not None:
                    self._round_trip = updated_round_trip(self._round_trip, now - hurried_at)
                elif (stream := self._streams.get(sop_uid)) is not None:
                    stream.arrived(sop_uid, now)
            self.sizes[sop_uid] = size
            self.lost_reasons.pop(sop_uid, None)
            self.last_activity = now
            self._cond.notify_all()

    def lost(self, sop_uid: str, reason: str) -> None:
        with self._cond:
            self.lost_reasons[sop_uid] = reason
            self.last_activity = self._clock()
            self._cond.notify_all()

    def touch(self) -> None:
        with self._cond:
            if not self.started_at:
                self.started_at = self._clock()
            self.last_activity = self._clock()

    def begin(self, part: tuple[str, ...]) -> None:
        """A worker sends the C-MOVE/C-GET of ``part`` (() is the whole series): a new stream."""
        self.touch()
        with self._cond:
            stream = Stream(part or self.order, self._clock())
            for sop_uid in stream.members:
                self._streams[sop_uid] = stream

    def mark_hurried(self, sop_uid: str) -> bool:
        """Record a hurried retrieval of ``sop_uid``; False when it is not worth one any more."""
        with self._cond:
            if self.finished or sop_uid in self.sizes or sop_uid in self.hurried:
                return False
            if len(self.hurried) >= MAX_HURRIED:
                return False
            self.hurried[sop_uid] = self._clock()
            return True

    def expected_wait(self, sop_uid: str) -> float | None:
        """Seconds until the stream should deliver ``sop_uid``; None while that is unknown."""
        with self._cond:
            stream = self._streams.get(sop_uid)
            if stream is None:
                return None
            return stream.expected_wait(sop_uid, self.sizes, self._clock())

    def round_trip(self) -> float | None:
        """A single-instance retrieval's expected duration: measured, else a stream's first store."""
        with self._cond:
            if self._round_trip is not None:
                return self._round_trip
            latencies = [s.first_store_latency() for s in set(self._streams.values())]
            known = [latency for latency in latencies if latency is not None]
            return min(known) if known else None

    def stream_arrivals(self, sop_uid: str) -> int:
        """How many instances the stream that sends ``sop_uid`` has delivered so far."""
        with self._cond:
            stream = self._streams.get(sop_uid)
            return stream.arrivals if stream is not None else 0

    def worth_hurrying(self, sop_uid: str, passed: int = 0) -> bool:
        """The hurry rule (``sendorder.worth_hurrying``) for a reader that has seen ``passed``
        other instances arrive while it waited."""
        with self._cond:
            if self.finished or sop_uid in self.sizes or sop_uid in self.hurried:
                return False
            stream = self._streams.get(sop_uid)
            if stream is None:
                return False
            return worth_hurrying(
                stream.expected_wait(sop_uid, self.sizes, self._clock()),
                self.round_trip(),
                len(self.hurried),
                predictable=stream.predictable(),
                passed=passed,
            )

    def finish(self, error: str | None) -> None:
        with self._cond:
            if self.finished:
                return
            self.error = error
            self.finished = True
            self._cond.notify_all()

    def await_late(self, wanted: Sequence[str], reported: int, grace_s: float) -> int:
        """Wait for C-STOREs the PACS reported as done before sending them; how many arrived late.

        An asynchronous C-MOVE SCP (Orthanc with ``SynchronousCMove`` false) answers Success with
        N completed sub-operations and sends the C-STOREs afterwards. While fewer than
        ``reported`` of ``wanted`` have arrived, wait; each arrival extends the wait by
        ``grace_s`` (C-STOREs are progress), so it ends ``grace_s`` after the last one.
        """
        with self._cond:

            def arrived() -> int:
                return sum(1 for uid in wanted if uid in self.sizes or uid in self.lost_reasons)

            before = arrived()
            count = before
            answered = self._clock()
            while count < reported and count < len(wanted) and not self.finished:
                idle = self._clock() - max(self.last_activity, answered)
                if idle >= grace_s:
                    break
                self._cond.wait(timeout=grace_s - idle)
                count = arrived()
            return count - before

    def _outcome_for(self, sop_uid: str) -> int | None:
        """The size if landed; raises once it cannot arrive; None while it still may."""
        if sop_uid in self.sizes:
            return self.sizes[sop_uid]
        if self.finished:
            reason = self.lost_reasons.get(sop_uid) or self.error or "the PACS did not send it"
            raise RetrievalFailed(f"{sop_uid}: {reason}")
        return None

    def wait_for(self, sop_uid: str, stall_s: float, hurry: Callable[[], object]) -> int:
        """Block until ``sop_uid`` has landed; RetrievalFailed when it cannot arrive any more.

        Every ``HURRY_CHECK_S`` the reader reconsiders the hurry rule and calls ``hurry`` once
        it holds (at most once). A running retrieval that shows no progress for ``stall_s``
        raises :class:`Stalled`: a belt to the braces of the retrieval's own progress watch
        (``pacs``), so that no FUSE call ever waits without bound.
        """
        next_check = 0.0
        hurried = False
        seen = self.stream_arrivals(sop_uid)  # before its stream began this stays 0: a new stream
        while True:
            with self._cond:
                size = self._outcome_for(sop_uid)
                if size is not None:
                    return size
                now = self._clock()
                idle = now - self.last_activity
                if self.started_at and idle > stall_s:
                    raise Stalled(f"{sop_uid}: no progress for {idle:.0f} s")
                wanted = False
                if not hurried and now >= next_check:
                    next_check = now + HURRY_CHECK_S
                    wanted = self.worth_hurrying(sop_uid, self.stream_arrivals(sop_uid) - seen)
                    hurried = len(self.hurried) >= MAX_HURRIED  # nothing left to decide
                if not wanted:
                    wake = now + max(0.05, stall_s - idle)
                    if not hurried:
                        wake = min(wake, next_check)
                    self._cond.wait(timeout=max(0.001, wake - now))
                    continue
            hurried = True
            hurry()


@dataclass(order=True)
class _Task:
    priority: int
    sequence: int
    job: SeriesJob | None = field(compare=False)  # None tells a worker to stop
    sop_uids: tuple[str, ...] = field(compare=False)  # () means the whole series


class RetrievalScheduler:
    """Single-flight series retrievals, split into parts, on a bounded set of workers."""

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
        parallel: int = 1,
    ) -> None:
        self._client = client
        self._receiver = receiver
        self._store = store
        self._method = method
        self._destination = destination_aet
        self._workers = workers
        self._timeout = timeout
        # One worker stays free of series parts, for hurried instances and for other series.
        # On loopback one association per series is fastest (Python, not the round trip, is the
        # limit: two parts took 8.5 s where one took 3.0 s for 500 CT images); over a slow link
        # the round trip is, and parts pay.
        self._parts = max(1, min(parallel, workers - 1))
        self._jobs: dict[SeriesRef, SeriesJob] = {}
        # After a failed retrieval, further requests for the series fail at once for a moment
        # (RETRY_FAILED_AFTER_S), so `ls -l` of its 500 files costs one retrieval, not 500; an
        # entry is void once the PACS answers again after an outage (its health epoch moved on).
        # While the PACS is unreachable every series fails at once (``PacsClient.health``).
        self._failed_until: dict[SeriesRef, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._queue: queue.PriorityQueue[_Task] = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for number in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"retrieve-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for _thread in self._threads:
            self._queue.put(_Task(99, next(self._sequence), None, ()))
        self._threads.clear()
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            job.finish("dicomfs is shutting down")

    # -- for readers ---------------------------------------------------------------------------

    def fetch(self, ref: SeriesRef, sop_uid: str, series_sop_uids: Sequence[str]) -> int:
        """Make sure ``sop_uid`` is cached and return its size; RetrievalFailed if it cannot be."""
        size = self._store.size_of(ref.instance(sop_uid))
        if size is not None:
            return size
        job = self._job_for(ref, series_sop_uids or [sop_uid])
        try:
            return job.wait_for(
                sop_uid, stall_s=2 * self._timeout + 5, hurry=lambda: self._hurry(job, sop_uid)
            )
        except Stalled as exc:
            self._abandon(job, str(exc))
            raise

    def _abandon(self, job: SeriesJob, reason: str) -> None:
        """End a job that makes no progress: its waiters fail, the next reader starts a new one.

        Its running retrievals see ``job.finished`` and are cancelled by their progress watch
        (C-CANCEL, then A-ABORT: ``pacs``), which frees their workers.
        """
        with self._lock:
            if job.finished:  # another waiter of the job abandoned it first (one log line)
                return
            if self._jobs.get(job.ref) is job:
                del self._jobs[job.ref]
                self._receiver.forget(job.ref.instance("").series, job.expected)
            job.finish(reason)
        LOGGER.warning("series %s: retrieval abandoned: %s", job.ref.series_uid, reason)

    def _job_for(self, ref: SeriesRef, sop_uids: Sequence[str]) -> SeriesJob:
        health = self._client.health
        with self._lock:
            job = self._jobs.get(ref)
            if job is not None:
                return job
            down = health.down_reason
            if down is not None:  # checked again in the background, at most once a second
                raise FailedFast(f"series {ref.series_uid}: the PACS is unreachable ({down})")
            until, epoch = self._failed_until.get(ref, (0.0, -1))
            if epoch == health.epoch and time.monotonic() < until:
                raise FailedFast(f"series {ref.series_uid}: the last retrieval failed moments ago")
            if not self._threads:
                raise RetrievalFailed("retrieval is not running")
            job = SeriesJob(ref, sop_uids)
            self._jobs[ref] = job
            self._receiver.expect(ref.instance("").series, job.expected, job)
            job.parts = self._split(job.order)
            for part in job.parts:
                self._submit(job, part, PRIORITY_PART)
            return job

    def _split(self, order: tuple[str, ...]) -> list[tuple[str, ...]]:
        parts = min(self._parts, len(order) // MIN_PART_SIZE)
        if parts <= 1:
            return [()]
        size = -(-len(order) // parts)
        return [order[start : start + size] for start in range(0, len(order), size)]

    def _hurry(self, job: SeriesJob, sop_uid: str) -> None:
        """Retrieve one instance on its own, ahead of the queued parts (see ``sendorder``)."""
        with self._lock:
            if not job.mark_hurried(sop_uid):
                return
            self._submit(job, (sop_uid,), PRIORITY_HURRIED)
        # At most sendorder.MAX_HURRIED lines per series.
        LOGGER.info(
            "series %s: hurrying %s ahead of the stream (%d of at most %d)",
            job.ref.series_uid,
            sop_uid,
            len(job.hurried),
            MAX_HURRIED,
        )

    def _submit(self, job: SeriesJob, sop_uids: tuple[str, ...], priority: int) -> None:
        """Queue a part of ``job``; the caller holds ``_lock``."""
        job.pending_parts += 1
        self._queue.put(_Task(priority, next(self._sequence), job, sop_uids))

    # -- workers --------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            job = task.job
            if job is None:
                return
            error: str | None = None
            try:
                if not job.finished:
                    if task.priority == PRIORITY_PART:
                        job.begin(task.sop_uids)
                    else:
                        job.touch()
                    error = self._attempt_all(job, task.sop_uids)
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
            missing = [
                uid for uid in job.order if uid not in job.sizes and job.ref.instance(uid) not in self._store
            ]
            final = None if not missing else (job.errors[-1] if job.errors else "the PACS did not send it")
            self._receiver.forget(job.ref.instance("").series, job.expected)
            if self._jobs.get(job.ref) is job:
                del self._jobs[job.ref]
            self._failed_until.pop(job.ref, None)
            if final is not None:
                now = time.monotonic()
                if len(self._failed_until) >= MAX_FAILED_SERIES:  # bounded: drop what has expired
                    expired = [ref for ref, (until, _e) in self._failed_until.items() if until <= now]
                    for ref in expired or list(self._failed_until)[: MAX_FAILED_SERIES // 2]:
                        del self._failed_until[ref]
                self._failed_until[job.ref] = (now + RETRY_FAILED_AFTER_S, self._client.health.epoch)
            job.finish(final)
        elapsed = time.monotonic() - job.started_at if job.started_at else 0.0
        if final:
            LOGGER.warning(
                "series %s: %s (%d of %d instances arrived)",
                job.ref.series_uid,
                final,
                len(job.expected) - len(missing),
                len(job.expected),
            )
        else:
            LOGGER.info("series %s: %d instances in %.2f s", job.ref.series_uid, len(job.sizes), elapsed)

    def _attempt_all(self, job: SeriesJob, sop_uids: tuple[str, ...]) -> str | None:
        """Retrieve a part, and when sub-operations failed, try the next way; the error or None.

        C-MOVE (with ``retrieve=move``) leaves the transfer syntax to the PACS, and a PACS that
        cannot convert (dcmqrscp) fails every sub-operation whose stored syntax it did not propose.
        C-GET lets us offer the contexts; after failed sub-operations come further C-GETs of the
        missing instances, each offering what ``offers.OfferPlanner`` learned: the series' classes
        exactly, then each accepted compressed syntax first, then further classes.
        """
        wanted = sop_uids or job.order
        error: str | None = None
        if self._method == "move":
            try:
                outcome = self._retrieve(job, sop_uids, None)
                error = self._judge(job, wanted, outcome)
                missing = self._missing(job, wanted)
                if (
                    error is not None
                    and not sop_uids
                    and missing
                    and not job.finished
                    and outcome.status != 0xA801
                    and not outcome.failed
                ):
                    # A PACS that keys series by Series Instance UID alone (Orthanc) answers a
                    # SERIES-level request with another study's series of the same UID: ask for
                    # the missing objects by their SOP Instance UIDs (PS3.4 C.4.2.2.1). Failed
                    # sub-operations (a PACS that cannot convert) go to the C-GET offers instead.
                    LOGGER.info(
                        "series %s: %s; asking for the %d missing instances by SOP Instance UID",
                        job.ref.series_uid,
                        error,
                        len(missing),
                    )
                    outcome = self._retrieve(job, missing, None)
                    error = self._judge(job, wanted, outcome)
            except PacsError as exc:
                return str(exc) if error is None else f"{error}; then: {exc}"
            if error is None or not outcome.failed:
                return error
        planner = OfferPlanner(self._sop_classes(job))
        offer: Offer | None = planner.first()
        learned = warned = False
        for _round in range(MAX_GET_ROUNDS):
            if offer is None:
                break
            if error is not None:  # the first retry is worth a warning, the next ones are details
                log = LOGGER.info if warned else LOGGER.warning
                log("series %s: %s; trying C-GET offering %s", job.ref.series_uid, error, offer.why)
                warned = True
            missing = self._missing(job, wanted)
            part = missing if error is not None and 0 < len(missing) < len(wanted) else sop_uids
            try:
                outcome = self._retrieve(job, part, offer)
            except PacsError as exc:
                return str(exc) if error is None else f"{error}; then C-GET: {exc}"
            error = self._judge(job, wanted, outcome)
            if error is None or not outcome.failed:
                return error
            planner.note_accepted(outcome.accepted)
            if not learned:  # once: which classes does the series hold?
                learned = True
                planner.learn_classes(self._series_sop_classes(job))
            offer = planner.next()
        return error

    def _missing(self, job: SeriesJob, wanted: Sequence[str]) -> tuple[str, ...]:
        """The wanted instances of ``job`` that have neither landed nor are cached."""
        return tuple(
            uid for uid in wanted if uid not in job.sizes and job.ref.instance(uid) not in self._store
        )

    def _retrieve(self, job: SeriesJob, sop_uids: tuple[str, ...], offer: Offer | None) -> RetrieveOutcome:
        """C-MOVE (``offer`` None) or C-GET of ``sop_uids`` (() = the series); whole series if
        the PACS matches nothing for a list of UIDs (it does not do list matching)."""
        outcome = self._request(job, sop_uids, offer)
        if len(sop_uids) > 1 and not (outcome.completed or outcome.failed or outcome.warning):
            LOGGER.info("series %s: UID-list retrieval matched nothing; whole series", job.ref.series_uid)
            outcome = self._request(job, (), offer)
        return outcome

    def _request(self, job: SeriesJob, sop_uids: tuple[str, ...], offer: Offer | None) -> RetrieveOutcome:
        ref = job.ref
        identifier = self._identifier(ref, "IMAGE" if sop_uids else "SERIES")
        if sop_uids:
            identifier.SOPInstanceUID = list(sop_uids) if len(sop_uids) > 1 else sop_uids[0]

        # A retrieval lasts while C-STOREs land for the job (its progress), not for a fixed time:
        # Pending responses are optional (PS3.4 C.4.2.1.4). An abandoned job's retrievals end.
        def progress() -> float:
            return job.last_activity

        def cancelled() -> bool:
            return job.finished

        if offer is not None:
            return self._client.get(
                identifier,
                self._receiver.handle_store,
                offer.contexts,
                progress=progress,
                cancelled=cancelled,
            )
        outcome = self._client.move(identifier, self._destination, progress=progress, cancelled=cancelled)
        late = job.await_late(sop_uids or job.order, outcome.completed + outcome.warning, self._timeout)
        if late:
            LOGGER.info(
                "series %s: %d instances arrived after the final C-MOVE response (asynchronous C-MOVE)",
                ref.series_uid,
                late,
            )
        return outcome

    def _identifier(self, ref: SeriesRef, level: str) -> Dataset:
        """The unique keys of the series at ``level`` (Patient Root needs the Patient ID too)."""
        identifier = Dataset()
        identifier.QueryRetrieveLevel = level
        if self._client.model == "patient":
            identifier.PatientID = ref.patient_id
        identifier.StudyInstanceUID = ref.study_uid
        identifier.SeriesInstanceUID = ref.series_uid
        return identifier

    def _sop_classes(self, job: SeriesJob) -> list[str]:
        """The SOP classes known for the series: at first that of its first instance.

        Asked once per job, only for C-GET, and for one instance: SOPClassUID is not an indexed
        key for every PACS (Orthanc opens the file), and a series rarely mixes classes (the other
        classes still get contexts, see ``negotiation.storage_contexts``). [] when unknown.
        ``_series_sop_classes`` adds the rest once sub-operations failed.
        """
        with job.probe_lock:
            if job.sop_classes is None:
                job.sop_classes = self._probe_sop_class(job.ref, job.order[0]) if job.order else []
            return list(job.sop_classes)

    def _series_sop_classes(self, job: SeriesJob) -> list[str]:
        """Every SOP class the PACS says the series holds (IMAGE-level C-FIND); [] if it does not say.

        SOPClassUID is an optional key at the IMAGE level (PS3.4 C.6.1.1.5): a PACS may ignore
        it. Only after failed sub-operations: it may cost the PACS a file read per instance. dcmqrscp
        never returns SOPClassUID; ``OfferPlanner`` then offers further classes instead.
        """
        classes = self._probe_sop_class(job.ref, "")
        with job.probe_lock:
            job.sop_classes = list(dict.fromkeys([*(job.sop_classes or []), *classes]))
        if classes:
            LOGGER.info("series %s holds SOP classes %s", job.ref.series_uid, ", ".join(classes))
        return classes

    def _probe_sop_class(self, ref: SeriesRef, sop_uid: str) -> list[str]:
        """The SOP classes of one instance of the series, or of all (``sop_uid`` empty)."""
        query = self._identifier(ref, "IMAGE")
        query.SOPInstanceUID = sop_uid
        query.SOPClassUID = ""
        try:
            rows = self._client.find(query)
        except PacsError as exc:
            LOGGER.info("series %s: SOP class unknown (%s)", ref.series_uid, exc)
            return []
        return sorted({str(row.get("SOPClassUID", "")) for row in rows} - {""})

    def _judge(self, job: SeriesJob, wanted: Sequence[str], outcome: RetrieveOutcome) -> str | None:
        """Why a part failed, or None; logs partial deliveries (PS3.4 C.4.2.1.4 statuses)."""
        missing = sum(
            1 for uid in wanted if uid not in job.sizes and job.ref.instance(uid) not in self._store
        )
        if outcome.status == 0xA801:
            return (
                f"status 0xA801: the PACS does not know {self._destination!r} as a move destination, "
                "or could not connect to our storage SCP (localport, firewall, TLS)"
            )
        if outcome.status != STATUS_SUCCESS or outcome.failed or outcome.warning or missing:
            message = (
                f"status 0x{outcome.status:04X}, {outcome.completed} completed, {outcome.failed} failed, "
                f"{outcome.warning} warning sub-operations; {missing} of {len(wanted)} requested "
                "instances missing"
            )
            if missing:
                return message
            LOGGER.warning("series %s: %s", job.ref.series_uid, message)
        return None
