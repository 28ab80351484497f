"""One level's C-FIND answer as the records of one person: the screening behind every listing.

A PACS is not a clean hierarchy (issue #7): it holds one Series Instance UID under two studies, one
study under two patients, one Patient ID for two persons. So every row is screened before it
becomes a record: rows of another level, without their unique key or duplicated are dropped
(:func:`~dicomfs.core.rows.unique_rows`), rows naming another parent are dropped (PS3.4
C.4.1.2.2: the unique keys of the levels above come back with every match), and where the rows of
one Patient ID show several persons only the listed person's are kept. Patients are told apart by
Patient ID *and* Issuer of Patient ID (PS3.3 C.7.1.1), and, where the PACS gives no issuer, by name.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dicomfs.core.errors import AnswerCapped
from dicomfs.core.model import PatientKey, identify_patients
from dicomfs.core.persons import SplitPatients
from dicomfs.core.ports import QueryService
from dicomfs.core.records import InstanceRecord, PatientRecord, Record, SeriesRecord, StudyRecord
from dicomfs.core.rows import RAW_PATIENT_ID, Row, count, of_level, of_parent, patient_of, unique_rows

LOGGER = logging.getLogger(__name__)

#: DA and TM text -> seconds since the epoch (``naming.study_time``: read as UTC, 0.0 if unusable).
StudyTime = Callable[[str, str], float]
#: How log lines name a record: the base name the views show it under.
Describe = Callable[[Record], str]


@dataclass(frozen=True)
class Found:
    """What one query found: the records of the listing asked for, and what else it taught.

    Attributes
    ----------
    records : tuple[Record, ...]
        The listing's records, in the PACS's order.
    also : tuple[tuple[PatientRecord, tuple[StudyRecord, ...]], ...]
        Other listings the same answer holds: a study-level root answer lists every patient's
        studies, saving each patient directory a C-FIND.
    root_outdated : bool
        A Patient ID turned out to stand for several persons: the root must be listed again.
    missing : str
        ``""`` when the listing is whole; else one line saying what the PACS's cap kept out of it
        (``core.splitting``): the views show a marker entry, the catalog logs it once.
    """

    records: tuple[Record, ...]
    also: tuple[tuple[PatientRecord, tuple[StudyRecord, ...]], ...] = ()
    root_outdated: bool = False
    missing: str = ""


def describe_search(keys: Mapping[str, str]) -> str:
    """How log lines name a search: ``the search PatientID=X,StudyDate=Y``."""
    return "the search " + ",".join(f"{keyword}={value}" for keyword, value in sorted(keys.items()))


class LevelFinder:
    """Queries one level below a parent record and keeps the rows that are the parent's own.

    Parameters
    ----------
    queries : QueryService
        Answers level queries as text rows.
    study_time : StudyTime
        A study's date and time as seconds since the epoch (``naming.study_time``).
    describe : Describe
        How log lines name a record (the directory name the views give it).
    root_limit : int
        ``rootlimit``: the most rows the root's C-FIND may bring (0: no limit). It is asked for
        one more (and cancelled there), so a root past the limit costs no more than that.

    Thread-safe: the one piece of state, :class:`SplitPatients`, has its own lock.
    """

    def __init__(
        self, queries: QueryService, *, study_time: StudyTime, describe: Describe, root_limit: int = 0
    ) -> None:
        self._queries = queries
        self._root_limit = root_limit
        self._study_time = study_time
        self._describe = describe
        # Patient IDs whose studies showed several persons, for the root.
        self._split = SplitPatients()

    def is_split(self, patient_id: str) -> bool:
        """Whether ``patient_id`` was found to stand for several persons (their counts are one)."""
        return patient_id in self._split

    def _time_of(self, row: Row) -> float:
        return self._study_time(row["StudyDate"], row["StudyTime"])

    # -- the root -------------------------------------------------------------------------------

    def patients(self) -> Found:
        """One record per person: Patient ID with issuer, and name where the PACS names no issuer.

        From PATIENT-level rows where the PACS answers them; else from every study (and then the
        same answer gives every patient's studies, in :attr:`Found.also`).

        Raises
        ------
        AnswerCapped
            The root is past ``root_limit`` rows, or the PACS capped or refused it for its size.
        """
        limit = self._root_limit + 1 if self._root_limit > 0 else None
        rows = self._queries.patients(limit)
        if rows is not None:
            self._within_root_limit(rows, "patients")
            # An empty Patient ID is still a patient (study-level listings show it too).
            rows = unique_rows(
                rows, "PatientID", "PATIENT", required=False, also=("IssuerOfPatientID", "PatientName")
            )
            keys = identify_patients([patient_of(row) for row in rows])
            shown = {key: (row, 0.0) for key, row in zip(keys, rows, strict=True)}
            return Found(self._patient_records(self._split.replace(shown)))
        rows = self._queries.studies("", limit)
        self._within_root_limit(rows, "studies")
        rows = unique_rows(
            rows,
            "StudyInstanceUID",
            "STUDY",
            also=("PatientID", "IssuerOfPatientID", "PatientName"),
        )
        keys = identify_patients([patient_of(row) for row in rows])
        by_patient: dict[PatientKey, list[Row]] = defaultdict(list)
        for key, row in zip(keys, rows, strict=True):
            by_patient[key].append(row)
        shown = {}
        for key, studies in by_patient.items():
            # The name of the newest study stands for the patient.
            newest = max(studies, key=lambda r: (self._time_of(r), r["StudyInstanceUID"]))
            shown[key] = (newest, self._time_of(newest))
        patients = self._patient_records(shown)
        also = tuple((p, self._study_records(p, by_patient[p.key])) for p in patients)
        return Found(patients, also)

    def _within_root_limit(self, rows: list[Row], what: str) -> None:
        if 0 < self._root_limit < len(rows):
            raise AnswerCapped(
                f"more than {self._root_limit} {what} at the root (rootlimit={self._root_limit})",
                len(rows),
            )

    def _patient_records(self, shown: dict[PatientKey, tuple[Row, float]]) -> tuple[PatientRecord, ...]:
        self._split.log_new(shown)
        return tuple(
            PatientRecord(
                key=key,
                row=row,
                mtime=mtime,
                count=-1 if key.split else count(row, "NumberOfPatientRelatedStudies"),
                query_id=row.get(RAW_PATIENT_ID) or key.patient_id,
            )
            for key, (row, mtime) in shown.items()
        )

    # -- searches (the views beside the patient tree) --------------------------------------------

    def matching(self, keys: Mapping[str, str]) -> Found:
        """One record per study matching ``keys``, each with the person whose study it is.

        A search crosses patients, so every study carries a :class:`PatientRecord` made from its
        own row's PatientID, IssuerOfPatientID and PatientName, told apart as a study-level root
        tells them (:func:`~dicomfs.core.model.identify_patients` over the rows). Its instances
        then have the same :class:`~dicomfs.core.model.InstanceKey` as in the patient tree: one
        set of cached files however the study was reached.
        """
        # The catalog logs ``missing`` once.
        matches = self._queries.matching_studies(keys, where=describe_search(keys))
        rows = unique_rows(
            matches.rows,
            "StudyInstanceUID",
            "STUDY",
            also=("PatientID", "IssuerOfPatientID", "PatientName"),
        )
        people = identify_patients([patient_of(row) for row in rows])
        patients: dict[PatientKey, PatientRecord] = {}
        studies: list[StudyRecord] = []
        for key, row in zip(people, rows, strict=True):
            patient = patients.get(key)
            if patient is None:
                patient = PatientRecord(key, row, 0.0, -1, row.get(RAW_PATIENT_ID) or key.patient_id)
                patients[key] = patient
            studies.extend(self._study_records(patient, [row]))
        return Found(tuple(studies), missing=matches.missing)

    # -- below a patient ------------------------------------------------------------------------

    def studies(self, patient: PatientRecord) -> Found:
        """The studies of one person: filed under the Patient ID, and not another person's.

        A PACS that keeps patients by Patient ID alone (Orthanc) answers one PATIENT-level row for
        two persons; their studies tell them apart. Then this listing holds only its own person's
        studies, and the others become patients of their own at the root (remembered, and
        :attr:`Found.root_outdated` asks for the root again).
        """
        # Padding is not significant in a Patient ID (LO, PS3.5 6.2), but PACSes match it as
        # stored: an ID sent with padding is asked for as sent and as shown (one more C-FIND).
        asked = dict.fromkeys([patient.query_id or patient.patient_id, patient.patient_id])
        found: list[Row] = []
        missing = ""
        for patient_id in asked:
            try:
                found += self._queries.studies(patient_id)
            except AnswerCapped as exc:  # split as far as it goes: what came, and what did not
                found += exc.partial
                missing = str(exc)
        # The PACS matches wildcards and treats an empty ID as "any": keep exact matches only.
        rows = [r for r in found if r["PatientID"] == patient.patient_id]
        rows = unique_rows(rows, "StudyInstanceUID", "STUDY", also=("IssuerOfPatientID", "PatientName"))
        persons = identify_patients([patient_of(row) for row in rows])
        outdated = False
        if len(set(persons)) > 1:
            outdated = self._split.remember(patient.patient_id, persons, rows, self._time_of)
            own = next(
                (p for p in persons if p.admits(patient.patient_id, patient.key.issuer, patient.shown_name)),
                None,
            )
            rows = [row for person, row in zip(persons, rows, strict=True) if person == own]
            if own is not None:  # the studies' series must be told apart by person too
                key = PatientKey(patient.patient_id, own.issuer, True, own.by_name, own.name)
                patient = PatientRecord(key, patient.row, patient.mtime, patient.count, patient.query_id)
        elif patient.key.split:
            rows = [row for row in rows if patient.key.admits(*patient_of(row))]
        return Found(self._study_records(patient, rows), root_outdated=outdated, missing=missing)

    def _study_records(self, patient: PatientRecord, rows: Sequence[Row]) -> tuple[StudyRecord, ...]:
        return tuple(
            StudyRecord(
                patient=patient,
                study_uid=row["StudyInstanceUID"].strip(),
                row=row,
                mtime=self._time_of(row),
                count=count(row, "NumberOfStudyRelatedSeries"),
            )
            for row in rows
        )

    # -- below a study and a series -------------------------------------------------------------

    def series(self, study: StudyRecord) -> Found:
        """The series of one study that are its patient's (another parent's rows are dropped
        first, duplicates after: one series filed under two patients is two rows with one UID,
        and the other patient's must not hide this one's)."""
        patient = study.patient
        rows = self._queries.series(patient.query_id or patient.patient_id, study.study_uid)
        parents = {"StudyInstanceUID": study.study_uid}
        rows = self._own(rows, "SERIES", "SeriesInstanceUID", parents, patient, self._describe(study))
        return Found(
            tuple(
                SeriesRecord(
                    study=study,
                    series_uid=row["SeriesInstanceUID"].strip(),
                    row=row,
                    count=count(row, "NumberOfSeriesRelatedInstances"),
                )
                for row in rows
            )
        )

    def instances(self, series: SeriesRecord) -> Found:
        """The instances of one series that are its patient's, screened as :meth:`series` does."""
        patient, study = series.patient, series.study
        rows = self._queries.instances(
            patient.query_id or patient.patient_id,
            study.study_uid,
            series.series_uid,
            with_issuer=patient.key.split,
        )
        parents = {"StudyInstanceUID": study.study_uid, "SeriesInstanceUID": series.series_uid}
        rows = self._own(rows, "IMAGE", "SOPInstanceUID", parents, patient, self._describe(series))
        return Found(
            tuple(
                InstanceRecord(series=series, sop_uid=row["SOPInstanceUID"].strip(), row=row) for row in rows
            )
        )

    def _own(
        self,
        rows: list[Row],
        level: str,
        uid_keyword: str,
        parents: dict[str, str],
        patient: PatientRecord,
        where: str,
    ) -> list[Row]:
        """The rows at ``level`` that name no other parent (``parents``: keyword -> UID, and the
        Patient ID) and are the patient's person's; duplicates dropped last."""
        rows = of_level(rows, level)
        for keyword, uid in {**parents, "PatientID": patient.patient_id}.items():
            rows = of_parent(rows, keyword, uid, where)
        rows = self._of_person(rows, patient, where)
        return unique_rows(rows, uid_keyword, level)

    def _of_person(self, rows: list[Row], patient: PatientRecord, where: str) -> list[Row]:
        """The rows of the listed person: a split patient's own, and where the rows themselves
        show several persons under one Patient ID (two persons' series in one study), those of
        the person the directory shows; the others are not listed, and that is logged."""
        key = patient.key
        if key.split:
            return [row for row in rows if key.admits(key.patient_id, *patient_of(row)[1:])]
        persons = identify_patients([(key.patient_id, *patient_of(row)[1:]) for row in rows])
        if len(set(persons)) <= 1:
            return rows
        own = next((p for p in persons if p.admits(key.patient_id, key.issuer, patient.shown_name)), None)
        kept = [row for person, row in zip(persons, rows, strict=True) if person == own]
        others = {
            row.get("PatientName", "") for person, row in zip(persons, rows, strict=True) if person != own
        }
        LOGGER.warning(
            "%s: the PACS files %d entries of another person under Patient ID %r (%s); not listed here",
            where,
            len(rows) - len(kept),
            key.patient_id,
            "; ".join(sorted(name or "(no name)" for name in others)),
        )
        return kept
