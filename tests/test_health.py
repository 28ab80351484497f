"""PacsHealth: fail fast only while the PACS does not answer; re-check at most once per interval."""

from __future__ import annotations

import logging

import pytest

from dicomfs.core.errors import PacsError
from dicomfs.core.health import MAX_REASON_CHARS, PacsHealth
from dicomfs.dimse.client import AssociationSlots, PacsAddress, PacsClient
from tests.broken_pacs import BrokenPacs
from tests.mounting import wait_until
from tests.pacs_servers import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedProbe:
    """Fails ``failures`` times, then answers; counts its calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise PacsError("connection refused")


def test_a_pacs_that_answers_is_never_probed() -> None:
    probe = ScriptedProbe(0)
    health = PacsHealth(probe, where="PACS@h:1")
    health.answered()
    assert health.down_reason is None and health.epoch == 0 and probe.calls == 0


def test_probes_are_due_once_per_interval_and_an_answer_ends_the_outage() -> None:
    clock = FakeClock()
    probe = ScriptedProbe(1)
    health = PacsHealth(probe, where="PACS@h:1", interval_s=1.0, clock=clock)
    health.close()  # no background thread: this test drives the probes itself
    health.failed("cannot reach PACS")
    assert health.down_reason == "cannot reach PACS"
    assert health.probe_due_in() == 0.0
    assert health.probe_once() is False
    assert health.probe_due_in() == 1.0
    clock.now += 0.4
    assert health.probe_due_in() == pytest.approx(0.6)
    clock.now += 0.6
    assert health.probe_due_in() == 0.0
    assert health.probe_once() is True
    assert health.down_reason is None and health.epoch == 1 and probe.calls == 2


def test_the_background_check_notices_the_pacs_is_back(caplog: pytest.LogCaptureFixture) -> None:
    probe = ScriptedProbe(2)
    health = PacsHealth(probe, where="PACS@h:1", interval_s=0.01)
    caplog.set_level(logging.INFO, logger="dicomfs.core.health")
    try:
        for _ in range(5):  # many failures reported at once: one watcher, one log line
            health.failed("no response from the PACS")
        wait_until(lambda: health.down_reason is None, 30, "the background check to see the PACS")
    finally:
        health.close()
    assert probe.calls == 3  # two refused, the third answered: it stopped probing then
    assert health.epoch == 1
    messages = [record.getMessage() for record in caplog.records]
    assert sum("unreachable" in message for message in messages) == 1, messages
    assert sum("answers again" in message for message in messages) == 1, messages


def test_a_pacs_that_answers_the_first_check_ends_no_outage() -> None:
    """A retrieval timed out but the PACS answers the probe at once (its C-MOVE hangs, its
    associations do not): failures recorded before stay valid, the epoch does not move."""
    health = PacsHealth(ScriptedProbe(0), where="PACS@h:1", clock=FakeClock())
    health.close()
    health.failed("no response from the PACS (timed out or aborted)")
    assert health.probe_once() is True
    assert health.down_reason is None and health.epoch == 0


def test_a_closed_health_starts_no_check_and_bounds_the_reason() -> None:
    probe = ScriptedProbe(0)
    health = PacsHealth(probe, where="PACS@h:1")
    health.close()
    health.failed("x" * 10_000)
    reason = health.down_reason
    assert reason is not None and len(reason) == MAX_REASON_CHARS
    assert probe.calls == 0


@pytest.mark.parametrize(
    ("limit", "established", "negotiating", "peak", "lowered", "after"),
    [
        (4, 0, 4, 0, 3, 3),  # four attempts at once: the first rejection says "3 others"
        (3, 2, 1, 2, 2, 2),  # ... the next one "2 others": the PACS's limit
        (4, 0, 1, 0, 1, 1),  # nothing else open and still rejected: one at a time
        (2, 1, 1, 2, None, 2),  # 2 were established at once before: never below that
        (1, 0, 1, 0, None, 1),
    ],
)
def test_a_transient_rejection_lowers_the_limit_to_the_other_associations(
    limit: int, established: int, negotiating: int, peak: int, lowered: int | None, after: int
) -> None:
    """``negotiating`` includes the rejected attempt itself."""
    slots = AssociationSlots(limit)
    for _ in range(peak):  # earlier associations, established at the same time, now ended
        assert slots.acquire(timeout=1)
        slots.established()
    for _ in range(peak):
        slots.release(established=True)
    for _ in range(established):
        assert slots.acquire(timeout=1)
        slots.established()
    for _ in range(negotiating):
        assert slots.acquire(timeout=1)
    assert slots.lower_to_others() == lowered
    assert slots.limit == after


def test_slots_wait_for_a_release_and_give_up_at_the_deadline() -> None:
    slots = AssociationSlots(1)
    assert slots.acquire(timeout=1)
    assert not slots.acquire(timeout=0.01)
    slots.release()
    assert slots.acquire(timeout=1)


def test_the_client_probe_tells_a_closed_port_from_a_pacs_that_answers() -> None:
    """Real sockets: nothing listens (refused, reported down), then a real SCP (answered, up)."""
    dead = PacsClient(PacsAddress("127.0.0.1", free_port(), "NOBODY", "DICOMFS", timeout=5))
    try:
        with pytest.raises(PacsError, match="cannot reach"):
            dead.probe()
        assert dead.health.down_reason is not None
    finally:
        dead.close()
    with BrokenPacs() as pacs:
        alive = PacsClient(PacsAddress(pacs.host, pacs.port, pacs.ae_title, "DICOMFS", timeout=5))
        try:
            alive.health.failed("pretend it was down")
            alive.probe()
            assert alive.health.down_reason is None
        finally:
            alive.close()
