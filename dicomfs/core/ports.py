"""What the engine needs from the outside world, as Protocols: it never imports the DIMSE side.

``dicomfs.dimse.queries.DimseQueries`` implements :class:`QueryService` over C-FIND; a DICOMweb
(QIDO-RS) implementation would answer the same calls. The retrieve and store services (C-MOVE /
C-GET, C-STORE) are declared by the retrieval side beside this one.
"""

from __future__ import annotations

from typing import Protocol

from dicomfs.core.rows import Row


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

    def patients(self) -> list[Row] | None:
        """PATIENT-level rows (PatientID, IssuerOfPatientID, PatientName,
        NumberOfPatientRelatedStudies), or None when the archive has no PATIENT level to ask
        (Study Root only): then the caller derives patients from :meth:`studies`."""
        ...

    def studies(self, patient_id: str) -> list[Row]:
        """STUDY-level rows of ``patient_id`` (``""``: every study) with StudyInstanceUID,
        NumberOfStudyRelatedSeries, StudyDate, StudyTime, StudyDescription, AccessionNumber,
        PatientID, PatientName, IssuerOfPatientID."""
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
