"""A diskcache database that survives its folder being removed while it is in use.

Users clear a cache the obvious way: ``rm -rf <cachedir>/instances`` while mounted. diskcache opens
one SQLite connection per thread; a thread that connects after the removal finds no database
(``sqlite3.OperationalError: unable to open database file``, or ``no such table``) and, left alone,
every later call of that thread would fail until a remount. :class:`SelfHealingCache` notices the
missing database, opens a new empty one in the same place (logged once), and repeats the call.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import diskcache

LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

#: diskcache's database file in its folder (diskcache.core.DBNAME).
DATABASE_NAME = diskcache.core.DBNAME


class SelfHealingCache:
    """One ``diskcache.Cache`` folder, opened again (empty) when it disappears under us.

    Parameters
    ----------
    directory : Path
        The cache folder (made if missing).
    open_cache : callable
        ``open_cache(directory) -> diskcache.Cache``: how to open it (settings, disk class).
    on_reopen : callable, optional
        Called (no arguments) after a new database was opened, e.g. to forget remembered paths.
    """

    def __init__(
        self,
        directory: Path,
        open_cache: Callable[[str], diskcache.Cache],
        on_reopen: Callable[[], None] | None = None,
    ) -> None:
        self._directory = directory
        self._open_cache = open_cache
        self._on_reopen = on_reopen
        self._lock = threading.Lock()
        self.cache = open_cache(str(directory))

    def call(self, operation: Callable[[diskcache.Cache], T]) -> T:
        """``operation(cache)``, repeated once on a new database if the folder was removed.

        Raises
        ------
        sqlite3.Error
            Any database error while the database file is still in place (not ours to mend).
        """
        cache = self.cache
        try:
            return operation(cache)
        except sqlite3.Error:
            if (self._directory / DATABASE_NAME).exists() and cache is self.cache:
                raise
        return operation(self._reopened(cache))

    def check(self) -> None:
        """Open a new database now if the folder was removed (one stat).

        A thread whose connection predates the removal would otherwise go on writing into the
        removed database, indexing files nobody can find again.
        """
        cache = self.cache
        if not (self._directory / DATABASE_NAME).exists():
            self._reopened(cache)

    def _reopened(self, broken: diskcache.Cache) -> diskcache.Cache:
        with self._lock:
            if self.cache is broken:  # the first thread to notice opens the new one
                LOGGER.warning(
                    "the cache folder %s was removed while mounted; starting an empty one there",
                    self._directory,
                )
                self.cache = self._open_cache(str(self._directory))
                if self._on_reopen is not None:
                    self._on_reopen()
            return self.cache

    def close(self) -> None:
        self.cache.close()
