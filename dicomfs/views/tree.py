"""The DICOM-side model of the mount: paths to patients, studies, series and instances.

    /                                      patients      (C-FIND, STUDY or PATIENT level)
    /<patient>                             studies       (C-FIND STUDY level)
    /<patient>/<study>                     series        (C-FIND SERIES level)
    /<patient>/<study>/<series>            instances     (C-FIND IMAGE level)
    /<patient>/<study>/<series>/<n>.dcm    one SOP instance, retrieved with its series

Listings are cached (``ListingCache``) for ``ttl``; a stale listing is served, with a warning,
when the PACS cannot be reached. Only what the listing shows is asked for: Orthanc opens every
file for non-indexed IMAGE-level keys (issue #3). This module knows nothing of FUSE.

Identity (``dicomfs.core.model``): every listing is cached under its whole parent chain (patient,
study, series), and a C-FIND row that names another parent is not listed: PACSes hold one Series
Instance UID under two studies, one study under two patients, one Patient ID for two persons
(issue #7). Patients are told apart by Patient ID *and* Issuer of Patient ID, and, where the PACS
gives no issuer, by name.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from pydicom.dataset import Dataset

from dicomfs.core.errors import DicomFSError, FailedFast, NotFound, PacsError, QueryRefused
from dicomfs.core.model import InstanceKey, PatientKey, identify_patients
from dicomfs.core.persons import SplitPatients
from dicomfs.core.retrieval import RetrievalScheduler, SeriesRef
from dicomfs.core.rows import (
    RAW_PATIENT_ID,
    Row,
    count,
    identifier,
    of_level,
    of_parent,
    patient_of,
    read_rows,
    unique_rows,
)
from dicomfs.core.store import InstanceStore, ListingCache
from dicomfs.dimse.client import PacsClient
from dicomfs.views import naming

LOGGER = logging.getLogger(__name__)

PATIENT, STUDY, SERIES, INSTANCE = "patient", "study", "series", "instance"

#: A fresh patient or study listing with at most this many children has their listings fetched
#: ahead, in the background (a study's few series; not a root of thousands of patients).
PREFETCH_MAX_CHILDREN = 8

#: Part of every listing's cache key: a new format of ``Entry`` must not meet old pickles.
LISTING_FORMAT = "v3"


@dataclass(frozen=True)
class Entry:
    """One directory entry: a patient, study or series directory, or an instance file."""

    name: str
    kind: str
    patient_id: str
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    mtime: float = 0.0
    #: How many children the PACS counts (NumberOf...Related...), -1 when it does not say.
    children_count: int = -1
    #: The rest of the patient's identity (``model.PatientKey``): issuer, name key, split.
    patient_issuer: str = ""
    patient_split: bool = False
    patient_by_name: bool = False
    patient_name: str = ""
    #: The patient's own Patient Name and issuer as the PACS gave them (whose studies these are).
    shown_name: str = ""
    #: The Patient ID as the PACS sent it, padding and all: what queries ask for.
    patient_query_id: str = ""

    @property
    def patient(self) -> PatientKey:
        return PatientKey(
            self.patient_id, self.patient_issuer, self.patient_split, self.patient_by_name, self.patient_name
        )

    @property
    def instance(self) -> InstanceKey:
        """The stored object an instance entry stands for."""
        return InstanceKey(self.patient_id, self.study_uid, self.series_uid, self.sop_uid)


@dataclass
class Listing:
    """The entries of one directory, by name."""

    entries: tuple[Entry, ...]
    by_name: dict[str, Entry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name = {entry.name: entry for entry in self.entries}


def dicom_time(date: str, clock: str = "") -> float:
    """DA (+ TM) as seconds since the epoch, read as UTC; the epoch if the date is unusable.

    See ``naming.study_time``: never the mount time, so times are the same on every mount.
    """
    return naming.study_time(date, clock)


def _named(
    rows: Sequence[Row], name_of: Callable[[Row], str], uid_keyword: str
) -> list[tuple[str, str, Row]]:
    """(unique name, UID, row) for each row: ``naming.make_unique`` over the rows' base names."""
    pairs = [(name_of(row), row[uid_keyword].strip()) for row in rows]
    names = naming.make_unique(pairs)
    return [(name, uid, row) for name, (_base, uid), row in zip(names, pairs, rows, strict=True)]


def _sorted(entries: Sequence[Entry]) -> Listing:
    return Listing(tuple(sorted(entries, key=lambda entry: entry.name)))


def _listing_key(kind: str, *parents: str) -> str:
    """The cache key of a listing: its kind and its whole parent chain (never a UID alone)."""
    return f"{kind}/{json.dumps(parents, ensure_ascii=False)}"


def _patient_fields(parent: Entry) -> dict[str, str | bool]:
    """The patient identity a child entry inherits from its parent."""
    return {
        "patient_id": parent.patient_id,
        "patient_issuer": parent.patient_issuer,
        "patient_split": parent.patient_split,
        "patient_by_name": parent.patient_by_name,
        "patient_name": parent.patient_name,
        "patient_query_id": parent.patient_query_id,
        "shown_name": parent.shown_name,
    }


class Tree:
    """Resolves paths to entries and lists directories, through the cache and the PACS."""

    def __init__(
        self,
        client: PacsClient,
        listings: ListingCache,
        store: InstanceStore,
        scheduler: RetrievalScheduler,
        *,
        cache_prefix: str,
    ) -> None:
        self._client = client
        self._listings = listings
        self._store = store
        self._scheduler = scheduler
        # Listings of different PACSes must not mix when they share a cachedir.
        self._prefix = f"{LISTING_FORMAT}/{cache_prefix}"
        self.mount_time = time.time()
        self._prefetch_queue: queue.SimpleQueue[Entry | None] = queue.SimpleQueue()
        self._prefetcher: threading.Thread | None = None
        # Whether the PACS answers Patient Root PATIENT-level queries (None: not tried yet).
        self._patient_root: bool | None = None
        self._key_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_lock = threading.Lock()
        # Patient IDs whose studies showed several persons, for the root.
        self._split = SplitPatients()

    # -- paths --------------------------------------------------------------------------------

    def resolve(self, path: str) -> Entry | None:
        """The entry at ``path``; None for the root; NotFound when there is no such name."""
        parts = [part for part in path.split("/") if part]
        if len(parts) > 4:
            raise NotFound(path)
        entry: Entry | None = None
        for part in parts:
            found = self.children(entry).by_name.get(part)
            if found is None:
                raise NotFound(path)
            entry = found
        return entry

    def children(self, entry: Entry | None, *, prefetch: bool = True) -> Listing:
        """The listing of a directory entry (None: the root).

        When a patient's or a study's listing comes fresh from the PACS, the listings of its few
        children are fetched in the background (``prefetch``): the next `ls` is then answered from
        the cache.
        """
        if entry is None:
            return self._cached("patients", self._find_patients)
        find: Callable[[Entry], Listing]
        if entry.kind == PATIENT:
            key, find = _listing_key("studies", entry.patient.text), self._find_studies
        elif entry.kind == STUDY:
            key, find = _listing_key("series", entry.patient.text, entry.study_uid), self._find_series
        elif entry.kind == SERIES:
            key = _listing_key("instances", entry.patient.text, entry.study_uid, entry.series_uid)
            find = self._find_instances
        else:
            raise NotFound(entry.name)
        listing, fresh = self._cached_fresh(key, lambda: self._complete(entry, find))
        if (
            fresh
            and prefetch
            and entry.kind in (PATIENT, STUDY)
            and len(listing.entries) <= PREFETCH_MAX_CHILDREN
        ):
            for child in listing.entries:
                self._prefetch_queue.put(child)
        return listing

    def start_prefetching(self) -> None:
        """Start the one background thread that fetches listings ahead (from FUSE init)."""
        self._prefetcher = threading.Thread(target=self._prefetch_ahead, name="prefetch", daemon=True)
        self._prefetcher.start()

    def stop_prefetching(self) -> None:
        if self._prefetcher is not None:
            self._prefetch_queue.put(None)
            self._prefetcher = None

    def _prefetch_ahead(self) -> None:
        while True:
            entry = self._prefetch_queue.get()
            if entry is None:
                return
            try:
                self.children(entry, prefetch=False)
            except DicomFSError as exc:  # only a guess at what comes next: never an error
                LOGGER.debug("prefetching %s: %s", entry.name, exc)

    def _complete(self, entry: Entry, find: Callable[[Entry], Listing]) -> Listing:
        """A listing no shorter than the PACS's own count of the entry's children, if it gave one.

        A C-FIND response can go missing (issue #4: pynetdicom on a reused association); a listing
        shorter than the count the parent's query returned is asked for once more.
        """
        listing = find(entry)
        if 0 <= len(listing.entries) < entry.children_count:
            LOGGER.warning(
                "%s: the PACS listed %d of the %d it counts; asking again",
                entry.name,
                len(listing.entries),
                entry.children_count,
            )
            listing = find(entry)
            if len(listing.entries) < entry.children_count:
                LOGGER.warning(
                    "%s: still %d of %d listed", entry.name, len(listing.entries), entry.children_count
                )
        return listing

    # -- instances ----------------------------------------------------------------------------

    def cached_size(self, entry: Entry) -> int | None:
        """The instance file's size if it is cached, else None; never retrieves."""
        return self._store.size_of(entry.instance)

    def instance_size(self, entry: Entry) -> int:
        """The exact size of an instance file: from the cache, or by retrieving its series.

        Only an object stored under the entry's own Study, Series and SOP Instance UIDs counts.
        """
        size = self._store.size_of(entry.instance)
        if size is not None:
            return size
        # The series listing that named this file is cached (maybe stale: that is fine here).
        key = _listing_key("instances", entry.patient.text, entry.study_uid, entry.series_uid)
        got = self._listings.get(f"{self._prefix}/{key}")
        siblings = [sibling.sop_uid for sibling in got[0].entries] if got else [entry.sop_uid]
        ref = SeriesRef(entry.patient_id, entry.study_uid, entry.series_uid)
        return self._scheduler.fetch(ref, entry.sop_uid, siblings)

    def open_instance(self, entry: Entry) -> int:
        """An OS file descriptor on the instance's cached file, retrieving it first if needed."""
        for _attempt in range(2):  # eviction may strike between retrieval and open: once more
            self.instance_size(entry)
            fd = self._store.open(entry.instance)
            if fd is not None:
                return fd
        raise PacsError(f"{entry.sop_uid} left the cache as soon as it arrived (cachesize too small?)")

    # -- listings -----------------------------------------------------------------------------

    def _cached(self, key: str, find: Callable[[], Listing]) -> Listing:
        return self._cached_fresh(key, find)[0]

    def _cached_fresh(self, key: str, find: Callable[[], Listing]) -> tuple[Listing, bool]:
        """(listing, came from the PACS just now): a fresh cached listing, or a new one from the
        PACS (one C-FIND per key at a time), or a stale one when the PACS cannot be reached."""
        key = f"{self._prefix}/{key}"
        got = self._listings.get(key)
        if got is not None and got[1]:
            return got[0], False
        with self._locks_lock:
            lock = self._key_locks[key]
        with lock:
            got = self._listings.get(key)
            if got is not None and got[1]:
                return got[0], False
            down = self._client.health.down_reason
            if down is not None:  # re-checked in the background: no timeout per directory meanwhile
                if got is None:
                    raise FailedFast(f"the PACS is unreachable ({down})")
                LOGGER.debug("PACS unreachable (%s); serving the cached listing of %s", down, key)
                return got[0], False
            try:
                listing = find()
            except PacsError as exc:
                if got is None:
                    raise
                LOGGER.warning("PACS unavailable (%s); serving the cached listing of %s", exc, key)
                return got[0], False
            self._listings.put(key, listing)
            return listing, True

    def _find(self, query: Dataset) -> list[Row]:
        return read_rows(self._client.find(query), query)

    def _find_patients(self) -> Listing:
        """Patients from a Patient Root PATIENT-level query where the PACS accepts one (half the
        rows of a study-level query, and fewer keys); else from the studies. Either way one
        directory per person: Patient ID with issuer, and name where the PACS names no issuer."""
        if self._patient_root is not False:
            query = identifier(
                "PATIENT",
                PatientID="",
                IssuerOfPatientID="",
                PatientName="",
                NumberOfPatientRelatedStudies="",
            )
            try:
                rows = read_rows(self._client.find(query, "patient"), query)
            except QueryRefused as exc:
                if self._client.model == "patient":
                    raise
                LOGGER.info("patients come from studies: %s", exc)
                self._patient_root = False
            else:
                self._patient_root = True
                # An empty Patient ID is still a patient (study-level listings show it too).
                rows = unique_rows(
                    rows, "PatientID", "PATIENT", required=False, also=("IssuerOfPatientID", "PatientName")
                )
                keys = identify_patients([patient_of(row) for row in rows])
                patients = {key: (row, 0.0) for key, row in zip(keys, rows, strict=True)}
                return self._name_patients(self._split.replace(patients))
        rows = self._find(self._study_query(PatientID="", PatientName="", IssuerOfPatientID=""))
        rows = unique_rows(
            rows, "StudyInstanceUID", "STUDY", also=("PatientID", "IssuerOfPatientID", "PatientName")
        )
        keys = identify_patients([patient_of(row) for row in rows])
        by_patient: dict[PatientKey, list[Row]] = defaultdict(list)
        for key, row in zip(keys, rows, strict=True):
            by_patient[key].append(row)
        patients = {}
        for key, studies in by_patient.items():
            # The name of the newest study stands for the patient.
            newest = max(studies, key=lambda r: (self._study_time(r), r["StudyInstanceUID"]))
            patients[key] = (newest, self._study_time(newest))
        listing = self._name_patients(patients)
        # The same answer lists every patient's studies: save each patient directory a C-FIND.
        self._listings.put_many(
            (
                f"{self._prefix}/{_listing_key('studies', entry.patient.text)}",
                self._name_studies(entry, by_patient[entry.patient]),
            )
            for entry in listing.entries
        )
        return listing

    def _name_patients(self, patients: dict[PatientKey, tuple[Row, float]]) -> Listing:
        self._split.log_new(patients)
        pairs = [
            (naming.patient_dir_name(row["PatientName"], key.patient_id), key.text)
            for key, (row, _mtime) in patients.items()
        ]
        names = naming.make_unique(pairs)
        entries = [
            Entry(
                name=name,
                kind=PATIENT,
                patient_id=key.patient_id,
                patient_issuer=key.issuer,
                patient_split=key.split,
                patient_by_name=key.by_name,
                patient_name=key.name,
                shown_name=row["PatientName"],
                patient_query_id=row.get(RAW_PATIENT_ID) or key.patient_id,
                mtime=mtime,
                children_count=-1 if key.split else count(row, "NumberOfPatientRelatedStudies"),
            )
            for name, (key, (row, mtime)) in zip(names, patients.items(), strict=True)
        ]
        return _sorted(entries)

    def _study_query(self, **keys: str) -> Dataset:
        return identifier(
            "STUDY",
            StudyInstanceUID="",
            NumberOfStudyRelatedSeries="",
            StudyDate="",
            StudyTime="",
            StudyDescription="",
            AccessionNumber="",
            **keys,
        )

    @staticmethod
    def _study_time(row: Row) -> float:
        return naming.study_time(row["StudyDate"], row["StudyTime"])

    def _find_studies(self, patient: Entry) -> Listing:
        """The studies of one person: filed under the Patient ID, and not another person's.

        A PACS that keeps patients by Patient ID alone (Orthanc) answers one PATIENT-level row for
        two persons; their studies tell them apart. Then this directory lists only its own
        person's studies, and the others become patients of their own at the root (remembered,
        and the root is asked for again).
        """
        # Padding is not significant in a Patient ID (LO, PS3.5 6.2), but PACSes match it as
        # stored: an ID sent with padding is asked for as sent and as shown (one more C-FIND).
        asked = dict.fromkeys([patient.patient_query_id or patient.patient_id, patient.patient_id])
        found = [
            row
            for patient_id in asked
            for row in self._find(
                self._study_query(PatientID=patient_id, PatientName="", IssuerOfPatientID="")
            )
        ]
        # The PACS matches wildcards and treats an empty ID as "any": keep exact matches only.
        rows = [r for r in found if r["PatientID"] == patient.patient_id]
        rows = unique_rows(rows, "StudyInstanceUID", "STUDY", also=("IssuerOfPatientID", "PatientName"))
        persons = identify_patients([patient_of(row) for row in rows])
        if len(set(persons)) > 1:
            if self._split.remember(patient.patient_id, persons, rows, self._study_time):
                self._listings.discard(f"{self._prefix}/patients")  # the root shows them next time
            own = next(
                (
                    p
                    for p in persons
                    if p.admits(patient.patient_id, patient.patient_issuer, patient.shown_name)
                ),
                None,
            )
            rows = [row for person, row in zip(persons, rows, strict=True) if person == own]
            if own is not None:  # the studies' series must be told apart by person too
                patient = replace(
                    patient,
                    patient_issuer=own.issuer,
                    patient_split=True,
                    patient_by_name=own.by_name,
                    patient_name=own.name,
                )
        elif patient.patient_split:
            rows = [row for row in rows if patient.patient.admits(*patient_of(row))]
        return self._name_studies(patient, rows)

    def _of_person(self, rows: list[Row], parent: Entry) -> list[Row]:
        """The rows of the parent's person: a split patient's own, and where the rows themselves
        show several persons under one Patient ID (two persons' series in one study), those of
        the person the directory shows; the others are not listed, and that is logged."""
        if parent.patient_split:
            return [row for row in rows if parent.patient.admits(parent.patient_id, *patient_of(row)[1:])]
        persons = identify_patients([(parent.patient_id, *patient_of(row)[1:]) for row in rows])
        if len(set(persons)) <= 1:
            return rows
        own = next(
            (p for p in persons if p.admits(parent.patient_id, parent.patient_issuer, parent.shown_name)),
            None,
        )
        kept = [row for person, row in zip(persons, rows, strict=True) if person == own]
        others = {
            row.get("PatientName", "") for person, row in zip(persons, rows, strict=True) if person != own
        }
        LOGGER.warning(
            "%s: the PACS files %d entries of another person under Patient ID %r (%s); not listed here",
            parent.name,
            len(rows) - len(kept),
            parent.patient_id,
            "; ".join(sorted(name or "(no name)" for name in others)),
        )
        return kept

    def _name_studies(self, patient: Entry, rows: Sequence[Row]) -> Listing:
        def name_of(row: Row) -> str:
            return naming.study_dir_name(row["StudyDate"], row["StudyDescription"], row["AccessionNumber"])

        return _sorted(
            [
                Entry(
                    name=name,
                    kind=STUDY,
                    study_uid=uid,
                    mtime=self._study_time(row),
                    children_count=count(row, "NumberOfStudyRelatedSeries"),
                    **_patient_fields(patient),  # type: ignore[arg-type]
                )
                for name, uid, row in _named(rows, name_of, "StudyInstanceUID")
            ]
        )

    def _find_series(self, study: Entry) -> Listing:
        keys = {
            "StudyInstanceUID": study.study_uid,
            "SeriesInstanceUID": "",
            "SeriesNumber": "",
            "Modality": "",
            "SeriesDescription": "",
            "NumberOfSeriesRelatedInstances": "",
        }
        # Patient Root: the patient's unique key (PS3.4 C.6.1.2). Study Root: a return key only,
        # so that a study filed under two patients shows each only its own series.
        keys["PatientID"] = (
            study.patient_query_id or study.patient_id if self._client.model == "patient" else ""
        )
        # Whose series is it? One Patient ID and one study may hold two persons' series.
        keys.update(IssuerOfPatientID="", PatientName="")
        # Another parent's rows go first, duplicates after: one series filed under two patients
        # is two rows with one UID, and the other patient's must not hide this one's.
        rows = of_level(self._find(identifier("SERIES", **keys)), "SERIES")
        rows = of_parent(rows, "StudyInstanceUID", study.study_uid, study.name)
        rows = of_parent(rows, "PatientID", study.patient_id, study.name)
        rows = self._of_person(rows, study)
        rows = unique_rows(rows, "SeriesInstanceUID", "SERIES")

        def name_of(row: Row) -> str:
            return naming.series_dir_name(row["SeriesNumber"], row["Modality"], row["SeriesDescription"])

        return _sorted(
            [
                Entry(
                    name=name,
                    kind=SERIES,
                    study_uid=study.study_uid,
                    series_uid=uid,
                    mtime=study.mtime,
                    children_count=count(row, "NumberOfSeriesRelatedInstances"),
                    **_patient_fields(study),  # type: ignore[arg-type]
                )
                for name, uid, row in _named(rows, name_of, "SeriesInstanceUID")
            ]
        )

    def _find_instances(self, series: Entry) -> Listing:
        keys = {
            "StudyInstanceUID": series.study_uid,
            "SeriesInstanceUID": series.series_uid,
            "SOPInstanceUID": "",
            "InstanceNumber": "",
        }
        # As for series: a return key in Study Root, so one series filed under two patients
        # lists each patient only their own instances (PatientID is indexed by every PACS).
        keys["PatientID"] = (
            series.patient_query_id or series.patient_id if self._client.model == "patient" else ""
        )
        # Whose instance is it? PatientName only (indexed by PACSes; the issuer may cost a file
        # read per instance), and the issuer too where the Patient ID is known to be shared.
        keys["PatientName"] = ""
        if series.patient_split:
            keys["IssuerOfPatientID"] = ""
        rows = of_level(self._find(identifier("IMAGE", **keys)), "IMAGE")
        rows = of_parent(rows, "StudyInstanceUID", series.study_uid, series.name)
        rows = of_parent(rows, "SeriesInstanceUID", series.series_uid, series.name)
        rows = of_parent(rows, "PatientID", series.patient_id, series.name)
        rows = self._of_person(rows, series)
        rows = unique_rows(rows, "SOPInstanceUID", "IMAGE")

        def name_of(row: Row) -> str:
            return naming.instance_file_name(row["InstanceNumber"], row["SOPInstanceUID"])

        return _sorted(
            [
                Entry(
                    name=name,
                    kind=INSTANCE,
                    study_uid=series.study_uid,
                    series_uid=series.series_uid,
                    sop_uid=uid,
                    mtime=series.mtime,
                    **_patient_fields(series),  # type: ignore[arg-type]
                )
                for name, uid, _row in _named(rows, name_of, "SOPInstanceUID")
            ]
        )
