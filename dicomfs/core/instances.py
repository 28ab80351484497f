"""Instances as readers want them: cached, else retrieved (with their series) and then cached.

Only an object stored under the instance's own Patient ID, Study, Series and SOP Instance UIDs
counts (:class:`~dicomfs.core.model.InstanceKey`, issue #7). A cached object answers ``open``
with one question to the store; an uncached one is retrieved with its whole series (the
listing's SOP Instance UIDs, asked for only then) and the reader is released as soon as its own
instance has landed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from dicomfs.core.errors import PacsError
from dicomfs.core.model import InstanceKey, SeriesRef
from dicomfs.core.store import InstanceStore
from dicomfs.core.walkguard import WalkGuard

LOGGER = logging.getLogger(__name__)

#: The SOP Instance UIDs of an instance's series, computed only when a retrieval needs them.
SeriesMembers = Callable[[], Sequence[str]]


class SeriesFetcher(Protocol):
    """Retrieves a series until one of its instances is cached (``RetrievalScheduler``)."""

    def fetch(self, ref: SeriesRef, sop_uid: str, series_sop_uids: Sequence[str]) -> int:
        """Wait until ``sop_uid`` is cached and return its size in bytes; raises RetrievalFailed."""
        ...

    def busy(self, ref: SeriesRef) -> bool:
        """Whether the series is being retrieved now."""
        ...


class Instances:
    """Size and open of instance files: "cached, else retrieve".

    Parameters
    ----------
    store : InstanceStore
        The instance cache.
    retrieval : SeriesFetcher
        Retrieves what is not cached (``RetrievalScheduler.fetch``).
    walks : WalkGuard, optional
        Keeps programs that stat without reading from retrieving the archive (``sizes=guarded``);
        None retrieves for every size asked (``sizes=exact``).
    """

    def __init__(
        self, store: InstanceStore, retrieval: SeriesFetcher, walks: WalkGuard | None = None
    ) -> None:
        self._store = store
        self._retrieval = retrieval
        self._walks = walks or WalkGuard(None)
        # Opens answered from the cache, and opens that needed a retrieval (``dicomfs status``).
        self.hits = 0
        self.misses = 0
        self._counting = threading.Lock()

    def cached_size(self, key: InstanceKey) -> int | None:
        """The instance's size in bytes if it is cached, else None; never retrieves."""
        return self._store.size_of(key)

    def size(self, key: InstanceKey, members: SeriesMembers, *, walker: int = 0) -> int:
        """The instance's size in bytes: from the cache, or by retrieving its series; for a
        program walking the tree past its budget, an estimate (``dicomfs.core.walkguard``).

        Parameters
        ----------
        key : InstanceKey
            The instance.
        members : SeriesMembers
            The SOP Instance UIDs of its series (its listing), called only when retrieving.
        walker : int
            The process asking for the size alone (a ``stat``, not of an open file); 0 for a
            reader, which always gets the exact size.

        Raises
        ------
        RetrievalFailed
            The instance did not arrive whole (``FailedFast`` when refused without asking).
        StorageFull
            The cache's disk is full.
        """
        size = self._store.size_of(key)
        if size is not None:
            return size
        if walker and not self._walks.may_retrieve(
            walker, key.series, busy=self._retrieval.busy(SeriesRef(*key.series))
        ):
            return self._walks.estimate(key.series)
        return self._fetch(key, members)

    def open(self, key: InstanceKey, members: SeriesMembers, *, reader: int = 0) -> int:
        """An OS file descriptor (read-only; the caller closes it) on the cached instance,
        retrieving its series first if needed.

        Raises
        ------
        RetrievalFailed, StorageFull
            As :meth:`size`.
        PacsError
            The instance left the cache again before it could be opened, twice (``cachesize``
            smaller than what is being read at once).
        """
        self._walks.opened(reader)  # it reads what it stats: its walk budget is whole again
        fd = self._store.open(key)
        self._count(hit=fd is not None)
        if fd is not None:
            return fd
        for _attempt in range(2):  # eviction may strike between retrieval and open: once more
            self._fetch(key, members)
            fd = self._store.open(key)
            if fd is not None:
                return fd
        raise PacsError(f"{key.sop_uid} left the cache as soon as it arrived (cachesize too small?)")

    def _count(self, *, hit: bool) -> None:
        with self._counting:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def _fetch(self, key: InstanceKey, members: SeriesMembers) -> int:
        ref = SeriesRef(*key.series)
        size = self._retrieval.fetch(ref, key.sop_uid, members() or [key.sop_uid])
        self._walks.landed(key.series, size)
        return size
