"""Retrievals paced by the PACS, not by a clock (issue #9): stalls end, slow stores count, late stores land.

Each test mounts a deliberately misbehaving in-process SCP (``tests.broken_pacs``), or Orthanc with
asynchronous C-MOVE, and checks every file's bytes and the number of C-MOVE/C-GET requests the peer
saw (Orthanc: associations, counted by a relay). Deadlines only guard against hangs.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broken_pacs import SERIES, Behaviour, BrokenPacs, options_for
from tests.conftest import DICOMFS_AET
from tests.fault_tools import SeriesData, ThrottledRelay, dataset_bytes, series_dir, write_series
from tests.mounting import mounted, pacs_options, wait_until
from tests.pacs_servers import HOST, MoveDestination, OrthancServer, free_port
from tests.test_misbehaving_pacs import assert_serves, expect_errno, files_by_uid, series_dirs

pytestmark = pytest.mark.integration

SERVICE = {"move": "C-MOVE", "get": "C-GET"}
UIDS = [str(ds.SOPInstanceUID) for ds in SERIES[0].instances]


@pytest.fixture
def broken() -> Iterator[BrokenPacs]:
    with BrokenPacs() as pacs:
        yield pacs


def _reads(path: Path) -> bool:
    try:
        return bool(path.read_bytes())
    except OSError:
        return False


@pytest.mark.parametrize("retrieve", ["move", "get"])
def test_a_retrieval_pending_forever_is_cancelled_and_the_next_read_starts_anew(
    broken: BrokenPacs, tmp_path: Path, retrieve: str
) -> None:
    timeout = 2.0
    with mounted(tmp_path / "mnt", options_for(broken, tmp_path / "cache", retrieve, timeout)) as mount:
        files = files_by_uid(series_dirs(mount)[0])
        broken.behaviour = Behaviour.PENDING_FOREVER
        expect_errno(errno.EIO, os.stat, files[UIDS[-1]])
        assert broken.requests[SERVICE[retrieve]] == 1
        assert broken.cancels == 1, mount.log_text()  # C-CANCEL first, then the abort
        broken.behaviour = Behaviour.NORMAL
        # the failed series may fail fast for a moment; then a NEW retrieval, not the stuck one
        wait_until(lambda: _reads(files[UIDS[-1]]), 6 * timeout, "the file once the PACS stores")
        for uid, path in files.items():
            assert_serves(path, uid)
        assert broken.requests[SERVICE[retrieve]] == 2, mount.log_text()
        log = mount.log_text()
    assert "retrieval cancelled: no progress" in log, log


@pytest.mark.parametrize("retrieve", ["move", "get"])
def test_slow_stores_without_pending_responses_all_arrive(
    broken: BrokenPacs, tmp_path: Path, retrieve: str
) -> None:
    # 3 C-STOREs 2.1 s apart, the final response 2.1 s after the last: 6.3 s in all, timeout 3 s;
    # a response timeout would end it after the 2nd C-STORE and refuse the 3rd
    timeout = 3.0
    broken.store_interval_s = 0.7 * timeout
    with mounted(tmp_path / "mnt", options_for(broken, tmp_path / "cache", retrieve, timeout)) as mount:
        files = files_by_uid(series_dirs(mount)[0])
        broken.behaviour = Behaviour.SLOW_NO_PENDING
        for uid in reversed(UIDS):  # the last one first: the reader waits the whole retrieval
            assert_serves(files[uid], uid)
        assert broken.requests[SERVICE[retrieve]] == 1
        log = mount.log_text()
    assert "refused C-STORE" not in log and "timeout" not in log and "no progress" not in log, log


def test_stores_after_the_final_response_are_kept(broken: BrokenPacs, tmp_path: Path) -> None:
    with mounted(tmp_path / "mnt", options_for(broken, tmp_path / "cache", "move", 3.0)) as mount:
        files = files_by_uid(series_dirs(mount)[0])
        broken.behaviour = Behaviour.LATE_STORES
        for uid in UIDS:
            assert_serves(files[uid], uid)
        assert broken.requests["C-MOVE"] == 1
        log = mount.log_text()
    assert "refused C-STORE" not in log, log
    assert "after the final C-MOVE response" in log, log


@pytest.fixture(scope="module")
def async_orthanc(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[OrthancServer, SeriesData, int]]:
    """Orthanc with ``SynchronousCMove`` false: Success first, the C-STOREs from a job afterwards."""
    series = write_series(tmp_path_factory.mktemp("async-data"), "async", 12, size=32, patient_id="ASYNC")
    port = free_port()
    server = OrthancServer(
        tmp_path_factory.mktemp("async-orthanc"),
        destinations=[MoveDestination(DICOMFS_AET, HOST, port)],
        synchronous_move=False,
    )
    with server:
        server.load(list(series.files))
        yield server, series, port


def test_orthanc_asynchronous_move_stores_land(
    async_orthanc: tuple[OrthancServer, SeriesData, int], tmp_path: Path
) -> None:
    server, series, port = async_orthanc
    relay = ThrottledRelay(server.port)  # counts our associations to Orthanc
    # Through the relay: it counts our associations to Orthanc.
    options = pacs_options(
        server, tmp_path / "cache", localport=port, timeout=5, retrieve="move", serverport=relay.port
    )
    try:
        with mounted(tmp_path / "mnt", options) as mount:
            directory = series_dir(mount.mountpoint, series)
            names = sorted(os.listdir(directory))
            before = relay.connections
            sources = series.sources()
            for name in names:
                assert dataset_bytes((directory / name).read_bytes()) == sources[name], name
            opened = relay.connections - before
            log = mount.log_text()
    finally:
        relay.close()
    assert opened == 1, f"{opened} associations\n{log}"  # one C-MOVE, no retry
    assert "refused C-STORE" not in log, log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_mount_without_waiting_for_the_transfer(
    broken: BrokenPacs, tmp_path: Path, signum: int
) -> None:
    """libfuse lets requests in progress finish before it unmounts: a reader waiting for a slow
    series must be let go, or the daemon lives for the rest of the transfer."""
    timeout = 30.0
    broken.store_interval_s = 10.0  # 3 C-STOREs 10 s apart: 30 s to the last instance
    with mounted(tmp_path / "mnt", options_for(broken, tmp_path / "cache", "move", timeout)) as mount:
        files = files_by_uid(series_dirs(mount)[0])
        broken.behaviour = Behaviour.SLOW_NO_PENDING
        reader = subprocess.Popen(
            ["cat", str(files[UIDS[-1]])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_until(lambda: broken.requests["C-MOVE"] == 1, 20, "the retrieval to start")
            mount.process.send_signal(signum)
            status = mount.process.wait(timeout=60)  # guards against a hang only
            assert reader.wait(timeout=60) != 0  # let go without its file, not served late
        finally:
            if reader.poll() is None:
                reader.kill()
        assert status == 0, mount.log_text()
        assert broken.stores_sent < len(UIDS), "the daemon waited for the whole transfer"
