"""The views' pure parts and their C-FINDs, in-process (issue #12): query keys, identifiers, the
calendar of by-date, study names, and the searches the views make against the demo archive."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom import evt

from dicomfs.app.compose import MountServices, build_namespace
from dicomfs.core.catalog import matching_key
from dicomfs.core.errors import NotFound
from dicomfs.core.querykeys import KEYS, BadQuery, is_uid, parse_query
from dicomfs.demo.samples import write_demo_archive
from dicomfs.demo.scp import DemoArchive, handle_find
from dicomfs.views import naming
from dicomfs.views.bydate import ByDate, day_path
from dicomfs.views.byid import identifier_of
from tests.test_catalog import options

# -- query directory names -------------------------------------------------------------------------


def test_every_allowed_key_has_the_vr_of_the_data_dictionary() -> None:
    for keyword, vr in KEYS.items():
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        assert dictionary_VR(tag) == vr, keyword


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        (
            "PatientName=DOE^J*,StudyDate=20240101-20240131,ModalitiesInStudy=CT",
            {"PatientName": "DOE^J*", "StudyDate": "20240101-20240131", "ModalitiesInStudy": "CT"},
        ),
        ("StudyDate=-20240101", {"StudyDate": "-20240101"}),
        ("StudyDate=20240101-", {"StudyDate": "20240101-"}),
        ("StudyTime=0800-123000.5", {"StudyTime": "0800-123000.5"}),
        ("StudyInstanceUID=1.2.3\\1.2.4", {"StudyInstanceUID": "1.2.3\\1.2.4"}),
        ("PatientName=Yamada^Tarou=山田^太郎", {"PatientName": "Yamada^Tarou=山田^太郎"}),
        ("PatientName=" + "N" * 64 + "=" + "M" * 64, {"PatientName": "N" * 64 + "=" + "M" * 64}),
        ("AccessionNumber=A?123", {"AccessionNumber": "A?123"}),
        ("PatientSex=F,PatientBirthDate=19700101", {"PatientSex": "F", "PatientBirthDate": "19700101"}),
    ],
)
def test_good_query_names_become_matching_keys(name: str, keys: dict[str, str]) -> None:
    assert parse_query(name) == keys


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("PatientNme=DOE", "unknown key 'PatientNme' (did you mean PatientName?)"),
        ("patientname=DOE", "did you mean PatientName?"),
        ("Modality=CT", "did you mean ModalitiesInStudy?"),
        ("DOE", "no Key=value pair"),
        ("", "no Key=value pair"),
        ("PatientID=A,PatientID=B", "PatientID given twice"),
        ("PatientName=", "has no value"),
        ("PatientName=**", "would match every study"),
        ("StudyDate=2024*", "give a date YYYYMMDD"),
        ("StudyDate=20240230", "give a date YYYYMMDD"),
        ("StudyDate=-", "give a date YYYYMMDD"),
        ("StudyDate=20240201-20240101", "ends before it begins"),
        ("StudyDate=2024-01-01", "give a date YYYYMMDD"),
        ("StudyTime=2500", "give a time"),
        ("StudyTime=1230.5", "give a time"),
        ("StudyInstanceUID=1.2.*", "is no UID"),
        ("StudyInstanceUID=" + "1." * 40 + "1", "is no UID"),
        ("ModalitiesInStudy=ct", "upper case"),
        ("ModalitiesInStudy=CT\\MR", "one value only"),
        ("AccessionNumber=" + "A" * 17, "at most 16 characters"),
        ("PatientName=" + "N" * 65, "at most 64 characters, not 65"),
        ("PatientName=A=B=C=D", "at most 64 characters"),
        ("PatientID=A\tB", "control characters"),
    ],
)
def test_bad_query_names_say_why(name: str, why: str) -> None:
    with pytest.raises(BadQuery, match=None) as refused:
        parse_query(name)
    assert why in str(refused.value)


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("1.2.840.10008.1.1", True),
        ("1", True),
        ("1..2", False),
        (".1", False),
        ("1.", False),
        ("a.1", False),
        ("1" * 64, True),
        ("1" * 65, False),
        ("", False),
    ],
)
def test_uids_are_digits_and_dots_of_at_most_64_characters(text: str, valid: bool) -> None:
    assert is_uid(text) is valid


def test_search_cache_keys_do_not_depend_on_the_order_of_keys() -> None:
    first = matching_key({"StudyDate": "20240101", "PatientName": "DOE*"})
    assert first == matching_key({"PatientName": "DOE*", "StudyDate": "20240101"})
    assert first != matching_key({"PatientName": "DOE*", "StudyDate": "20240102"})


@pytest.mark.parametrize(
    ("name", "keyword", "value"),
    [
        ("PID0001", "PatientID", "PID0001"),
        ("A%2FB", "PatientID", "A/B"),
        ("100%25", "PatientID", "100%"),
        ("%2Ehidden", "PatientID", ".hidden"),
        ("DOE*", "PatientID", None),
        ("DO?", "PatientID", None),
        ("A\\B", "PatientID", None),
        ("%20", "PatientID", None),
        ("%FF", "PatientID", None),
        ("100%", "PatientID", "100%"),
        ("X" * 65, "PatientID", None),
        ("A" * 16, "AccessionNumber", "A" * 16),
        ("A" * 17, "AccessionNumber", None),
    ],
)
def test_identifier_names_are_exact_values(name: str, keyword: str, value: str | None) -> None:
    assert identifier_of(name, keyword) == value


# -- names of studies in a day or a search -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (
            ("DOE^JANE", "PID1", "20240301", "CT CHEST", "ACC1"),
            "DOE^JANE (PID1) - 2024-03-01 CT CHEST (ACC1)",
        ),
        (("", "PID1", "", "", ""), "(no name) (PID1) - no date"),
        (("AC/DC", "P/1", "20240301", "Head/Neck", ""), "AC_DC (P_1) - 2024-03-01 Head_Neck"),
    ],
)
def test_study_names_say_whose_study_it_is(args: tuple[str, str, str, str, str], name: str) -> None:
    assert naming.patient_study_dir_name(*args) == name


def test_long_study_names_keep_both_identifiers() -> None:
    name = naming.patient_study_dir_name("N" * 300, "PID-END", "20240301", "D" * 300, "ACC-END")
    assert len(name.encode()) <= naming.MAX_NAME_BYTES
    assert "(PID-END) - 2024-03-01" in name and name.endswith("(ACC-END)")


# -- by-date's calendar, and the searches of the views, against the demo archive --------------------


class RecordingArchive(DemoArchive):
    """The demo archive, keeping the identifier of every C-FIND it answers."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, ae_title="VIEWSPACS")
        self.identifiers: list[Dataset] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        super().start()
        server: Any = self._server
        server.bind(evt.EVT_C_FIND, self._find)  # replaces the demo's handler

    def _find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        with self._lock:
            self.identifiers.append(event.identifier)
        assert self.index is not None
        yield from list(handle_find(event, self.index))

    def levels(self) -> list[str]:
        with self._lock:
            return [str(found.QueryRetrieveLevel) for found in self.identifiers]

    def study_searches(self) -> list[Dataset]:
        """The STUDY-level identifiers (series listings fetched ahead come in between)."""
        with self._lock:
            return [found for found in self.identifiers if found.QueryRetrieveLevel == "STUDY"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingArchive]:
    folder = tmp_path_factory.mktemp("views-demo")
    write_demo_archive(folder)
    with RecordingArchive(folder) as served:
        yield served


@pytest.fixture
def services(archive: RecordingArchive, tmp_path: Path) -> Iterator[MountServices]:
    opts = options(archive, tmp_path)  # type: ignore[arg-type]  # any demo archive will do
    archive.identifiers.clear()
    running = build_namespace(opts)
    try:
        yield running
    finally:
        running.stop()


def names(view: ByDate, path: str) -> list[str]:
    return [node.name for node in view.children(view.lookup(path))]


@pytest.mark.parametrize(
    ("today", "months", "days_in_month", "yesterday"),
    [
        (datetime.date(2024, 2, 10), 2, 10, "2024/2024-02/2024-02-09"),
        (datetime.date(2024, 1, 1), 1, 1, "2023/2023-12/2023-12-31"),
        (datetime.date(2023, 3, 31), 3, 31, "2023/2023-03/2023-03-30"),
    ],
)
def test_the_calendar_lists_years_months_and_days_without_a_query(
    services: MountServices,
    archive: RecordingArchive,
    today: datetime.date,
    months: int,
    days_in_month: int,
    yesterday: str,
) -> None:
    view = ByDate(services.catalog, None, mount_time=0.0, today=lambda: today)  # type: ignore[arg-type]
    top = names(view, "/")
    assert top == [*(str(year) for year in range(1980, today.year + 1)), "today", "yesterday"]
    this_year = names(view, f"/{today.year}")
    assert len(this_year) == months and this_year[-1] == today.strftime("%Y-%m")
    assert len(names(view, today.strftime("/%Y/%Y-%m"))) == days_in_month
    assert names(view, "/2023/2023-02")[-1] == "2023-02-28"
    assert names(view, "/2020/2020-02")[-1] == "2020-02-29"
    assert view.lookup("/today").link == day_path(today)
    assert view.lookup("/yesterday").link == yesterday
    assert view.lookup("/1975/1975-06/1975-06-01").is_dir  # reached by name, not listed
    for missing in (
        f"/{today.year + 1}",
        (today + datetime.timedelta(days=1)).strftime("/%Y/%Y-%m/%Y-%m-%d"),
        "/2023/2023-02/2023-02-29",
        "/2023/2024-01",
        "/2023/2023-01/2023-02-01",
        "/1899",
        "/2023/2023-1",
        "/today/x",
    ):
        with pytest.raises(NotFound):
            view.lookup(missing)
    assert archive.identifiers == []


def test_a_day_and_a_uid_are_one_targeted_study_search_each(
    services: MountServices, archive: RecordingArchive
) -> None:
    namespace = services.namespace
    day = namespace.lookup("/by-date/2024/2024-03/2024-03-01")
    (study,) = namespace.children(day)
    assert study.name == "Doe^Jane (DEMO001) - 2024-03-01 CT Chest (ACC0011)"
    assert archive.levels()[0] == "STUDY" and archive.identifiers[0].StudyDate == "20240301"
    uid = study.ref.node.ref.study_uid  # type: ignore[union-attr]  # Root's wrapper, then the record
    by_uid = namespace.lookup(f"/by-uid/{uid}")
    assert by_uid.mtime == study.mtime
    searches = archive.study_searches()
    assert len(searches) == 2 and searches[1].StudyInstanceUID == uid
    with pytest.raises(NotFound):
        namespace.lookup("/by-uid/DEMO001")
    with pytest.raises(NotFound):
        namespace.lookup("/query/Modality=CT")
    # The same search in another order, and the same UID, are answered from the cache.
    namespace.children(namespace.lookup("/query/StudyDate=20240301,PatientID=DEMO001"))
    namespace.children(namespace.lookup("/query/PatientID=DEMO001,StudyDate=20240301"))
    namespace.lookup(f"/by-uid/{uid}")
    assert len(archive.study_searches()) == 3
    assert "PATIENT" not in archive.levels()
    assert all(found.StudyDate or found.StudyInstanceUID for found in archive.study_searches())


def test_views_are_reached_by_name_but_not_listed_by_default(services: MountServices) -> None:
    namespace = services.namespace
    root = [node.name for node in namespace.children(namespace.lookup("/"))]
    assert len(root) == 3 and not any(name.startswith(("by-", "query")) for name in root)
    for view in ("by-date", "by-uid", "by-id", "by-accession", "query"):
        node = namespace.lookup(f"/{view}")
        assert node.is_dir and node.name == view
    assert namespace.children(namespace.lookup("/by-uid")) == []


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("0.1", True),
        ("1.0.2", True),
        ("1.2.840.10008", True),
        ("01.2", False),
        ("1.02.3", False),
        ("00.1", False),
    ],
)
def test_uid_components_have_no_leading_zero(text: str, valid: bool) -> None:
    assert is_uid(text) is valid  # PS3.5 9.1


def test_a_wildcard_only_key_is_fine_beside_another_but_not_alone() -> None:
    assert parse_query("StudyDescription=*,PatientID=DEMO001") == {
        "StudyDescription": "*",
        "PatientID": "DEMO001",
    }
    with pytest.raises(BadQuery, match="every study"):
        parse_query("StudyDescription=*")
    with pytest.raises(BadQuery, match="no value"):
        parse_query("PatientID=,StudyDate=20240101")


@pytest.mark.parametrize("name", ["PatientID= ", "StudyDescription=  ", "PatientID=?*", "PatientName=*^*"])
def test_values_that_match_anything_are_no_search_of_their_own(name: str) -> None:
    with pytest.raises(BadQuery):
        parse_query(name)
