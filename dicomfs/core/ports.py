"""What the engine needs from the DICOM side, as Protocols (``dicomfs.dimse`` implements them).

The engine (``core``) never imports pynetdicom: it schedules retrievals and waits for instances
through these interfaces, and the DIMSE package supplies the implementations (``app.compose``
wires them together). Tests may supply their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from dicomfs.core.model import SeriesKey, SeriesRef

# -- retrieval (RetrieveService and the receiver's side) -------------------------------------------


class InstanceSink(Protocol):
    """Told about each instance a retrieval asked for; called from the receiving threads."""

    def landed(self, sop_uid: str, size: int) -> None:
        """The instance is in the store now, ``size`` bytes (File Meta Information included)."""

    def lost(self, sop_uid: str, reason: str) -> None:
        """The instance arrived but was not kept (``reason`` says why, for the log and EIO)."""


class Expectations(Protocol):
    """The receiver's admission of C-STOREs: which instances it accepts, and whom it tells.

    PS3.4 C.4.2.3.1 (C-MOVE) and C.4.3.3.1 (C-GET): the sub-operations of a retrieval are
    C-STOREs of the instances it matched; only those are accepted.
    """

    def expect(self, series: SeriesKey, sop_uids: Iterable[str], sink: InstanceSink) -> None:
        """Accept C-STOREs of ``sop_uids`` belonging to ``series`` from now on, for ``sink``."""

    def forget(self, series: SeriesKey, sop_uids: Iterable[str]) -> None:
        """Refuse C-STOREs of ``sop_uids`` for ``series`` again."""


class Reachability(Protocol):
    """Whether the PACS answers (``core.health.PacsHealth``)."""

    @property
    def down_reason(self) -> str | None:
        """Why the PACS is thought unreachable, or None while it answers."""

    @property
    def epoch(self) -> int:
        """Counts the outages that ended: a failure recorded in an older epoch is void."""


class RetrievalProgress(Protocol):
    """What a running retrieval sees of the job it works for."""

    @property
    def last_activity(self) -> float:
        """When (monotonic seconds) one of the job's instances last landed or was lost."""

    @property
    def finished(self) -> bool:
        """True once the job is over or abandoned: its retrievals should end (C-CANCEL)."""

    def missing(self, wanted: Sequence[str]) -> tuple[str, ...]:
        """The SOP Instance UIDs of ``wanted`` that have neither landed nor are cached."""

    def await_late(self, wanted: Sequence[str], reported: int, grace_s: float) -> int:
        """Wait for C-STOREs reported done before they were sent; how many arrived late."""


class SeriesRetrieval(Protocol):
    """The retrievals of one job's series; one object per job, used by several workers at once."""

    def retrieve(self, sop_uids: tuple[str, ...]) -> str | None:
        """Retrieve ``sop_uids`` (``()``: the whole series) with every fallback.

        Returns
        -------
        str or None
            Why instances are missing afterwards (one line, for the log and EIO), or None
            when every wanted instance is there.
        """


class RetrieveService(Protocol):
    """Gets instances of a series into the store, through the receiver (``Expectations``)."""

    @property
    def health(self) -> Reachability:
        """The PACS's reachability, learned from every association."""

    def series(self, ref: SeriesRef, order: Sequence[str], progress: RetrievalProgress) -> SeriesRetrieval:
        """The retrievals of one job: ``order`` is its SOP Instance UIDs in listing order."""


# -- end of retrieval --------------------------------------------------------------------------------
