"""Level queries as the views need them: cached, one at a time per listing, stale when the PACS is down.

    patients()          the root                          (C-FIND PATIENT level, or STUDY level)
    studies(patient)    one person's studies              (C-FIND STUDY level)
    series(study)       one study's series                (C-FIND SERIES level)
    instances(series)   one series' SOP instances         (C-FIND IMAGE level)
    matching(keys)      the studies a search finds        (C-FIND STUDY level, any patient)

A listing is cached (``ListingCache``, on disk too) for ``ttl`` under its whole parent chain, never
a UID alone (issue #7). Only one query per listing runs at a time (:class:`LocksWhileInUse`); a
stale listing is served, with a warning, when the PACS cannot be reached; a listing shorter than
the PACS's own count of it (NumberOf...Related..., PS3.4 C.6.1.1.2 and C.6.2.1.2) is asked for
once more (issue #4); the few children of a fresh patient or study listing are fetched ahead in
the background (:class:`Prefetcher`). This module knows no file names, no FUSE and no DIMSE.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from dicomfs.core.errors import AnswerCapped, FailedFast, NotFound, PacsError
from dicomfs.core.flight import LocksWhileInUse
from dicomfs.core.levels import Describe, Found, LevelFinder, StudyTime, describe_search
from dicomfs.core.model import PatientKey
from dicomfs.core.ports import QueryService, StoredObject
from dicomfs.core.prefetch import Prefetcher
from dicomfs.core.records import (
    InstanceRecord,
    ParentRecord,
    PatientRecord,
    Record,
    SeriesRecord,
    StudyRecord,
)
from dicomfs.core.store import ListingCache

LOGGER = logging.getLogger(__name__)

#: A fresh patient or study listing with at most this many children has their listings fetched
#: ahead, in the background (a study's few series; not a root of thousands of patients).
PREFETCH_MAX_CHILDREN = 8

#: Capped listings remembered (for ``ttl``; oldest out first): an unsplittable listing costs
#: the PACS up to ``splitting.MAX_SPLIT_QUERIES`` C-FINDs, not to be repeated at every ``ls``.
MAX_CAPPED_LISTINGS = 256

#: Appended to a listing's key for the line saying what its listing lacks (kept only then).
MISSING_SUFFIX = "#missing"

#: Part of every listing's cache key: a new format of the records must not meet old pickles.
LISTING_FORMAT = "v4"


def describe_by_uid(record: Record) -> str:
    """How log lines name a record when no view says better: its level and identifier."""
    if isinstance(record, PatientRecord):
        return f"patient {record.patient_id!r}"
    if isinstance(record, StudyRecord):
        return f"study {record.study_uid}"
    if isinstance(record, SeriesRecord):
        return f"series {record.series_uid}"
    return f"instance {record.sop_uid}"


def listing_key(parent: ParentRecord) -> str:
    """The cache key of ``parent``'s listing: its level and whole parent chain (never a UID alone)."""
    if parent is None:
        return "patients"
    if isinstance(parent, PatientRecord):
        return f"studies/{parent.chain_text}"
    if isinstance(parent, StudyRecord):
        return f"series/{parent.chain_text}"
    return f"instances/{parent.chain_text}"


def matching_key(keys: Mapping[str, str]) -> str:
    """The cache key of a search's listing: ``matching/`` and the keys as canonical JSON."""
    return "matching/" + json.dumps(dict(sorted(keys.items())), ensure_ascii=False, separators=(",", ":"))


class Catalog:
    """The archive's listings, through the listing cache and the PACS.

    Parameters
    ----------
    queries : QueryService
        Level queries (``dicomfs.dimse.queries.DimseQueries`` over C-FIND).
    listings : ListingCache
        Listings by key, with their age (``ttl``); stale ones are kept for outages.
    cache_prefix : str
        Names the archive and model in every key: PACSes sharing a cachedir must not mix.
    study_time : StudyTime
        A study's DA and TM as seconds since the epoch (``naming.study_time``).
    describe : Describe
        How log lines name a record (the views' directory name); :func:`describe_by_uid` if None.
    wait_s : float
        The longest a caller waits for another caller's query of the same listing, in seconds
        (then it asks the PACS itself). Derived from the mount's ``timeout``.
    root_limit : int
        ``rootlimit``: past this many rows the root is not listed (0: no limit; ``LevelFinder``).

    Every listing method raises :class:`PacsError` (or its :class:`FailedFast`, when the PACS is
    known to be down) when the PACS cannot answer and nothing is cached, and :class:`NotFound`
    for a record that has no children (an instance), and :class:`AnswerCapped` for a listing
    the PACS capped (never a stale listing instead: a cap is no outage). A capped root is
    remembered for ``ttl`` and logged once, so ``ls /`` does not ask the PACS each time.
    """

    def __init__(
        self,
        queries: QueryService,
        listings: ListingCache,
        *,
        cache_prefix: str,
        study_time: StudyTime,
        describe: Describe | None = None,
        wait_s: float,
        root_limit: int = 0,
    ) -> None:
        self._queries = queries
        self._listings = listings
        self._prefix = f"{LISTING_FORMAT}/{cache_prefix}"
        self._describe = describe or describe_by_uid
        self._finder = LevelFinder(
            queries, study_time=study_time, describe=self._describe, root_limit=root_limit
        )
        # Listings the PACS capped (key -> when, why): answered from here for ``ttl``; the root's
        # cap is logged when it changes. Guarded by ``_capped_lock`` (a leaf).
        self._capped: dict[str, tuple[float, AnswerCapped]] = {}
        self._capped_lock = threading.Lock()
        self._flights = LocksWhileInUse(wait_s)
        self._prefetcher: Prefetcher[ParentRecord] = Prefetcher(self._prefetch, self._describe_parent)

    # -- lifecycle (FUSE init and destroy) --------------------------------------------------------

    def start_prefetching(self) -> None:
        """Start the one background thread that fetches listings ahead."""
        self._prefetcher.start()

    def stop_prefetching(self) -> None:
        """Stop it (it finishes the listing it is fetching, if any)."""
        self._prefetcher.stop()

    # -- listings ---------------------------------------------------------------------------------

    def patients(self) -> tuple[PatientRecord, ...]:
        """Every person the archive holds (one record per Patient ID and issuer, or name)."""
        return self._children(None)  # type: ignore[return-value]

    def studies(self, patient: PatientRecord) -> tuple[StudyRecord, ...]:
        """One person's studies."""
        return self._children(patient)  # type: ignore[return-value]

    def series(self, study: StudyRecord) -> tuple[SeriesRecord, ...]:
        """One study's series (its patient's only)."""
        return self._children(study)  # type: ignore[return-value]

    def instances(self, series: SeriesRecord) -> tuple[InstanceRecord, ...]:
        """One series' SOP instances (its patient's only)."""
        return self._children(series)  # type: ignore[return-value]

    def matching(self, keys: Mapping[str, str]) -> tuple[StudyRecord, ...]:
        """The studies a STUDY-level search finds (``keys``: keyword -> checked value), each
        with its own patient; cached under :func:`matching_key` like any other listing (``ttl``,
        one query per key at a time, stale while the PACS is down). Raises as :meth:`children`."""
        key = f"{self._prefix}/{matching_key(keys)}"
        records, fresh = self._cached(key, lambda: self._finder.matching(keys), describe_search(keys))
        if fresh and len(records) <= PREFETCH_MAX_CHILDREN:
            self._prefetcher.add(records)  # type: ignore[arg-type]  # studies are parents
        return records  # type: ignore[return-value]

    def children(self, parent: ParentRecord) -> tuple[Record, ...]:
        """The listing of any parent record (None: the root), as the methods above give it.

        Parameters
        ----------
        parent : PatientRecord, StudyRecord, SeriesRecord or None
            A record of an earlier listing (its whole parent chain is the listing's identity).

        Returns
        -------
        tuple[Record, ...]
            The children's records in the PACS's order; the same tuple object for as long as
            the cached listing stays the same (callers may memoise by identity).

        Raises
        ------
        NotFound
            ``parent`` is an instance: it has no children.
        FailedFast
            The PACS is known to be down and the listing was never cached.
        PacsError
            The PACS refused, failed or did not answer (within ``timeout`` per response), and
            the listing was never cached; a cached one, however old, is served instead.
        """
        if isinstance(parent, InstanceRecord):
            raise NotFound(self._describe(parent))
        return self._children(parent)

    def stored(self, stored: StoredObject) -> None:
        """An upload stored ``stored`` in the PACS: the listings that must show it go stale now.

        The root, the patient's studies, the study's series and the series' instances (for every
        person the cached root knows under that Patient ID, and the plain ID when it knows none),
        plus :meth:`matching_keys_of`. Expired, not dropped: they still serve while the PACS is
        down. The kernel asks again at the next readdir (directories are not cached by FUSE).
        """
        root = f"{self._prefix}/{listing_key(None)}"
        cached = self._listings.get(root)
        people = [
            record.key.text
            for record in (cached[0] if cached else ())
            if isinstance(record, PatientRecord) and record.patient_id == stored.patient_id
        ]
        keys = [listing_key(None)]
        for person in people or [PatientKey(stored.patient_id).text]:
            keys += [
                f"studies/{json.dumps([person], ensure_ascii=False)}",
                f"series/{json.dumps([person, stored.study_uid], ensure_ascii=False)}",
                f"instances/{json.dumps([person, stored.study_uid, stored.series_uid], ensure_ascii=False)}",
            ]
        keys += self.matching_keys_of(stored)
        for key in keys:
            self._listings.expire(f"{self._prefix}/{key}")

    @staticmethod
    def matching_keys_of(stored: StoredObject) -> list[str]:
        """The views' searches (``matching/...``) a stored object joins: its day (by-date), its
        Patient ID (by-id), Accession Number (by-accession) and Study Instance UID (by-uid);
        keys relative to the archive's prefix. Query directories' searches age out by ``ttl``."""
        searches = {
            "StudyDate": stored.study_date,
            "PatientID": stored.patient_id,
            "AccessionNumber": stored.accession,
            "StudyInstanceUID": stored.study_uid,
        }
        return [matching_key({keyword: value}) for keyword, value in searches.items() if value]

    def cached_instances(self, series: SeriesRecord) -> tuple[InstanceRecord, ...] | None:
        """The series' listing if it is cached (fresh or stale), else None; never asks the PACS."""
        got = self._listings.get(f"{self._prefix}/{listing_key(series)}")
        return got[0] if got is not None else None

    def missing(self, parent: ParentRecord | Mapping[str, str]) -> str:
        """What the PACS's cap kept out of a cached listing (``""``: nothing known): ``parent``'s,
        or a search's (its ``keys``, as given to :meth:`matching`).

        Never asks the PACS: call it after :meth:`children` or :meth:`matching`, which store the
        listing and this.
        """
        key = matching_key(parent) if isinstance(parent, Mapping) else listing_key(parent)
        got = self._listings.get(f"{self._prefix}/{key}{MISSING_SUFFIX}")
        return str(got[0]) if got is not None else ""

    def in_flight(self, parent: ParentRecord) -> int:
        """Callers querying for, or waiting for, ``parent``'s listing right now (diagnostics)."""
        return self._flights.users(f"{self._prefix}/{listing_key(parent)}")

    def _children(self, parent: ParentRecord, *, prefetch: bool = True) -> tuple[Record, ...]:
        key = f"{self._prefix}/{listing_key(parent)}"
        records, fresh = self._cached(
            key, lambda: self._complete(parent), self._describe_parent(parent), root=parent is None
        )
        if (
            fresh
            and prefetch
            and isinstance(parent, PatientRecord | StudyRecord)
            and len(records) <= PREFETCH_MAX_CHILDREN
        ):
            self._prefetcher.add(records)  # type: ignore[arg-type]  # studies and series are parents
        return records

    def _describe_parent(self, parent: ParentRecord) -> str:
        return "the root" if parent is None else self._describe(parent)

    def _prefetch(self, parent: ParentRecord) -> None:
        self._children(parent, prefetch=False)

    def _cached(
        self, key: str, find: Callable[[], Found], where: str, *, root: bool = False
    ) -> tuple[tuple[Record, ...], bool]:
        """(records, came from the PACS just now): a fresh cached listing, or a new one from the
        PACS through ``find`` (one query per key at a time), or a stale one when the PACS cannot
        be reached. ``where`` names the listing in log lines; ``root``: it is the root's."""
        got = self._listings.get(key)
        if got is not None and got[1]:
            return got[0], False
        self._raise_if_capped(key)
        with self._flights.hold(key):
            got = self._listings.get(key)
            if got is not None and got[1]:
                return got[0], False
            self._raise_if_capped(key)  # another caller's query just found it capped
            down = self._queries.down_reason
            if down is not None:  # re-checked in the background: no timeout per directory meanwhile
                if got is None:
                    raise FailedFast(f"the PACS is unreachable ({down})")
                LOGGER.debug("PACS unreachable (%s); serving the cached listing of %s", down, where)
                return got[0], False
            try:
                found = find()
            except AnswerCapped as exc:
                self._remember_cap(key, exc, root=root)
                raise
            except PacsError as exc:
                if got is None:
                    raise
                LOGGER.warning("PACS unavailable (%s); serving the cached listing of %s", exc, where)
                return got[0], False
            self._store(key, found, where)
            return found.records, True

    def _raise_if_capped(self, key: str) -> None:
        with self._capped_lock:
            capped = self._capped.get(key)
        if capped is not None and time.monotonic() - capped[0] < self._listings.ttl_s:
            raise capped[1]

    def _remember_cap(self, key: str, exc: AnswerCapped, *, root: bool) -> None:
        with self._capped_lock:
            before = self._capped.pop(key, None)
            while len(self._capped) >= MAX_CAPPED_LISTINGS:
                self._capped.pop(next(iter(self._capped)))
            self._capped[key] = (time.monotonic(), exc)
        if root and (before is None or str(before[1]) != str(exc)):
            LOGGER.warning("the root lists no patients: %s; it shows the other views instead", exc)

    def _store(self, key: str, found: Found, where: str) -> None:
        self._listings.put(key, found.records)
        if found.missing:
            # Logged once per query of it (the listing is then cached for ``ttl``), not per ``ls``.
            LOGGER.warning("%s: listed incomplete: %s", where, found.missing)
            self._listings.put(key + MISSING_SUFFIX, found.missing)
        elif self._listings.get(key + MISSING_SUFFIX) is not None:
            self._listings.discard(key + MISSING_SUFFIX)
        if found.also:
            # The same answer lists every patient's studies: save each patient directory a C-FIND.
            self._listings.put_many(
                (f"{self._prefix}/{listing_key(parent)}", records) for parent, records in found.also
            )
        if found.root_outdated:
            self._listings.discard(f"{self._prefix}/{listing_key(None)}")  # the root shows them next

    def _complete(self, parent: ParentRecord) -> Found:
        """A listing no shorter than the PACS's own count of the parent's children, if it gave one.

        A C-FIND response can go missing (issue #4: pynetdicom on a reused association); a listing
        shorter than the count the parent's query returned is asked for once more.
        """
        find = self._finder_of(parent)
        found = find()
        # A Patient ID that stands for several persons: the PACS counts them all, we list one.
        split = isinstance(parent, PatientRecord) and self._finder.is_split(parent.patient_id)
        expected = -1 if parent is None or found.missing or split else parent.count
        if 0 <= len(found.records) < expected:
            where = self._describe(parent)  # type: ignore[arg-type]  # not None: it has a count
            LOGGER.warning(
                "%s: the PACS listed %d of the %d it counts; asking again",
                where,
                len(found.records),
                expected,
            )
            first, found = found, find()
            if first.root_outdated:  # learnt by the first answer: the second knows it already
                found = replace(found, root_outdated=True)
            if len(found.records) < expected:
                LOGGER.warning("%s: still %d of %d listed", where, len(found.records), expected)
        return found

    def _finder_of(self, parent: ParentRecord) -> Callable[[], Found]:
        finder = self._finder
        if parent is None:
            return finder.patients
        if isinstance(parent, PatientRecord):
            return lambda: finder.studies(parent)
        if isinstance(parent, StudyRecord):
            return lambda: finder.series(parent)
        return lambda: finder.instances(parent)
