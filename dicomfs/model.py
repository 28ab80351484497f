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
    """One stored object: the UIDs of its study, its series and itself (PS3.3 C.12.1, C.7.3.1)."""

    study_uid: str
    series_uid: str
    sop_uid: str

    @property
    def series(self) -> tuple[str, str]:
        """(Study Instance UID, Series Instance UID) of the object's series."""
        return (self.study_uid, self.series_uid)


@dataclass(frozen=True, order=True)
class PatientKey:
    """A patient as the mount tells patients apart.

    Attributes
    ----------
    patient_id : str
        Patient ID (0010,0020), as the PACS sent it.
    issuer : str
        Issuer of Patient ID (0010,0021), '' when the PACS gives none.
    name : str
        The normalized Patient Name (:func:`name_key`) when it is needed to keep two persons apart
        (the same Patient ID and issuer, different names); '' otherwise, so that one patient whose
        name is spelled differently in two studies stays one patient.
    split : bool
        False when this is the only person known under ``patient_id``: every row with that ID is
        theirs. True when the ID is known to stand for several persons: a row is theirs only if
        its issuer (and, where ``name`` is set, its name) is theirs.
    """

    patient_id: str
    issuer: str = ""
    name: str = ""
    split: bool = False

    @property
    def text(self) -> str:
        """A stable, unambiguous text form (cache keys, name suffixes)."""
        if not self.split:
            return self.patient_id
        return json.dumps([self.patient_id, self.issuer, self.name], ensure_ascii=False)

    def admits(self, patient_id: str, issuer: str, name: str) -> bool:
        """Whether a C-FIND row with these patient values belongs to this patient.

        A row that carries neither an issuer nor a name (a Patient Root STUDY-level answer need
        not repeat patient attributes, PS3.4 C.6.1.1.3) cannot contradict its Patient ID.
        """
        if patient_id != self.patient_id:
            return False
        issuer, name = issuer.strip(), name.strip()
        if not self.split or not (issuer or name):
            return True
        if issuer != self.issuer:
            return False
        return not self.name or name_key(name) == self.name


def identify_patients(rows: Sequence[tuple[str, str, str]]) -> list[PatientKey]:
    """The patient of each row of (Patient ID, Issuer of Patient ID, Patient Name), in order.

    Rows with one Patient ID are one patient unless they disagree: then each issuer is a person
    of its own, and within one issuer (or with none) each normalized name. Pure; the caller logs.
    """
    by_id: dict[str, set[tuple[str, str]]] = {}
    for patient_id, issuer, name in rows:
        by_id.setdefault(patient_id, set()).add((issuer.strip(), name_key(name)))
    keys = []
    for patient_id, issuer, name in rows:
        seen = by_id[patient_id]
        if len(seen) == 1:
            keys.append(PatientKey(patient_id, issuer.strip()))
            continue
        names_of_issuer = {n for i, n in seen if i == issuer.strip()}
        keep_name = name_key(name) if len(names_of_issuer) > 1 else ""
        keys.append(PatientKey(patient_id, issuer.strip(), keep_name, split=True))
    return keys


def name_key(patient_name: str) -> str:
    """A Patient Name reduced to what tells two persons apart: case, spacing, empty trailing
    components (``DOE^JANE^^^`` is ``DOE^JANE``, PS3.5 6.2.1) and Unicode forms do not."""
    text = unicodedata.normalize("NFKC", patient_name).casefold()
    groups = [
        "^".join(" ".join(part.split()) for part in group.split("^")).rstrip("^") for group in text.split("=")
    ]
    return "=".join(groups).rstrip("=")
