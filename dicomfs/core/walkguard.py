"""Keep metadata walks (``du``, ``tree``, ``ls -lR``, ``find -size``, desktop indexers) from
retrieving the archive, while ``cp``, ``rsync``, ``tar`` and ``cat`` stay byte-exact.

The exact size of an uncached instance is known only by retrieving it (a C-FIND does not say it),
so ``stat`` of an uncached file retrieves its series. A program that reads what it stats (``tar``
stats each file, then opens it; ``cp`` and ``rsync`` open and ``fstat``) pays for what it uses.
A program that stats without reading would pull the whole archive. So each *process* may cause
at most ``budget`` series retrievals by ``stat`` alone; beyond that its ``stat`` of an uncached
file answers an *estimate* without asking the PACS. Opening any file gives the process its budget
back: it reads, so its stats are worth their retrievals.

Estimates are safe for readers: dicomfs mounts with an attribute timeout of 0 in this mode, so a
read past an under-estimated size makes the kernel ask the size again (Linux fuse
``fuse_cache_read_iter`` -> ``fuse_update_attributes`` when ``pos + count > i_size``), answered
exactly through the open file; an over-estimate ends in a short read, which the kernel takes as
the end of the file (``fuse_short_read``). ``open`` and ``fstat`` on an open file always retrieve.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field

from dicomfs.core.model import SeriesKey

LOGGER = logging.getLogger(__name__)

#: Processes whose budgets are remembered (least recently seen out first).
MAX_TRACKED_PROCESSES = 256
#: The estimate when nothing of the series or the mount has been retrieved yet: a CT slice's
#: typical size (512 x 512 x 16 bit pixels plus attributes).
DEFAULT_ESTIMATE = 525 * 1024


@dataclass
class _Process:
    stat_only: set[SeriesKey] = field(default_factory=set)
    told: bool = False  # its estimates were logged


class WalkGuard:
    """Per-process budgets of series retrieved by ``stat`` alone.

    Parameters
    ----------
    budget : int
        Series a process may retrieve by ``stat`` without opening a file; 0 never retrieves for a
        ``stat`` alone. ``None`` disables the guard (``sizes=exact``: every ``stat`` retrieves).
    """

    def __init__(self, budget: int | None) -> None:
        self._budget = budget
        self._processes: collections.OrderedDict[int, _Process] = collections.OrderedDict()
        self._lock = threading.Lock()
        # Sizes of retrieved instances: per series, and a running mean over the mount.
        self._series_sizes: collections.OrderedDict[SeriesKey, tuple[int, int]] = collections.OrderedDict()
        self._all_sizes = (0, 0)

    @property
    def enabled(self) -> bool:
        return self._budget is not None

    def _process(self, pid: int) -> _Process:
        process = self._processes.get(pid)
        if process is None:
            process = self._processes[pid] = _Process()
            while len(self._processes) > MAX_TRACKED_PROCESSES:
                self._processes.popitem(last=False)
        else:
            self._processes.move_to_end(pid)
        return process

    def may_retrieve(self, pid: int, series: SeriesKey, busy: bool = False) -> bool:
        """Whether a ``stat`` by process ``pid`` of an uncached instance of ``series`` may retrieve it.

        Parameters
        ----------
        pid : int
            The calling process (FUSE request context; 0 when unknown: never limited).
        series : SeriesKey
            The instance's series.
        busy : bool
            The series is being retrieved already (waiting for it costs the PACS nothing more).

        Returns
        -------
        bool
            True: retrieve and answer the exact size. False: answer :meth:`estimate`.
        """
        if self._budget is None or pid <= 0:
            return True
        with self._lock:
            process = self._process(pid)
            if busy or series in process.stat_only or len(process.stat_only) < self._budget:
                process.stat_only.add(series)
                return True
            first = not process.told
            process.told = True
        if first:
            LOGGER.info(
                "%s (pid %d) reads file sizes without reading files (du, tree, find, an indexer?): "
                "sizes of files not retrieved yet are estimated for it after %d series, so it does not "
                "retrieve the archive (statseries= sets how many; sizes=exact retrieves every one)",
                _command_of(pid),
                pid,
                self._budget,
            )
        return False

    def opened(self, pid: int) -> None:
        """Process ``pid`` opened a file: it reads what it stats, its budget is whole again."""
        if self._budget is None or pid <= 0:
            return
        with self._lock:
            process = self._processes.get(pid)
            if process is not None:
                process.stat_only.clear()
                process.told = False

    def landed(self, series: SeriesKey, size: int) -> None:
        """An instance of ``series`` of ``size`` bytes is cached: it informs later estimates."""
        with self._lock:
            count, total = self._series_sizes.pop(series, (0, 0))
            self._series_sizes[series] = (count + 1, total + size)
            while len(self._series_sizes) > MAX_TRACKED_PROCESSES * 16:
                self._series_sizes.popitem(last=False)
            count, total = self._all_sizes
            self._all_sizes = (count + 1, total + size)

    def estimate(self, series: SeriesKey) -> int:
        """An instance size in bytes: the mean of the series' retrieved instances, else of every
        instance retrieved by this mount, else :data:`DEFAULT_ESTIMATE`."""
        with self._lock:
            count, total = self._series_sizes.get(series) or self._all_sizes
        return total // count if count else DEFAULT_ESTIMATE


def _command_of(pid: int) -> str:
    """The program name of ``pid`` (proc(5) ``/proc/pid/comm``), or ``"a process"``."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
            return comm.read().strip() or "a process"
    except OSError:
        return "a process"
