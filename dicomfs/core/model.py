"""Identity of what the mount shows: which patient, study, series and object a path stands for.

A PACS is not a clean hierarchy. The same SOP Instance UID turns up in two series, the same Series
Instance UID under two studies, the same Patient ID from two issuing authorities (reports against
dcm4chee, Orthanc, Google's DICOM adapter, fo-dicom, ClearCanvas, dicoogle). So nothing here is
identified by its own UID alone: an object is its (Study, Series, SOP Instance) UIDs, and a patient
is its Patient ID *with* the Issuer of Patient ID (PS3.3 C.7.1.1, "Patient Identification": an ID is
unique only within its issuer) and, where the PACS names no issuer but two names share one ID, the
name.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class InstanceKey:
    """One stored object: its Patient ID and the UIDs of its study, its series and itself
    (PS3.3 C.7.1.1, C.7.2.1, C.7.3.1, C.12.1). Patient IDs are compared without the padding
    spaces that PS3.5 6.2 (LO) says are not significant."""

    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str

    @property
    def series(self) -> SeriesKey:
        """(Patient ID, Study Instance UID, Series Instance UID) of the object's series."""
        return (self.patient_id, self.study_uid, self.series_uid)


#: (Patient ID, Study Instance UID, Series Instance UID) of a series, as the receiver routes by it.
SeriesKey = tuple[str, str, str]


@dataclass(frozen=True)
class SeriesRef:
    """A series as retrieval asks for it: either Q/R model's unique keys (Patient Root needs the
    Patient ID, PS3.4 C.6.1.1.3)."""

    patient_id: str
    study_uid: str
    series_uid: str

    def instance(self, sop_uid: str) -> InstanceKey:
        """The key of one of the series' instances."""
        return InstanceKey(self.patient_id, self.study_uid, self.series_uid, sop_uid)

    @property
    def key(self) -> SeriesKey:
        """(Patient ID, Study Instance UID, Series Instance UID), as the receiver routes by it."""
        return (self.patient_id, self.study_uid, self.series_uid)


@dataclass(frozen=True, order=True)
class PatientKey:
    """A patient as the mount tells patients apart.

    Attributes
    ----------
    patient_id : str
        Patient ID (0010,0020), as the PACS sent it.
    issuer : str
        Issuer of Patient ID (0010,0021), '' when the PACS gives none.
    split : bool
        False when this is the only person known under ``patient_id``: every row with that ID is
        theirs. True when the ID is known to stand for several persons: a row is theirs only if
        its issuer (and, with ``by_name``, its name) is theirs.
    by_name : bool
        Whether the name is part of the identity: the same Patient ID and issuer were seen with
        more than one (non-empty) name.
    name : str
        With ``by_name``, the normalized Patient Name (:func:`name_key`; '' for rows without a
        name); '' otherwise, so that one patient whose name is spelled differently in two
        studies stays one patient.
    """

    patient_id: str
    issuer: str = ""
    split: bool = False
    by_name: bool = False
    name: str = ""

    @property
    def text(self) -> str:
        """A stable, unambiguous text form (cache keys, name suffixes)."""
        if not self.split:
            return self.patient_id
        return json.dumps([self.patient_id, self.issuer, self.by_name, self.name], ensure_ascii=False)

    def admits(self, patient_id: str, issuer: str, name: str) -> bool:
        """Whether a C-FIND row with these patient values belongs to this patient."""
        if patient_id != self.patient_id:
            return False
        if not self.split:
            return True
        if issuer.strip() != self.issuer:
            return False
        return not self.by_name or name_key(name) == self.name


def identify_patients(rows: Sequence[tuple[str, str, str]]) -> list[PatientKey]:
    """The patient of each row of (Patient ID, Issuer of Patient ID, Patient Name), in order.

    Rows with one Patient ID are one patient unless they disagree: then each issuer is a person
    of its own, and within one issuer (or with none) each normalized name. An empty name proves
    nothing: it joins the only name of its issuer, and is a person of its own ('(no name)') only
    beside two or more names. Pure; the caller logs.
    """
    issuers: dict[str, set[str]] = {}
    names: dict[tuple[str, str], set[str]] = {}
    for patient_id, issuer, name in rows:
        issuers.setdefault(patient_id, set()).add(issuer.strip())
        named = names.setdefault((patient_id, issuer.strip()), set())
        if name_key(name):
            named.add(name_key(name))
    keys = []
    for patient_id, issuer, name in rows:
        by_name = len(names[(patient_id, issuer.strip())]) > 1
        if len(issuers[patient_id]) == 1 and not by_name:
            keys.append(PatientKey(patient_id, issuer.strip()))
        else:
            person_name = name_key(name) if by_name else ""
            keys.append(PatientKey(patient_id, issuer.strip(), True, by_name, person_name))
    return keys


def name_key(patient_name: str) -> str:
    """A Patient Name reduced to what tells two persons apart: case, spacing, empty trailing
    components (``DOE^JANE^^^`` is ``DOE^JANE``, PS3.5 6.2.1) and Unicode forms do not."""
    text = unicodedata.normalize("NFKC", patient_name).casefold()
    groups = [
        "^".join(" ".join(part.split()) for part in group.split("^")).rstrip("^") for group in text.split("=")
    ]
    return "=".join(groups).rstrip("=")
