"""Hostile values from a PACS become legal, unique, stable names on a real mount (issue #4).

The archive is dicomfs's own demo Q/R SCP serving files whose names, IDs, descriptions, accession
and instance numbers hold '/', '.', '..', NUL and other controls, bidi marks, 1,000-byte values,
bytes invalid for the declared character set, ISO 2022 Japanese, GB18030, undeclared non-ASCII,
names differing only in case, and twin series.  Raw byte values are written as RawDataElements so
pydicom neither validates nor re-encodes them.

The demo SCP answers C-FIND from values pydicom decoded and re-encodes them, so two hostile
inputs reach dicomfs's listings changed: bytes invalid in UTF-8 ('ISO_IR 192') arrive as U+FFFD,
and the '^' that pydicom wrote in JIS mode for the single-valued 'ISO 2022 IR 87' arrives as '?'.
Everything else (invalid ISO 2022 escapes, C1 bytes, undeclared UTF-8 and Latin-1, NULs, raw
non-numeric IS values) passes through as stored.  C-GET sends the files' raw elements unchanged.
"""

from __future__ import annotations

import os
import subprocess
import unicodedata
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

pytestmark = pytest.mark.integration

Value = str | bytes
Charset = str | list[str] | None

LONG_ASCII = "x" * 1000
LONG_UTF8 = "Ä" * 500  # 1,000 bytes of UTF-8
JIS = ["", "ISO 2022 IR 87"]  # ASCII in G0, JIS X 0208 by escape sequence (PS3.5 6.1.2.5.3)


@dataclass(frozen=True)
class Case:
    """One patient with one study; `series_count` series of `instance_numbers` instances each."""

    patient_name: Value
    patient_id: Value
    study: Value = "study"
    accession: Value = "ACC"
    series: Value = "series"
    series_number: Value = "1"
    instance_numbers: tuple[Value, ...] = ("1",)
    charset: Charset = "ISO_IR 192"
    series_count: int = 1


CASES = (
    Case("/", "/", study="/", accession="/", series="/", series_number=b"/"),
    Case("..", "..", study="..", accession="..", series="..", series_number=b".."),
    Case(".", ".", study=".", accession=".", series=".", series_number=b"."),
    Case("../../etc/passwd", "../../etc", study="a/../../b", accession="../..", series="./.hidden"),
    Case("NUL\x00inside^x", "id\x00nul", study="desc\x00nul", accession="acc\x00x", series="\x00"),
    Case(b"\x00", b"\x00\x00", study=b"\x00\x00", accession=b"\x00", series=b"\x00\x00"),
    Case("ctl\t\n\r\x07\x7f^y", "id\x01\x1f", study="\x85\x9bC1", accession="\x1b[31m", series="\b\b\b"),
    Case(
        "\u202eevil\u2066^bidi", "\u202eid", study="\u2066gpj.exe\u2069", accession="\u200f", series="\u202e"
    ),
    Case(LONG_ASCII, LONG_ASCII, study=LONG_ASCII, accession=LONG_ASCII, series=LONG_ASCII),
    Case(LONG_UTF8, LONG_UTF8, study=LONG_UTF8, accession=LONG_UTF8, series=LONG_UTF8),
    Case("Long^Twin", "L" * 999 + "1", study=LONG_ASCII),
    Case("Long^Twin", "L" * 999 + "2", study=LONG_ASCII),
    Case(
        b"Bad\xff\xfe^UTF8",
        b"bad-\xc3(",
        study=b"\xc3(\xa0\xa1",
        accession=b"\xf0\x28\x8c\x28",
        series=b"\xed\xa0\x80",
    ),
    Case(b"\x1b$B\xff\xff^broken", "bad-2022", study=b"\x1b$B\x7f", charset=JIS),
    Case(b"\x80\x9f^latin1-c1", "c1-latin1", study=b"\x81\x8d\x9b", charset="ISO_IR 100"),
    Case("Yamada^Tarou=山田^太郎=やまだ^たろう", "jp-1", study="胸部", series="肺野", charset=JIS),
    Case("Yamada^Hanako=山田^花子", "jp-2", study="頭部", charset="ISO 2022 IR 87"),
    Case("Zhang^San=张三", "cn", study="胸部CT", series="肺窗", charset="GB18030"),
    Case(b"M\xc3\xbcller^Hans", "utf8-undeclared", study=b"Sch\xc3\xa4del", charset=None),
    Case(b"Gon\xe7alves^Jos\xe9", "latin1-undeclared", study=b"Cr\xe2ne", charset=None),
    Case("Doe^Jane", "case-a"),
    Case("DOE^JANE", "CASE-A"),
    Case("Straße", "ss"),
    Case("STRASSE", "SS"),
    Case("Jos\u00e9^NFC", "nf-\u00e9"),  # the same name composed and decomposed (Unicode NFC/NFD)
    Case("Jose\u0301^NFC", "nf-e\u0301"),
    Case("Star^Wild", "*", study="*", series="?"),
    Case("Back^Slash", "a\\b", study="x\\y", accession="\\"),
    Case("Empty^ID", "", study="", accession="", series="", series_number=""),
    Case("Twin^Series", "twins", series="same", series_number="7", series_count=2),
    Case(
        "Instances^Hostile",
        "instances",
        instance_numbers=(
            "1",
            "1",
            "01",
            "../x",
            "/",
            ".",
            "..",
            b"\x00",
            "99999999999999999999",
            "-0",
            "",
            " 7 ",
        ),
    ),
)

#: Decoded text that must survive into some name (proves decoding, not just sanitizing).
# (pydicom writes '^' in JIS X 0208 mode for the single-valued 'ISO 2022 IR 87': it reads back as U+FFFD.)
EXPECTED_TEXT = (
    "山田^太郎",
    "やまだ^たろう",
    "山田",
    "花子",
    "张三",
    "肺窗",
    "胸部CT",
    "Müller^Hans",
    "Gonçalves^José",
    "Doe^Jane",
    "DOE^JANE",
)


def _put(ds: pydicom.Dataset, keyword: str, value: Value) -> None:
    """Set `keyword`: str through pydicom (encoded on save), bytes verbatim as a raw element.

    pydicom decodes and re-encodes raw elements on save when the character set changed since
    the dataset was read, so bytes must be put into a dataset read back from its file.
    """
    tag = Tag(keyword)
    vr = dictionary_VR(tag)
    if isinstance(value, str) and vr in ("IS", "DS"):
        value = value.encode("latin-1")  # pydicom refuses non-numbers; the PACS does not
    if isinstance(value, str):
        setattr(ds, keyword, value)
        return
    raw = value + b" " if len(value) % 2 else value
    ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)


def _text(value: Value) -> str:
    return value if isinstance(value, str) else value.decode("latin-1")


def _write_case(folder: Path, number: int, case: Case) -> list[Path]:
    paths = []
    study_uid = deterministic_uid("hostile", number)
    for series_index in range(case.series_count):
        series_uid = deterministic_uid("hostile", number, series_index)
        for index, instance_number in enumerate(case.instance_numbers):
            ds = make_instance(
                patient_name="placeholder",
                patient_id="placeholder",
                study_uid=study_uid,
                series_uid=series_uid,
                sop_uid=deterministic_uid("hostile", number, series_index, index),
                seed=number * 100 + series_index * 10 + index,
                rows=8,
                columns=8,
            )
            if case.charset is None:
                del ds.SpecificCharacterSet
            else:
                ds.SpecificCharacterSet = case.charset
            values = (
                ("PatientName", case.patient_name),
                ("PatientID", case.patient_id),
                ("StudyDescription", case.study),
                ("AccessionNumber", case.accession),
                ("SeriesDescription", case.series),
                ("SeriesNumber", case.series_number),
                ("InstanceNumber", instance_number),
            )
            for keyword, value in values:
                if isinstance(value, str):
                    _put(ds, keyword, value)
            path = folder / f"{number:02d}-{series_index}-{index:02d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            ds = pydicom.dcmread(path)  # now raw elements are written as they are
            for keyword, value in values:
                if isinstance(value, bytes):
                    _put(ds, keyword, value)
            ds.save_as(path, enforce_file_format=True)
            _assert_raw_values(path, values)
            paths.append(path)
    return paths


def _assert_raw_values(path: Path, values: tuple[tuple[str, Value], ...]) -> None:
    """The file holds the bytes values exactly (padded to even length), not re-encoded."""
    ds = pydicom.dcmread(path)
    for keyword, value in values:
        if isinstance(value, bytes):
            raw = ds.get_item(keyword)
            assert isinstance(raw, RawDataElement) and raw.value is not None, keyword
            assert raw.value.rstrip(b" ") == value.rstrip(b" "), (keyword, raw.value, value)


@dataclass(frozen=True)
class HostileArchive:
    archive: DemoArchive
    files: dict[str, Path]  # SOP Instance UID -> generated file


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileArchive]:
    folder = tmp_path_factory.mktemp("hostile-archive")
    paths = [path for number, case in enumerate(CASES) for path in _write_case(folder, number, case)]
    files = {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID): path for path in paths}
    assert len(files) == len(paths)
    archive = DemoArchive(folder, ae_title="HOSTILE")
    archive.start()
    try:
        assert archive.index is not None
        assert len(archive.index.instances) == len(paths), "the demo SCP skipped some hostile files"
        yield HostileArchive(archive, files)
    finally:
        archive.stop()


def _options(archive: DemoArchive, cachedir: Path) -> str:
    return pacs_options(archive, cachedir, retrieve="get")


@pytest.fixture(scope="module")
def mount(hostile: HostileArchive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    base = tmp_path_factory.mktemp("hostile-mount")
    with mounted(base / "mnt", _options(hostile.archive, base / "cache")) as handle:
        yield handle


# --------------------------------------------------------------------------- helpers


def walk_tree(root: Path) -> dict[str, list[str]]:
    """Directory (relative, '' for the root) -> sorted names of its entries, via os.walk."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        tree[os.path.relpath(dirpath, root) if dirpath != str(root) else ""] = sorted(dirnames + filenames)
    return tree


def find_paths(root: Path, kind: str) -> set[str]:
    """`find ROOT -mindepth 1 -type KIND`, NUL-separated so no name can forge a line."""
    result = subprocess.run(
        ["find", str(root), "-mindepth", "1", "-type", kind, "-print0"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {os.fsdecode(p) for p in result.stdout.split(b"\0") if p}


def illegal_reason(name: str) -> str:
    """Why `name` is not a legal, harmless path component; '' when it is."""
    if name in ("", ".", ".."):
        return "empty or dot name"
    if name.startswith("."):
        return "hidden"
    if "/" in name or "\0" in name:
        return "slash or NUL"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name):
        return "control, format (bidi) or surrogate character"
    if len(name.encode("utf-8")) > 255:
        return "longer than 255 bytes"
    return ""


def dataset_bytes(data: bytes) -> bytes:
    """The bytes after the preamble, 'DICM' and the File Meta group (PS3.10 7.1)."""
    assert data[128:132] == b"DICM"
    assert data[132:136] == b"\x02\x00\x00\x00" and data[136:138] == b"UL"  # (0002,0000) UL
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


def assert_daemon_healthy(mount: Mount) -> None:
    assert mount.process.poll() is None, f"dicomfs died:\n{mount.log_text()}"
    assert "Traceback" not in mount.log_text(), mount.log_text()


# --------------------------------------------------------------------------- tests


def test_every_name_is_legal_and_unique(mount: Mount) -> None:
    tree = walk_tree(mount.mountpoint)
    bad = {f"{d}/{n!r}": illegal_reason(n) for d, names in tree.items() for n in names if illegal_reason(n)}
    assert not bad, bad
    for directory, names in tree.items():
        folded = [unicodedata.normalize("NFD", unicodedata.normalize("NFD", n).casefold()) for n in names]
        assert len(set(names)) == len(names), (directory, names)
        assert len(set(folded)) == len(folded), f"{directory}: names equal ignoring case: {names}"
    components = {name for names in tree.values() for name in names}
    missing = [text for text in EXPECTED_TEXT if not any(text in name for name in components)]
    assert not missing, (missing, sorted(components))
    # A Patient ID of NULs is padding only (PS3.5 6.2): it is the same patient as the empty ID.
    assert len(tree[""]) == len({_text(case.patient_id).strip(" \0") for case in CASES})
    assert_daemon_healthy(mount)


def test_walk_stays_inside_and_finds_every_instance(mount: Mount, hostile: HostileArchive) -> None:
    root = os.path.realpath(mount.mountpoint)
    walked = set()
    for dirpath, dirnames, filenames in os.walk(mount.mountpoint):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            assert os.path.commonpath([root, os.path.realpath(path)]) == root, path
            walked.add(path)
    files = find_paths(mount.mountpoint, "f")
    assert files | find_paths(mount.mountpoint, "d") == walked
    assert all(path.endswith(".dcm") for path in files)
    assert len(files) == len(hostile.files)
    series_dirs = {os.path.dirname(path) for path in files}
    assert len(series_dirs) == sum(case.series_count for case in CASES)
    assert_daemon_healthy(mount)


def test_every_file_reads_back_byte_equal(mount: Mount, hostile: HostileArchive) -> None:
    seen = set()
    for path in sorted(find_paths(mount.mountpoint, "f")):
        data = Path(path).read_bytes()
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        want = hostile.files[uid].read_bytes()
        assert dataset_bytes(data) == dataset_bytes(want), path
        seen.add(uid)
    assert seen == set(hostile.files)
    assert_daemon_healthy(mount)


def test_names_are_stable_across_listings_and_remounts(
    mount: Mount, hostile: HostileArchive, tmp_path: Path
) -> None:
    first = walk_tree(mount.mountpoint)
    assert walk_tree(mount.mountpoint) == first
    assert_daemon_healthy(mount)
    with mounted(tmp_path / "mnt", _options(hostile.archive, tmp_path / "cache")) as again:
        assert walk_tree(again.mountpoint) == first
        assert_daemon_healthy(again)
