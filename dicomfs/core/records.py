"""What the catalog lists: one record per patient, study, series and instance, each with its parents.

A record is identity plus the text of the C-FIND row it came from (:data:`~dicomfs.core.rows.Row`),
never a file name: the views name records. Every record carries its whole parent chain (issue #7:
a Series Instance UID can stand under two studies, a study under two patients), so equality and
hashing compare identity (the key, the UIDs and the parents) and never the descriptive row.
Records are pickled into the listing cache (``ListingCache``); a change of their fields changes
``catalog.LISTING_FORMAT``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

from dicomfs.core.model import InstanceKey, PatientKey
from dicomfs.core.rows import Row


@dataclass(frozen=True)
class PatientRecord:
    """One person as the root shows them.

    Attributes
    ----------
    key : PatientKey
        Patient ID with issuer (and name where needed): who this is.
    row : Row
        PatientName (the newest study's row when patients come from studies).
    mtime : float
        Seconds since the epoch: the newest study's time, or 0.0 when the PACS gave no study.
    count : int
        NumberOfPatientRelatedStudies (PS3.4 C.6.1.1.2), -1 when unknown or the ID is split.
    query_id : str
        The Patient ID exactly as the PACS sent it (padding and all): what queries ask with.
    """

    key: PatientKey
    row: Row = field(compare=False, hash=False)
    mtime: float = field(default=0.0, compare=False)
    count: int = field(default=-1, compare=False)
    query_id: str = ""

    @property
    def patient_id(self) -> str:
        return self.key.patient_id

    @cached_property
    def chain_text(self) -> str:
        """The identity chain as JSON text (stable, unambiguous): listing caches key by it."""
        return _chain_text(self.key.text)

    @property
    def shown_name(self) -> str:
        """The Patient Name the PACS gave this person (whose studies are these)."""
        return self.row.get("PatientName", "")


@dataclass(frozen=True)
class StudyRecord:
    """One study of one person (``row``: StudyDate, StudyTime, StudyDescription, AccessionNumber)."""

    patient: PatientRecord
    study_uid: str
    row: Row = field(compare=False, hash=False)
    mtime: float = field(default=0.0, compare=False)
    #: NumberOfStudyRelatedSeries (PS3.4 C.6.2.1.2), -1 when the PACS does not say.
    count: int = field(default=-1, compare=False)

    @cached_property
    def chain_text(self) -> str:
        """The identity chain (patient, study) as JSON text: listing caches key by it."""
        return _chain_text(self.patient.key.text, self.study_uid)


@dataclass(frozen=True)
class SeriesRecord:
    """One series of one study (``row``: SeriesNumber, Modality, SeriesDescription)."""

    study: StudyRecord
    series_uid: str
    row: Row = field(compare=False, hash=False)
    #: NumberOfSeriesRelatedInstances (PS3.4 C.6.2.1.2), -1 when the PACS does not say.
    count: int = field(default=-1, compare=False)

    @property
    def patient(self) -> PatientRecord:
        return self.study.patient

    @cached_property
    def chain_text(self) -> str:
        """The identity chain (patient, study, series) as JSON text: listing caches key by it."""
        return _chain_text(self.study.patient.key.text, self.study.study_uid, self.series_uid)

    @property
    def mtime(self) -> float:
        """A series shows its study's time (SeriesDate is optional and often absent)."""
        return self.study.mtime


@dataclass(frozen=True)
class InstanceRecord:
    """One SOP instance of one series (``row``: InstanceNumber)."""

    series: SeriesRecord
    sop_uid: str
    row: Row = field(compare=False, hash=False)

    @property
    def key(self) -> InstanceKey:
        """The stored object this record stands for (the instance store's key)."""
        study = self.series.study
        return InstanceKey(study.patient.patient_id, study.study_uid, self.series.series_uid, self.sop_uid)


def _chain_text(*chain: str) -> str:
    # Computed once per record (cached_property writes the instance's __dict__, which a frozen
    # dataclass allows): every path lookup needs it once per level.
    return json.dumps(chain, ensure_ascii=False)


#: A record whose children the catalog lists (None: the root, whose children are patients).
ParentRecord = PatientRecord | StudyRecord | SeriesRecord | None
#: Any record.
Record = PatientRecord | StudyRecord | SeriesRecord | InstanceRecord
