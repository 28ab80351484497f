"""The on-disk cache: listings (with an age limit) and instance files (with a size limit).

Layout under ``cachedir``::

    listings/    diskcache: C-FIND results, so a remount lists without the network
    instances/   diskcache: one file per SOP instance, as received, evicted oldest first at ``cachesize``
    partial/     files being received, one folder per running mount (``<pid>-<random>/``, held by an
                 flock on ``<pid>-<random>.lock``); a folder whose lock nobody holds is a crashed
                 mount's and is removed at start, so a crash leaves nothing half-written and two
                 mounts may share a cachedir

An instance is first written whole to ``partial/``, then *renamed* into the instance cache inside
the same diskcache transaction that indexes it (``RenamingDisk``): a reader either finds the
complete file or nothing. An instance is keyed by its Study, Series *and* SOP Instance UIDs
(:class:`~dicomfs.core.model.InstanceKey`): PACSes hold the same SOP Instance UID in two series, and
one must never be served for the other. Cached instances never change, so an evicted file that is
still open stays readable through its descriptor (POSIX unlink semantics).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import diskcache

from dicomfs.core.cachedb import SelfHealingCache
from dicomfs.core.errors import StorageFull
from dicomfs.core.model import InstanceKey

LOGGER = logging.getLogger(__name__)


@dataclass
class ReceivedFile:
    """A complete file in ``partial/``, to be moved (not copied) into the instance cache."""

    path: str
    size: int
    final_path: str = ""  # where RenamingDisk put it


class RenamingDisk(diskcache.Disk):
    """A diskcache ``Disk`` that adopts a finished file by renaming it, instead of copying it."""

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> tuple[Any, ...]:
        if isinstance(value, ReceivedFile):
            filename, full_path = self.filename(key, value)
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.rename(value.path, full_path)
            value.final_path = full_path
            return value.size, diskcache.core.MODE_BINARY, filename, None
        return super().store(value, read, key)


#: Instances whose place and size are remembered in memory (~300 bytes each): 30 MB at most.
MAX_REMEMBERED_FILES = 100_000

#: First element of every instance's diskcache key. Entries of dicomfs 0.1, keyed by SOP Instance
#: UID alone, never match a key of this format: they are not trusted, only evicted in time.
_KEY_FORMAT = "i3"


def _open_instance_cache(size_limit: int) -> Callable[[str], diskcache.Cache]:
    def open_cache(directory: str) -> diskcache.Cache:
        return diskcache.Cache(
            directory,
            disk=RenamingDisk,
            size_limit=size_limit,
            # Oldest first: LRU would make every first lookup of an instance per mount a SQLite
            # write (a warm copy of 500 files spent most of its time there).
            eviction_policy="least-recently-stored",
            # One entry out per entry in (the volume stays within about one instance of the
            # limit): diskcache's default of 10 empties a small cache at once, evicting instances
            # that just landed for readers still waiting to open them.
            cull_limit=1,
            # The SQLite index may wait for a writer; never longer than a retrieval would.
            timeout=60,
        )

    return open_cache


def _disk_key(namespace: str, key: InstanceKey) -> tuple[str, str, str, str, str, str]:
    return (_KEY_FORMAT, namespace, key.patient_id.strip(), key.study_uid, key.series_uid, key.sop_uid)


class InstanceStore:
    """Instance files keyed by :class:`InstanceKey`, bounded by ``size_limit`` bytes (oldest out first).

    Parameters
    ----------
    cachedir : str
        The cache directory; ``instances/`` and ``partial/`` are made below it.
    size_limit : int
        Bytes the instance files may take; diskcache evicts the least recently stored beyond it.
    namespace : str
        The PACS the objects come from (called AE title, host, port): part of every key.
    """

    def __init__(self, cachedir: str, size_limit: int, namespace: str = "") -> None:
        # Whose objects these are (the PACS): two archives may hold the same UIDs for different
        # patients, and a cachedir is shared by every mount.
        self._namespace = namespace
        root = Path(cachedir)
        self._partial, self._partial_lock = _own_partial_dir(root / "partial")
        self._cache = SelfHealingCache(root / "instances", _open_instance_cache(size_limit), self._forget_all)
        # Where each instance we have seen is, and its size: getattr and open then touch no SQLite.
        self._files: dict[InstanceKey, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._cache.close()
        shutil.rmtree(self._partial, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(self._partial_lock.name)
        self._partial_lock.close()

    def _locate(self, key: InstanceKey) -> tuple[str, int] | None:
        known = self._files.get(key)
        if known is not None:
            if os.path.exists(known[0]):  # a stat, not SQLite; eviction may have removed it
                return known
            self._files.pop(key, None)
        disk_key = _disk_key(self._namespace, key)
        handle = self._cache.call(lambda cache: cache.get(disk_key, read=True, retry=True))
        if handle is None:
            self._cache.check()  # a miss: was the folder removed under us?
            return None
        with handle:
            known = (handle.name, os.fstat(handle.fileno()).st_size)
        self._remember(key, known)
        return known

    def _forget_all(self) -> None:
        self._files.clear()

    def _remember(self, key: InstanceKey, known: tuple[str, int]) -> None:
        if len(self._files) >= MAX_REMEMBERED_FILES:
            self._files.clear()  # a lookup cache: what is forgotten is asked of SQLite again
        self._files[key] = known

    def size_of(self, key: InstanceKey) -> int | None:
        """The cached instance's size in bytes, or None when it is not cached."""
        known = self._locate(key)
        return known[1] if known else None

    def __contains__(self, key: InstanceKey) -> bool:
        return self._locate(key) is not None

    def open(self, key: InstanceKey) -> int | None:
        """An OS file descriptor on the cached instance (the caller closes it), or None."""
        for _attempt in range(2):
            known = self._locate(key)
            if known is None:
                return None
            try:
                return os.open(known[0], os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # evicted since we looked: ask the index again
                self._files.pop(key, None)
        return None

    @property
    def partial_dir(self) -> str:
        """Where instances being received are written (same file system as the store)."""
        return str(self._partial)

    def new_partial(self) -> tuple[int, str]:
        """A fresh file in ``partial/`` for an instance being received: (fd, path)."""
        try:
            return tempfile.mkstemp(dir=self._partial, suffix=".part")
        except FileNotFoundError:  # the cachedir was removed while mounted: make our folder again
            self._partial.mkdir(parents=True, exist_ok=True)
            return tempfile.mkstemp(dir=self._partial, suffix=".part")

    def commit(self, key: InstanceKey, partial_path: str) -> int:
        """Adopt a complete partial file as the instance ``key``; returns its size in bytes.

        The file is renamed, never copied. When the instance is cached already, the partial file
        is dropped and the cached size returned: a stored object never changes.

        Raises
        ------
        StorageFull
            When the disk has no room for the index entry (the partial file is removed).
        OSError
            Any other failure to adopt the file (the partial file is removed).
        """
        size = os.stat(partial_path).st_size
        try:
            with self._lock:
                known = self._locate(key)
                if known is not None:
                    os.unlink(partial_path)
                    return known[1]
                received = ReceivedFile(partial_path, size)
                self._cache.check()
                disk_key = _disk_key(self._namespace, key)
                self._cache.call(lambda cache: cache.set(disk_key, received, retry=True))
                self._remember(key, (received.final_path, size))
        except OSError as exc:
            discard(partial_path)
            if exc.errno == errno.ENOSPC:
                raise StorageFull(f"no space left in the cache for {key.sop_uid}") from exc
            raise
        return size

    @property
    def volume(self) -> int:
        return int(self._cache.call(lambda cache: cache.volume()))


def _own_partial_dir(partial_root: Path) -> tuple[Path, IO[bytes]]:
    """A fresh folder of ours under ``partial/``, and the locked file that marks it as in use.

    Leftovers of mounts that are gone (their lock is free: flock(2) locks die with the process)
    are removed first; folders of running mounts on the same cachedir are left alone.
    """
    partial_root.mkdir(parents=True, exist_ok=True)
    _sweep_dead_partials(partial_root)
    name = f"{os.getpid()}-{os.urandom(4).hex()}"
    lock = open(partial_root / f"{name}.lock", "xb")  # noqa: SIM115 - held open while mounted
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    folder = partial_root / name
    folder.mkdir()
    return folder, lock


def _sweep_dead_partials(partial_root: Path) -> None:
    """Remove what crashed mounts left in ``partial/`` (and loose files of older versions)."""
    locked = {path.stem for path in partial_root.glob("*.lock")}
    for entry in partial_root.iterdir():
        if entry.suffix == ".lock":
            with open(entry, "rb") as lock:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a running mount's
                shutil.rmtree(partial_root / entry.stem, ignore_errors=True)
                discard(str(entry))
        elif entry.is_dir():
            if entry.name not in locked:
                shutil.rmtree(entry, ignore_errors=True)
        else:
            discard(str(entry))


def discard(path: str) -> None:
    """Remove a partial file, if it is still there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class ListingCache:
    """C-FIND results by key, in memory and on disk; entries older than ``ttl_s`` are stale.

    Stale entries are kept: when the PACS cannot be reached, a stale listing beats an error.
    """

    def __init__(self, cachedir: str, ttl_s: float, max_memory_entries: int = 10_000) -> None:
        # Bounded by count, not bytes: a listing is small, and 10,000 covers a large archive's
        # patients plus the studies and series a user walks through in a session.
        self._disk = SelfHealingCache(
            Path(cachedir) / "listings", lambda folder: diskcache.Cache(folder, size_limit=512 * 1024**2)
        )
        self._memory: dict[str, tuple[float, Any]] = {}
        self._max_memory_entries = max_memory_entries
        self.ttl_s = ttl_s

    def close(self) -> None:
        self._disk.close()

    def get(self, key: str) -> tuple[Any, bool] | None:
        """(value, fresh) or None. Fresh means younger than the TTL."""
        item = self._memory.get(key)
        if item is None:
            item = self._disk.call(lambda disk: disk.get(key, retry=True))
            if item is None:
                return None
            self._remember(key, item)
        stored_at, value = item
        return value, (time.time() - stored_at) < self.ttl_s

    def put(self, key: str, value: Any) -> None:
        item = (time.time(), value)
        self._remember(key, item)
        self._disk.check()
        self._disk.call(lambda disk: disk.set(key, item, retry=True))

    def discard(self, key: str) -> None:
        """Forget ``key``: its next lookup asks the PACS."""
        self._memory.pop(key, None)
        self._disk.call(lambda disk: disk.delete(key, retry=True))

    def expire(self, key: str) -> None:
        """Make ``key`` stale: its next lookup asks the PACS, but it is still served while the PACS
        cannot be reached (an upload changed the listing, issue #12)."""
        got = self.get(key)
        if got is None or not got[1]:  # stale already (the files of one `cp -r`): no disk write
            return
        item = (0.0, got[0])
        self._remember(key, item)
        self._disk.call(lambda disk: disk.set(key, item, retry=True))

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        """Several puts in one disk transaction (the root listing fills thousands at once)."""
        stored_at = time.time()
        pairs = [(key, (stored_at, value)) for key, value in items]
        for key, item in pairs:
            self._remember(key, item)
        self._disk.check()
        self._disk.call(lambda disk: _set_all(disk, pairs))

    def _remember(self, key: str, item: tuple[float, Any]) -> None:
        if len(self._memory) >= self._max_memory_entries:
            self._memory.pop(next(iter(self._memory)))  # oldest inserted goes first
        self._memory[key] = item


def _set_all(disk: diskcache.Cache, pairs: list[tuple[str, tuple[float, Any]]]) -> None:
    with disk.transact(retry=True):
        for key, item in pairs:
            disk.set(key, item, retry=True)
