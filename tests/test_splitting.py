"""core.splitting: a capped STUDY-level answer asked again in parts until each is whole (in-process).

The archive here is a list of text rows behind a find callable that caps like a PACS (it raises
AnswerCapped with the first ``cap`` rows) and matches StudyDate/StudyTime ranges as PS3.4
C.2.2.2.5 says; the real C-FIND path is tested against real SCPs in tests/test_caps.py.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

import pytest

from dicomfs.core.errors import AnswerCapped
from dicomfs.core.rows import Row
from dicomfs.core.splitting import complete_studies, date_bounds, date_text, time_text


def _in_range(pattern: str, value: str) -> bool:
    if not pattern:
        return True
    if not value:
        return False
    if "\\" in pattern:  # list of values (PS3.4 C.2.2.2.8)
        return any(_in_range(one, value) for one in pattern.split("\\"))
    low, dash, high = pattern.partition("-")
    if not dash:
        return value == pattern
    return (not low or value >= low) and (not high or value[: len(high)] <= high)


class CappingArchive:
    """Rows behind a capping C-FIND; counts the C-FINDs."""

    def __init__(self, rows: list[Row], cap: int) -> None:
        self.rows = rows
        self.cap = cap
        self.finds = 0

    def find(self, keys: Mapping[str, str]) -> list[Row]:
        self.finds += 1
        found = [
            row
            for row in self.rows
            if _in_range(keys.get("StudyDate", ""), row["StudyDate"])
            and _in_range(keys.get("StudyTime", ""), row["StudyTime"])
        ]
        if len(found) > self.cap:
            raise AnswerCapped("capped", self.cap, found[: self.cap])
        return found


def _study(number: int, date: str, time: str = "120000") -> Row:
    return {"StudyInstanceUID": f"1.2.3.{number}", "PatientID": "P", "StudyDate": date, "StudyTime": time}


def _uids(rows: list[Row]) -> set[str]:
    return {row["StudyInstanceUID"] for row in rows}


LAST = datetime.date(2026, 12, 31)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", (datetime.date(1900, 1, 1), LAST, True)),
        ("20240301", (datetime.date(2024, 3, 1), datetime.date(2024, 3, 1), False)),
        ("20240301-20240305", (datetime.date(2024, 3, 1), datetime.date(2024, 3, 5), False)),
        ("20240301-", (datetime.date(2024, 3, 1), LAST, True)),
        ("-20240301", (datetime.date(1900, 1, 1), datetime.date(2024, 3, 1), False)),
        ("2024*", None),
        ("20240301\\20240302", None),
        ("20240305-20240301", None),
        ("garbage", None),
    ],
)
def test_date_bounds(value: str, expected: tuple[datetime.date, datetime.date, bool] | None) -> None:
    assert date_bounds(value, LAST) == expected


def test_range_texts() -> None:
    day = datetime.date(2024, 3, 1)
    assert date_text(day, day) == "20240301"
    assert date_text(day, datetime.date(2024, 3, 2)) == "20240301-20240302"
    assert time_text(0, 24 * 60 - 1) == "000000-235959.999999"
    assert time_text(61, 61) == "010100-010159.999999"


def test_an_uncapped_answer_is_one_query() -> None:
    archive = CappingArchive([_study(n, "20240301") for n in range(3)], cap=5)
    matches = complete_studies(archive.find, {})
    assert matches.complete and len(matches.rows) == 3 and archive.finds == 1


def test_a_capped_range_is_split_until_every_part_is_whole() -> None:
    rows = [_study(n, f"202403{n % 28 + 1:02d}") for n in range(40)]
    archive = CappingArchive(rows, cap=5)
    matches = complete_studies(archive.find, {"StudyDate": "20240301-20240331"})
    assert matches.complete
    assert _uids(matches.rows) == _uids(rows)
    assert len(matches.rows) == 40
    assert 1 < archive.finds <= 64


def test_a_crowded_day_is_split_by_time() -> None:
    rows = [_study(n, "20240301", f"{n:02d}0000") for n in range(12)]
    archive = CappingArchive(rows, cap=4)
    matches = complete_studies(archive.find, {"StudyDate": "20240301"})
    assert matches.complete
    assert _uids(matches.rows) == _uids(rows)


def test_an_unsplittable_second_is_reported_missing_with_what_came(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="dicomfs.core.splitting")
    rows = [_study(n, "20240301", "101010") for n in range(6)]
    archive = CappingArchive(rows, cap=4)
    matches = complete_studies(archive.find, {"StudyDate": "20240301"}, where="by-date/2024-03-01")
    assert not matches.complete
    assert len(matches.rows) == 4
    assert "2024-03-01 10:10" in matches.missing
    # Nothing said here: the caller that shows the marker logs it, once (one line per cause).
    assert not [r for r in caplog.records if r.name == "dicomfs.core.splitting"]


def test_studies_without_a_time_are_kept_and_the_day_reported() -> None:
    rows = [_study(n, "20240301", "") for n in range(3)]
    rows += [_study(10 + n, "20240301", "090000") for n in range(3)]
    archive = CappingArchive(rows, cap=4)
    matches = complete_studies(archive.find, {"StudyDate": "20240301"})
    assert "without StudyTime" in matches.missing
    timed = {row["StudyInstanceUID"] for row in rows if row["StudyTime"]}
    assert timed <= _uids(matches.rows)


def test_the_query_budget_bounds_the_load() -> None:
    rows = [_study(n, f"{2000 + n % 20}0101") for n in range(200)]
    archive = CappingArchive(rows, cap=2)
    matches = complete_studies(archive.find, {}, max_queries=10)
    assert archive.finds == 10
    assert "stopped after 10 C-FINDs" in matches.missing
    assert matches.rows  # what came is shown, marked incomplete


def test_a_list_of_dates_is_not_split() -> None:
    archive = CappingArchive([_study(n, "20240301") for n in range(6)], cap=4)
    matches = complete_studies(archive.find, {"StudyDate": "20240301\\20240302"})
    assert archive.finds == 1 and len(matches.rows) == 4 and matches.missing


def test_studies_dated_after_the_split_range_are_asked_once() -> None:
    rows = [_study(n, "20240301") for n in range(3)] + [_study(9, "29990101")]
    archive = CappingArchive(rows, cap=3)
    matches = complete_studies(archive.find, {}, today=datetime.date(2024, 6, 1))
    assert matches.complete and _uids(matches.rows) == _uids(rows)


class SilentlyCuttingArchive(CappingArchive):
    """A PACS that cuts at ``cap`` rows and reports plain success (no AnswerCapped)."""

    def find(self, keys: Mapping[str, str]) -> list[Row]:
        try:
            return super().find(keys)
        except AnswerCapped as exc:
            return exc.partial


def test_an_answer_cut_silently_at_a_well_known_size_is_asked_again_in_parts() -> None:
    rows = [_study(n, f"2024{1 + n % 12:02d}{1 + n % 28:02d}", f"{n % 24:02d}0000") for n in range(700)]
    archive = SilentlyCuttingArchive(rows, cap=500)
    matches = complete_studies(archive.find, {"PatientID": "P"}, today=datetime.date(2026, 11, 30))
    assert _uids(matches.rows) == _uids(rows) and not matches.missing
    assert archive.finds > 1


def test_a_whole_answer_of_a_well_known_size_stays_whole() -> None:
    rows = [_study(n, f"2024{1 + n % 12:02d}{1 + n % 28:02d}") for n in range(500)]
    archive = CappingArchive(rows, cap=10_000)
    matches = complete_studies(
        archive.find, {"StudyDate": "20240101-20241231"}, today=datetime.date(2026, 11, 30)
    )
    assert _uids(matches.rows) == _uids(rows) and not matches.missing
    assert archive.finds > 1  # the cost of the doubt: a few more C-FINDs


def test_a_suspect_size_that_cannot_be_split_is_never_shown_as_whole() -> None:
    rows = [_study(n, "20240301", "120000") for n in range(500)]  # one minute: no split helps
    matches = complete_studies(
        CappingArchive(rows, cap=10_000).find, {"StudyDate": "20240301"}, today=datetime.date(2026, 11, 30)
    )
    assert _uids(matches.rows) == _uids(rows)
    assert "2024-03-01 12:00: exactly 500" in matches.missing


def test_studies_without_a_time_cut_from_a_suspect_day_are_reported_missing() -> None:
    rows = [_study(n, "20240302", "" if n % 2 else f"{n % 24:02d}{n % 60:02d}00") for n in range(600)]
    archive = SilentlyCuttingArchive(rows, cap=500)
    matches = complete_studies(archive.find, {"StudyDate": "20240302"}, today=datetime.date(2026, 11, 30))
    assert "studies without StudyTime" in matches.missing


def test_a_crowded_day_and_minute_are_asked_alone_not_halved_down_to() -> None:
    """The capped rows all on one day (then one minute): that day is asked alone, with the rest of
    the range in two parts, instead of ~16 halvings (then ~11) down to it."""
    rows = [_study(n, "20240301", "101000") for n in range(4)] + [_study(9, "20200101")]
    archive = CappingArchive(rows, cap=3)
    matches = complete_studies(archive.find, {"PatientID": "P"}, today=datetime.date(2026, 11, 30))
    assert _uids(matches.rows) <= _uids(rows) and "2024-03-01 10:10" in matches.missing
    assert archive.finds <= 12, archive.finds


def test_a_real_cap_whose_parts_find_no_more_reports_studies_without_a_time() -> None:
    """The capped day's rows all have a time, the rest have none: the time ranges find only the
    capped rows again, which proves the rest have no StudyTime (review finding)."""
    rows = [_study(n, "20240301", f"{n % 24:02d}0000") for n in range(5)]
    rows += [_study(10 + n, "20240301", "") for n in range(2)]
    archive = CappingArchive(rows, cap=5)
    matches = complete_studies(archive.find, {"StudyDate": "20240301"}, today=datetime.date(2026, 11, 30))
    assert len(matches.rows) == 5 and "without StudyTime may be missing" in matches.missing
