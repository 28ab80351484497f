"""A real mount against peers that misbehave: EIO for what cannot be had, the rest still served."""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.broken_pacs import SERIES, Behaviour, BrokenPacs, SeriesData, deterministic_uid, options_for
from tests.fault_tools import partial_files
from tests.mounting import Mount, ends_within, mounted, wait_until

LOGGER = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

TIMEOUT_S = 2.0
#: Bound on a failing call: only turns a hang into a failure (the PACS's timeout is 2 s).
HANG_GUARD_S = 60.0
IMPOSTOR_UID = deterministic_uid("broken-impostor")
SERIES_A_UIDS = {str(ds.SOPInstanceUID) for ds in SERIES[0].instances}
LAST_OF_A = str(SERIES[0].instances[-1].SOPInstanceUID)


@pytest.fixture
def broken() -> Iterator[BrokenPacs]:
    with BrokenPacs() as pacs:
        yield pacs


@pytest.fixture(params=["get", "move"])
def mount(request: pytest.FixtureRequest, broken: BrokenPacs, tmp_path: Path) -> Iterator[Mount]:
    with mounted(
        tmp_path / "mnt", options_for(broken, tmp_path / "cache", request.param, TIMEOUT_S)
    ) as handle:
        yield handle


def series_dirs(mount: Mount) -> list[Path]:
    """The series directories, in SERIES order (names start with the series number)."""
    dirs = sorted(mount.mountpoint.glob("*/*/*"))
    assert len(dirs) == len(SERIES), dirs
    return dirs


def files_by_uid(series_dir: Path, series: SeriesData = SERIES[0]) -> dict[str, Path]:
    """Each file of a listed series by its SOP Instance UID (names are "<InstanceNumber>.dcm")."""
    by_number = {int(ds.InstanceNumber): str(ds.SOPInstanceUID) for ds in series.instances}
    return {by_number[int(path.stem)]: path for path in sorted(series_dir.iterdir())}


def expect_errno(code: int, call: object, *args: object) -> None:
    with pytest.raises(OSError) as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.errno == code, caught.value


def cached_uids(cachedir: Path) -> list[str]:
    """SOP Instance UIDs of every data file in the instance cache (each must parse)."""
    files = [
        p for p in (cachedir / "instances").rglob("*") if p.is_file() and not p.name.startswith("cache.db")
    ]
    return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]


def assert_serves(path: Path, sop_uid: str) -> None:
    got = pydicom.dcmread(path)
    want = next(ds for s in SERIES for ds in s.instances if str(ds.SOPInstanceUID) == sop_uid)
    assert str(got.SOPInstanceUID) == sop_uid
    assert got.PixelData == want.PixelData


def test_normal_peer_serves_every_instance(mount: Mount) -> None:
    for series, directory in zip(SERIES, series_dirs(mount), strict=True):
        files = files_by_uid(directory, series)
        assert set(files) == {str(ds.SOPInstanceUID) for ds in series.instances}
        for uid, path in files.items():
            assert_serves(path, uid)


@pytest.mark.parametrize(
    ("behaviour", "logged"),
    [
        pytest.param(Behaviour.FEWER, "status 0x0000, 2 completed, 0 failed", id="fewer"),
        pytest.param(Behaviour.FAILED, "status 0xA702, 2 completed, 1 failed", id="failed"),
        pytest.param(Behaviour.WARNING, "status 0xB000, 2 completed, 1 failed", id="warning"),
    ],
)
def test_missing_instances_give_eio_and_the_rest_read(
    mount: Mount, broken: BrokenPacs, behaviour: Behaviour, logged: str
) -> None:
    files = files_by_uid(series_dirs(mount)[0])
    broken.behaviour = behaviour
    expect_errno(errno.EIO, os.stat, files[LAST_OF_A])
    expect_errno(errno.EIO, Path.read_bytes, files[LAST_OF_A])
    for uid in SERIES_A_UIDS - {LAST_OF_A}:
        assert_serves(files[uid], uid)
    log = mount.log_text()
    assert logged in log and re.search(r"1 of 3 \w* ?instances missing", log), log


@pytest.mark.parametrize(
    ("behaviour", "logged"),
    [
        pytest.param(
            Behaviour.MISMATCHED_UID, f"dataset carries SOP Instance UID '{IMPOSTOR_UID}'", id="mismatched"
        ),
        pytest.param(Behaviour.UNPARSEABLE, "does not parse as DICOM", id="unparseable"),
    ],
)
def test_a_wrong_object_is_never_served_nor_cached(
    mount: Mount, broken: BrokenPacs, tmp_path: Path, behaviour: Behaviour, logged: str
) -> None:
    files = files_by_uid(series_dirs(mount)[0])
    broken.behaviour = behaviour
    expect_errno(errno.EIO, Path.read_bytes, files[LAST_OF_A])
    for uid in SERIES_A_UIDS - {LAST_OF_A}:
        assert_serves(files[uid], uid)
    assert sorted(cached_uids(tmp_path / "cache")) == sorted(SERIES_A_UIDS - {LAST_OF_A})
    assert partial_files(tmp_path / "cache") == []  # nothing half-kept either
    log = mount.log_text()
    assert f"received {LAST_OF_A} but did not keep it" in log and logged in log, log


def fails_with_eio(mount: Mount, call: object, *args: object) -> None:
    """``call(*args)`` fails with EIO; the deadline only guards against a hang (it measures nothing)."""
    ends_within(lambda: expect_errno(errno.EIO, call, *args), HANG_GUARD_S, f"{call} on a silent PACS")
    assert mount.process.poll() is None, mount.log_text()


def test_silent_pacs_listing_fails_and_recovers(mount: Mount, broken: BrokenPacs) -> None:
    broken.behaviour = Behaviour.SILENT_FIND
    fails_with_eio(mount, os.listdir, mount.mountpoint)
    # The network timeout (not a hang guard, not a crash) ended it: the log says so.
    assert "no response from the PACS" in mount.log_text(), mount.log_text()
    broken.behaviour = Behaviour.NORMAL
    wait_until(lambda: _lists(mount.mountpoint), 4 * TIMEOUT_S, "the listing once the PACS answers")
    assert len(series_dirs(mount)) == len(SERIES)


def test_silent_pacs_read_fails_and_recovers(mount: Mount, broken: BrokenPacs) -> None:
    files = files_by_uid(series_dirs(mount)[0])
    broken.behaviour = Behaviour.SILENT_RETRIEVE
    fails_with_eio(mount, Path.read_bytes, files[LAST_OF_A])
    # The retrieval's progress watch (not a hang guard, not a crash) ended it: the log says so.
    assert "retrieval cancelled: no progress" in mount.log_text(), mount.log_text()
    # `ls -l` right after: every file EIO, and not one retrieval per stat (ls makes several calls
    # per file): a failed series is asked for again only once the PACS has answered a check.
    listing = subprocess.run(["ls", "-l", str(files[LAST_OF_A].parent)], capture_output=True, text=True)
    assert listing.stderr.count("Input/output error") == len(files), listing.stderr
    lines = mount.log_text().splitlines()
    failed_retrievals = [line for line in lines if f"series {SERIES[0].uid}: " in line and "arrived)" in line]
    assert 1 <= len(failed_retrievals) <= len(files), failed_retrievals
    broken.behaviour = Behaviour.NORMAL
    wait_until(lambda: _reads(files[LAST_OF_A]), 4 * TIMEOUT_S, "the file once the PACS answers")
    assert_serves(files[LAST_OF_A], LAST_OF_A)


def _lists(path: Path) -> bool:
    try:
        return bool(os.listdir(path))
    except OSError:
        return False


def _reads(path: Path) -> bool:
    try:
        return bool(path.read_bytes())
    except OSError:
        return False


def test_malformed_find_rows_are_skipped_and_good_rows_listed(mount: Mount, broken: BrokenPacs) -> None:
    broken.behaviour = Behaviour.MALFORMED_FIND
    patients = os.listdir(mount.mountpoint)
    assert len(patients) == 1 and "GHOST" not in patients[0], patients
    studies = list((mount.mountpoint / patients[0]).iterdir())
    assert len(studies) == 1, studies
    directories = series_dirs(mount)
    for series, directory in zip(SERIES, directories, strict=True):
        files = files_by_uid(directory, series)
        assert set(files) == {str(ds.SOPInstanceUID) for ds in series.instances}
    log = mount.log_text()
    for level, key in (
        ("STUDY", "StudyInstanceUID"),
        ("SERIES", "SeriesInstanceUID"),
        ("IMAGE", "SOPInstanceUID"),
    ):
        assert f"skipping a C-FIND {level} match without {key}" in log, log
        assert f"skipping a duplicate C-FIND {level} match" in log, log
        assert f"skipping a C-FIND match at level 'PATIENT' in a {level} listing" in log, log
