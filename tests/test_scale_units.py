"""In-process parts of huge listings (issue #12): paged readdir entries, compact rows, the big index."""

from __future__ import annotations

import stat

import pytest
from pydicom.dataset import Dataset

from dicomfs.core.rows import RAW_PATIENT_ID
from dicomfs.dimse.queries import MAX_SHARED_VALUES, RowReader, identifier
from dicomfs.fuse.listings import OpenListings, entries_from
from dicomfs.views.node import Node
from tests.big_index import BigIndex, accession, date_range, study_uid

DIR, FILE = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644
CHILDREN = [Node(f"d{i}", True, 0.0) for i in range(3)] + [Node("f.dcm", False, 0.0)]


def mode_of(node: Node) -> int:
    return DIR if node.is_dir else FILE


def names(offset: int) -> list[tuple[str, int, int]]:
    return list(entries_from(CHILDREN, offset, mode_of, DIR))


def test_entries_resume_after_the_offset_libfuse_gives() -> None:
    whole = names(0)
    assert [name for name, _mode, _next in whole] == [".", "..", "d0", "d1", "d2", "f.dcm"]
    assert [offset for _name, _mode, offset in whole] == [1, 2, 3, 4, 5, 6]
    assert whole[-1][1] == FILE and whole[2][1] == DIR
    for taken in range(len(whole) + 1):  # a page ended after `taken` entries: the next resumes there
        assert names(whole[taken - 1][2] if taken else 0) == whole[taken:]


def test_entries_are_made_only_as_taken() -> None:
    class Counting(list[Node]):
        reads = 0

        def __getitem__(self, index):  # type: ignore[no-untyped-def,override]
            Counting.reads += 1
            return super().__getitem__(index)

    children = Counting(Node(f"s{i}", True, 0.0) for i in range(50_000))
    page = entries_from(children, 1000, mode_of, DIR)
    first = [next(page) for _ in range(10)]
    assert first[0] == ("s998", DIR, 1001)
    assert Counting.reads == 10


def test_open_listings_are_bounded_and_released() -> None:
    listings = OpenListings(max_open=2)
    first = listings.open(CHILDREN)
    second = listings.open(CHILDREN[:1])
    third = listings.open(CHILDREN[:2])
    assert 0 not in (first, second, third)
    assert listings.get(first) is None  # the oldest dropped past the bound
    assert listings.get(second) == CHILDREN[:1]
    listings.release(second)
    assert listings.get(second) is None
    assert len(listings) == 1


def match(**keys: str) -> Dataset:
    found = Dataset()
    found.QueryRetrieveLevel = "STUDY"
    for keyword, value in keys.items():
        setattr(found, keyword, value)
    return found


def test_rows_of_one_answer_share_equal_values() -> None:
    reader = RowReader(identifier("STUDY", StudyInstanceUID="", StudyDate="", PatientID=""))
    rows = [
        reader(match(StudyInstanceUID=f"1.2.{n}", StudyDate="20240615", PatientID="P1")) for n in range(3)
    ]
    assert rows[0] == {
        "QueryRetrieveLevel": "STUDY",
        "StudyInstanceUID": "1.2.0",
        "StudyDate": "20240615",
        "PatientID": "P1",
        RAW_PATIENT_ID: "P1",
    }
    assert rows[1]["StudyDate"] is rows[2]["StudyDate"]
    assert rows[1]["PatientID"] is rows[2][RAW_PATIENT_ID]
    assert rows[1]["StudyInstanceUID"] != rows[2]["StudyInstanceUID"]


def test_shared_values_are_bounded_per_keyword() -> None:
    reader = RowReader(identifier("STUDY", StudyInstanceUID=""))
    for n in range(MAX_SHARED_VALUES + 50):
        reader(match(StudyInstanceUID=f"1.2.{n}"))
    assert max(len(values) for values in reader._shared.values()) == MAX_SHARED_VALUES


# -- the big archive's own matching (PS3.4 C.2.2.2), which the mount tests rely on ---------------


@pytest.fixture(scope="module")
def index() -> BigIndex:
    return BigIndex(20_000)


def test_a_day_matches_exactly_its_studies(index: BigIndex) -> None:
    day = index.busiest_day()
    found = [entity.study for entity in index.match("STUDY", {"StudyDate": day})]
    assert found == index.studies_on(day) and found
    assert all(study.date == day for study in found)
    assert sum(len(index.studies_on(d)) for d in index.dates) == 20_000


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"StudyDate": "20230101-20230131"}, lambda s: "20230101" <= s.date <= "20230131"),
        ({"StudyDate": "-20230110"}, lambda s: s.date <= "20230110"),
        ({"StudyDate": "20241225-"}, lambda s: s.date >= "20241225"),
        ({"PatientID": "SC00042"}, lambda s: s.patient == 42),
        ({"PatientID": "SC0004?"}, lambda s: 40 <= s.patient <= 49),
        ({"AccessionNumber": accession(123)}, lambda s: s.number == 123),
        ({"AccessionNumber": "ACC000012*"}, lambda s: 120 <= s.number <= 129),
        ({"StudyInstanceUID": f"{study_uid(7)}\\{study_uid(9)}"}, lambda s: s.number in (7, 9)),
        (
            {"PatientID": "SC00042", "StudyDate": "20230101-20231231"},
            lambda s: s.patient == 42 and s.date < "2024",
        ),
    ],
)
def test_matching(index: BigIndex, keys: dict[str, str], expected: object) -> None:
    found = {entity.study.number for entity in index.match("STUDY", keys)}
    wanted = {study.number for study in index.studies if expected(study)}  # type: ignore[operator]
    assert found == wanted and found


def test_series_and_instances_name_their_study(index: BigIndex) -> None:
    series = list(index.match("SERIES", {"StudyInstanceUID": study_uid(5)}))
    assert [entity.series for entity in series] == [1, 2]
    uid = str(index.value(series[1], "SeriesInstanceUID"))
    images = list(index.match("IMAGE", {"SeriesInstanceUID": uid}))
    assert [(entity.study.number, entity.series, entity.instance) for entity in images] == [
        (5, 2, 1),
        (5, 2, 2),
    ]


def test_a_bad_date_range_is_refused() -> None:
    with pytest.raises(ValueError):
        date_range("2024-01-01")
