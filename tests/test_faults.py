"""Faults against a real mount: a PACS or dicomfs killed mid-retrieval, a full cache or disk, offline.

These tests kill and stop their PACS, so they run their own Orthanc (not the session one). C-STORE
sub-operations reach the mount through a ``ThrottledRelay``, which the killing tests slow down so
that they act while a series is still arriving.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import diskcache
import pytest

from tests.conftest import DICOMFS_AET
from tests.fault_tools import (
    SeriesData,
    ThrottledRelay,
    cached_instances,
    dataset_bytes,
    partial_files,
    post_files,
    read_or_errno,
    series_dir,
    tmpfs,
    write_series,
)
from tests.mounting import mounted, pacs_options, wait_until
from tests.pacs_servers import HOST, MoveDestination, OrthancServer, free_port

pytestmark = pytest.mark.integration

TIMEOUT_S = 3  # the mount's timeout
#: Generous bound on a single test step: it only turns a hang into a failure, it measures nothing.
HANG_GUARD_S = 300.0
#: Listings in the thousands-of-listings test (each several C-FINDs), and the threads doing them.
LISTINGS = 120
LISTING_THREADS = 3


@dataclass(frozen=True)
class FaultData:
    big: SeriesData  # 200 x 128x128: takes seconds through the throttled relay
    small: tuple[SeriesData, ...]  # 4 series of 3 x 512x512 (1.5 MB each)
    tiny: SeriesData  # 3 x 8x8

    def all_series(self) -> tuple[SeriesData, ...]:
        return (self.big, *self.small, self.tiny)


@pytest.fixture(scope="module")
def fault_data(tmp_path_factory: pytest.TempPathFactory) -> FaultData:
    folder = tmp_path_factory.mktemp("fault-data")
    return FaultData(
        big=write_series(folder, "big", 200, size=128),
        small=tuple(write_series(folder, f"small{n}", 3, size=512) for n in range(4)),
        tiny=write_series(folder, "tiny", 3),
    )


@pytest.fixture(scope="module")
def move_target() -> int:
    """The storage SCP port of every mount in this module."""
    return free_port()


@pytest.fixture(scope="module")
def relay(move_target: int) -> Iterator[ThrottledRelay]:
    relay = ThrottledRelay(move_target)
    yield relay
    relay.close()


@pytest.fixture(scope="module")
def fault_server(
    tmp_path_factory: pytest.TempPathFactory, fault_data: FaultData, relay: ThrottledRelay
) -> Iterator[OrthancServer]:
    server = OrthancServer(
        tmp_path_factory.mktemp("fault-orthanc"),
        destinations=[MoveDestination(DICOMFS_AET, HOST, relay.port)],
    )
    with server:
        post_files(server, [path for series in fault_data.all_series() for path in series.files])
        yield server


@pytest.fixture
def pacs_up(fault_server: OrthancServer, relay: ThrottledRelay) -> OrthancServer:
    """The module's Orthanc, running (an earlier test may have killed it), relaying at full speed."""
    if fault_server.pid is None:
        fault_server.start()
    relay.rate = 0
    return fault_server


def options(server: OrthancServer, cachedir: Path, move_target: int, **extra: object) -> str:
    return pacs_options(server, cachedir, localport=move_target, timeout=TIMEOUT_S, **extra)


def cached_count(cachedir: Path) -> int:
    """Instance files committed to the cache so far (diskcache names them *.val)."""
    return sum(1 for _ in (cachedir / "instances").rglob("*.val"))


def assert_correct(name: str, data: bytes | int, sources: dict[str, bytes]) -> None:
    assert isinstance(data, bytes), f"{name}: errno {data}"
    assert dataset_bytes(data) == sources[name], f"{name}: served bytes differ from the source"


def assert_cache_consistent(cachedir: Path, data: FaultData) -> None:
    """Every cached entry is a whole, correct instance."""
    by_sop = {
        sop: source
        for series in data.all_series()
        for sop, source in zip(series.sop_uids, series.sources().values(), strict=True)
    }
    for sop_uid, content in cached_instances(cachedir).items():
        assert dataset_bytes(content) == by_sop[sop_uid], f"cached {sop_uid} differs from the source"


def read_everything_eventually(directory: Path, sources: dict[str, bytes], timeout_s: float) -> None:
    """Poll until every file reads correctly (the scheduler fails fast for a while after a failure)."""
    pending = set(sources)

    def progress() -> bool:
        for name in sorted(pending):
            content = read_or_errno(directory / name)
            if isinstance(content, bytes):
                assert_correct(name, content, sources)
                pending.discard(name)
        return not pending

    wait_until(progress, timeout_s, f"{len(pending)} files to become readable", interval_s=0.2)


def retrieval_failures(log: str, series: SeriesData) -> int:
    """How many retrievals of ``series`` ended in failure (one log line each, retrieval.py)."""
    lines = log.splitlines()
    return sum(1 for line in lines if f"series {series.series_uid}: " in line and "arrived)" in line)


def test_pacs_killed_mid_series_and_restarted(
    pacs_up: OrthancServer, relay: ThrottledRelay, fault_data: FaultData, tmp_path: Path, move_target: int
) -> None:
    """Killed while the series streams in: EIO for the rest, one failed retrieval, not one per
    file. Restarted: as soon as dicomfs's check sees it answer, one pass re-reads every file."""
    sources = fault_data.big.sources()
    cachedir = tmp_path / "cache"
    with mounted(tmp_path / "mnt", options(pacs_up, cachedir, move_target)) as mount:
        directory = series_dir(mount.mountpoint, fault_data.big)
        names = sorted(os.listdir(directory))
        assert set(names) == set(sources)
        relay.rate = 1_000_000  # 6.6 MB: several seconds
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(read_or_errno, directory / name) for name in names]
            wait_until(lambda: cached_count(cachedir) >= 10, 30, "the first instances to arrive")
            pacs_up.kill()
            # Every read ends (EIO or bytes); the guard only turns a hang into a failure.
            results = dict(
                zip(names, (future.result(timeout=HANG_GUARD_S) for future in futures), strict=True)
            )
        arrived = {name for name, content in results.items() if isinstance(content, bytes)}
        failed = set(names) - arrived
        assert len(arrived) >= 10 and failed, (len(arrived), len(failed))
        for name in failed:
            assert results[name] == errno.EIO, (name, results[name])
        for name in arrived:  # whole instances stay cached and correct while the PACS is down
            assert_correct(name, results[name], sources)
            assert_correct(name, read_or_errno(directory / name), sources)
        log = mount.log_text()
        # One retrieval failed; the readers of the other files failed at once (the PACS was down).
        assert retrieval_failures(log, fault_data.big) == 1, log[-3000:]
        assert log.count("requests fail at once until it answers") == 1, log[-3000:]
        # ... and quietly: an error line for each reader that was waiting on the retrieval that
        # failed (4 threads), not one per file.
        errors = [line for line in log.splitlines() if " ERROR dicomfs.fuse.ops: " in line]
        assert 1 <= len(errors) <= 4, errors
        relay.rate = 0
        pacs_up.start()
        # dicomfs re-checks a PACS that is down about once a second, in the background; the
        # deadline only guards against a hang (before issue 8 the series failed fast for timeout s).
        wait_until(lambda: "answers again" in mount.log_text(), HANG_GUARD_S, "dicomfs to see the PACS")
        copy = tmp_path / "copy"
        subprocess.run(["cp", "-r", str(directory), str(copy)], check=True, capture_output=True)
        for name in sorted(sources):
            assert_correct(name, (copy / name).read_bytes(), sources)
        assert "Traceback" not in mount.log_text()
    assert_cache_consistent(cachedir, fault_data)


def test_daemon_killed_mid_series_leaves_no_partial_entry(
    pacs_up: OrthancServer, relay: ThrottledRelay, fault_data: FaultData, tmp_path: Path, move_target: int
) -> None:
    sources = fault_data.big.sources()
    cachedir = tmp_path / "cache"
    mountpoint = tmp_path / "mnt"
    with mounted(mountpoint, options(pacs_up, cachedir, move_target)) as mount:
        directory = series_dir(mountpoint, fault_data.big)
        relay.rate = 1_000_000
        reader = threading.Thread(
            target=lambda: [read_or_errno(directory / name) for name in sorted(sources)]
        )
        reader.start()
        wait_until(lambda: cached_count(cachedir) >= 10, 30, "the first instances to arrive")
        os.kill(mount.process.pid, signal.SIGKILL)
        mount.process.wait(timeout=10)
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False, capture_output=True)
        reader.join(timeout=30)  # its calls fail with ENOTCONN once the daemon is gone
        assert not reader.is_alive()
    # A crash mid-write leaves a file in partial/: plant one, so the remount must clean it up.
    (cachedir / "partial" / "crashed.part").write_bytes(b"half an instance")
    assert_cache_consistent(cachedir, fault_data)
    relay.rate = 0
    with mounted(mountpoint, options(pacs_up, cachedir, move_target)) as mount:
        directory = series_dir(mountpoint, fault_data.big)  # init() has run: the partial/ sweep is done
        assert partial_files(cachedir) == []
        for name in sorted(sources):
            assert_correct(name, read_or_errno(directory / name), sources)
        assert "Traceback" not in mount.log_text()
    assert_cache_consistent(cachedir, fault_data)


def test_eviction_while_files_are_open(
    pacs_up: OrthancServer, fault_data: FaultData, tmp_path: Path, move_target: int
) -> None:
    """cachesize=2M, 6 MB read: files opened before their eviction still read whole and correct."""
    first, *others = fault_data.small
    cachedir = tmp_path / "cache"
    with mounted(tmp_path / "mnt", options(pacs_up, cachedir, move_target, cachesize="2M")) as mount:
        directory = series_dir(mount.mountpoint, first)
        sources = first.sources()
        handles = {name: open(directory / name, "rb") for name in sorted(sources)}  # noqa: SIM115
        try:
            heads = {name: handle.read(1000) for name, handle in handles.items()}
            for series in others:
                other_dir = series_dir(mount.mountpoint, series)
                for name, source in series.sources().items():
                    assert_correct(name, read_or_errno(other_dir / name), {name: source})
            evicted = set(first.sop_uids) - set(cached_instances(cachedir))
            assert evicted, "reading 4.5 MB through a 2 MB cache evicted nothing"
            for name, handle in handles.items():
                assert_correct(name, heads[name] + handle.read(), sources)
        finally:
            for handle in handles.values():
                handle.close()
        # The evicted files come back on demand.
        for name in sorted(sources):
            assert_correct(name, read_or_errno(directory / name), sources)
    entries = cached_instances(cachedir)
    # diskcache evicts before it inserts: the volume stays within one instance of the limit.
    assert sum(len(content) for content in entries.values()) <= 2 * 1024**2 + max(map(len, entries.values()))
    assert_cache_consistent(cachedir, fault_data)


def test_disk_full_fails_cleanly(
    pacs_up: OrthancServer, fault_data: FaultData, tmp_path: Path, move_target: int
) -> None:
    """A 1 MB tmpfs as cachedir, a 1.5 MB series: EIO/ENOSPC, the mount lives, nothing corrupt."""
    tiny = fault_data.tiny.sources()
    big = fault_data.small[1]
    with tmpfs(tmp_path / "small-disk", "1m") as cachedir:
        with mounted(tmp_path / "mnt", options(pacs_up, cachedir, move_target)) as mount:
            tiny_dir = series_dir(mount.mountpoint, fault_data.tiny)
            for name in sorted(tiny):
                assert_correct(name, read_or_errno(tiny_dir / name), tiny)
            directory = series_dir(mount.mountpoint, big)
            sources = big.sources()
            results = {name: read_or_errno(directory / name) for name in sorted(sources)}
            errors = {name: result for name, result in results.items() if isinstance(result, int)}
            assert errors, "1.5 MB fitted in a 1 MB cache?"
            assert set(errors.values()) <= {errno.EIO, errno.ENOSPC}, errors
            for name, result in results.items():
                if name not in errors:
                    assert_correct(name, result, sources)
            assert len(os.listdir(mount.mountpoint)) == len(fault_data.all_series())  # still alive
            for name in sorted(tiny):
                assert_correct(name, read_or_errno(tiny_dir / name), tiny)
            assert "Traceback" not in mount.log_text()
        assert_cache_consistent(cachedir, fault_data)


def test_pacs_down_at_mount_time(
    pacs_up: OrthancServer, fault_data: FaultData, tmp_path: Path, move_target: int
) -> None:
    pacs_up.stop()
    with mounted(tmp_path / "mnt", options(pacs_up, tmp_path / "cache", move_target, ttl=1)) as mount:
        with pytest.raises(OSError) as caught:
            os.listdir(mount.mountpoint)
        assert caught.value.errno == errno.EIO
        pacs_up.start()
        wait_until(lambda: isinstance(read_or_errno_dir(mount.mountpoint), list), 10, "the root listing")
        sources = fault_data.tiny.sources()
        read_everything_eventually(series_dir(mount.mountpoint, fault_data.tiny), sources, timeout_s=10)


def read_or_errno_dir(path: Path) -> list[str] | int:
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return exc.errno or -1


def test_pacs_down_later_serves_the_cache(
    pacs_up: OrthancServer, fault_data: FaultData, tmp_path: Path, move_target: int
) -> None:
    cached_series, uncached_series = fault_data.tiny, fault_data.small[2]
    cached, uncached = cached_series.sources(), uncached_series.sources()
    with mounted(tmp_path / "mnt", options(pacs_up, tmp_path / "cache", move_target, ttl=1)) as mount:
        root = sorted(os.listdir(mount.mountpoint))
        cached_dir = series_dir(mount.mountpoint, cached_series)
        uncached_dir = series_dir(mount.mountpoint, uncached_series)
        assert sorted(os.listdir(uncached_dir)) == sorted(uncached)
        for name in sorted(cached):
            assert_correct(name, read_or_errno(cached_dir / name), cached)
        pacs_up.stop()

        def listings_served_stale() -> bool:
            assert read_or_errno_dir(mount.mountpoint) == root
            assert read_or_errno_dir(cached_dir) == sorted(cached)
            return "serving the cached listing" in mount.log_text()

        wait_until(listings_served_stale, 10, "a stale listing to be served")
        for name in sorted(cached):
            assert_correct(name, read_or_errno(cached_dir / name), cached)
        for name in sorted(uncached):
            assert read_or_errno(uncached_dir / name) == errno.EIO
        # `ls -l` of an uncached series on a dead PACS: every file EIO, at most one retrieval tried.
        listing = subprocess.run(["ls", "-l", str(uncached_dir)], capture_output=True, text=True)
        assert listing.returncode != 0 and listing.stderr.count("Input/output error") == len(uncached)
        assert retrieval_failures(mount.log_text(), uncached_series) <= 1, mount.log_text()[-3000:]
        pacs_up.start()
        read_everything_eventually(uncached_dir, uncached, timeout_s=15)


def test_thousands_of_listings_are_all_complete(
    pacs_up: OrthancServer, fault_data: FaultData, tmp_path: Path, move_target: int
) -> None:
    """ttl=0: every listing is a new C-FIND (one association each); none may lose a response.

    A fixed number of listings, each one checked; the deadline only guards against a hang.
    """
    with mounted(tmp_path / "mnt", options(pacs_up, tmp_path / "cache", move_target, ttl=0)) as mount:
        root = mount.mountpoint
        expected = {root: sorted(os.listdir(root))}
        assert len(expected[root]) == len(fault_data.all_series())
        for series in (fault_data.tiny, *fault_data.small):
            expected[series_dir(root, series)] = sorted(series.sources())
        directories = sorted(expected)
        # With ttl=0 every listdir resolves its path from the root afresh (the kernel's lookups and
        # readdir): about 17 C-FINDs per listing, each on its own association. The 120 listings
        # were 2,111 C-FINDs (counted once in the daemon's -d log): enough to have caught the lost
        # C-FIND response of issue #4.
        work = [directories[number % len(directories)] for number in range(LISTINGS)]

        def list_all(worker: int) -> int:
            done = 0
            for directory in work[worker::LISTING_THREADS]:
                assert sorted(os.listdir(directory)) == expected[directory], directory
                done += 1
            return done

        with ThreadPoolExecutor(max_workers=LISTING_THREADS) as pool:
            futures = [pool.submit(list_all, worker) for worker in range(LISTING_THREADS)]
            done = [future.result(timeout=HANG_GUARD_S) for future in futures]
        assert sum(done) == LISTINGS, done
        assert "Traceback" not in mount.log_text()


def test_listings_of_a_listed_patients_studies_are_fetched_ahead(
    pacs_up: OrthancServer, fault_data: FaultData, tmp_path: Path, move_target: int
) -> None:
    """Listing a patient fetches its studies' series listings in the background: the next `ls`
    needs no PACS (here: none is running any more)."""
    series = fault_data.tiny
    cachedir = tmp_path / "cache"
    with mounted(tmp_path / "mnt", options(pacs_up, cachedir, move_target)) as mount:
        patient = next(p for p in mount.mountpoint.iterdir() if p.name.endswith(f"({series.patient_id})"))
        (study,) = os.listdir(patient)
        listings = diskcache.Cache(str(cachedir / "listings"))
        try:
            wait_until(
                lambda: any(
                    "/series/" in str(key) and series.study_uid in str(key) for key in listings.iterkeys()
                ),
                10,
                "the study's series listing to be fetched ahead",
            )
        finally:
            listings.close()
        pacs_up.stop()
        assert len(os.listdir(patient / study)) == 1
