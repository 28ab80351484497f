"""A 1 GiB object arrives whole while the daemon's memory stays small (issue #9 item 8).

The PACS is the demo Q/R SCP in this test process (pynetdicom 3.0.4's C-GET/C-MOVE SCP wants a
Dataset, so it holds the object in memory: that is the PACS's memory, not ours). dicomfs must
stream the object to its partial file as the P-DATA fragments arrive. The daemon's peak resident
set (VmHWM, proc(5)) is read after the copy.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.demo.samples import make_instance
from tests.fault_tools import partial_files
from tests.identity_archive import served_and_mounted

FRAMES = 512
ROWS = COLUMNS = 1024
PIXEL_BYTES = FRAMES * ROWS * COLUMNS * 2  # 1 GiB of 16-bit pixels
PEAK_RSS_LIMIT = 200 * 1024**2  # the goal, whatever the object's size
_CHUNK = 16 * 1024 * 1024


def write_huge_instance(path: Path) -> str:
    """A multi-frame CT of 1 GiB, written chunk by chunk; returns the SHA-256 of the file."""
    ds = make_instance(
        patient_name="HUGE^OBJECT",
        patient_id="HUGE",
        study_uid="1.2.826.8.1",
        series_uid="1.2.826.8.1.1",
        sop_uid="1.2.826.8.1.1.1",
        rows=ROWS,
        columns=COLUMNS,
    )
    del ds.PixelData
    ds.NumberOfFrames = FRAMES
    ds.save_as(path, enforce_file_format=True)
    digest = hashlib.sha256()
    with open(path, "ab") as out:
        # (7FE0,0010) OW, explicit VR little endian: tag, VR, 2 reserved bytes, 4-byte length.
        out.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, PIXEL_BYTES))
        pattern = bytes(range(256)) * (_CHUNK // 256)
        for _ in range(PIXEL_BYTES // _CHUNK):
            out.write(pattern)
    with open(path, "rb") as source:
        while block := source.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def peak_rss(pid: int) -> int:
    """VmHWM of a process, in bytes (proc(5))."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def dataset_digest(path: Path) -> str:
    """SHA-256 of a DICOM file's data set (after the File Meta group, which senders rebuild)."""
    with open(path, "rb") as data:
        head = data.read(144)
        group_length = struct.unpack("<L", head[140:144])[0]
        data.seek(144 + group_length)
        digest = hashlib.sha256()
        while block := data.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def huge_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("huge-archive")
    if shutil.disk_usage(folder).free < 4 * PIXEL_BYTES:
        pytest.skip("needs 4 GiB of free disk for a 1 GiB object, its copy and the cache")
    write_huge_instance(folder / "huge.dcm")
    yield folder, dataset_digest(folder / "huge.dcm")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("retrieve", ["move", "get"])
def test_a_1_gib_object_arrives_whole_within_200_mb_of_daemon_memory(
    huge_archive: tuple[Path, str],
    tmp_path: Path,
    retrieve: str,
) -> None:
    folder, expected = huge_archive
    with served_and_mounted(folder, tmp_path, retrieve, timeout=60) as mount:
        (path,) = list(mount.mountpoint.rglob("*.dcm"))
        copy = tmp_path / "copy.dcm"
        shutil.copyfile(path, copy)
        peak = peak_rss(mount.process.pid)
        assert dataset_digest(copy) == expected
        assert copy.stat().st_size > PIXEL_BYTES
        assert peak <= PEAK_RSS_LIMIT, f"daemon peak RSS {peak / 1024**2:.0f} MiB"
        assert partial_files(tmp_path / "cache") == []
