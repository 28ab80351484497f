"""Pure: the cause and the fix dicomfs gives for rejections, dropped requests and failed C-MOVEs."""

from __future__ import annotations

from typing import Any

import pytest

from dicomfs.dimse.explain import (
    MoveReport,
    explain_move_failure,
    explain_move_status,
    explain_no_response,
    explain_rejection,
    explain_silent_close,
    rejection_words,
    status_words,
)

CALLED, CALLING = "PACS", "DICOMFS"


@pytest.mark.parametrize(
    ("fields", "cause_part", "hint_part"),
    [
        # PS3.8 9.3.4: Orthanc's answer to a wrong called AE title (DicomCheckCalledAet).
        ((1, 1, 7), "the PACS is not called 'PACS'", "aec="),
        # Orthanc's answer to an unknown calling AE title when nothing is always allowed.
        ((1, 1, 3), "does not accept our AE title 'DICOMFS'", "aet="),
        ((1, 1, 1), "gives no reason", "aec=PACS"),
        ((1, 1, 2), "application context name not supported", "serverport="),
        ((2, 3, 2), "busy", "maxassoc="),
        ((2, 3, 1), "temporary congestion", "try again later"),
        ((1, 2, 2), "protocol version not supported", "aet=DICOMFS"),
        ((1, 9, 9), "source 9: reason 9", "aec=PACS"),  # values no standard names
    ],
)
def test_rejections_say_which_ae_title_was_refused_and_what_to_change(
    fields: tuple[int, int, int], cause_part: str, hint_part: str
) -> None:
    why = explain_rejection(*fields, called_aet=CALLED, calling_aet=CALLING)
    assert cause_part in why.cause
    assert hint_part in why.hint
    assert why.fatal
    assert why.line() == f"{why.cause}; fix: {why.hint}"


def test_rejection_words_follow_ps3_8() -> None:
    assert rejection_words(1, 1, 7) == "permanent, service user: called AE title not recognized"
    assert rejection_words(2, 3, 2) == "transient, service provider (presentation): local limit exceeded"
    assert rejection_words(7, 1, 3) == "result 7, service user: calling AE title not recognized"


@pytest.mark.parametrize("tls", [True, False])
def test_a_silent_close_names_port_tls_and_both_titles(tls: bool) -> None:
    why = explain_silent_close(called_aet=CALLED, calling_aet=CALLING, tls=tls)
    assert "without answering" in why.cause
    assert "serverport=" in why.hint and "tls=" in why.hint
    assert "'DICOMFS'" in why.hint and "'PACS'" in why.hint


def test_a_dropped_request_points_at_our_ae_title_a_silent_one_at_the_timeout() -> None:
    dropped = explain_no_response("C-FIND", aborted=True, calling_aet=CALLING, timeout=30)
    assert "dropped the association at our C-FIND" in dropped.cause
    assert "'DICOMFS'" in dropped.hint and "DicomModalities" in dropped.hint
    silent = explain_no_response("C-MOVE", aborted=False, calling_aet=CALLING, timeout=7.5)
    assert "within 7.5 s" in silent.cause and "timeout=" in silent.hint


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (0x0000, "0x0000 (success)"),
        (0xA801, "0xA801 (move destination unknown)"),
        (0xA702, "0xA702 (out of resources: unable to perform sub-operations)"),
        (0xC000, "0xC000 (unable to process)"),
        (0xC123, "0xC123 (unable to process)"),
        (0xB000, "0xB000 (sub-operations complete, one or more failures)"),
        (0x0107, "0x0107"),
    ],
)
def test_status_words(status: int, words: str) -> None:
    assert status_words(status) == words


def _explain(**fields: Any) -> tuple[str, str, bool]:
    """(cause, hint, fatal) for a C-MOVE to DICOMFS whose storage SCP listens on port 11112."""
    why = explain_move_failure(MoveReport(**fields), destination=CALLING, localport=11112)
    assert why is not None, fields
    return why.cause, why.hint, why.fatal


def test_a_move_that_came_back_is_fine() -> None:
    report = MoveReport(status=0, completed=1, connected_back=True, called_back_as=CALLING, stored=1)
    assert explain_move_failure(report, destination=CALLING, localport=11112) is None


def test_a_move_that_came_back_under_another_title_is_worth_a_note_only() -> None:
    cause, hint, fatal = _explain(status=0, completed=1, connected_back=True, called_back_as="X", stored=1)
    assert "'X'" in cause and "harmless" in hint and not fatal


def test_0xa801_is_an_unknown_move_destination() -> None:
    cause, hint, fatal = _explain(status=0xA801, comment="Unknown AE", connected_back=False)
    assert "does not know 'DICOMFS' as a move destination" in cause and "(Unknown AE)" in cause
    assert "11112" in hint and "retrieve=get" in hint and fatal


@pytest.mark.parametrize("connected_back", [False, None])
def test_orthancs_0xc000_without_a_connection_back_names_both_causes(connected_back: bool | None) -> None:
    cause, hint, _ = _explain(status=0xC000, connected_back=connected_back)
    assert "0xC000 (unable to process)" in cause
    assert ("never connected back" in cause) is (connected_back is False)
    assert "not in its DicomModalities" in hint and "cannot connect" in hint
    assert "retrieve=get" in hint and "ssh -R" in hint


def test_failed_sub_operations_without_a_connection_mean_no_way_back() -> None:
    cause, hint, _ = _explain(status=0xA702, failed=1, connected_back=False)
    assert "never connected back to port 11112" in cause and "1 failed" in cause
    assert "firewalls" in hint and "ssh -R" in hint and "retrieve=get" in hint


def test_completed_sub_operations_that_never_arrived_went_elsewhere() -> None:
    cause, hint, _ = _explain(status=0, completed=1, connected_back=False)
    assert "nothing reached our storage SCP on port 11112" in cause
    assert "another host or port" in hint


def test_a_connection_back_that_stored_nothing_is_a_negotiation_problem() -> None:
    cause, hint, _ = _explain(status=0xA702, failed=1, connected_back=True, called_back_as=CALLING)
    assert "stored nothing" in cause and "transfer syntax" in hint


def test_a_move_of_nothing_that_succeeds_is_a_note() -> None:
    cause, _, fatal = _explain(status=0, connected_back=False)
    assert "matched nothing" in cause and not fatal


def test_any_other_failure_keeps_status_comment_and_counts() -> None:
    cause, hint, fatal = _explain(status=0xA900, comment="bad level", connected_back=None)
    assert "0xA900" in cause and "(bad level)" in cause and "0 completed" in cause and fatal
    assert "retrieve=get" in hint


@pytest.mark.parametrize(
    ("status", "completed", "expected"),
    [
        (0xA801, 0, "does not know 'DICOMFS' as a move destination"),
        (0xC000, 0, "0xC000 (unable to process)"),
        (0xC001, 0, "0xC001 (unable to process)"),
        (0xC000, 3, None),  # sent some: the caller's own counts say more
        (0xA702, 0, None),
        (0xB000, 2, None),
        (0x0000, 5, None),
    ],
)
def test_the_mounts_move_status_explanation_only_for_destination_problems(
    status: int, completed: int, expected: str | None
) -> None:
    why = explain_move_status(status, completed=completed, destination=CALLING)
    if expected is None:
        assert why is None
        return
    assert why is not None and expected in why.cause
    assert "localport=" in why.hint and "retrieve=get" in why.hint
    # The same words for every series and file: one log line per cause (core.errorlog).
    assert why.line() == explain_move_status(status, completed=completed, destination=CALLING).line()
    assert not any(char.isdigit() for char in why.line().replace(f"0x{status:04X}", ""))
