"""``dicomfs cache stats|clear|prune`` and a cache removed by hand, while a mount uses the cachedir.

The PACS is the in-process misbehaving SCP in its well-behaved mode; the mount is real, the files
are read with ``cat``-like reads and compared with what the PACS holds, byte for byte.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicomfs.core.cacheadmin import parse_age
from tests.broken_pacs import INSTANCES, SERIES, Behaviour, BrokenPacs, options_for
from tests.mounting import Mount, dicomfs_command, mounted

pytestmark = pytest.mark.integration


@pytest.fixture
def pacs() -> Iterator[BrokenPacs]:
    with BrokenPacs() as running:
        yield running


@pytest.fixture
def mount(pacs: BrokenPacs, tmp_path: Path) -> Iterator[Mount]:
    with mounted(tmp_path / "mnt", options_for(pacs, tmp_path / "cache", "get", timeout=10)) as handle:
        yield handle


def cache(cachedir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dicomfs_command("cache", *args, "--cachedir", str(cachedir)),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def read_everything(mountpoint: Path) -> int:
    """Read every file; check each is the PACS's object. Returns how many were read."""
    wanted = {str(ds.SOPInstanceUID): ds for ds in INSTANCES}
    files = sorted(mountpoint.glob("*/*/*/*.dcm"))
    assert len(files) == len(wanted)
    for path in files:
        got = pydicom.dcmread(path)
        assert got.PixelData == wanted[str(got.SOPInstanceUID)].PixelData
    return len(files)


def stats(cachedir: Path) -> dict[str, object]:
    result = cache(cachedir, "stats", "--json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_stats_prune_and_clear_while_mounted(mount: Mount, tmp_path: Path) -> None:
    cachedir = tmp_path / "cache"
    count = read_everything(mount.mountpoint)
    before = stats(cachedir)
    assert before["instances"] == count and before["mounts"] == 1
    assert before["instance_bytes"] == sum(
        path.stat().st_size for path in mount.mountpoint.glob("*/*/*/*.dcm")
    )

    kept = cache(cachedir, "prune", "--older-than", "1h")
    assert kept.returncode == 0 and kept.stdout.startswith("removed 0 instances"), kept.stdout
    assert stats(cachedir)["instances"] == count

    cleared = cache(cachedir, "clear")
    assert cleared.returncode == 0 and cleared.stdout.startswith(f"removed {count} instances"), cleared.stdout
    assert stats(cachedir)["instances"] == 0
    # The mount notices nothing but a cache miss: every file is retrieved again, byte for byte.
    assert read_everything(mount.mountpoint) == count
    assert stats(cachedir)["instances"] == count
    assert "Traceback" not in mount.log_text()


def test_instances_folder_removed_by_hand_while_mounted(
    mount: Mount, pacs: BrokenPacs, tmp_path: Path
) -> None:
    """``rm -rf <cachedir>/instances`` (what users do without a clear command) must not break reads."""
    cachedir = tmp_path / "cache"
    read_everything(mount.mountpoint)
    gets = pacs.requests["C-GET"]
    shutil.rmtree(cachedir / "instances")
    shutil.rmtree(cachedir / "listings")
    assert read_everything(mount.mountpoint) == len(INSTANCES)
    assert pacs.requests["C-GET"] > gets  # retrieved again, not served from a removed file
    assert stats(cachedir)["instances"] == len(INSTANCES)
    log = mount.log_text()
    assert "Traceback" not in log and "OperationalError" not in log
    assert log.count("was removed while mounted; starting an empty one") <= 2  # once per folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("prune",), "prune needs --older-than"),
        (("prune", "--older-than", "soon"), "is not an age"),
    ],
)
def test_bad_cache_commands_say_what_to_fix(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    (tmp_path / "cache" / "instances").mkdir(parents=True)
    result = cache(tmp_path / "cache", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_cachedir_is_one_line(tmp_path: Path) -> None:
    result = cache(tmp_path / "nowhere", "stats")
    assert result.returncode == 2 and "no cache directory" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45", 45.0)]
)
def test_ages(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


def prefetch(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dicomfs_command("prefetch", *map(str, paths)),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_prefetch_warms_a_patient_with_progress(mount: Mount, pacs: BrokenPacs, tmp_path: Path) -> None:
    (patient,) = mount.mountpoint.iterdir()
    result = prefetch(patient)
    assert result.returncode == 0, result.stderr
    assert f"{len(INSTANCES)} instances cached" in result.stderr
    assert f"{len(INSTANCES)}/{len(INSTANCES)}" in result.stderr  # tqdm's progress: done/total
    assert stats(tmp_path / "cache")["instances"] == len(INSTANCES)
    retrievals = pacs.requests["C-GET"]
    assert read_everything(mount.mountpoint) == len(INSTANCES)
    assert pacs.requests["C-GET"] == retrievals  # everything was cached: no further retrieval


def test_prefetch_says_what_failed(mount: Mount, pacs: BrokenPacs) -> None:
    pacs.behaviour = Behaviour.FEWER  # each series lacks its last instance
    result = prefetch(mount.mountpoint)
    assert result.returncode == 1
    assert f"{len(SERIES)} failed: Input/output error" in result.stderr, result.stderr
    assert f"{len(INSTANCES) - len(SERIES)} instances cached" in result.stderr


def test_prefetch_outside_a_mount_is_one_line(tmp_path: Path) -> None:
    result = prefetch(tmp_path)
    assert result.returncode == 2 and "is not inside a dicomfs mount" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("retrieve", ["move", "get"])
def test_the_whole_cachedir_removed_while_mounted(pacs: BrokenPacs, tmp_path: Path, retrieve: str) -> None:
    """``rm -rf ~/.cache/dicomfs`` while mounted: partial/, instances/, listings/ and the log file
    come back; reads go on, byte for byte."""
    cachedir = tmp_path / "cache"
    options = options_for(pacs, cachedir, retrieve, timeout=10)
    with mounted(tmp_path / "mnt", options) as mount:
        assert read_everything(mount.mountpoint) == len(INSTANCES)
        shutil.rmtree(cachedir)
        assert read_everything(mount.mountpoint) == len(INSTANCES)
        log = mount.log_text()
    assert "Traceback" not in log and "FileNotFoundError" not in log, log


def test_a_folder_that_is_no_cache_is_refused(tmp_path: Path) -> None:
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "thesis.txt").write_text("keep me")
    result = cache(tmp_path / "documents", "clear")
    assert result.returncode == 2 and "is not a dicomfs cache directory" in result.stderr
    assert (tmp_path / "documents" / "thesis.txt").read_text() == "keep me"
