"""Pure parts of the listings: DICOM times and the screening of C-FIND rows."""

from __future__ import annotations

import pytest

from dicomfs.core.rows import unique_rows
from dicomfs.views.naming import study_time as dicom_time


@pytest.mark.parametrize(
    ("date", "clock", "expected"),
    [
        ("20240301", "", 1709251200.0),
        ("20240301", "123456.789", 1709251200.0 + 12 * 3600 + 34 * 60 + 56),
        ("20240301", "1234", 1709251200.0 + 12 * 3600 + 34 * 60),
        ("", "", 0.0),
        ("2024", "", 0.0),
        ("20241399", "", 0.0),
        ("garbage!", "xx", 0.0),
    ],
)
def test_dicom_time(date: str, clock: str, expected: float) -> None:
    assert dicom_time(date, clock) == expected


def row(level: str | None, uid: str | None) -> dict[str, str]:
    """A C-FIND match as the tree reads it: text by keyword, absent keys missing."""
    found = {}
    if level is not None:
        found["QueryRetrieveLevel"] = level
    if uid is not None:
        found["SeriesInstanceUID"] = uid
    return found


def test_malformed_rows_are_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        row("SERIES", "1.1"),
        row("SERIES", None),
        row("SERIES", "1.1"),
        row("IMAGE", "1.2"),
        row(None, "1.3"),
    ]
    kept = unique_rows(rows, "SeriesInstanceUID", "SERIES")
    assert [r["SeriesInstanceUID"] for r in kept] == ["1.1", "1.3"]
    assert "without SeriesInstanceUID" in caplog.text
    assert "duplicate" in caplog.text
    assert "level 'IMAGE'" in caplog.text
