"""The mounted filesystem against real PACS servers, exercised with real shell tools."""

from __future__ import annotations

import errno
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.mounting import Mount, PeerAddress, mounted, pacs_options
from tests.pacs_servers import DcmqrscpServer, OrthancServer, free_port
from tests.synthetic import ARCHIVE, LONG_DESCRIPTION, iter_series

pytestmark = pytest.mark.integration


def options_for(pacs: OrthancServer | DcmqrscpServer, cachedir: Path, move_port: int, **extra: object) -> str:
    return pacs_options(pacs, cachedir, localport=move_port, **extra)


@pytest.fixture(params=["move", "get"])
def mount(
    request: pytest.FixtureRequest,
    pacs: OrthancServer | DcmqrscpServer,
    tmp_path: Path,
    move_port: int,
) -> Iterator[Mount]:
    options = options_for(pacs, tmp_path / "cache", move_port, retrieve=request.param)
    with mounted(tmp_path / "mnt", options) as handle:
        yield handle


def run(*command: str, cwd: Path | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{command} failed: {result.stderr}"
    return result.stdout


def assert_same_dataset(copy: Path, archive_by_sop: dict[str, pydicom.Dataset]) -> None:
    """Every element of the copy equals the source's (pixel data byte for byte)."""
    got = pydicom.dcmread(copy)
    want = archive_by_sop[str(got.SOPInstanceUID)]
    assert got.file_meta.TransferSyntaxUID == want.file_meta.TransferSyntaxUID, copy
    assert got.file_meta.MediaStorageSOPInstanceUID == want.SOPInstanceUID
    differing = [elem.keyword or str(elem.tag) for elem in want if got.get(elem.tag) != elem]
    assert not differing, f"{copy}: elements differ: {differing}"
    assert set(got.keys()) == set(want.keys()), copy
    if "PixelData" in want:
        assert got.PixelData == want.PixelData


def test_tree_lists_every_patient_study_series_and_instance(mount: Mount) -> None:
    root = mount.mountpoint
    patients = sorted(os.listdir(root))
    assert len(patients) == len({p.patient_id for p in ARCHIVE})
    for patient in ARCHIVE:
        assert any(f"({patient.patient_id})" in name for name in patients), patient.patient_id
    files = run("find", str(root), "-type", "f").splitlines()
    assert len(files) == sum(series.count for _p, _s, series in iter_series())
    assert all(f.endswith(".dcm") for f in files)
    dirs = run("find", str(root), "-mindepth", "3", "-maxdepth", "3", "-type", "d").splitlines()
    assert len(dirs) == len(list(iter_series()))


def test_hostile_names_are_legal_unique_and_decoded(
    mount: Mount, pacs: OrthancServer | DcmqrscpServer
) -> None:
    names = run("find", str(mount.mountpoint), "-mindepth", "1").splitlines()
    components = {part for path in names for part in Path(path).relative_to(mount.mountpoint).parts}
    assert all(len(part.encode()) <= 255 and "\0" not in part for part in components)
    assert any("Müller^Hans" in part for part in components)
    assert any("山田^太郎" in part for part in components)
    assert any("Gonçalves^José" in part for part in components)
    assert any("AC_DC" in part for part in components)  # '/' cannot stand in a name
    if isinstance(pacs, DcmqrscpServer):  # Orthanc drops an LO this long from its index altogether
        assert any(LONG_DESCRIPTION[:40] in part for part in components), sorted(components)
    # Patients sharing a name stay apart; the nameless one is listed too.
    assert len(os.listdir(mount.mountpoint)) == len(ARCHIVE)


def test_copies_are_identical_to_the_loaded_data(
    mount: Mount, tmp_path: Path, archive_by_sop: dict[str, pydicom.Dataset]
) -> None:
    target = tmp_path / "copy"
    run("cp", "-r", str(mount.mountpoint), str(target))
    copies = [p for p in target.rglob("*.dcm")]
    assert len(copies) == len(archive_by_sop)
    for copy in copies:
        assert_same_dataset(copy, archive_by_sop)
    # dcmdump (DCMTK) reads what we serve.
    run("dcmdump", "-q", str(copies[0]))


def test_stat_size_equals_bytes_read(mount: Mount) -> None:
    for path in mount.mountpoint.rglob("*.dcm"):
        stat_size = int(run("stat", "-c", "%s", str(path)))
        assert stat_size == len(path.read_bytes()) > 0, path


def test_tar_of_a_study_round_trips(mount: Mount, tmp_path: Path) -> None:
    study = next(p for p in mount.mountpoint.glob("*/*") if p.is_dir())
    archive = tmp_path / "study.tar"
    run("tar", "-cf", str(archive), "-C", str(study.parent), study.name)
    out = tmp_path / "untar"
    out.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    for original in study.rglob("*.dcm"):
        extracted = out / original.relative_to(study.parent)
        assert extracted.read_bytes() == original.read_bytes()


def test_ls_l_shows_exact_sizes_and_umask_modes(mount: Mount) -> None:
    series = next(p for p in mount.mountpoint.glob("*/*/*") if p.is_dir())
    listing = run("ls", "-l", str(series)).splitlines()[1:]
    assert listing and all(line.startswith("-rw-r--r--") for line in listing)  # umask=022; writes: EROFS
    for path in series.iterdir():
        assert path.stat().st_size == len(path.read_bytes())
    assert (series.stat().st_mode & 0o777) == 0o755


def test_writes_are_refused_with_erofs(mount: Mount) -> None:
    some_file = next(mount.mountpoint.rglob("*.dcm"))
    for command in (["touch", str(some_file)], ["mkdir", str(mount.mountpoint / "new")]):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode != 0
        assert "Read-only file system" in result.stderr
    with pytest.raises(OSError) as caught:
        open(some_file, "r+b")  # noqa: SIM115 - must fail before returning a handle
    assert caught.value.errno == errno.EROFS


def test_desktop_probes_answer_enoent_without_a_query(tmp_path: Path, move_port: int) -> None:
    """Against a PACS that does not exist, any query would fail with EIO: probes must not ask."""
    nobody = PeerAddress("127.0.0.1", free_port(), "NOBODY")
    options = pacs_options(nobody, tmp_path / "cache", timeout=2)
    with mounted(tmp_path / "mnt", options) as handle:
        for name in (
            ".Trash",
            ".Trash-1000",
            ".xdg-volume-info",
            "autorun.inf",
            "desktop.ini",
            ".hidden",
            ".directory",
        ):
            with pytest.raises(FileNotFoundError):
                os.stat(handle.mountpoint / name)
        with pytest.raises(OSError) as caught:
            os.listdir(handle.mountpoint)  # the root does need the PACS
        assert caught.value.errno == errno.EIO


def test_patient_root_model_gives_the_same_tree(
    pacs: OrthancServer | DcmqrscpServer,
    tmp_path: Path,
    move_port: int,
    archive_by_sop: dict[str, pydicom.Dataset],
) -> None:
    study_model = options_for(pacs, tmp_path / "cache1", move_port, retrieve="get")
    patient_model = options_for(pacs, tmp_path / "cache2", move_port, retrieve="get", model="patient")
    with mounted(tmp_path / "mnt1", study_model) as first:
        expected = run("find", str(first.mountpoint), "-printf", "%P\\n").splitlines()
    with mounted(tmp_path / "mnt2", patient_model) as second:
        got = run("find", str(second.mountpoint), "-printf", "%P\\n").splitlines()
        assert sorted(got) == sorted(expected)
        for copy in list(second.mountpoint.rglob("*.dcm"))[:3]:
            assert_same_dataset(copy, archive_by_sop)
