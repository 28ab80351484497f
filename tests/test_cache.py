"""The on-disk cache: atomic commits, crash leftovers, eviction under open files, listing ages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicomfs.core.model import InstanceKey
from dicomfs.core.store import InstanceStore, ListingCache


def key(sop_uid: str, series_uid: str = "1.2.2") -> InstanceKey:
    return InstanceKey("PAT", "1.2.1", series_uid, sop_uid)


def write_partial(store: InstanceStore, data: bytes) -> str:
    fd, path = store.new_partial()
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


def test_commit_moves_the_file_and_reports_its_size(tmp_path: Path) -> None:
    store = InstanceStore(str(tmp_path), 10 * 1024**2)
    partial = write_partial(store, b"x" * 1000)
    assert store.size_of(key("1.2.3")) is None
    assert store.commit(key("1.2.3"), partial) == 1000
    assert not os.path.exists(partial)  # moved, not copied
    assert store.size_of(key("1.2.3")) == 1000
    fd = store.open(key("1.2.3"))
    assert fd is not None
    try:
        assert os.pread(fd, 2000, 0) == b"x" * 1000
    finally:
        os.close(fd)


def test_a_second_commit_of_the_same_instance_keeps_the_first(tmp_path: Path) -> None:
    store = InstanceStore(str(tmp_path), 10 * 1024**2)
    store.commit(key("1.2.3"), write_partial(store, b"first"))
    second = write_partial(store, b"second")
    assert store.commit(key("1.2.3"), second) == len(b"first")
    assert not os.path.exists(second)


def test_the_cache_survives_a_reopen_and_leftover_partials_are_purged(tmp_path: Path) -> None:
    store = InstanceStore(str(tmp_path), 10 * 1024**2)
    store.commit(key("1.2.3"), write_partial(store, b"kept"))
    leftover = write_partial(store, b"half-received")  # as if the daemon died mid-transfer
    store.close()
    reopened = InstanceStore(str(tmp_path), 10 * 1024**2)
    assert reopened.size_of(key("1.2.3")) == 4
    assert not os.path.exists(leftover)
    assert reopened.size_of(key("half-received")) is None


def test_eviction_never_breaks_an_open_file(tmp_path: Path) -> None:
    store = InstanceStore(str(tmp_path), 256 * 1024)
    payload = os.urandom(100 * 1024)
    store.commit(key("first"), write_partial(store, payload))
    fd = store.open(key("first"))
    assert fd is not None
    try:
        for number in range(10):  # 1 MB into a 256 kB cache: "first" is evicted
            store.commit(key(f"other{number}"), write_partial(store, os.urandom(100 * 1024)))
        assert store.size_of(key("first")) is None
        assert store.open(key("first")) is None
        assert os.pread(fd, len(payload) + 1, 0) == payload
    finally:
        os.close(fd)


@pytest.mark.parametrize(("ttl", "fresh"), [(300.0, True), (0.0, False)])
def test_listings_are_fresh_for_their_ttl_and_kept_when_stale(
    tmp_path: Path, ttl: float, fresh: bool
) -> None:
    listings = ListingCache(str(tmp_path), ttl)
    assert listings.get("k") is None
    listings.put("k", ["a", "b"])
    assert listings.get("k") == (["a", "b"], fresh)
    listings.close()
    on_disk = ListingCache(str(tmp_path), ttl)
    assert on_disk.get("k") == (["a", "b"], fresh)


def test_one_sop_instance_uid_in_two_series_is_two_objects(tmp_path: Path) -> None:
    """Issue #7: a PACS may store one SOP Instance UID in two series; neither is served for the other."""
    store = InstanceStore(str(tmp_path), 10 * 1024**2)
    store.commit(key("1.2.3", series_uid="A"), write_partial(store, b"object of series A"))
    assert store.size_of(key("1.2.3", series_uid="B")) is None
    assert store.open(key("1.2.3", series_uid="B")) is None
    second = write_partial(store, b"series B's")
    assert store.commit(key("1.2.3", series_uid="B"), second) == len(b"series B's")
    for series, payload in (("A", b"object of series A"), ("B", b"series B's")):
        fd = store.open(key("1.2.3", series_uid=series))
        assert fd is not None
        try:
            assert os.pread(fd, 100, 0) == payload
        finally:
            os.close(fd)


def test_two_mounts_share_a_cachedir_and_only_a_dead_ones_partials_are_swept(tmp_path: Path) -> None:
    """Issue #10: a second mount on the same cachedir must not delete the first one's partial files."""
    first = InstanceStore(str(tmp_path), 10 * 1024**2)
    receiving = write_partial(first, b"arriving for the first mount")
    second = InstanceStore(str(tmp_path), 10 * 1024**2)
    assert os.path.exists(receiving)
    assert first.commit(key("1.2.3"), receiving) == len(b"arriving for the first mount")
    leftover = write_partial(second, b"half-received")
    second._partial_lock.close()  # as if the second mount's process died: its flock is gone
    third = InstanceStore(str(tmp_path), 10 * 1024**2)
    assert not os.path.exists(leftover)
    assert third.size_of(key("1.2.3")) == len(b"arriving for the first mount")
    assert os.path.isdir(first.partial_dir)
    for store in (first, third):
        store.close()
    assert sorted(os.listdir(tmp_path / "partial")) == []
