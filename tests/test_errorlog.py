"""Failures are logged once per cause, not once per file (dicomfs.core.errorlog)."""

from __future__ import annotations

import logging

import pytest

from dicomfs.core.errorlog import OncePerCause, cause_of


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ("1.2.840.1.2: the PACS did not send it", "the PACS did not send it"),
        ("no space left in the cache for 1.2.3", "no space left in the cache for 1.2.3"),
        ("status 0xA801: unknown destination", "status 0xA801: unknown destination"),
        ("", ""),
    ],
)
def test_cause_leaves_out_the_leading_instance_uid(message: str, cause: str) -> None:
    assert cause_of(message) == cause


def test_one_line_per_cause_per_window(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logger = logging.getLogger("test.errorlog")
    errors = OncePerCause(logger, window_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="test.errorlog"):
        for number in range(500):  # `cp -r` of a series the PACS cannot send
            errors.error("getattr", f"/p/s/x/{number:04d}.dcm", f"1.2.{number}: the PACS did not send it")
        errors.error("open", "/other", "status 0xA801: the PACS does not know 'DICOMFS'")
        now[0] = 61.0
        errors.error("getattr", "/p/s/x/0000.dcm", "1.2.0: the PACS did not send it")
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "getattr /p/s/x/0000.dcm: 1.2.0: the PACS did not send it",
        "open /other: status 0xA801: the PACS does not know 'DICOMFS'",
        "getattr /p/s/x/0000.dcm: 1.2.0: the PACS did not send it (and 499 more failed calls since)",
    ]
