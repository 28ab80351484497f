"""Patient IDs that stand for several persons, learned from study listings, for the root.

A PACS that keeps patients by Patient ID alone (Orthanc) answers one PATIENT-level row for two
persons; only their studies tell them apart (``levels.LevelFinder.studies``). The persons found there
are remembered here, so the next root listing shows one directory per person, and each such ID is
logged once. Bounded: such IDs are rare, and a forgotten one is found again on its next study
listing.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence

from dicomfs.core.model import PatientKey
from dicomfs.core.rows import Row

LOGGER = logging.getLogger(__name__)

#: Patient IDs remembered (oldest forgotten first), and IDs whose split has been logged.
MAX_SPLIT_PATIENT_IDS = 1_000

#: A patient's newest row and its time (seconds since the epoch), as the root shows it.
Shown = tuple[Row, float]


class SplitPatients:
    """Which persons each split Patient ID stands for (thread-safe, bounded)."""

    def __init__(self) -> None:
        self._persons: dict[str, dict[PatientKey, Shown]] = {}
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def remember(
        self,
        patient_id: str,
        persons: Sequence[PatientKey],
        rows: Sequence[Row],
        time_of: Callable[[Row], float],
    ) -> bool:
        """Remember the persons behind ``patient_id`` (one per row); True when they are news."""
        newest: dict[PatientKey, Shown] = {}
        for person, row in zip(persons, rows, strict=True):
            best = newest.get(person)
            if best is None or time_of(row) > best[1]:
                newest[person] = (row, time_of(row))
        with self._lock:
            known = self._persons.pop(patient_id, None)
            if len(self._persons) >= MAX_SPLIT_PATIENT_IDS:
                self._persons.pop(next(iter(self._persons)))
            self._persons[patient_id] = newest
        return known is None or set(known) != set(newest)

    def __contains__(self, patient_id: object) -> bool:
        """Whether ``patient_id`` is known to stand for several persons."""
        with self._lock:
            return patient_id in self._persons

    def replace(self, patients: dict[PatientKey, Shown]) -> dict[PatientKey, Shown]:
        """``patients`` of a root answer, with every remembered split ID replaced by its persons."""
        with self._lock:
            split = {pid: dict(persons) for pid, persons in self._persons.items()}
        if not split:
            return patients
        kept = {key: value for key, value in patients.items() if key.patient_id not in split}
        for key in patients:
            if key.patient_id in split:
                kept.update(split[key.patient_id])
        return kept

    def log_new(self, patients: dict[PatientKey, Shown]) -> None:
        """One warning per Patient ID that stands for several persons (not one per listing)."""
        persons: dict[str, list[str]] = defaultdict(list)
        for key, (row, _mtime) in patients.items():
            if key.split:
                issuer = f"issuer {key.issuer!r}" if key.issuer else "no issuer"
                persons[key.patient_id].append(f"{row.get('PatientName') or '(no name)'} ({issuer})")
        with self._lock:
            new = [pid for pid in persons if pid not in self._logged]
            for pid in new:
                if len(self._logged) >= MAX_SPLIT_PATIENT_IDS:
                    self._logged.clear()
                self._logged.add(pid)
        for pid in new:
            LOGGER.warning(
                "Patient ID %r stands for %d persons at the PACS: %s; shown as separate patients "
                "(the PACS should use Issuer of Patient ID)",
                pid,
                len(persons[pid]),
                "; ".join(sorted(persons[pid])),
            )
