"""Extended attributes: ``getfattr -d`` shows every entry's identity from its listing (issue #12)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicomfs.demo.scp import DemoArchive
from tests.mounting import DICOMFS_AET, Mount, mounted, pacs_options
from tests.pacs_servers import DcmqrscpServer, OrthancServer, free_port

pytestmark = pytest.mark.integration


def getfattr(path: Path) -> dict[str, str]:
    """``getfattr -d`` of one entry (the ``user.`` attributes) as name -> value."""
    result = subprocess.run(
        ["getfattr", "-d", "--absolute-names", "-e", "text", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            found[name] = value.strip('"')
    return found


def first_file(root: Path) -> tuple[list[Path], Path]:
    """The patient, study and series directories of the first instance file, and that file (listed,
    never stat'ed: a stat of an uncached file may retrieve its series)."""
    chain, here = [], root
    for _ in range(4):
        here = here / sorted(os.listdir(here))[0]
        chain.append(here)
    return chain[:-1], here


@pytest.fixture
def mount(pacs: OrthancServer | DcmqrscpServer, tmp_path: Path) -> Iterator[Mount]:
    with mounted(tmp_path / "mnt", pacs_options(pacs, tmp_path / "cache", retrieve="get")) as handle:
        yield handle


def test_getfattr_shows_the_identity_of_each_level(
    mount: Mount, archive_by_sop: dict[str, pydicom.Dataset]
) -> None:
    (patient, study, series), instance = first_file(mount.mountpoint)
    shown = getfattr(instance)
    source = archive_by_sop[shown["user.dicom.SOPInstanceUID"]]
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "StudyDate"):
        assert shown[f"user.dicom.{keyword}"] == str(source.data_element(keyword).value), keyword
    assert getfattr(series) == {
        name: value
        for name, value in shown.items()
        if name not in {"user.dicom.SOPInstanceUID", "user.dicom.InstanceNumber"}
    }
    assert "user.dicom.SeriesInstanceUID" not in getfattr(study)
    assert getfattr(study)["user.dicom.StudyInstanceUID"] == str(source.StudyInstanceUID)
    assert getfattr(patient)["user.dicom.PatientID"] == str(source.PatientID)
    assert getfattr(mount.mountpoint) == {}
    missing = subprocess.run(
        ["getfattr", "-n", "user.dicom.NoSuchKeyword", str(instance)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode != 0
    assert "No such attribute" in missing.stderr


def test_attributes_cost_no_query_and_no_retrieval(archive_files: list[Path], tmp_path: Path) -> None:
    folder = Path(os.path.commonpath([str(path) for path in archive_files]))
    local_port = free_port()
    archive = DemoArchive(
        folder, ae_title="XATTRS", move_destinations={DICOMFS_AET: ("127.0.0.1", local_port)}
    )
    with archive:
        # statseries=0: getfattr's own lstat sees an estimated size instead of retrieving.
        options = pacs_options(
            archive, tmp_path / "cache", localport=local_port, retrieve="get", statseries=0
        )
        with mounted(tmp_path / "mnt", options) as handle:
            (_, _, series), instance = first_file(handle.mountpoint)
            os.listdir(series)  # the listings the attributes come from
            before = dict(archive.requests)
            for entry in (instance, series, *(series / name for name in os.listdir(series))):
                assert getfattr(entry)["user.dicom.PatientID"]
            assert dict(archive.requests) == before  # no C-FIND, no C-GET
            assert not {"C-GET", "C-MOVE"} & set(before), before
