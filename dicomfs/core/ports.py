"""What the engine needs from the DICOM side, as Protocols (``dicomfs.dimse`` implements them).

The engine (``core``) never imports pynetdicom: it lists the archive, schedules retrievals and
waits for instances through these interfaces, and the DIMSE package supplies the implementations
(``app.compose`` wires them together). Tests may supply their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from dicomfs.core.model import SeriesKey, SeriesRef
from dicomfs.core.rows import Matches, Row

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


# -- queries (QueryService: ``dicomfs.dimse.queries.DimseQueries``) ----------------------------------


class QueryService(Protocol):
    """Level queries against one archive, answered as text rows (PS3.4 C.4.1 C-FIND).

    Every row holds the text of each key named below (absent ones as ``""``), its
    ``QueryRetrieveLevel``, and, where it holds a Patient ID, that ID exactly as sent under
    :data:`~dicomfs.core.rows.RAW_PATIENT_ID`. Matching is the archive's (PS3.4 C.2.2.2): rows
    may be wildcard matches, duplicates or of another parent; the caller screens them
    (:mod:`dicomfs.core.rows`). Every method raises :class:`~dicomfs.core.errors.QueryRefused`
    when the archive refuses or fails the query, and :class:`~dicomfs.core.errors.PacsError` when
    it cannot be reached or stops answering within the mount's ``timeout``.
    """

    @property
    def down_reason(self) -> str | None:
        """Why the archive is known to be unreachable right now, or None when it answers."""
        ...

    def patients(self, limit: int | None = None) -> list[Row] | None:
        """PATIENT-level rows (PatientID, IssuerOfPatientID, PatientName,
        NumberOfPatientRelatedStudies), at most ``limit`` (the query is cancelled there), or None
        when the archive has no PATIENT level to ask (Study Root only): then the caller derives
        patients from :meth:`studies`. Raises ``AnswerCapped`` when the archive capped it."""
        ...

    def studies(self, patient_id: str, limit: int | None = None) -> list[Row]:
        """STUDY-level rows of ``patient_id`` (``""``: every study, at most ``limit``) with
        StudyInstanceUID, NumberOfStudyRelatedSeries, StudyDate, StudyTime, StudyDescription,
        AccessionNumber, PatientID, PatientName, IssuerOfPatientID. Raises ``AnswerCapped`` when
        the archive capped the answer and it could not be made whole (``core.splitting``)."""
        ...

    def matching_studies(self, keys: Mapping[str, str], *, where: str = "") -> Matches:
        """STUDY-level rows matching ``keys`` (keyword -> value, PS3.4 C.2.2.2; checked by the
        caller, e.g. ``core.querykeys``) with the return keys of :meth:`studies`, plus ``keys``
        themselves: the search behind by-date, by-uid, by-id and query directories. Never a
        universal query: the caller gives at least one key with a value. A capped answer is split
        until whole where it can be, else ``Matches.missing`` says what is not listed
        (``core.splitting.complete_studies``); ``where`` names the search in its log line."""
        ...

    def series(self, patient_id: str, study_uid: str) -> list[Row]:
        """SERIES-level rows of one study with SeriesInstanceUID, SeriesNumber, Modality,
        SeriesDescription, NumberOfSeriesRelatedInstances, and the parents' StudyInstanceUID,
        PatientID, IssuerOfPatientID, PatientName (to screen other parents' and persons' rows)."""
        ...

    def instances(self, patient_id: str, study_uid: str, series_uid: str, *, with_issuer: bool) -> list[Row]:
        """IMAGE-level rows of one series with SOPInstanceUID, InstanceNumber, and the parents'
        StudyInstanceUID, SeriesInstanceUID, PatientID, PatientName (IssuerOfPatientID too
        with ``with_issuer``: it may cost the archive a file read per instance)."""
        ...


@dataclass(frozen=True)
class StoredObject:
    """What one C-STORE put into the PACS: the identity the listings that must change are keyed by.

    Attributes
    ----------
    patient_id, issuer : str
        Patient ID (0010,0020) and Issuer of Patient ID (0010,0021, '' when absent).
    study_uid, series_uid, sop_uid : str
        Study, Series and SOP Instance UIDs.
    study_date, accession : str
        StudyDate (DA text) and AccessionNumber, '' when absent (for the views' matching listings).
    transfer_syntax : str
        The transfer syntax UID it was sent in (the file's own unless converted).
    """

    patient_id: str
    issuer: str
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: str = ""
    accession: str = ""
    transfer_syntax: str = ""


class StoreService(Protocol):
    """C-STORE of one uploaded file (``dicomfs.dimse.sender.DimseSender``)."""

    def store(self, path: str) -> StoredObject:
        """Send the DICOM Part 10 file at ``path`` to the PACS as one C-STORE.

        Raises ``NotDicom`` for a file that is no DICOM Part 10 file (or one no accepted
        transfer syntax can carry), ``StoreRejected`` for a failure status, ``PacsError`` when
        the PACS cannot be reached or does not answer within ``timeout``.
        """
        ...
