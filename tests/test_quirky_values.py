"""Values that are not quite DICOM, through a real mount (issue 7, items 4-6).

A PACS serves files holding the quirks that real archives send:
- ISO 2022 code extensions: GB2312 (ISO 2022 IR 58) designated by ``ESC $ ) A``, once per
  component or only once; KS X 1001 (IR 149); Greek (IR 126). No escape may reach a name.
- Decimal IS values: SeriesNumber "3.0", InstanceNumber "1.0", " +2.0 ", "10.0" are numbers;
  "1.5", "abc", "1e400" are not (the series shows the text, the file its SOP Instance UID).
- Study dates that do not parse ('20190229', '20150001', '201500AA', empty, garbage) give the
  epoch as time; 'YYYY-MM-DD' and 'YYYY.MM.DD' are dates. Never the mount time: the times are the
  same after an unmount and a remount (with a new cache, so nothing is remembered).

The values are written as raw elements, so pydicom neither validates nor re-encodes them. Two
PACSes serve them in turn: dicomfs's demo Q/R SCP, and Orthanc, which holds the files as sent.
The demo SCP decodes them for C-FIND and pynetdicom encodes them again: for the values here the
bytes come back the same (pydicom 3.0.2 keeps IR 58's escape sequence, and re-encodes it as it
came). Orthanc's C-GET (DCMTK) drops the trailing padding of an odd-length value it sends, so the
padded IS values here are even-length: the files read must equal the sources byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from dicomfs.demo.samples import deterministic_uid, make_instance
from dicomfs.demo.scp import DemoArchive
from tests.mounting import Mount, mounted, pacs_options
from tests.pacs_servers import OrthancServer

pytestmark = pytest.mark.integration

ESC = b"\x1b"
MARCH_1_2024 = 1709251200  # 2024-03-01 00:00:00 UTC
NOON = 12 * 3600  # make_instance's StudyTime


@dataclass(frozen=True)
class Instance:
    """One file: its place in the tree, the raw values under test, and where it must show."""

    patient_id: str
    study: str
    series: str
    patient_name: bytes = b"Quirky^Values"
    charset: str = "ISO_IR 192"
    study_date: bytes = b"20240301"
    study_time: bytes = b"120000"
    series_number: bytes = b"1"
    instance_number: bytes = b"1"
    # Expected: the path below the patient's directory ('' file name: the SOP Instance UID's).
    patient_dir: str = ""
    study_dir: str = ""
    series_dir: str = "001 CT"
    file_name: str = "0001.dcm"
    mtime: int = MARCH_1_2024 + NOON


def _gb(text: str) -> bytes:
    return text.encode("gb2312")


CN = "\\ISO 2022 IR 58"
INSTANCES = (
    # The reported case: GB2312 designated before each component.
    Instance(
        "CSGB",
        "cn",
        "cn",
        patient_name=b"Zhang^San=" + ESC + b"$)A" + _gb("张") + b"^" + ESC + b"$)A" + _gb("三"),
        charset=CN,
        patient_dir="Zhang^San=张^三 (CSGB)",
        study_dir="2024-03-01 cn (cn)",
    ),
    # Designated once: after the '^' the declared G1 set still reads the bytes.
    Instance(
        "CSGB2",
        "cn2",
        "cn2",
        patient_name=b"Li^Si=" + ESC + b"$)A" + _gb("李") + b"^" + _gb("四"),
        charset=CN,
        patient_dir="Li^Si=李^四 (CSGB2)",
        study_dir="2024-03-01 cn2 (cn2)",
    ),
    Instance(
        "KR",
        "kr",
        "kr",
        patient_name=b"Hong^Gildong="
        + ESC
        + b"$)C"
        + "홍".encode("euc_kr")
        + b"^"
        + ESC
        + b"$)C"
        + "길동".encode("euc_kr"),
        charset="\\ISO 2022 IR 149",
        patient_dir="Hong^Gildong=홍^길동 (KR)",
        study_dir="2024-03-01 kr (kr)",
    ),
    Instance(
        "GR",
        "gr",
        "gr",
        patient_name=b"Dionysios=" + ESC + b"-F" + "Διονύσιος".encode("iso8859_7"),
        charset="\\ISO 2022 IR 126",
        patient_dir="Dionysios=Διονύσιος (GR)",
        study_dir="2024-03-01 gr (gr)",
    ),
    # Decimal IS values.
    *(
        Instance(
            "IS",
            "numbers",
            "s3",
            series_number=b"3.0",
            instance_number=number,
            series_dir="003 CT",
            file_name=name,
        )
        for number, name in ((b"1.0", "0001.dcm"), (b"2.0", "0002.dcm"), (b"10.0", "0010.dcm"))
    ),
    *(
        Instance(
            "IS",
            "numbers",
            "s2",
            series_number=b" +2.0 ",
            instance_number=number,
            series_dir="002 CT",
            file_name=name,
        )
        for number, name in ((b" 1.0", "0001.dcm"), (b"+2.0", "0002.dcm"), (b"-1.0", "-001.dcm"))
    ),
    *(
        Instance(
            "IS",
            "numbers",
            "s15",
            series_number=b"1.5",
            instance_number=number,
            series_dir="1.5 CT",
            file_name="",
        )
        for number in (b"1.5", b"abc", b"1e400")
    ),
    # Study dates: unusable ones date the study (and all below it) at the epoch.
    Instance("DATES", "leap", "leap", study_date=b"20190229", study_dir="20190229 leap (leap)", mtime=0),
    Instance("DATES", "month", "month", study_date=b"20150001", study_dir="20150001 month (month)", mtime=0),
    Instance(
        "DATES", "letters", "letters", study_date=b"201500AA", study_dir="201500AA letters (letters)", mtime=0
    ),
    Instance("DATES", "empty", "empty", study_date=b"", study_dir="no date empty (empty)", mtime=0),
    Instance(
        "DATES", "garbage", "garbage", study_date=b"#garbage", study_dir="#garbage garbage (garbage)", mtime=0
    ),
    Instance("DATES", "dashes", "dashes", study_date=b"2024-03-01", study_dir="2024-03-01 dashes (dashes)"),
    Instance(
        "DATES",
        "dots",
        "dots",
        study_date=b"2024.03.01",
        study_time=b"10:15:00",
        study_dir="2024-03-01 dots (dots)",
        mtime=MARCH_1_2024 + 10 * 3600 + 15 * 60,
    ),
    Instance(
        "DATES",
        "good",
        "good",
        study_date=b"20200115",
        study_time=b"",
        study_dir="2020-01-15 good (good)",
        mtime=1579046400,
    ),
)


def _sop_uid(index: int) -> str:
    return str(deterministic_uid("quirky", index))


def _expected_path(index: int, instance: Instance) -> str:
    """The file's path below the mount point, as dicomfs must name it."""
    patient = instance.patient_dir or f"Quirky^Values ({instance.patient_id})"
    study = instance.study_dir or f"2024-03-01 {instance.study} ({instance.study})"
    name = instance.file_name or f"{_sop_uid(index)}.dcm"
    return f"{patient}/{study}/{instance.series_dir}/{name}"


def _put_raw(ds: pydicom.Dataset, keyword: str, value: bytes) -> None:
    """Set `keyword` to `value` verbatim (padded to even length) as a raw element."""
    tag = Tag(keyword)
    raw = value + b" " if len(value) % 2 else value
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, False, True)


def _write(folder: Path, index: int, instance: Instance) -> Path:
    ds = make_instance(
        patient_name="placeholder",
        patient_id=instance.patient_id,
        study_uid=deterministic_uid("quirky", instance.patient_id, instance.study),
        series_uid=deterministic_uid("quirky", instance.patient_id, instance.study, instance.series),
        sop_uid=_sop_uid(index),
        study_description=instance.study,
        accession=instance.study,
        seed=index,
        rows=8,
        columns=8,
    )
    ds.SpecificCharacterSet = instance.charset.split("\\") if "\\" in instance.charset else instance.charset
    path = folder / f"{index:02d}.dcm"
    ds.save_as(path, enforce_file_format=True)
    # Read back, so the raw elements are written as they are (the character set is unchanged).
    ds = pydicom.dcmread(path)
    raw_values = {
        "PatientName": instance.patient_name,
        "StudyDate": instance.study_date,
        "StudyTime": instance.study_time,
        "SeriesNumber": instance.series_number,
        "InstanceNumber": instance.instance_number,
    }
    for keyword, value in raw_values.items():
        _put_raw(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    written = pydicom.dcmread(path)
    for keyword, value in raw_values.items():
        element = written.get_item(keyword)
        assert isinstance(element, RawDataElement) and element.value is not None, keyword
        assert element.value.rstrip(b" ") == value.rstrip(b" "), (keyword, element.value, value)
    return path


@dataclass(frozen=True)
class QuirkyArchive:
    """A PACS holding the quirky files: its address and the files it must serve where."""

    host: str
    port: int
    ae_title: str
    files: dict[str, Path]  # expected path below the mount point -> source file


@pytest.fixture(scope="module")
def quirky_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("quirky-archive")
    files = {_expected_path(i, inst): _write(folder, i, inst) for i, inst in enumerate(INSTANCES)}
    assert len(files) == len(INSTANCES)
    return files


@pytest.fixture(scope="module", params=["demo", "orthanc"])
def quirky(
    request: pytest.FixtureRequest, quirky_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QuirkyArchive]:
    """The files served by dicomfs's demo Q/R SCP, then by Orthanc (which holds them as sent)."""
    if request.param == "orthanc":
        with OrthancServer(tmp_path_factory.mktemp("quirky-orthanc")) as server:
            server.load(list(quirky_files.values()))
            yield QuirkyArchive(server.host, server.port, server.ae_title, quirky_files)
        return
    archive = DemoArchive(next(iter(quirky_files.values())).parent, ae_title="QUIRKY")
    archive.start()
    try:
        assert archive.index is not None
        assert len(archive.index.instances) == len(INSTANCES), "the demo SCP skipped some files"
        yield QuirkyArchive("127.0.0.1", archive.port, archive.ae_title, quirky_files)
    finally:
        archive.stop()


def _options(pacs: QuirkyArchive, cachedir: Path) -> str:
    return pacs_options(pacs, cachedir, retrieve="get")


@pytest.fixture(scope="module")
def mount(quirky: QuirkyArchive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    base = tmp_path_factory.mktemp("quirky-mount")
    with mounted(base / "mnt", _options(quirky, base / "cache")) as handle:
        yield handle


def dataset_bytes(data: bytes) -> bytes:
    """The bytes after the preamble, 'DICM' and the File Meta group (PS3.10 7.1)."""
    assert data[128:132] == b"DICM"
    assert data[132:136] == b"\x02\x00\x00\x00" and data[136:138] == b"UL"  # (0002,0000) UL
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every path below `root` -> ('d' or 'f', st_mtime_ns), via os.walk and os.stat."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = ("d" if name in dirnames else "f", os.stat(path).st_mtime_ns)
    return found


def assert_daemon_healthy(mount: Mount) -> None:
    assert mount.process.poll() is None, f"dicomfs died:\n{mount.log_text()}"
    assert "Traceback" not in mount.log_text(), mount.log_text()


# --------------------------------------------------------------------------- tests


def test_tree_has_exactly_the_expected_names(mount: Mount, quirky: QuirkyArchive) -> None:
    tree = snapshot(mount.mountpoint)
    files = {path for path, (kind, _) in tree.items() if kind == "f"}
    assert files == set(quirky.files)
    directories = {path for path, (kind, _) in tree.items() if kind == "d"}
    assert directories == {str(Path(p).parent) for p in files} | {
        str(Path(p).parent.parent) for p in files
    } | {str(Path(p).parts[0]) for p in files}
    # No escape sequence or its remains: no ESC, and not the '$)A' / '$)C' / '-F' that followed it.
    for path in tree:
        assert "\x1b" not in path and "$)" not in path and "-F" not in path, path
    assert_daemon_healthy(mount)


@pytest.mark.parametrize("index", range(len(INSTANCES)))
def test_every_file_reads_back_byte_equal(mount: Mount, quirky: QuirkyArchive, index: int) -> None:
    path = _expected_path(index, INSTANCES[index])
    data = (mount.mountpoint / path).read_bytes()
    assert dataset_bytes(data) == dataset_bytes(quirky.files[path].read_bytes())
    assert str(pydicom.dcmread(mount.mountpoint / path).SOPInstanceUID) == _sop_uid(index)
    assert_daemon_healthy(mount)


@pytest.mark.parametrize("index", range(len(INSTANCES)))
def test_times_are_the_studys_never_the_mount_time(mount: Mount, index: int) -> None:
    instance = INSTANCES[index]
    path = mount.mountpoint / _expected_path(index, instance)
    # The file, its series and its study directory all carry the study's time.
    for level in (path, path.parent, path.parent.parent):
        assert os.stat(level).st_mtime_ns == instance.mtime * 10**9, level
    # A patient directory: its newest study's time, or the epoch when the PACS lists patients
    # without studies (a Patient Root PATIENT-level query).
    patient_times = {0} | {i.mtime for i in INSTANCES if i.patient_id == instance.patient_id}
    assert os.stat(path.parent.parent.parent).st_mtime_ns // 10**9 in patient_times
    assert_daemon_healthy(mount)


def test_names_and_times_are_the_same_after_a_remount(
    mount: Mount, quirky: QuirkyArchive, tmp_path: Path
) -> None:
    first = snapshot(mount.mountpoint)
    assert len(first) > len(INSTANCES)
    # A new cache: the second mount computes every name and time again.
    with mounted(tmp_path / "mnt", _options(quirky, tmp_path / "cache")) as again:
        assert snapshot(again.mountpoint) == first
        assert_daemon_healthy(again)
