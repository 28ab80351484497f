"""The per-process budget of retrievals caused by stat alone (dicomfs.core.walkguard): pure."""

from __future__ import annotations

import logging

import pytest

from dicomfs.core.walkguard import DEFAULT_ESTIMATE, MAX_TRACKED_PROCESSES, WalkGuard

S1, S2, S3 = ("P", "st", "s1"), ("P", "st", "s2"), ("P", "st", "s3")


def test_a_walker_gets_its_budget_then_estimates() -> None:
    guard = WalkGuard(budget=2)
    assert guard.may_retrieve(100, S1) and guard.may_retrieve(100, S2)
    assert guard.may_retrieve(100, S1)  # a series it already paid for
    assert not guard.may_retrieve(100, S3)
    assert guard.may_retrieve(200, S3)  # another process has its own budget


def test_opening_a_file_gives_the_budget_back() -> None:
    """tar: stat a file, open it, stat the next: never estimated."""
    guard = WalkGuard(budget=1)
    for series in (S1, S2, S3):
        assert guard.may_retrieve(7, series)
        guard.opened(7)


def test_a_series_being_retrieved_costs_nothing() -> None:
    guard = WalkGuard(budget=0)
    assert not guard.may_retrieve(7, S1)
    assert guard.may_retrieve(7, S1, busy=True)


def test_exact_mode_and_unknown_callers_always_retrieve() -> None:
    exact = WalkGuard(budget=None)
    assert not exact.enabled
    assert all(exact.may_retrieve(7, ("P", "st", str(n))) for n in range(100))
    assert WalkGuard(budget=0).may_retrieve(0, S1)


def test_estimates_learn_from_what_landed() -> None:
    guard = WalkGuard(budget=1)
    assert guard.estimate(S1) == DEFAULT_ESTIMATE
    guard.landed(S1, 1000)
    guard.landed(S1, 3000)
    guard.landed(S2, 10_000)
    assert guard.estimate(S1) == 2000  # the series' mean
    assert guard.estimate(S3) == (1000 + 3000 + 10_000) // 3  # the mount's mean


def test_logged_once_per_walk(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dicomfs.core.walkguard")
    guard = WalkGuard(budget=0)
    for _ in range(50):
        guard.may_retrieve(4242, S1)
    assert len(caplog.records) == 1 and "pid 4242" in caplog.records[0].getMessage()
    guard.opened(4242)
    guard.may_retrieve(4242, S2)
    assert len(caplog.records) == 2  # a new walk after reading


def test_process_table_is_bounded() -> None:
    guard = WalkGuard(budget=1)
    for pid in range(1, MAX_TRACKED_PROCESSES * 3):
        guard.may_retrieve(pid, S1)
    assert len(guard._processes) == MAX_TRACKED_PROCESSES
