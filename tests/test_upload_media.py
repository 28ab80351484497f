"""Uploads that are no plain image: a file whose conversion fails, and a CD's DICOMDIR.

Through real mounts against an in-process pynetdicom storage SCP (``tests.test_upload.StoreScp``)
that takes uncompressed syntaxes only. The data are the synthetic archive's files
(``tests.synthetic``); the DICOMDIR is written by pydicom's ``FileSet`` (PS3.10 8.6).
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MediaStorageDirectoryStorage

from dicomfs.dimse import statuses
from tests.mounting import mounted, pacs_options
from tests.test_upload import StoreScp, run, series_files

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.integration

#: The syntaxes of a PACS that takes no compressed data set.
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@pytest.fixture(scope="module")
def uncompressed_scp() -> object:
    pacs = StoreScp(statuses.SUCCESS, UNCOMPRESSED)
    yield pacs
    pacs.stop()


def test_numpy_is_a_runtime_dependency() -> None:
    """pydicom decompresses RLE (the README's "RLE always") only with NumPy installed."""
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(dep.split(">")[0].split(";")[0].strip() == "numpy" for dep in project["dependencies"])


def broken_rle(source: Path, folder: Path) -> Path:
    """A whole RLE Lossless file whose first frame's RLE header declares 15 segments: every
    element is all there (the upload's checks pass), and pydicom cannot decode it."""
    ds = pydicom.dcmread(source)
    data = bytearray(ds.PixelData)
    table = struct.unpack_from("<I", data, 4)[0]  # the Basic Offset Table item's length
    header = 8 + table + 8  # past the table and the first fragment's item tag and length
    struct.pack_into("<I", data, header, 15)
    ds.PixelData = bytes(data)
    path = folder / f"broken-{source.name}"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_failed_conversion_is_a_refusal_with_a_report(
    uncompressed_scp: StoreScp, archive_files: list[Path], tmp_path: Path
) -> None:
    source = broken_rle(series_files(archive_files, "rle")[0], tmp_path)
    options = pacs_options(uncompressed_scp, tmp_path / "cache", upload="on", timeout=5)
    with mounted(tmp_path / "mnt", options) as mount:
        before = uncompressed_scp.stores
        done = run("cp", str(source), str(mount.mountpoint / "upload"))
        assert done.returncode != 0 and "Input/output error" in done.stderr
        assert uncompressed_scp.stores == before
        report = (mount.mountpoint / "upload" / "failed" / f"{source.name}.txt").read_text()
        assert "accepts none of the file's transfer syntax RLE Lossless" in report
        assert "cannot be converted here: " in report and "; fix: " in report
        log = mount.log_text()
        assert "Traceback" not in log, log
        said = [line for line in log.splitlines() if "cannot be converted here" in line]
        assert len(said) == 1 and said[0].endswith("gdcmconv --raw)"), said  # one line, with the fix


def test_cp_r_of_a_cd_skips_its_dicomdir(
    uncompressed_scp: StoreScp, archive_files: list[Path], tmp_path: Path
) -> None:
    image = series_files(archive_files, "axial")[0]
    fileset = FileSet()
    fileset.add(pydicom.dcmread(image))
    cd = tmp_path / "cd"
    fileset.write(cd)  # DICOMDIR and the image under cd/
    assert pydicom.dcmread(cd / "DICOMDIR").file_meta.MediaStorageSOPClassUID == MediaStorageDirectoryStorage
    second = tmp_path / "cd2"
    shutil.copytree(cd, second)
    options = pacs_options(uncompressed_scp, tmp_path / "cache", upload="on", timeout=5)
    with mounted(tmp_path / "mnt", options) as mount:
        upload = mount.mountpoint / "upload"
        before = uncompressed_scp.stores
        done = run("cp", "-r", str(cd), str(upload))
        assert done.returncode == 0, done.stderr
        assert uncompressed_scp.stores == before + 1  # the image; the DICOMDIR is not sent
        assert os.listdir(upload / "failed") == []
        done = run("rsync", "-r", f"{second}/", str(upload / "cd2"))
        assert done.returncode == 0, done.stderr  # rsync goes on past it
        assert uncompressed_scp.stores == before + 2
        assert "DICOMDIR" in os.listdir(upload / "cd2")  # rsync's rename found it
        assert os.listdir(upload / "failed") == []
        said = [line for line in mount.log_text().splitlines() if "media directory" in line]
        assert len(said) == 1 and "INFO" in said[0] and "not sent" in said[0], said
