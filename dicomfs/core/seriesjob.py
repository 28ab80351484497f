"""One retrieval job of one series: what has landed, who waits for what, and when to hurry.

A job lives from the first read of an uncached instance of its series until its last part is
done (or it is abandoned). Receiving threads tell it what landed (``landed``/``lost``, the
``core.ports.InstanceSink`` protocol); readers wait on it for their own instance
(``wait_for``), and reconsider hurrying it (``sendorder``) while they wait; the retrieval
strategy asks it what is still missing (``core.ports.RetrievalProgress``).

Lock order: callers may hold ``RetrievalScheduler._lock`` when they call in; ``_cond`` is taken
last, and nothing is called with it held but ``sendorder``'s pure functions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from dicomfs.core.errors import RetrievalFailed
from dicomfs.core.model import InstanceKey, SeriesRef
from dicomfs.core.sendorder import MAX_HURRIED, Stream, updated_round_trip, worth_hurrying

#: How often a waiting reader reconsiders hurrying (the stream's order and rate change as
#: instances arrive; every arrival wakes the readers, and the estimate costs a scan of the part).
HURRY_CHECK_S = 0.1


class Cached(Protocol):
    """The instance store, as far as a job asks it (``core.store.InstanceStore``)."""

    def __contains__(self, key: InstanceKey) -> bool: ...


class Stalled(RetrievalFailed):
    """A running retrieval showed no progress for too long; its job is abandoned."""


class SeriesJob:
    """One retrieval of one series, in parts, and the instances it has delivered so far.

    Parameters
    ----------
    ref : SeriesRef
        The series.
    sop_uids : sequence of str
        Its SOP Instance UIDs in listing order (duplicates dropped); the instances it expects.
    clock : callable returning float
        Monotonic seconds; injectable so the hurry policy can be tested without waiting.
    cached : Cached
        The instance store (``key in cached``): an instance cached meanwhile is not missing.
    """

    def __init__(
        self,
        ref: SeriesRef,
        sop_uids: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
        cached: Cached = frozenset(),
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
        self._cached = cached
        self.started_at = 0.0
        self.last_activity = clock()
        self._streams: dict[str, Stream] = {}  # SOP Instance UID -> the stream that sends it
        self._round_trip: float | None = None  # measured on hurried retrievals
        self._cond = threading.Condition()

    # InstanceSink (core.ports), called from the receiving threads
    def landed(self, sop_uid: str, size: int) -> None:
        """``sop_uid`` is in the store, ``size`` bytes: release its waiters, learn the stream."""
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
        """``sop_uid`` arrived but was not kept; its waiters fail with ``reason`` once the job ends."""
        with self._cond:
            self.lost_reasons[sop_uid] = reason
            self.last_activity = self._clock()
            self._cond.notify_all()

    def received(self) -> tuple[int, int]:
        """Instances landed so far in this job, and their bytes (for ``dicomfs status``)."""
        with self._cond:
            return len(self.sizes), sum(self.sizes.values())

    def missing(self, wanted: Sequence[str]) -> tuple[str, ...]:
        """The SOP Instance UIDs of ``wanted`` that have neither landed nor are cached."""
        return tuple(
            uid for uid in wanted if uid not in self.sizes and self.ref.instance(uid) not in self._cached
        )

    def touch(self) -> None:
        """A worker works for the job (its first call starts the job's clock): progress."""
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
        """The job is over (``error`` None: complete); every waiter decides now."""
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
        (``dimse.progress``), so that no FUSE call ever waits without bound.
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
