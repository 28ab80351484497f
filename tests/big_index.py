"""A generated, in-memory index of a hospital-sized archive, and C-FIND matching over it.

The archive behind :mod:`tests.big_archive`: ``studies`` studies (20,000 by default) of
``studies // 5`` patients, spread over two years of study dates, each with one or two series of
``instances`` instances. Nothing is stored but one compact tuple per study and four dictionaries
that index them (by date, Patient ID, Study Instance UID, Accession Number): building 20,000
studies costs well under a second. Series and instances are derived from their study's number, and
their UIDs carry the numbers back (``<root>.2.<study>.<series>``), so no table holds them.

Matching follows PS3.4 C.2.2.2: single value matching (C.2.2.2.1, with ``*`` and ``?`` wildcards,
C.2.2.2.4), list of UID matching (C.2.2.2.2), range matching of dates (C.2.2.2.5: ``A-B``, ``A-``,
``-B``) and universal matching (C.2.2.2.3: an empty value matches everything).
"""

from __future__ import annotations

import bisect
import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

#: The root of every generated UID: pydicom's (PS3.5 9) and an arc of ours (bench/data.py has .77).
UID_ROOT = "1.2.826.0.1.3680043.8.498.78"
FIRST_DAY = datetime.date(2023, 1, 1)
#: Days the studies are spread over (two years).
DAYS = 730
STUDIES_PER_PATIENT = 5
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class Study(NamedTuple):
    """One study: everything a STUDY-level answer holds is derived from these."""

    number: int
    patient: int
    date: str  # DA, YYYYMMDD


def study_uid(number: int) -> str:
    return f"{UID_ROOT}.1.{number}"


def series_uid(study: int, series: int) -> str:
    return f"{UID_ROOT}.2.{study}.{series}"


def sop_uid(study: int, series: int, instance: int) -> str:
    return f"{UID_ROOT}.3.{study}.{series}.{instance}"


def parse_uid(uid: str, kind: int) -> tuple[int, ...] | None:
    """The numbers a generated UID of ``kind`` (1 study, 2 series, 3 instance) carries; None if it
    is none of ours."""
    prefix = f"{UID_ROOT}.{kind}."
    if not uid.startswith(prefix):
        return None
    parts = uid[len(prefix) :].split(".")
    if len(parts) != kind or not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def patient_id(patient: int) -> str:
    return f"SC{patient:05d}"


def patient_name(patient: int) -> str:
    return f"Scale^Patient{patient:05d}"


def accession(number: int) -> str:
    return f"ACC{number:07d}"


def study_time(number: int) -> str:
    return f"{7 + number % 12:02d}{number % 60:02d}{(number * 7) % 60:02d}"


def series_count(number: int) -> int:
    return 1 + number % 2


@dataclass(frozen=True)
class Entity:
    """One match: its level, and the numbers that name it (study; series; instance)."""

    level: str
    study: Study
    series: int = 0
    instance: int = 0


def _single(pattern: str, value: str) -> bool:
    """Single value matching, wildcards included (PS3.4 C.2.2.2.1, C.2.2.2.4); case-sensitive."""
    if "*" in pattern or "?" in pattern:
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        return re.fullmatch(regex, value, re.DOTALL) is not None
    return pattern == value


def date_range(pattern: str) -> tuple[str, str]:
    """``(first, last)`` of a DA range or single date (PS3.4 C.2.2.2.5); raises ValueError."""
    first, sep, last = pattern.partition("-")
    if not sep:
        first = last = pattern
    for value in (first, last):
        if value and not (len(value) == 8 and value.isdigit()):
            raise ValueError(f"not a date or date range: {pattern!r}")
    return first or "00000000", last or "99999999"


class BigIndex:
    """The generated archive.

    Parameters
    ----------
    studies : int
        How many studies are spread over :data:`DAYS` days (numbers 0 to ``studies - 1``).
    crowded_day : str
        A date (YYYYMMDD) that gets ``crowded_studies`` more studies, all of it: the huge day.
    crowded_studies : int
        The huge day's extra studies (numbered after the spread ones).
    crowd_patient : int or None
        The patient of every extra study (a patient directory as huge as the day); None spreads
        them over the patients as the others are.
    instances : int
        Instances per series.
    """

    def __init__(
        self,
        studies: int = 20_000,
        *,
        crowded_day: str = "",
        crowded_studies: int = 0,
        crowd_patient: int | None = None,
        instances: int = 2,
    ) -> None:
        self.instances_per_series = instances
        self.patients = max(1, studies // STUDIES_PER_PATIENT)
        spread = [
            Study(
                n,
                n % self.patients,
                (FIRST_DAY + datetime.timedelta(days=(n * 7919) % DAYS)).strftime("%Y%m%d"),
            )
            for n in range(studies)
        ]
        numbers = range(studies, studies + crowded_studies)
        owner = (lambda n: n % self.patients) if crowd_patient is None else (lambda n: crowd_patient)
        crowd = [Study(n, owner(n), crowded_day) for n in numbers]
        self.studies: list[Study] = spread + crowd
        self.by_date: dict[str, list[int]] = {}
        self.by_patient: dict[int, list[int]] = {}
        for study in self.studies:
            self.by_date.setdefault(study.date, []).append(study.number)
            self.by_patient.setdefault(study.patient, []).append(study.number)
        self.dates = sorted(self.by_date)

    # -- what a test compares with --------------------------------------------------------------

    def studies_on(self, date: str) -> list[Study]:
        """The studies of one day (YYYYMMDD), in number order."""
        return [self.studies[n] for n in self.by_date.get(date, [])]

    def busiest_day(self) -> str:
        return max(self.dates, key=lambda day: (len(self.by_date[day]), day))

    def study(self, number: int) -> Study | None:
        return self.studies[number] if 0 <= number < len(self.studies) else None

    # -- attribute values -------------------------------------------------------------------------

    def value(self, entity: Entity, keyword: str) -> str | None:
        """The text of ``keyword`` for ``entity`` (None: the archive has no such attribute)."""
        study = entity.study
        n = study.number
        values: dict[str, str] = {
            "PatientID": patient_id(study.patient),
            "PatientName": patient_name(study.patient),
            "IssuerOfPatientID": "",
            "NumberOfPatientRelatedStudies": str(len(self.by_patient.get(study.patient, []))),
        }
        if entity.level != "PATIENT":
            values |= {
                "StudyInstanceUID": study_uid(n),
                "StudyDate": study.date,
                "StudyTime": study_time(n),
                "AccessionNumber": accession(n),
                "StudyDescription": f"Scale study {n}",
                "StudyID": str(n),
                "ModalitiesInStudy": "CT",
                "NumberOfStudyRelatedSeries": str(series_count(n)),
                "NumberOfStudyRelatedInstances": str(series_count(n) * self.instances_per_series),
            }
        if entity.level in ("SERIES", "IMAGE"):
            values |= {
                "SeriesInstanceUID": series_uid(n, entity.series),
                "SeriesNumber": str(entity.series),
                "Modality": "CT",
                "SeriesDescription": f"Series {entity.series}",
                "NumberOfSeriesRelatedInstances": str(self.instances_per_series),
            }
        if entity.level == "IMAGE":
            values |= {
                "SOPInstanceUID": sop_uid(n, entity.series, entity.instance),
                "SOPClassUID": CT_IMAGE_STORAGE,
                "InstanceNumber": str(entity.instance),
            }
        return values.get(keyword)

    # -- matching -------------------------------------------------------------------------------

    def _candidates(self, keys: dict[str, str]) -> Iterator[Study]:
        """Studies that may match, from the narrowest index the keys allow (all of them if none)."""
        if keys.get("StudyInstanceUID"):
            for uid in keys["StudyInstanceUID"].split("\\"):  # list of UID matching, C.2.2.2.2
                numbers = parse_uid(uid.strip(), 1)
                study = self.study(numbers[0]) if numbers else None
                if study is not None:
                    yield study
            return
        accession_key = keys.get("AccessionNumber", "")
        if accession_key and "*" not in accession_key and "?" not in accession_key:
            number = int(accession_key[3:]) if accession_key[3:].isdigit() else -1
            study = self.study(number)
            if study is not None:
                yield study
            return
        patient_key = keys.get("PatientID", "")
        if patient_key and "*" not in patient_key and "?" not in patient_key:
            number = (
                int(patient_key[2:]) if patient_key.startswith("SC") and patient_key[2:].isdigit() else -1
            )
            yield from (self.studies[n] for n in self.by_patient.get(number, []))
            return
        if keys.get("StudyDate"):
            first, last = date_range(keys["StudyDate"])
            start = bisect.bisect_left(self.dates, first)
            stop = bisect.bisect_right(self.dates, last)
            for day in self.dates[start:stop]:
                yield from (self.studies[n] for n in self.by_date[day])
            return
        yield from self.studies

    def _matches(self, entity: Entity, keys: dict[str, str]) -> bool:
        for keyword, pattern in keys.items():
            actual = self.value(entity, keyword)
            if actual is None or keyword.startswith("NumberOf"):
                continue  # not a matching key we hold: ignored (PS3.4 C.2.2.1.1 optional keys)
            if keyword == "StudyDate":
                first, last = date_range(pattern)
                if not first <= actual <= last:
                    return False
            elif keyword.endswith("InstanceUID"):
                if actual not in {uid.strip() for uid in pattern.split("\\")}:
                    return False
            elif not _single(pattern, actual):
                return False
        return True

    def match(self, level: str, keys: dict[str, str]) -> Iterator[Entity]:
        """The entities at ``level`` that every non-empty key of ``keys`` matches, in archive order.

        Raises ValueError for an unknown level or a malformed date range.
        """
        keys = {keyword: value for keyword, value in keys.items() if value and value != "*"}
        if level == "PATIENT":
            seen: set[int] = set()
            for study in self._candidates(keys):
                entity = Entity("PATIENT", study)
                if study.patient not in seen and self._matches(entity, keys):
                    seen.add(study.patient)
                    yield entity
            return
        if level not in ("STUDY", "SERIES", "IMAGE"):
            raise ValueError(f"unknown QueryRetrieveLevel {level!r}")
        for study in self._lower_candidates(level, keys):
            if not self._matches(Entity("STUDY", study), _study_keys(keys)):
                continue
            if level == "STUDY":
                yield Entity("STUDY", study)
                continue
            for series in range(1, series_count(study.number) + 1):
                entity = Entity("SERIES", study, series)
                if level == "SERIES":
                    if self._matches(entity, keys):
                        yield entity
                    continue
                for instance in range(1, self.instances_per_series + 1):
                    image = Entity("IMAGE", study, series, instance)
                    if self._matches(image, keys):
                        yield image

    def _lower_candidates(self, level: str, keys: dict[str, str]) -> Iterator[Study]:
        """Studies to look into; a series or instance UID names its study (relational lookups)."""
        for keyword, kind in (("SOPInstanceUID", 3), ("SeriesInstanceUID", 2)):
            if level != "STUDY" and keys.get(keyword) and "StudyInstanceUID" not in keys:
                numbers = {parse_uid(uid.strip(), kind) for uid in keys[keyword].split("\\")}
                studies = sorted({found[0] for found in numbers if found})
                yield from (study for study in map(self.study, studies) if study is not None)
                return
        yield from self._candidates(keys)


def _study_keys(keys: dict[str, str]) -> dict[str, str]:
    """The keys of ``keys`` that a study itself answers (the levels above and its own)."""
    lower = {
        "SeriesInstanceUID",
        "SeriesNumber",
        "Modality",
        "SeriesDescription",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
    }
    return {keyword: value for keyword, value in keys.items() if keyword not in lower}
