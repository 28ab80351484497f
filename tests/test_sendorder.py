"""The hurry policy, in-process with a simulated clock: send order learnt, waits estimated, budget kept."""

from __future__ import annotations

import heapq
import random

import pytest

from dicomfs.core.model import SeriesRef
from dicomfs.core.sendorder import (
    ASCENDING,
    DESCENDING,
    MAX_HURRIED,
    MIN_ARRIVALS,
    SHUFFLED,
    SHUFFLED_MIN_PASSED,
    Stream,
    updated_round_trip,
    worth_hurrying,
)
from dicomfs.core.seriesjob import HURRY_CHECK_S, SeriesJob

REF = SeriesRef("PID", "1.1", "1.1.1")
LISTING = [f"uid{n:03d}" for n in range(200)]


def arrive(stream: Stream, uids: list[str], rate: float = 100.0, start: float = 1.0) -> None:
    for number, uid in enumerate(uids):
        stream.arrived(uid, start + number / rate)


@pytest.mark.parametrize(
    ("sent", "order"),
    [
        (LISTING[:10], ASCENDING),
        (LISTING[::-1][:10], DESCENDING),
        (random.Random(3).sample(LISTING, 10), SHUFFLED),
        # one step the other way in ten still counts as an order (a hurried gap, a resend)
        ([*LISTING[:5], LISTING[2], *LISTING[5:9]], ASCENDING),
    ],
)
def test_the_send_order_is_learnt_from_arrivals(sent: list[str], order: str) -> None:
    stream = Stream(LISTING, started=0.0)
    arrive(stream, sent[: MIN_ARRIVALS - 1])
    assert stream.order() is None  # too few to tell
    stream = Stream(LISTING, started=0.0)
    arrive(stream, sent)
    assert stream.order() == order


def test_expected_wait_counts_what_the_stream_still_sends_before_the_instance() -> None:
    stream = Stream(LISTING, started=0.0)
    sent = LISTING[::-1][:10]  # descending: uid199 ... uid190 arrived, 10 per second... at 100/s
    arrive(stream, sent, rate=100.0, start=1.0)
    landed = set(sent)
    now = stream.last_at
    assert stream.ahead_of("uid189", landed) == 0  # the very next one
    assert stream.ahead_of("uid000", landed) == 189
    assert stream.expected_wait("uid189", landed, now) == pytest.approx(0.01)
    assert stream.expected_wait("uid000", landed, now) == pytest.approx(1.9)
    # a stream that paused is still expected to send them, counted from its last arrival
    assert stream.expected_wait("uid189", landed, now + 5) == 0
    assert stream.first_store_latency() == pytest.approx(1.0)


def test_shuffled_streams_expect_half_the_remaining_instances_ahead() -> None:
    stream = Stream(LISTING, started=0.0)
    sent = random.Random(5).sample(LISTING, 20)
    arrive(stream, sent)
    assert stream.order() == SHUFFLED
    missing = next(uid for uid in LISTING if uid not in sent)
    assert stream.ahead_of(missing, set(sent)) == pytest.approx((200 - 20 - 1) / 2)


@pytest.mark.parametrize(
    ("wait", "round_trip", "hurried", "expected"),
    [
        (None, 0.05, 0, False),  # order or rate not known yet
        (5.0, None, 0, False),  # no round trip measured yet
        (0.1, 0.01, 0, False),  # due soon: never an extra association
        (0.5, 0.2, 0, False),  # longer, but not clearly longer than a round trip
        (0.9, 0.2, 0, True),
        (5.0, 0.05, 0, True),
        (5.0, 0.05, MAX_HURRIED, False),  # the series' budget is spent
    ],
)
def test_the_hurry_rule(wait: float | None, round_trip: float | None, hurried: int, expected: bool) -> None:
    assert worth_hurrying(wait, round_trip, hurried) is expected


@pytest.mark.parametrize(("passed", "expected"), [(0, False), (SHUFFLED_MIN_PASSED - 1, False), (5, True)])
def test_a_shuffled_stream_hurries_only_readers_others_passed(passed: int, expected: bool) -> None:
    assert worth_hurrying(2.0, 0.05, 0, predictable=False, passed=passed) is expected


def test_a_paused_shuffled_stream_hurries_nobody() -> None:
    """A reader of what is due next, while the stream pauses (a busy CPU): no arrivals, no hurry."""
    clock = FakeClock()
    job = SeriesJob(REF, LISTING, clock=clock)
    job.begin(())
    sent = SENT_ORDERS["shuffled"]
    for uid in sent[:20]:
        clock.now += 0.005
        job.landed(uid, 1)
    seen = job.stream_arrivals(sent[20])
    clock.now += 5.0  # the stream pauses for far longer than any threshold
    assert not job.worth_hurrying(sent[20], job.stream_arrivals(sent[20]) - seen)


def test_round_trip_estimate_follows_samples() -> None:
    assert updated_round_trip(None, 0.2) == 0.2
    assert 0.1 < updated_round_trip(0.2, 0.05) < 0.2


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def simulate(sent: list[str], reads: list[str], rate: float = 170.0, round_trip: float = 0.06) -> int:
    """One reader reading ``reads`` one after the other while a stream sends ``sent``.

    The stream's first C-STORE lands ``round_trip`` after the request, then ``rate`` per second; a
    hurried instance lands ``round_trip`` after it was hurried. A waiting reader reconsiders
    hurrying every ``HURRY_CHECK_S``, as ``SeriesJob.wait_for`` does. Returns the hurried count.
    """
    clock = FakeClock()
    job = SeriesJob(REF, LISTING, clock=clock)
    job.begin(())
    start = clock.now
    events = [(start + round_trip + number / rate, uid) for number, uid in enumerate(sent)]
    heapq.heapify(events)

    def advance(until: float) -> None:
        while events and events[0][0] <= until:
            when, uid = heapq.heappop(events)
            clock.now = when
            job.landed(uid, 1)
        clock.now = until

    for uid in reads:
        seen = job.stream_arrivals(uid)
        while uid not in job.sizes:
            if job.worth_hurrying(uid, job.stream_arrivals(uid) - seen) and job.mark_hurried(uid):
                heapq.heappush(events, (clock.now + round_trip, uid))
            advance(min(events[0][0], clock.now + HURRY_CHECK_S))
    return len(job.hurried)


SENT_ORDERS = {
    "ascending": LISTING,
    "descending": LISTING[::-1],
    "shuffled": random.Random(11).sample(LISTING, len(LISTING)),
}


@pytest.mark.parametrize("send", sorted(SENT_ORDERS))
def test_reading_in_send_order_never_hurries(send: str) -> None:
    assert simulate(SENT_ORDERS[send], SENT_ORDERS[send]) == 0


@pytest.mark.parametrize("send", sorted(SENT_ORDERS))
@pytest.mark.parametrize("read", ["reverse", "random", "name"])
def test_any_read_order_hurries_at_most_the_budget(send: str, read: str) -> None:
    sent = SENT_ORDERS[send]
    shuffled = random.Random(13).sample(LISTING, len(LISTING))
    reads = {"reverse": sent[::-1], "random": shuffled, "name": LISTING}
    hurried = simulate(sent, reads[read])
    assert hurried <= MAX_HURRIED
    if read == "reverse":
        assert hurried >= 1  # the first read is the last instance sent: worth a round trip


def test_a_landed_instance_is_never_hurried() -> None:
    clock = FakeClock()
    job = SeriesJob(REF, LISTING, clock=clock)
    job.begin(())
    for number, uid in enumerate(LISTING[:10]):
        clock.now += 0.01
        job.landed(uid, number)
    assert job.worth_hurrying(LISTING[-1])
    assert not job.worth_hurrying(LISTING[3])
    assert not job.mark_hurried(LISTING[3])
