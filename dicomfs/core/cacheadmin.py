"""What a cachedir holds, and emptying or pruning it: safe while mounts use it.

Everything goes through diskcache's own API, whose SQLite transactions serialise with the mounts'
writes; a mount that has an instance open keeps reading it (POSIX unlink semantics) and retrieves
it again on the next open. ``partial/`` (files being received) is never touched here.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diskcache

#: diskcache folders below a cachedir (see dicomfs.core.store).
INSTANCES = "instances"
LISTINGS = "listings"
PARTIAL = "partial"

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class CacheStats:
    """What one cachedir holds.

    Attributes
    ----------
    instances, instance_bytes : int
        Cached instance files, and their bytes.
    listings : int
        Cached C-FIND listings.
    oldest, newest : float or None
        When the oldest / newest cached instance arrived (seconds since the epoch).
    by_pacs : dict
        ``{"AEC@host:port": [instances, bytes]}``: whose objects they are.
    mounts : int
        Running mounts using the cachedir (their ``partial/`` folders are locked).
    """

    instances: int = 0
    instance_bytes: int = 0
    listings: int = 0
    oldest: float | None = None
    newest: float | None = None
    by_pacs: dict[str, list[int]] = field(default_factory=dict)
    mounts: int = 0


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` (or plain seconds) -> seconds.

    Raises
    ------
    ValueError
        For anything else, with a message naming the accepted forms.
    """
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"'{text}' is not an age: use a number with s, m, h, d or w (e.g. 30d)")
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def _open(cachedir: Path, name: str) -> diskcache.Cache | None:
    folder = cachedir / name
    if not (folder / diskcache.core.DBNAME).exists():
        return None
    # No settings given: diskcache reads the ones the mounts stored (size limit, eviction policy).
    return diskcache.Cache(str(folder), timeout=60)


def _instance_files(cache: diskcache.Cache) -> Iterator[tuple[Any, int, float]]:
    """(key, bytes, arrival time) of every cached instance; skips ones evicted meanwhile."""
    for key in cache.iterkeys():
        handle = cache.get(key, read=True, retry=True)
        if handle is None:
            continue
        with handle:
            info = os.fstat(handle.fileno())
        yield key, info.st_size, info.st_mtime


def cache_stats(cachedir: str) -> CacheStats:
    """Count what ``cachedir`` holds (reads every instance's index entry: a second per ~20,000)."""
    root = Path(cachedir)
    stats = CacheStats(mounts=_running_mounts(root / PARTIAL))
    instances = _open(root, INSTANCES)
    if instances is not None:
        with instances:
            for key, size, arrived in _instance_files(instances):
                stats.instances += 1
                stats.instance_bytes += size
                stats.oldest = arrived if stats.oldest is None else min(stats.oldest, arrived)
                stats.newest = arrived if stats.newest is None else max(stats.newest, arrived)
                pacs = key[1] if isinstance(key, tuple) and len(key) > 1 else "(older dicomfs)"
                counts = stats.by_pacs.setdefault(str(pacs), [0, 0])
                counts[0] += 1
                counts[1] += size
    listings = _open(root, LISTINGS)
    if listings is not None:
        with listings:
            stats.listings = len(listings)
    return stats


def prune_cache(cachedir: str, older_than_s: float | None = None) -> tuple[int, int, int]:
    """Remove instances that arrived, and listings made, more than ``older_than_s`` ago.

    Parameters
    ----------
    cachedir : str
        The cache directory.
    older_than_s : float or None
        Age limit in seconds; None removes everything (``dicomfs cache clear``).

    Returns
    -------
    tuple of int
        (instances removed, their bytes, listings removed).
    """
    root = Path(cachedir)
    cutoff = None if older_than_s is None else time.time() - older_than_s
    removed = removed_bytes = removed_listings = 0
    instances = _open(root, INSTANCES)
    if instances is not None:
        with instances:
            for key, size, arrived in list(_instance_files(instances)):
                if (cutoff is None or arrived < cutoff) and instances.delete(key, retry=True):
                    removed += 1
                    removed_bytes += size
    listings = _open(root, LISTINGS)
    if listings is not None:
        with listings:
            for key in list(listings.iterkeys()):
                item = listings.get(key, retry=True)
                stored_at = item[0] if isinstance(item, tuple) and item else 0.0
                if (cutoff is None or stored_at < cutoff) and listings.delete(key, retry=True):
                    removed_listings += 1
    return removed, removed_bytes, removed_listings


def _running_mounts(partial_root: Path) -> int:
    """Mounts holding the lock of their ``partial/`` folder (flock(2): dies with the process)."""
    running = 0
    for lock_path in partial_root.glob("*.lock") if partial_root.is_dir() else ():
        try:
            with open(lock_path, "rb") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            running += 1
        except OSError:
            continue
    return running
