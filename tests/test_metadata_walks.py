"""Metadata walks (du, find, ls -lR) do not retrieve the archive; cp, tar and rsync stay byte-exact.

With ``sizes=guarded`` a program that stats files without reading them retrieves at most
``statseries`` series (``dicomfs.core.walkguard``); beyond that it sees estimated sizes. Readers
always get exact sizes and bytes. The PACS is the in-process misbehaving SCP in its
well-behaved mode (two series), counting the C-GETs it serves.
"""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pydicom
import pytest

from tests.broken_pacs import INSTANCES, SERIES, BrokenPacs
from tests.mounting import Mount, mounted, pacs_options

pytestmark = pytest.mark.integration


@pytest.fixture
def pacs() -> Iterator[BrokenPacs]:
    with BrokenPacs() as running:
        yield running


def walk_mount(pacs: BrokenPacs, tmp_path: Path, **extra: object) -> AbstractContextManager[Mount]:
    """A mount of ``pacs`` by C-GET where a program may retrieve one series by stat alone."""
    options: dict[str, object] = {"retrieve": "get", "statseries": 1, **extra}
    return mounted(tmp_path / "mnt", pacs_options(pacs, tmp_path / "cache", **options))


def run(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout


def files_of(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file below ``root``."""
    return {
        str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()
    }


def check_objects(files: dict[str, bytes]) -> None:
    """Every file is one of the PACS's objects, whole."""
    wanted = {str(ds.SOPInstanceUID): ds for ds in INSTANCES}
    assert len(files) == len(wanted)
    for data in files.values():
        got = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
        assert got.PixelData == wanted[str(got.SOPInstanceUID)].PixelData


def test_du_retrieves_at_most_its_budget_and_says_so(pacs: BrokenPacs, tmp_path: Path) -> None:
    with walk_mount(pacs, tmp_path) as mount:
        listing = run("du", "-ab", str(mount.mountpoint))
        assert listing.count(".dcm") == len(INSTANCES)
        assert pacs.requests["C-GET"] == 1  # statseries=1: one series, not the archive
        assert "du (pid" in mount.log_text() and "estimated" in mount.log_text()
        # A reader afterwards gets every object whole, at its exact size.
        copied = tmp_path / "copy"
        run("cp", "-r", str(mount.mountpoint), str(copied))
        check_objects(files_of(copied))
        for path in copied.rglob("*.dcm"):
            assert (mount.mountpoint / path.relative_to(copied)).stat().st_size == path.stat().st_size


def test_sizes_exact_retrieves_what_stat_touches(pacs: BrokenPacs, tmp_path: Path) -> None:
    with walk_mount(pacs, tmp_path, sizes="exact") as mount:
        run("du", "-ab", str(mount.mountpoint))
        assert pacs.requests["C-GET"] == len(SERIES)
        assert "estimated" not in mount.log_text()


def test_tar_after_a_walk_is_byte_exact(pacs: BrokenPacs, tmp_path: Path) -> None:
    """tar writes each file's size from its stat into the archive: that stat must be exact."""
    with walk_mount(pacs, tmp_path) as mount:
        run("find", str(mount.mountpoint), "-size", "+1k")  # a walk that uses up its budget
        archive = tmp_path / "study.tar"
        run("tar", "-cf", str(archive), "-C", str(mount.mountpoint), ".")
        mounted_files = files_of(mount.mountpoint)
    with tarfile.open(archive) as tar:
        packed = {
            member.name.removeprefix("./"): tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }
    assert packed == mounted_files
    check_objects(packed)


def test_rsync_is_byte_exact_although_its_file_list_sees_estimates(pacs: BrokenPacs, tmp_path: Path) -> None:
    """rsync stats the whole tree before it reads (its file list): estimates there, exact copies."""
    copied = tmp_path / "rsynced"
    with walk_mount(pacs, tmp_path, statseries=0) as mount:
        run("rsync", "-a", f"{mount.mountpoint}/", f"{copied}/")
        assert files_of(copied) == files_of(mount.mountpoint)
    check_objects(files_of(copied))
