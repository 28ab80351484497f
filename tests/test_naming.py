"""Table and property tests for dicomfs.views.naming and dicomfs.dimse.decode: hostile PACS values ->
safe, unique names."""

from __future__ import annotations

import io
import random
import struct
import unicodedata
import warnings

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import config
from pydicom.filereader import read_dataset
from pydicom.tag import Tag

from dicomfs.dimse import iso2022
from dicomfs.dimse.decode import text_of
from dicomfs.views import naming
from dicomfs.views.naming import (
    MAX_NAME_BYTES,
    UNKNOWN_TIME,
    instance_file_name,
    integer_value,
    make_unique,
    patient_dir_name,
    sanitize,
    series_dir_name,
    study_dir_name,
    study_time,
)

LONG = "x" * 1000
LONG_MB = "é" * 1000  # 2,000 bytes of UTF-8


def wire_dataset(elements: dict[str, bytes]) -> pydicom.Dataset:
    """Decode raw implicit-VR little-endian bytes, as a C-FIND identifier arrives off the network."""
    stream = b""
    for keyword, value in sorted(elements.items(), key=lambda kv: Tag(kv[0])):
        tag = Tag(keyword)
        padded = value + b" " if len(value) % 2 else value
        stream += struct.pack("<HHI", tag.group, tag.element, len(padded)) + padded
    return read_dataset(io.BytesIO(stream), is_implicit_VR=True, is_little_endian=True)


def collision_key(name: str) -> str:
    """Canonical caseless key (Unicode D145): equal keys are one file on a case-insensitive disk."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def is_legal(name: str) -> bool:
    """A single harmless path component within NAME_MAX."""
    return (
        bool(name)
        and name not in {".", ".."}
        and not name.startswith(".")
        and "/" not in name
        and all(unicodedata.category(c) not in {"Cc", "Cf", "Cs"} for c in name)
        and len(name.encode("utf-8")) <= MAX_NAME_BYTES
        and name == name.strip()
        and unicodedata.is_normalized("NFC", name)
    )


# --------------------------------------------------------------------------- sanitize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("CT CHEST", "CT CHEST"),
        ("a/b", "a_b"),
        ("/", "_"),
        ("..", "_."),
        (".", "_"),
        (".hidden", "_hidden"),
        ("../../etc/passwd", "_._.._etc_passwd"),
        ("a\x00b", "a b"),
        ("\x00", "_"),
        ("a\tb\nc\rd", "a b c d"),
        ("a\x7fb\x85c\x9fd", "a b c d"),
        ("evil\u202egpj.exe", "evilgpj.exe"),
        ("\u2066iso\u2069late", "isolate"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("  lots   of\u3000space  ", "lots of space"),
        ("", "_"),
        ("   ", "_"),
        ("e\u0301", "\u00e9"),  # NFC
        ("e\u200d\u0301", "\u00e9"),  # dropping a Cf mark exposes a composable pair
        ("\ud800lone", "\ufffdlone"),
        ("日本語", "日本語"),
    ],
)
def test_sanitize_table(raw: str, expected: str) -> None:
    assert sanitize(raw) == expected
    assert is_legal(sanitize(raw))


@pytest.mark.parametrize(
    ("raw", "max_bytes", "expected"),
    [
        (LONG, MAX_NAME_BYTES, "x" * 255),
        (LONG_MB, MAX_NAME_BYTES, "é" * 127),  # 254 bytes: the 128th 'é' would be split
        ("日本語", 8, "日本"),  # 3-byte characters: 8 bytes hold two
        ("日本語", 2, "_"),  # not even one fits
        ("😀😀", 7, "😀"),
        ("ab  cd", 3, "ab"),  # a cut that leaves a trailing space is stripped
        ("a\u0301\u0301", 3, "\u00e1"),  # never a dangling half of a combining sequence
    ],
)
def test_sanitize_truncates_on_character_boundaries(raw: str, max_bytes: int, expected: str) -> None:
    result = sanitize(raw, max_bytes)
    assert result == expected
    assert len(result.encode("utf-8")) <= max_bytes


@settings(max_examples=500)
@given(st.text())
def test_sanitize_properties(text: str) -> None:
    result = sanitize(text)
    assert is_legal(result)
    assert sanitize(result) == result


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_sanitize_respects_any_limit(text: str, max_bytes: int) -> None:
    result = sanitize(text, max_bytes)
    assert len(result.encode("utf-8")) <= max_bytes
    assert sanitize(result, max_bytes) == result


@settings(max_examples=500)
@given(st.text(alphabet=st.characters(max_codepoint=127)), st.integers(min_value=1, max_value=300))
def test_sanitize_shortcut_for_plain_ascii_gives_what_the_full_passes_give(text: str, max_bytes: int) -> None:
    """Plain names skip the per-character passes (issue #12: 2,000 study names per day listing)."""
    full = text
    for _ in range(4):
        cleaned = naming._clean_once(full, max_bytes)
        if cleaned == full:
            break
        full = cleaned
    assert sanitize(text, max_bytes) == (full or "_")


# --------------------------------------------------------------------------- composite names


@pytest.mark.parametrize(
    ("name", "pid", "expected"),
    [
        ("DOE^JANE", "PID0001", "DOE^JANE (PID0001)"),
        ("DOE^JANE^^^", "PID0001", "DOE^JANE (PID0001)"),
        ("", "PID0001", "(no name) (PID0001)"),
        ("DOE^JANE", "", "DOE^JANE"),
        ("", "", "(no name)"),
        ("../..", "a/b", "_._.. (a_b)"),
        ("\u202eDOE", "\x00ID", "DOE (ID)"),
        ("ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎", "P1", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎 (P1)"),
    ],
)
def test_patient_dir_name(name: str, pid: str, expected: str) -> None:
    assert patient_dir_name(name, pid) == expected


@pytest.mark.parametrize(
    ("name", "pid"), [(LONG, "PID0001"), (LONG_MB, "PID0001"), ("DOE", LONG), (LONG, LONG)]
)
def test_patient_dir_name_long_values_keep_the_id(name: str, pid: str) -> None:
    result = patient_dir_name(name, pid)
    assert is_legal(result)
    assert result.endswith(")")
    assert result.startswith(name[:50])
    if len(pid) < 50:
        assert result.endswith(f" ({pid})")


@pytest.mark.parametrize(
    ("date", "description", "accession", "expected"),
    [
        ("20240301", "CT CHEST", "ACC123", "2024-03-01 CT CHEST (ACC123)"),
        ("2024.03.01", "CT CHEST", "", "2024-03-01 CT CHEST"),
        ("20240301", "", "", "2024-03-01"),
        ("", "CT CHEST", "", "no date CT CHEST"),
        ("", "", "ACC1", "no date (ACC1)"),
        ("", "", "", "no date"),
        ("20241399", "CT", "", "20241399 CT"),  # invalid date kept, not invented
        ("2024/03/01", "CT", "", "2024_03_01 CT"),
        (" 20240301 ", "CT/PET", "A/1", "2024-03-01 CT_PET (A_1)"),
    ],
)
def test_study_dir_name(date: str, description: str, accession: str, expected: str) -> None:
    assert study_dir_name(date, description, accession) == expected


@pytest.mark.parametrize(
    ("date", "description", "accession"), [(LONG, LONG, LONG), ("20240301", LONG_MB, "ACC")]
)
def test_study_dir_name_long_values(date: str, description: str, accession: str) -> None:
    result = study_dir_name(date, description, accession)
    assert is_legal(result)
    assert result.endswith(f"({accession[:10]}") or result.endswith(")")


@pytest.mark.parametrize(
    ("number", "modality", "description", "expected"),
    [
        ("3", "CT", "Lung 1.0mm", "003 CT Lung 1.0mm"),
        (" 3 ", "CT", "", "003 CT"),
        ("1234", "MR", "T1", "1234 MR T1"),
        ("-1", "SR", "", "-01 SR"),
        ("x3", "CT", "", "x3 CT"),
        ("", "CT", "Scout", "CT Scout"),
        ("", "", "", "(unnamed series)"),
        ("3", "", "a/b\u202e", "003 a_b"),
        ("9" * 40, "CT", "", "9" * 32 + " CT"),  # not a sane integer: kept as (truncated) text
    ],
)
def test_series_dir_name(number: str, modality: str, description: str, expected: str) -> None:
    assert series_dir_name(number, modality, description) == expected


@pytest.mark.parametrize(
    ("number", "uid", "expected"),
    [
        ("1", "1.2.3", "0001.dcm"),
        ("12345", "1.2.3", "12345.dcm"),
        ("", "1.2.3.4", "1.2.3.4.dcm"),
        ("abc", "1.2.3.4", "1.2.3.4.dcm"),
        ("", "", "(no uid).dcm"),
        ("", "../x", "_._x.dcm"),
        ("", ".", "(no uid).dcm"),
    ],
)
def test_instance_file_name(number: str, uid: str, expected: str) -> None:
    assert instance_file_name(number, uid) == expected


@pytest.mark.parametrize("uid", [LONG, LONG_MB, "1." * 500])
def test_instance_file_name_long_uid(uid: str) -> None:
    result = instance_file_name("", uid)
    assert is_legal(result)
    assert result.endswith(".dcm")


# --------------------------------------------------------------------------- make_unique


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("a", "1")],
        [("a", "1"), ("b", "2")],
        [("a", "1"), ("a", "2")],
        [("a", "1"), ("a", "2"), ("a", "3"), ("b", "4")],
        [("CT", "1"), ("ct", "2")],  # case-only duplicates
        [("STRASSE", "1"), ("straße", "2")],  # equal after casefold
        [("\u00e9", "1"), ("e\u0301", "2")],  # canonically equivalent
        [("0001.dcm", "1.2.1"), ("0001.dcm", "1.2.2")],
        [("x" * 255, "1"), ("x" * 255, "2")],
        [("x" * 251 + ".dcm", "1"), ("x" * 251 + ".dcm", "2")],
        [("é" * 127, "1"), ("é" * 127, "2")],
        [("a", "1"), ("a", "1")],  # same uid twice (caller should de-duplicate)
        [("a", "1"), ("a", "1"), ("a", "1"), ("a (2)", "9")],
    ],
)
def test_make_unique_table(pairs: list[tuple[str, str]]) -> None:
    result = make_unique(pairs)
    assert len(result) == len(pairs)
    assert len({collision_key(n) for n in result}) == len(result)
    assert all(len(n.encode("utf-8")) <= MAX_NAME_BYTES for n in result)
    assert all(not n.startswith(" ") for n in result)
    for (name, _), new in zip(pairs, result, strict=True):
        if name.endswith(".dcm"):
            assert new.endswith(".dcm")


def test_make_unique_suffixes_whole_group_only() -> None:
    result = make_unique(
        [("a", "1.2.3"), ("b", "1.2.4"), ("A", "1.2.5"), ("0001.dcm", "1"), ("0001.dcm", "2")]
    )
    assert result[1] == "b"
    assert result[0].startswith("a [") and result[2].startswith("A [")
    assert result[0][len("a ") :] != result[2][len("A ") :]
    assert result[3].startswith("0001 [") and result[3].endswith("].dcm")
    assert len(result[0]) == len("a [123456]")


def test_make_unique_is_stable_across_calls() -> None:
    pairs = [("a", "1"), ("a", "2")]
    assert make_unique(pairs) == make_unique(list(pairs))
    assert make_unique(pairs[::-1]) == make_unique(pairs)[::-1]


def test_make_unique_suffix_clashing_with_existing_name() -> None:
    import hashlib

    digest = hashlib.sha256(b"2").hexdigest()[:6]
    pairs = [("a", "1"), ("a", "2"), (f"a [{digest}]", "3")]
    result = make_unique(pairs)
    assert len(set(result)) == 3


names_st = st.sampled_from(["a", "A", "b", "0001.dcm", "0001.DCM", "x" * 255, "é" * 127, "e\u0301", ""])
pairs_st = st.lists(
    st.tuples(st.one_of(names_st, st.text(max_size=5)), st.text(min_size=0, max_size=8)), max_size=12
)


@settings(max_examples=300)
@given(pairs_st, st.randoms(use_true_random=False))
def test_make_unique_properties(pairs: list[tuple[str, str]], rnd: random.Random) -> None:
    result = make_unique(pairs)
    assert len({collision_key(n) for n in result}) == len(result)
    assert len(set(result)) == len(result)
    assert all(len(n.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES for n in result)
    shuffled_idx = list(range(len(pairs)))
    rnd.shuffle(shuffled_idx)
    shuffled = make_unique([pairs[i] for i in shuffled_idx])
    # Same output for each (name, uid) pair whatever the order (as a multiset for repeated pairs).
    assert sorted(zip(pairs, result, strict=True)) == sorted(
        zip([pairs[i] for i in shuffled_idx], shuffled, strict=True)
    )


@given(st.lists(st.tuples(names_st, st.uuids().map(str)), max_size=12, unique_by=lambda p: p[1]))
def test_make_unique_unique_uids_map_by_pair(pairs: list[tuple[str, str]]) -> None:
    forward = dict(zip(pairs, make_unique(pairs), strict=True))
    backward = dict(zip(pairs[::-1], make_unique(pairs[::-1]), strict=True))
    assert forward == backward
    for (name, _), new in forward.items():
        if sum(collision_key(n) == collision_key(name) for n, _ in pairs) == 1:
            assert new == name  # lonely names are never decorated


# --------------------------------------------------------------------------- text_of

JAPANESE_H31 = (  # PS3.5 H.3.1: JIS X 0201 katakana, then JIS X 0208 via escape sequences
    b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J"
)
JAPANESE_H32 = (  # PS3.5 H.3.2: ASCII, then JIS X 0208
    b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"
)


@pytest.mark.parametrize(
    ("elements", "keyword", "expected"),
    [
        (
            {"SpecificCharacterSet": b"ISO 2022 IR 13\\ISO 2022 IR 87", "PatientName": JAPANESE_H31},
            "PatientName",
            "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
        ),
        (
            {"SpecificCharacterSet": b"\\ISO 2022 IR 87", "PatientName": JAPANESE_H32},
            "PatientName",
            "Yamada^Tarou=山田^太郎=やまだ^たろう",
        ),
        (
            {"SpecificCharacterSet": b"GB18030", "PatientName": "Wang^XiaoDong=王^小东=".encode("gb18030")},
            "PatientName",
            "Wang^XiaoDong=王^小东",
        ),
        (
            {"SpecificCharacterSet": b"GB18030", "StudyDescription": "头部 CT 平扫".encode("gb18030")},
            "StudyDescription",
            "头部 CT 平扫",
        ),
        (
            {"SpecificCharacterSet": b"ISO_IR 100", "PatientName": "Buc^Jérôme".encode("latin-1")},
            "PatientName",
            "Buc^Jérôme",
        ),
        (
            {"SpecificCharacterSet": b"ISO_IR 192", "StudyDescription": "Schädel/Hals".encode()},
            "StudyDescription",
            "Schädel/Hals",
        ),
        ({"StudyDescription": b"CT CHEST"}, "StudyDescription", "CT CHEST"),
        ({"StudyDescription": b"CT CHEST"}, "PatientName", ""),  # absent
        ({"StudyDescription": b""}, "StudyDescription", ""),  # empty
        ({"StudyDescription": b"CT"}, "NoSuchKeyword", ""),
        ({"ModalitiesInStudy": b"CT\\PT"}, "ModalitiesInStudy", "CT\\PT"),  # multi-valued
        ({"SeriesNumber": b"3"}, "SeriesNumber", "3"),
        ({"StudyDate": b"20240301"}, "StudyDate", "20240301"),
        # No charset declared: undeclared UTF-8 is read as UTF-8, anything else as Latin-1.
        ({"PatientName": "Müller^Jörg".encode()}, "PatientName", "Müller^Jörg"),
        ({"PatientName": "Müller^Jörg".encode("latin-1")}, "PatientName", "Müller^Jörg"),
        ({"PatientName": b"\xff\xfeX"}, "PatientName", "\xff\xfeX"),
    ],
)
def test_text_of_decodes_wire_datasets(elements: dict[str, bytes], keyword: str, expected: str) -> None:
    assert text_of(wire_dataset(elements), keyword) == expected


@pytest.mark.parametrize(
    "elements",
    [
        {"SpecificCharacterSet": b"ISO_IR 192", "PatientName": b"\xff\xfeDOE^JANE"},
        {"SpecificCharacterSet": b"ISO 2022 IR 87", "PatientName": b"\x1b$B\xff\xff\x1b(B"},
        {"SpecificCharacterSet": b"GB18030", "PatientName": b"\x81\x30"},
        {"SpecificCharacterSet": b"ISO_IR 999", "PatientName": b"DOE\xe9"},  # unknown charset
        {"SpecificCharacterSet": b"\xff\xfe", "PatientName": b"DOE"},  # hostile charset value
    ],
)
@pytest.mark.parametrize("mode", [config.WARN, config.RAISE])
def test_text_of_invalid_bytes_never_raise(elements: dict[str, bytes], mode: int) -> None:
    old = config.settings.reading_validation_mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = wire_dataset(elements)
    config.settings.reading_validation_mode = mode
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = text_of(ds, "PatientName")
    finally:
        config.settings.reading_validation_mode = old
    assert isinstance(result, str)
    assert is_legal(sanitize(result))


def test_text_of_invalid_utf8_uses_replacement() -> None:
    ds = wire_dataset({"SpecificCharacterSet": b"ISO_IR 192", "PatientName": b"\xff\xfeDOE^JANE"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert text_of(ds, "PatientName") == "\ufffd\ufffdDOE^JANE"


def test_text_of_invalid_integer_string() -> None:
    ds = wire_dataset({"SeriesNumber": b"x3", "InstanceNumber": b"12"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert text_of(ds, "SeriesNumber") == "x3"
    assert text_of(ds, "InstanceNumber") == "12"


def test_text_of_programmatic_dataset() -> None:
    ds = pydicom.Dataset()
    ds.PatientName = "DOE^JANE"
    ds.ModalitiesInStudy = ["CT", "PT"]
    ds.SeriesNumber = 3
    item = pydicom.Dataset()
    item.SeriesInstanceUID = "1.2.3"
    ds.ReferencedSeriesSequence = [item]
    assert text_of(ds, "PatientName") == "DOE^JANE"
    assert text_of(ds, "ModalitiesInStudy") == "CT\\PT"
    assert text_of(ds, "SeriesNumber") == "3"
    assert text_of(ds, "ReferencedSeriesSequence") == ""
    ds.PatientID = None
    assert text_of(ds, "PatientID") == ""


def test_japanese_end_to_end() -> None:
    ds = wire_dataset(
        {
            "SpecificCharacterSet": b"ISO 2022 IR 13\\ISO 2022 IR 87",
            "PatientName": JAPANESE_H31,
            "PatientID": b"\x1b$B;3ED\x1b(J/01",
        }
    )
    name = patient_dir_name(text_of(ds, "PatientName"), text_of(ds, "PatientID"))
    assert name == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう (山田_01)"


# --------------------------------------------------------------------------- ISO 2022 code extensions

ESC = b"\x1b"
# The reported case (issue 7): GB2312 designated into G1 by ESC $ ) A, once per component.
ZHANG_SAN_IR58 = (
    b"Zhang^San=" + ESC + b"$)A" + "张".encode("gb2312") + b"^" + ESC + b"$)A" + "三".encode("gb2312")
)


def _jis(text: str) -> bytes:
    """JIS X 0208 bytes of `text`, without Python's escape sequences."""
    return text.encode("iso2022_jp")[3:-3]


#: Every ISO 2022 term pydicom knows: (escape sequence, bytes after it, the text they are).
CODE_EXTENSIONS = {
    "ISO 2022 IR 6": (b"(B", b"Doe", "Doe"),
    "ISO 2022 IR 100": (b"-A", "Jérôme".encode("latin_1"), "Jérôme"),
    "ISO 2022 IR 101": (b"-B", "Łódź".encode("iso8859_2"), "Łódź"),
    "ISO 2022 IR 109": (b"-C", "Ġużeppi".encode("iso8859_3"), "Ġużeppi"),
    "ISO 2022 IR 110": (b"-D", "Jānis".encode("iso8859_4"), "Jānis"),
    "ISO 2022 IR 126": (b"-F", "Διονύσιος".encode("iso8859_7"), "Διονύσιος"),
    "ISO 2022 IR 127": (b"-G", "قباني".encode("iso8859_6"), "قباني"),
    "ISO 2022 IR 138": (b"-H", "שרון".encode("iso8859_8"), "שרון"),
    "ISO 2022 IR 144": (b"-L", "Иванов".encode("iso8859_5"), "Иванов"),
    "ISO 2022 IR 148": (b"-M", "Çağrı".encode("iso8859_9"), "Çağrı"),
    "ISO 2022 IR 166": (b"-T", "สมชาย".encode("tis_620"), "สมชาย"),
    "ISO 2022 IR 13": (b")I", "ﾔﾏﾀﾞ".encode("shift_jis"), "ﾔﾏﾀﾞ"),
    "ISO 2022 IR 87": (b"$B", _jis("山田") + ESC + b"(B", "山田"),
    "ISO 2022 IR 159": (b"$(D", b"\x30\x21" + ESC + b"(B", "丂"),  # JIS X 0212 row 16
    "ISO 2022 IR 149": (b"$)C", "홍길동".encode("euc_kr"), "홍길동"),
    "ISO 2022 IR 58": (b"$)A", "张三".encode("gb2312"), "张三"),
}


def test_every_code_extension_pydicom_knows_is_tested() -> None:
    known = {term for term in pydicom.charset.python_encoding if term.startswith("ISO 2022 IR")}
    assert set(CODE_EXTENSIONS) == known


@pytest.mark.parametrize("term", sorted(CODE_EXTENSIONS))
@pytest.mark.parametrize("value_1", ["", "ISO 2022 IR 6", "ISO 2022 IR 100"])
def test_code_extension_decodes_without_escape(term: str, value_1: str) -> None:
    sequence, encoded, text = CODE_EXTENSIONS[term]
    raw = b"Name^Given=" + ESC + sequence + encoded + b"^" + ESC + sequence + encoded
    charset = f"{value_1}\\{term}".encode()
    ds = wire_dataset(
        {"SpecificCharacterSet": charset, "PatientName": raw, "StudyDescription": ESC + sequence + encoded}
    )
    assert text_of(ds, "PatientName") == f"Name^Given={text}^{text}"
    assert text_of(ds, "StudyDescription") == text


@pytest.mark.parametrize("term", sorted(CODE_EXTENSIONS))
def test_code_extension_as_the_only_value(term: str) -> None:
    sequence, encoded, text = CODE_EXTENSIONS[term]
    ds = wire_dataset(
        {"SpecificCharacterSet": term.encode(), "PatientName": b"A^B=" + ESC + sequence + encoded}
    )
    assert text_of(ds, "PatientName") == f"A^B={text}"


def test_gb2312_by_escape_is_named_without_escape_remains() -> None:
    ds = wire_dataset(
        {"SpecificCharacterSet": b"\\ISO 2022 IR 58", "PatientName": ZHANG_SAN_IR58, "PatientID": b"CSGB"}
    )
    name = patient_dir_name(text_of(ds, "PatientName"), text_of(ds, "PatientID"))
    assert name == "Zhang^San=张^三 (CSGB)"


@pytest.mark.parametrize(
    ("charset", "raw", "expected"),
    [
        # Designated once, not again after '^': the declared G1 set still reads the bytes.
        (b"\\ISO 2022 IR 58", ESC + b"$)A" + "张".encode("gb2312") + b"^" + "三".encode("gb2312"), "张^三"),
        (
            b"\\ISO 2022 IR 149",
            ESC + b"$)C" + "홍".encode("euc_kr") + b"^" + "길동".encode("euc_kr"),
            "홍^길동",
        ),
        # An escape sequence that was not declared still says what follows.
        (b"ISO 2022 IR 6", ESC + b"$)A" + "张".encode("gb2312"), "张"),
        # Unknown escapes, terminal colours, a cut-off escape: consumed whole.
        (b"\\ISO 2022 IR 58", b"A" + ESC + b"$)Z" + b"B", "AB"),
        (b"\\ISO 2022 IR 58", ESC + b"[1;31mRED" + ESC + b"[0m", "RED"),
        (b"\\ISO 2022 IR 58", b"DOE" + ESC, "DOE"),
        (b"\\ISO 2022 IR 58", b"DOE" + ESC + b"$", "DOE"),
        (b"\\ISO 2022 IR 58", ESC + ESC + b"$)A" + "张".encode("gb2312"), "张"),
        # Half a two-byte character, then a delimiter: U+FFFD, and the rest reads on.
        (b"\\ISO 2022 IR 58", ESC + b"$)A\xd5^X", "\ufffd^X"),
        (b"\\ISO 2022 IR 87", ESC + b"$B;" + ESC + b"(B^X", "\ufffd^X"),
        # In JIS X 0208 '^' (0x5E) and '=' (0x3D) are halves of characters, not delimiters.
        (b"\\ISO 2022 IR 87", ESC + b"$B" + _jis("表示") + ESC + b"(B", "表示"),
        # Stand-alone sets have no code extensions: the escape goes, the rest reads as declared.
        (b"ISO_IR 192", "Jörg".encode() + ESC + b"$)A", "Jörg"),
        (b"GB18030", ESC + b"$)A" + "张".encode("gb18030"), "张"),
        # No charset at all: the escape goes, UTF-8 when valid, else Latin-1.
        (None, ESC + b"(B" + "Jörg".encode(), "Jörg"),
        (None, ESC + b"-A" + "Jörg".encode("latin-1"), "Jörg"),
    ],
)
def test_escape_sequences_never_reach_the_text(charset: bytes | None, raw: bytes, expected: str) -> None:
    elements = {"PatientName": raw}
    if charset is not None:
        elements["SpecificCharacterSet"] = charset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert text_of(wire_dataset(elements), "PatientName") == expected


def test_jis_x_0208_table_row_holds_a_delimiter_byte() -> None:
    # The row above proves something only if a character of it holds a PN delimiter byte.
    assert _jis("表") == b"I="


def test_escapes_in_converted_values_are_dropped() -> None:
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 58"]
    ds.PatientName = "Zhang^San=\x1b$)A张^\x1b$)A三"  # what pydicom 3.0.2 makes of ZHANG_SAN_IR58
    assert text_of(ds, "PatientName") == "Zhang^San=张^三"


@given(
    raw=st.binary(max_size=40).map(lambda b: b.replace(b"\x00", b"")),
    escapes=st.lists(
        st.sampled_from([b"$)A", b"$)C", b"$B", b"$(D", b"(B", b"(J", b")I", b"-A", b"-T", b"$", b"[3", b""])
    ),
    charset=st.sampled_from(
        [b"", b"\\ISO 2022 IR 58", b"ISO 2022 IR 13\\ISO 2022 IR 87", b"ISO_IR 192", b"GB18030"]
    ),
)
@settings(max_examples=300, deadline=None)
def test_no_escape_survives_any_bytes(raw: bytes, escapes: list[bytes], charset: bytes) -> None:
    value = raw + b"".join(ESC + e for e in escapes) + raw
    elements = {"PatientName": value, "StudyDescription": value}
    if charset:
        elements["SpecificCharacterSet"] = charset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = wire_dataset(elements)
        for keyword in ("PatientName", "StudyDescription"):
            assert "\x1b" not in text_of(ds, keyword)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"A" + ESC + b"$)A", 4), (ESC + b"[1;31m", 7), (ESC, 1), (ESC + b"$", 2), (ESC + b"$(D", 4)],
)
def test_escape_length(value: bytes, expected: int) -> None:
    assert iso2022.escape_length(value, value.index(ESC)) == expected


# --------------------------------------------------------------------------- IS values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("3.0", 3),
        (" 1.0 ", 1),
        ("+2.0", 2),
        ("-1.0", -1),
        ("10.0", 10),
        ("10.", 10),
        ("007", 7),
        ("1e1", 10),
        ("1.0E+1", 10),
        ("-0.0", 0),
        ("3.0\x00", 3),
        ("999999999999", 999_999_999_999),
        ("1.5", None),
        ("abc", None),
        ("1e400", None),
        ("1000000000000", None),
        ("9" * 40, None),
        ("1" * 20 + ".0", None),
        ("0." + "0" * 40, None),  # too long to be a number anyone wrote
        ("", None),
        (" ", None),
        ("NaN", None),
        ("Infinity", None),
        ("1_000", None),
        ("١٢", None),  # Arabic-Indic digits: int() would take them, DICOM does not
        ("3.0.0", None),
        ("+", None),
        (".", None),
        ("1 2", None),
    ],
)
def test_integer_value(text: str, expected: int | None) -> None:
    assert integer_value(text) == expected


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("3.0", "003 CT"),
        (" 3.0 ", "003 CT"),
        ("+3.0", "003 CT"),
        ("-1.0", "-01 CT"),
        ("1.5", "1.5 CT"),
        ("1e400", "1e400 CT"),
    ],
)
def test_series_dir_name_decimal_numbers(number: str, expected: str) -> None:
    assert series_dir_name(number, "CT", "") == expected


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("1.0", "0001.dcm"),
        ("2.0", "0002.dcm"),
        ("10.0", "0010.dcm"),
        (" 1.0 ", "0001.dcm"),
        ("+2.0", "0002.dcm"),
        ("1.5", "1.2.3.dcm"),
        ("abc", "1.2.3.dcm"),
        ("1e400", "1.2.3.dcm"),
        ("1" * 40, "1.2.3.dcm"),
    ],
)
def test_instance_file_name_decimal_numbers(number: str, expected: str) -> None:
    assert instance_file_name(number, "1.2.3") == expected


# --------------------------------------------------------------------------- study times

MARCH_1_2024 = 1709251200.0  # 2024-03-01 00:00:00 UTC


@pytest.mark.parametrize(
    ("date", "clock", "expected"),
    [
        ("20240301", "", MARCH_1_2024),
        ("2024-03-01", "", MARCH_1_2024),
        ("2024.03.01", "", MARCH_1_2024),
        (" 20240301 ", "", MARCH_1_2024),
        ("20240229", "", MARCH_1_2024 - 86400),  # a real leap day
        ("20240301", "123456.789", MARCH_1_2024 + 12 * 3600 + 34 * 60 + 56),
        ("20240301", "12:34:56", MARCH_1_2024 + 12 * 3600 + 34 * 60 + 56),
        ("20240301", "1234", MARCH_1_2024 + 12 * 3600 + 34 * 60),
        ("20240301", "12", MARCH_1_2024 + 12 * 3600),
        ("20240301", "2561", MARCH_1_2024),  # unusable time: midnight of the date
        ("20240301", "235960", MARCH_1_2024),  # leap second
        ("20240301", "xx", MARCH_1_2024),
        ("19650101", "", -157766400.0),
        ("20190229", "", UNKNOWN_TIME),  # 2019 has no leap day
        ("20150001", "", UNKNOWN_TIME),
        ("201500AA", "", UNKNOWN_TIME),
        ("2024-03.01", "", UNKNOWN_TIME),  # mixed separators: not a date
        ("2024/03/01", "", UNKNOWN_TIME),
        ("", "", UNKNOWN_TIME),
        ("", "120000", UNKNOWN_TIME),
        ("2024", "", UNKNOWN_TIME),
        ("20240301-20240302", "", UNKNOWN_TIME),
        ("garbage!", "xx", UNKNOWN_TIME),
        ("\x00" * 8, "", UNKNOWN_TIME),
        (LONG, LONG, UNKNOWN_TIME),
    ],
)
def test_study_time(date: str, clock: str, expected: float) -> None:
    assert study_time(date, clock) == expected


def test_unknown_time_is_the_epoch() -> None:
    assert UNKNOWN_TIME == 0.0


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2024-03-01", "2024-03-01 CT"),
        ("2024.03.01", "2024-03-01 CT"),
        ("20190229", "20190229 CT"),
        ("201500AA", "201500AA CT"),
        ("2024-03.01", "2024-03.01 CT"),
    ],
)
def test_study_dir_name_date_forms(date: str, expected: str) -> None:
    assert study_dir_name(date, "CT", "") == expected
