"""The DICOM-side model of the mount: paths to patients, studies, series and instances.

    /                                      patients      (C-FIND, STUDY or PATIENT level)
    /<patient>                             studies       (C-FIND STUDY level)
    /<patient>/<study>                     series        (C-FIND SERIES level)
    /<patient>/<study>/<series>            instances     (C-FIND IMAGE level)
    /<patient>/<study>/<series>/<n>.dcm    one SOP instance, retrieved with its series

Listings are cached (``ListingCache``) for ``ttl``; a stale listing is served, with a warning,
when the PACS cannot be reached. Only what the listing shows is asked for: Orthanc opens every
file for non-indexed IMAGE-level keys (issue #3). This module knows nothing of FUSE.
"""

from __future__ import annotations

import calendar
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydicom.dataset import Dataset

from dicomfs import naming
from dicomfs.cache import InstanceStore, ListingCache
from dicomfs.errors import DicomFSError, NotFound, PacsError, QueryRefused
from dicomfs.pacs import PacsClient
from dicomfs.retrieval import RetrievalScheduler, SeriesRef

LOGGER = logging.getLogger(__name__)

PATIENT, STUDY, SERIES, INSTANCE = "patient", "study", "series", "instance"

#: A fresh patient or study listing with at most this many children has their listings fetched
#: ahead, in the background (a study's few series; not a root of thousands of patients).
PREFETCH_MAX_CHILDREN = 8

#: Part of every listing's cache key: a new format of ``Entry`` must not meet old pickles.
LISTING_FORMAT = "v2"


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


@dataclass
class Listing:
    """The entries of one directory, by name."""

    entries: tuple[Entry, ...]
    by_name: dict[str, Entry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name = {entry.name: entry for entry in self.entries}


def dicom_time(date: str, clock: str = "") -> float:
    """DA (+ TM) as seconds since the epoch, read as UTC so it is the same on every machine; 0 if invalid."""
    day = date.strip()[:8]
    digits = "".join(ch for ch in clock.split(".")[0] if ch.isdigit())[:6].ljust(6, "0")
    if len(day) != 8 or not day.isdigit():
        return 0.0
    try:  # datetime() validates; strptime would too, at twenty times the cost per row
        parsed = datetime(
            int(day[:4]), int(day[4:6]), int(day[6:]), int(digits[:2]), int(digits[2:4]), int(digits[4:])
        )
    except ValueError:
        return 0.0
    return float(calendar.timegm(parsed.timetuple()))


def _query(level: str, **keys: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return identifier


#: A C-FIND match as text, by keyword: decoded once, then read many times.
Row = dict[str, str]


def _read_rows(matches: Sequence[Dataset], query: Dataset) -> list[Row]:
    """The text of every key the query asked for (and the level), of every match."""
    keywords = ["QueryRetrieveLevel", *(elem.keyword for elem in query if elem.keyword)]
    return [{keyword: naming.text_of(match, keyword) for keyword in keywords} for match in matches]


def _count(row: Row, keyword: str) -> int:
    """A NumberOf...Related... value of a C-FIND match; -1 when absent or not a number."""
    text = row.get(keyword, "").strip()
    return int(text) if text.isdigit() else -1


def _unique_rows(rows: Sequence[Row], uid_keyword: str, level: str, required: bool = True) -> list[Row]:
    """Drop malformed C-FIND matches (no UID if ``required``, a duplicate, another level), saying so."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        uid = row.get(uid_keyword, "").strip()
        row_level = row.get("QueryRetrieveLevel", "").strip()
        if row_level and row_level != level:
            LOGGER.warning("skipping a C-FIND match at level %r in a %s listing", row_level, level)
        elif not uid and required:
            LOGGER.warning("skipping a C-FIND %s match without %s", level, uid_keyword)
        elif uid in seen:
            LOGGER.warning("skipping a duplicate C-FIND %s match for %s", level, uid)
        else:
            seen.add(uid)
            kept.append(row)
    return kept


def _named(
    rows: Sequence[Row], name_of: Callable[[Row], str], uid_keyword: str
) -> list[tuple[str, str, Row]]:
    """(unique name, UID, row) for each row: ``naming.make_unique`` over the rows' base names."""
    pairs = [(name_of(row), row[uid_keyword].strip()) for row in rows]
    names = naming.make_unique(pairs)
    return [(name, uid, row) for name, (_base, uid), row in zip(names, pairs, rows, strict=True)]


def _sorted(entries: Sequence[Entry]) -> Listing:
    return Listing(tuple(sorted(entries, key=lambda entry: entry.name)))


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
            key, find = f"studies/{entry.patient_id}", self._find_studies
        elif entry.kind == STUDY:
            key, find = f"series/{entry.study_uid}", self._find_series
        elif entry.kind == SERIES:
            key, find = f"instances/{entry.series_uid}", self._find_instances
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
        return self._store.size_of(entry.sop_uid)

    def instance_size(self, entry: Entry) -> int:
        """The exact size of an instance file: from the cache, or by retrieving its series."""
        size = self._store.size_of(entry.sop_uid)
        if size is not None:
            return size
        # The series listing that named this file is cached (maybe stale: that is fine here).
        got = self._listings.get(f"{self._prefix}/instances/{entry.series_uid}")
        siblings = [sibling.sop_uid for sibling in got[0].entries] if got else [entry.sop_uid]
        ref = SeriesRef(entry.patient_id, entry.study_uid, entry.series_uid)
        return self._scheduler.fetch(ref, entry.sop_uid, siblings)

    def open_instance(self, entry: Entry) -> int:
        """An OS file descriptor on the instance's cached file, retrieving it first if needed."""
        for _attempt in range(2):  # eviction may strike between retrieval and open: once more
            self.instance_size(entry)
            fd = self._store.open(entry.sop_uid)
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
        return _read_rows(self._client.find(query), query)

    def _find_patients(self) -> Listing:
        """Patients from a Patient Root PATIENT-level query where the PACS accepts one (half the
        rows of a study-level query, and fewer keys); else from the studies, merged by Patient ID."""
        if self._patient_root is not False:
            query = _query("PATIENT", PatientID="", PatientName="", NumberOfPatientRelatedStudies="")
            try:
                rows = _read_rows(self._client.find(query, "patient"), query)
            except QueryRefused as exc:
                if self._client.model == "patient":
                    raise
                LOGGER.info("patients come from studies: %s", exc)
                self._patient_root = False
            else:
                self._patient_root = True
                # An empty Patient ID is still a patient (study-level listings show it too).
                rows = _unique_rows(rows, "PatientID", "PATIENT", required=False)
                return self._name_patients({r["PatientID"]: (r, 0.0) for r in rows})
        rows = self._find(self._study_query(PatientID="", PatientName=""))
        rows = _unique_rows(rows, "StudyInstanceUID", "STUDY")
        by_patient: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            by_patient[row["PatientID"]].append(row)
        patients = {}
        for patient_id, studies in by_patient.items():
            # Merged by Patient ID; the name of the newest study stands for the patient.
            newest = max(studies, key=lambda r: (self._study_time(r), r["StudyInstanceUID"]))
            patients[patient_id] = (newest, self._study_time(newest))
        listing = self._name_patients(patients)
        # The same answer lists every patient's studies: save each patient directory a C-FIND.
        self._listings.put_many(
            (
                f"{self._prefix}/studies/{entry.patient_id}",
                self._name_studies(entry.patient_id, by_patient[entry.patient_id]),
            )
            for entry in listing.entries
        )
        return listing

    def _name_patients(self, patients: dict[str, tuple[Row, float]]) -> Listing:
        pairs = [
            (naming.patient_dir_name(row["PatientName"], patient_id), patient_id)
            for patient_id, (row, _mtime) in patients.items()
        ]
        names = naming.make_unique(pairs)
        entries = [
            Entry(
                name=name,
                kind=PATIENT,
                patient_id=patient_id,
                mtime=mtime or self.mount_time,
                children_count=_count(row, "NumberOfPatientRelatedStudies"),
            )
            for name, (patient_id, (row, mtime)) in zip(names, patients.items(), strict=True)
        ]
        return _sorted(entries)

    def _study_query(self, **keys: str) -> Dataset:
        return _query(
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
        return dicom_time(row["StudyDate"], row["StudyTime"])

    def _find_studies(self, patient: Entry) -> Listing:
        rows = self._find(self._study_query(PatientID=patient.patient_id))
        # The PACS matches wildcards and treats an empty ID as "any": keep exact matches only.
        rows = [r for r in rows if r["PatientID"] == patient.patient_id]
        return self._name_studies(patient.patient_id, _unique_rows(rows, "StudyInstanceUID", "STUDY"))

    def _name_studies(self, patient_id: str, rows: Sequence[Row]) -> Listing:
        def name_of(row: Row) -> str:
            return naming.study_dir_name(row["StudyDate"], row["StudyDescription"], row["AccessionNumber"])

        return _sorted(
            [
                Entry(
                    name=name,
                    kind=STUDY,
                    patient_id=patient_id,
                    study_uid=uid,
                    mtime=self._study_time(row) or self.mount_time,
                    children_count=_count(row, "NumberOfStudyRelatedSeries"),
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
        if self._client.model == "patient":
            keys["PatientID"] = study.patient_id
        rows = _unique_rows(self._find(_query("SERIES", **keys)), "SeriesInstanceUID", "SERIES")
        rows = [r for r in rows if r["StudyInstanceUID"].strip() in ("", study.study_uid)]

        def name_of(row: Row) -> str:
            return naming.series_dir_name(row["SeriesNumber"], row["Modality"], row["SeriesDescription"])

        return _sorted(
            [
                Entry(
                    name=name,
                    kind=SERIES,
                    patient_id=study.patient_id,
                    study_uid=study.study_uid,
                    series_uid=uid,
                    mtime=study.mtime,
                    children_count=_count(row, "NumberOfSeriesRelatedInstances"),
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
        if self._client.model == "patient":
            keys["PatientID"] = series.patient_id
        rows = _unique_rows(self._find(_query("IMAGE", **keys)), "SOPInstanceUID", "IMAGE")
        rows = [r for r in rows if r["SeriesInstanceUID"].strip() in ("", series.series_uid)]

        def name_of(row: Row) -> str:
            return naming.instance_file_name(row["InstanceNumber"], row["SOPInstanceUID"])

        return _sorted(
            [
                Entry(
                    name=name,
                    kind=INSTANCE,
                    patient_id=series.patient_id,
                    study_uid=series.study_uid,
                    series_uid=series.series_uid,
                    sop_uid=uid,
                    mtime=series.mtime,
                )
                for name, uid, _row in _named(rows, name_of, "SOPInstanceUID")
            ]
        )
