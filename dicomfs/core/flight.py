"""One caller at a time per key: the rest wait for its answer instead of asking again.

Every ``ls`` of one directory, from any number of FUSE threads and the prefetch thread, costs one
C-FIND: the first caller asks the PACS; the others wait on the key's lock and then find the answer
in the listing cache. The lock table holds a key only while someone holds or waits for its lock,
so it never has more entries than there are threads calling (libfuse's workers plus the prefetch
thread), however many directories a mount lists in its lifetime.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

LOGGER = logging.getLogger(__name__)


class _Flight:
    """One key's lock and how many callers hold or wait for it (guarded by the table's lock)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class LocksWhileInUse:
    """Per-key locks that exist only while in use: single flight with a self-emptying table.

    Parameters
    ----------
    wait_s : float
        The longest a caller waits for another caller of the same key, in seconds. After it, the
        caller goes ahead on its own (at worst one duplicate query): a PACS that answers slowly
        never turns a waiting ``ls`` into an error, and no wait is unbounded.

    Thread-safe. Lock order: the table's ``_lock`` is a leaf (taken briefly, never while waiting);
    a key's lock is held for the caller's whole ``hold`` block.
    """

    def __init__(self, wait_s: float) -> None:
        self._wait_s = wait_s
        self._flights: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[bool]:
        """Hold ``key``'s lock for the block; yields False when ``wait_s`` ran out first.

        Parameters
        ----------
        key : Hashable
            What is being fetched (a listing's cache key).

        Yields
        ------
        bool
            True when the block runs alone for ``key``; False when it gave up waiting for
            another caller (the block then runs beside it).
        """
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
            flight.users += 1
        acquired = flight.lock.acquire(timeout=self._wait_s)
        if not acquired:
            LOGGER.debug("waited %.0f s for another query of %s; asking the PACS as well", self._wait_s, key)
        try:
            yield acquired
        finally:
            if acquired:
                flight.lock.release()
            with self._lock:
                flight.users -= 1
                if flight.users == 0:
                    del self._flights[key]

    def users(self, key: Hashable) -> int:
        """How many callers hold or wait for ``key`` right now (0 when it is not in the table)."""
        with self._lock:
            flight = self._flights.get(key)
            return flight.users if flight is not None else 0

    def __len__(self) -> int:
        """Keys in the table: those held or waited for right now."""
        with self._lock:
            return len(self._flights)
