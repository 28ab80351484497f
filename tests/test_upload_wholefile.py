"""``dicomfs.dimse.wholefile``: a Part 10 file cut short is told from a whole one before a C-STORE.

pydicom reads such files without an error (a short value is what ``read`` returned, a missing
delimiter only a warning), which is why uploads walk the element headers themselves. The files
are the synthetic archive's (explicit VR, RLE encapsulated, an SR with sequences), the SR
re-encoded with undefined-length sequences (explicit, implicit and deflated), and pydicom's own
big endian test file.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomfs.core.errors import NotDicom
from dicomfs.dimse.sender import pydicom_words, uid_words
from dicomfs.dimse.wholefile import check_whole


def undefined_length_sr(source: Path, folder: Path, syntax: str) -> Path:
    """The archive's SR with its ContentSequence and items of undefined length, in ``syntax``."""
    ds = pydicom.dcmread(source)
    ds["ContentSequence"].is_undefined_length = True
    for item in ds.ContentSequence:
        item.is_undefined_length_sequence_item = True
    ds.file_meta.TransferSyntaxUID = syntax
    path = folder / f"sr-{syntax}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def whole_files(archive_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    by_series = {path.parent.name: path for path in archive_files}
    folder = tmp_path_factory.mktemp("wholefile")
    files = {key: by_series[key] for key in ("axial", "rle", "sr", "multiframe")}
    for name, syntax in (
        ("sr-undefined", "1.2.840.10008.1.2.1"),
        ("sr-implicit", ImplicitVRLittleEndian),
        ("sr-deflated", DeflatedExplicitVRLittleEndian),
    ):
        files[name] = undefined_length_sr(by_series["sr"], folder, syntax)
    files["bigendian"] = Path(str(get_testdata_file("MR_small_bigendian.dcm")))
    return files


def cut(source: Path, length: int, folder: Path) -> str:
    path = folder / f"cut-{length}-{source.name}"
    path.write_bytes(source.read_bytes()[:length])
    return str(path)


def test_whole_files_pass(whole_files: dict[str, Path]) -> None:
    for path in whole_files.values():
        check_whole(str(path))


@pytest.mark.parametrize(
    ("key", "back", "said"),
    [
        ("axial", 1000, "truncated: element (7FE0,0010) declares 2048 bytes, 1048 present"),
        ("bigendian", 3, "truncated: element (7FE0,0010) declares 8192 bytes, 8189 present"),
        ("rle", 8, "truncated: encapsulated pixel data (7FE0,0010) of undefined length ends without"),
        ("rle", 20, "truncated: a fragment of encapsulated pixel data (7FE0,0010) declares"),
        ("sr-undefined", 8, "truncated: sequence (0040,A730) of undefined length ends without"),
        ("sr-implicit", 30, "truncated: element (0040,A160) declares 42 bytes"),
        ("sr-deflated", 5, "truncated: the deflated data set ends before its deflate stream does"),
    ],
)
def test_a_file_cut_short_says_where(
    whole_files: dict[str, Path], tmp_path: Path, key: str, back: int, said: str
) -> None:
    source = whole_files[key]
    with pytest.raises(NotDicom, match="fix: copy the whole file again") as caught:
        check_whole(cut(source, source.stat().st_size - back, tmp_path))
    assert str(caught.value).startswith(said), caught.value


def test_every_cut_is_caught_but_between_top_level_elements(
    whole_files: dict[str, Path], tmp_path: Path
) -> None:
    """A cut exactly between two top-level elements leaves a shorter data set, whole in itself:
    undetectable from the file alone. Every other cut is caught."""
    for key in ("rle", "sr-undefined", "sr-implicit"):
        source = whole_files[key]
        original = pydicom.dcmread(source)
        for length in range(132, source.stat().st_size, 7):
            path = cut(source, length, tmp_path)
            try:
                check_whole(path)
            except NotDicom:
                continue
            shorter = pydicom.dcmread(path)
            for element in shorter:  # a prefix of the original, element for element
                assert original[element.tag] == element, (key, length, element.tag)


def test_no_dicm_says_what_to_do(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM\n" * 20)
    with pytest.raises(NotDicom) as caught:
        check_whole(str(text))
    said = str(caught.value)
    assert said.startswith("not a DICOM Part 10 file: no 'DICM' after a 128-byte preamble")
    assert "fix: " in said and "force=True" not in said


def test_words_of_uids_and_of_pydicom() -> None:
    private = pydicom.uid.UID("1.2.3.4.5.6.7")
    ct = pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.2")
    assert uid_words(private, with_uid=True) == "1.2.3.4.5.6.7"  # not "1.2.3.4.5.6.7 (1.2.3.4.5.6.7)"
    assert uid_words(ct, with_uid=True) == "CT Image Storage (1.2.840.10008.5.1.4.1.1.2)"
    assert uid_words(ct) == "CT Image Storage"
    refused = pydicom.errors.InvalidDicomError(
        "File is missing DICOM File Meta Information header or the 'DICM' prefix is missing from the "
        "header. Use force=True to force reading."
    )
    assert pydicom_words(refused) == (
        "File is missing DICOM File Meta Information header or the 'DICM' prefix is missing from the header"
    )
