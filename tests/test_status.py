"""``dicomfs status``, ``/.dicomfs/status.json`` and ``df`` through a real mount (issue #11).

The peer is the misbehaving in-process SCP (``tests.broken_pacs``): a C-GET that sends the first
instance of a series and then stays silent until the test wakes it keeps a retrieval in flight
for as long as the test needs, without reading a clock. Shell tools (``cat``, ``ls``, ``df``,
``python -m json.tool``) and the ``dicomfs`` command line do the looking.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.broken_pacs import SERIES, Behaviour, BrokenPacs, options_for
from tests.mounting import Mount, dicomfs_command, mounted, wait_until
from tests.test_misbehaving_pacs import expect_errno, files_by_uid, series_dirs

pytestmark = pytest.mark.integration

#: Every network wait of the mount; the silent peer is woken by the test long before (a hang guard).
TIMEOUT_S = 30.0
CACHESIZE = 100 * 1024**2
UIDS_A = [str(ds.SOPInstanceUID) for ds in SERIES[0].instances]
UIDS_B = [str(ds.SOPInstanceUID) for ds in SERIES[1].instances]


@pytest.fixture
def broken() -> Iterator[BrokenPacs]:
    with BrokenPacs() as pacs:
        yield pacs


@pytest.fixture
def mount(broken: BrokenPacs, tmp_path: Path) -> Iterator[Mount]:
    options = options_for(broken, tmp_path / "cache", "get", TIMEOUT_S, cachesize=CACHESIZE)
    with mounted(tmp_path / "mnt", options) as handle:
        yield handle


def run(*command: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, capture_output=True, text=True, errors="replace", timeout=2 * TIMEOUT_S, check=False
    )
    assert result.returncode == expect, (result.stdout, result.stderr)
    return result


def status(mount: Mount) -> dict[str, Any]:
    """``dicomfs status MOUNTPOINT --json``, parsed."""
    data: dict[str, Any] = json.loads(run(*dicomfs_command("status", str(mount.mountpoint), "--json")).stdout)
    return data


def cache_stats(cachedir: Path) -> dict[str, Any]:
    out = run(*dicomfs_command("cache", "stats", "--cachedir", str(cachedir), "--json")).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def test_status_shows_a_retrieval_in_flight_with_its_progress(mount: Mount, broken: BrokenPacs) -> None:
    files = files_by_uid(series_dirs(mount)[0])
    broken.behaviour = Behaviour.FIRST_THEN_SILENT
    last = str(files[UIDS_A[-1]])
    reader = subprocess.Popen(["cat", last], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert broken.first_sent.wait(TIMEOUT_S), mount.log_text()
        wait_until(
            lambda: [flight["instances_done"] for flight in status(mount)["retrievals"]] == [1],
            TIMEOUT_S,
            "the first instance counted in the status",
        )
        assert reader.poll() is None, "the reader ended: no retrieval was in flight"
        report = status(mount)
        (flight,) = report["retrievals"]
        assert report["retrievals_in_flight"] == 1
        assert flight["series_uid"] == SERIES[0].uid
        assert flight["instances_expected"] == len(UIDS_A)
        text = run(*dicomfs_command("status", str(mount.mountpoint))).stdout
        # The one instance that has landed is the only one cached: its bytes are the job's.
        stats = cache_stats(Path(report["cachedir"]))
        assert reader.poll() is None, "the reader ended: the summary may show another state"
    finally:
        broken.behaviour = Behaviour.NORMAL  # wake the peer: the reader ends either way
        reader.wait(timeout=2 * TIMEOUT_S)
        reader.stderr.close()  # type: ignore[union-attr]
    assert (stats["instances"], stats["instance_bytes"]) == (1, flight["bytes_done"]), (stats, flight)
    assert "retrievals   1 in flight" in text, text
    assert f"series {SERIES[0].uid}: 1/{len(UIDS_A)} instances" in text, text
    assert f"{report['pacs']}, retrieve=get" in text, text
    wait_until(lambda: status(mount)["retrievals_in_flight"] == 0, 2 * TIMEOUT_S, "the retrieval's end")


def test_hit_ratio_counts_opens_from_the_cache(mount: Mount) -> None:
    files = files_by_uid(series_dirs(mount)[0])
    before = status(mount)
    assert (before["opens_from_cache"], before["opens_retrieved"], before["hit_ratio"]) == (0, 0, None)
    run("cat", str(files[UIDS_A[0]]))  # retrieves the series
    first = status(mount)
    run("cat", str(files[UIDS_A[0]]))  # the same file again: the cache
    run("cat", str(files[UIDS_A[1]]))  # its neighbour came with the series
    second = status(mount)  # read again: the file is a new snapshot at every open
    assert (first["opens_from_cache"], first["opens_retrieved"]) == (0, 1)
    assert (second["opens_from_cache"], second["opens_retrieved"]) == (2, 1)
    assert second["hit_ratio"] == pytest.approx(2 / 3, abs=1e-3)
    text = run(*dicomfs_command("status", str(mount.mountpoint))).stdout
    assert "hit ratio    67% (2 opens from the cache, 1 retrieved)" in text, text


def test_a_failed_retrieval_is_among_the_last_errors(mount: Mount, broken: BrokenPacs) -> None:
    assert status(mount)["last_errors"] == []
    files = files_by_uid(series_dirs(mount)[1], SERIES[1])
    broken.behaviour = Behaviour.FAILED
    expect_errno(errno.EIO, Path.read_bytes, files[UIDS_B[-1]])
    errors = status(mount)["last_errors"]
    assert any(SERIES[1].uid in error["message"] for error in errors), errors
    assert {error["level"] for error in errors} <= {"WARNING", "ERROR", "CRITICAL"}
    assert all(error["time"][:4].isdigit() and "T" in error["time"] for error in errors), errors
    text = run(*dicomfs_command("status", str(mount.mountpoint))).stdout
    assert f"last errors  {len(errors)}" in text and SERIES[1].uid in text, text


def test_the_status_file_is_hidden_json_of_a_fixed_size(mount: Mount) -> None:
    root = mount.mountpoint
    listing = run("ls", "-a", str(root)).stdout.split("\n")
    assert ".dicomfs" not in listing and len(listing) > 3, listing  # . .. and the patient
    assert run("ls", "-a", str(root / ".dicomfs")).stdout.split() == [".", "..", "status.json"]
    shown = subprocess.run(
        f"cat {root}/.dicomfs/status.json | {sys.executable} -m json.tool",
        shell=True,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["mountpoint"] == str(root)
    size = int(run("stat", "-c", "%s", str(root / ".dicomfs" / "status.json")).stdout)
    assert size == len((root / ".dicomfs" / "status.json").read_bytes()) == 64 * 1024
    for probe in (".dicomfs/other", ".hidden", ".dicomfs/.x"):
        assert not (root / probe).exists(), probe


def _df(mount: Mount) -> tuple[int, int, int]:
    """``df -B4096``'s size, used and available blocks of the mount."""
    out = run("df", "-B4096", "--output=size,used,avail", str(mount.mountpoint)).stdout
    size, used, avail = (int(field) for field in out.splitlines()[1].split())
    return size, used, avail


def test_df_shows_the_cache_against_cachesize(mount: Mount, tmp_path: Path) -> None:
    empty_size, empty_used, empty_avail = _df(mount)
    assert empty_size == CACHESIZE // 4096
    assert empty_used + empty_avail == empty_size
    for directory, series in zip(series_dirs(mount), SERIES, strict=True):
        for path in files_by_uid(directory, series).values():
            run("cat", str(path))
    size, used, avail = _df(mount)
    stats = cache_stats(tmp_path / "cache")
    assert stats["instances"] == sum(len(series.instances) for series in SERIES)
    # diskcache counts its index (SQLite pages) against the limit too: a little above the files.
    assert stats["instance_bytes"] <= used * 4096 <= stats["instance_bytes"] + 1024**2 + 4096
    assert used - empty_used >= stats["instance_bytes"] // 4096
    assert size == CACHESIZE // 4096 and used + avail == size
    report = status(mount)
    assert report["cache_limit_bytes"] == CACHESIZE
    assert stats["instance_bytes"] <= report["cache_used_bytes"] <= stats["instance_bytes"] + 1024**2


def test_status_of_a_path_in_no_dicomfs_mount_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run(*dicomfs_command("status", str(tmp_path)), expect=2)
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
    assert "not in a dicomfs mount" in result.stderr


def test_status_of_a_path_inside_the_mount_finds_its_mount(mount: Mount) -> None:
    inside = series_dirs(mount)[0]
    out = run(*dicomfs_command("status", str(inside), "--json")).stdout
    assert json.loads(out)["mountpoint"] == str(mount.mountpoint)
    assert os.getpid() != json.loads(out)["pid"] == mount.process.pid
