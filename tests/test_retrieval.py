"""Waiting for instances: release on landing, failure when they cannot come, hurrying, parts."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from dicomfs.core.errors import PacsError, RetrievalFailed
from dicomfs.core.health import PacsHealth
from dicomfs.core.model import SeriesRef
from dicomfs.core.retrieval import MIN_PART_SIZE, RetrievalScheduler
from dicomfs.core.seriesjob import SeriesJob, Stalled
from dicomfs.dimse.progress import RetrieveOutcome
from dicomfs.dimse.strategy import DimseRetrieval
from tests.mounting import ends_within

REF = SeriesRef("PID", "1.1", "1.1.1")


def test_a_waiter_is_released_when_its_instance_lands() -> None:
    job = SeriesJob(REF, ["a", "b"])
    threading.Timer(0.05, job.landed, args=("b", 42)).start()
    assert job.wait_for("b", stall_s=5, hurry=lambda: None) == 42


def test_a_lost_instance_fails_once_the_job_is_over() -> None:
    job = SeriesJob(REF, ["a", "b"])
    job.lost("a", "does not parse")
    job.landed("b", 1)
    job.finish("1 of 2 missing")
    with pytest.raises(RetrievalFailed, match="does not parse"):
        job.wait_for("a", stall_s=5, hurry=lambda: None)
    assert job.wait_for("b", stall_s=5, hurry=lambda: None) == 1


def test_an_instance_far_down_a_known_stream_is_hurried_once() -> None:
    uids = [f"u{n}" for n in range(100)]
    job = SeriesJob(REF, uids)
    job.begin(())
    for uid in uids[:5]:  # an ascending stream at ~50/s: u99 is 94 instances (~2 s) away
        time.sleep(0.02)
        job.landed(uid, 1)
    calls: list[float] = []

    def hurry() -> None:
        calls.append(time.monotonic())
        assert job.mark_hurried("u99")
        threading.Timer(0.05, job.landed, args=("u99", 7)).start()

    assert job.wait_for("u99", stall_s=5, hurry=hurry) == 7
    assert len(calls) == 1


def test_an_instance_due_next_is_not_hurried() -> None:
    uids = [f"u{n}" for n in range(100)]
    job = SeriesJob(REF, uids)
    job.begin(())
    for uid in uids[:5]:
        time.sleep(0.002)
        job.landed(uid, 1)
    threading.Timer(0.05, job.landed, args=("u5", 3)).start()
    assert job.wait_for("u5", stall_s=5, hurry=lambda: pytest.fail("hurried")) == 3


def test_a_stalled_retrieval_fails_instead_of_hanging() -> None:
    job = SeriesJob(REF, ["a"])
    job.touch()  # started, then nothing ever arrives
    with pytest.raises(Stalled, match="no progress"):  # the guard only catches a hang
        ends_within(lambda: job.wait_for("a", stall_s=0.3, hurry=lambda: None), 60, "a stalled wait")


@pytest.mark.parametrize(
    ("workers", "count", "parts"),
    [(3, MIN_PART_SIZE - 1, 1), (3, 500, 2), (1, 500, 1), (5, 500, 4), (3, 2 * MIN_PART_SIZE, 2)],
)
def test_large_series_are_split_into_parts_covering_every_instance(
    workers: int, count: int, parts: int
) -> None:
    nothing: Any = None  # _split needs no collaborators
    scheduler = RetrievalScheduler(nothing, nothing, nothing, workers=workers, timeout=1, parallel=8)
    order = tuple(f"uid{n}" for n in range(count))
    split = scheduler._split(order)
    assert len(split) == parts
    if parts == 1:
        assert split == [()]  # the whole series, SERIES level
    else:
        assert tuple(uid for part in split for uid in part) == order


class _Receiver:
    """Routes nothing itself: the stub client lands instances through the registered sink."""

    def __init__(self) -> None:
        self.sinks: dict[str, Any] = {}
        self.stores_seen = 0  # as InstanceReceiver: C-STOREs that reached us

    def expect(self, series: Any, sop_uids: Any, sink: Any) -> None:
        self.sinks.update(dict.fromkeys(sop_uids, sink))

    def forget(self, series: Any, sop_uids: Any) -> None:
        for uid in sop_uids:
            self.sinks.pop(uid, None)


class _Store:
    def size_of(self, sop_uid: str) -> int | None:
        return None

    def __contains__(self, sop_uid: object) -> bool:
        return False


class _StallingThenWorkingClient:
    """The first C-MOVE never stores and ends only once cancelled; later ones deliver at once."""

    model = "study"

    def __init__(self, receiver: _Receiver) -> None:
        self.receiver = receiver
        self.requests = 0
        self.cancelled_seen = threading.Event()
        self.health = PacsHealth(lambda: None, where="test PACS")  # answers: never "down"

    def move(self, identifier: Any, destination: str, *, progress: Any, cancelled: Any) -> RetrieveOutcome:
        self.requests += 1
        if self.requests == 1:
            deadline = time.monotonic() + 60  # guards against a hang only
            while not cancelled() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.cancelled_seen.set()
            raise PacsError("retrieval cancelled")
        for uid in list(self.receiver.sinks):
            self.receiver.sinks[uid].landed(uid, 5)
        return RetrieveOutcome(0x0000, 1, 0, 0)


def test_a_stalled_job_is_abandoned_and_the_next_read_starts_a_new_one() -> None:
    receiver = _Receiver()
    client = _StallingThenWorkingClient(receiver)
    stubs: Any = (client, receiver)
    service = DimseRetrieval(*stubs, method="move", destination_aet="X", timeout=0.05)
    store: Any = _Store()
    scheduler = RetrievalScheduler(service, receiver, store, workers=2, timeout=0.05)
    scheduler.start()
    try:
        with pytest.raises(Stalled, match="no progress"):
            scheduler.fetch(REF, "a", ["a"])
        assert client.cancelled_seen.wait(10)  # its retrieval was told to end: the worker is free
        assert scheduler.fetch(REF, "a", ["a"]) == 5
        assert client.requests == 2
    finally:
        scheduler.stop()
