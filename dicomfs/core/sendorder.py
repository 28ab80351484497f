"""Where an instance stands in a retrieval's stream of C-STOREs, and when to hurry it.

A PACS sends a series in whatever order its database returns: often the order the instances were
stored in, or its reverse, rarely the C-FIND listing order (issue #8: Orthanc sending a series in
descending instance order made nearly every read of a viewer "hurried", 13-20 s instead of
2.4 s). So the send order is learnt from what has arrived: the listing positions of consecutive
arrivals go up (ascending), down (descending), or both (shuffled: then an instance is on average
half the remaining stream away). With the stream's rate this gives the expected wait of a reader.

A reader is *hurried* (its instance retrieved on its own association, ahead of the stream) only
when that wait is clearly longer than a single-instance round trip, and a series gets at most
``MAX_HURRIED`` of them: every extra association competes with the stream for the PACS and, on a
small machine, for the CPU, so a storm of them slows every reader down.

Everything here is pure: times are passed in (monotonic seconds), nothing waits or locks.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

ASCENDING, DESCENDING, SHUFFLED = "ascending", "descending", "shuffled"

#: Arrivals needed before the send order is trusted (three steps between them).
MIN_ARRIVALS = 4
#: Share of steps that must go one way for the order to count as ascending or descending.
ORDER_CONFIDENCE = 0.8
#: A reader is hurried only when its expected wait exceeds this many single-instance round
#: trips ("clearly longer": a hurried instance also slows the stream a little) ...
HURRY_FACTOR = 4.0
#: ... and this many seconds (on loopback a round trip is ~60 ms).
HURRY_MIN_WAIT_S = 0.3
#: Hurried retrievals per series, in all: bounds the extra associations a reader in reverse or
#: random order can cause (one hurried instance per read would be an association storm).
MAX_HURRIED = 4
#: In a shuffled stream, a reader is hurried only after this many other instances arrived while
#: it waited: the one about to arrive comes first or second.
SHUFFLED_MIN_PASSED = 3
#: Weight of a new round-trip sample in the running estimate.
ROUND_TRIP_WEIGHT = 0.5


class Stream:
    """One retrieval's stream (a series, or a part of it): send order and rate, learnt from arrivals.

    Parameters
    ----------
    members : sequence of str
        The SOP Instance UIDs the retrieval asked for, in C-FIND listing order.
    started : float
        When its C-MOVE/C-GET was sent (monotonic seconds).
    """

    def __init__(self, members: Sequence[str], started: float) -> None:
        self.members = tuple(members)
        self._index = {uid: index for index, uid in enumerate(self.members)}
        self.started = started
        self.arrivals = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.ups = 0
        self.downs = 0
        self._previous = -1

    def __contains__(self, uid: object) -> bool:
        return uid in self._index

    def arrived(self, uid: str, now: float) -> None:
        """Note that ``uid`` came with this stream (not with a hurried retrieval) at ``now``."""
        index = self._index.get(uid)
        if index is None:
            return
        if self.arrivals:
            if index > self._previous:
                self.ups += 1
            else:
                self.downs += 1
        else:
            self.first_at = now
        self._previous = index
        self.last_at = now
        self.arrivals += 1

    def order(self) -> str | None:
        """``ASCENDING``, ``DESCENDING`` or ``SHUFFLED`` (listing order); None until known."""
        if self.arrivals < MIN_ARRIVALS:
            return None
        ups_share = self.ups / (self.ups + self.downs)
        if ups_share >= ORDER_CONFIDENCE:
            return ASCENDING
        if ups_share <= 1 - ORDER_CONFIDENCE:
            return DESCENDING
        return SHUFFLED

    def predictable(self) -> bool:
        """Whether the send order is known to follow the listing, one way or the other."""
        return self.order() in (ASCENDING, DESCENDING)

    def rate(self) -> float | None:
        """Instances per second between the first and the last arrival; None until measurable."""
        if self.arrivals < 2 or self.last_at <= self.first_at:
            return None
        return (self.arrivals - 1) / (self.last_at - self.first_at)

    def ahead_of(self, uid: str, landed: Container[str]) -> float | None:
        """How many instances the stream is expected to send before ``uid``; None if unknown."""
        order = self.order()
        index = self._index.get(uid)
        if order is None or index is None:
            return None
        if order == ASCENDING:
            return float(sum(1 for other in self.members[:index] if other not in landed))
        if order == DESCENDING:
            return float(sum(1 for other in self.members[index + 1 :] if other not in landed))
        missing = sum(1 for other in self.members if other not in landed)
        return max(0.0, (missing - 1) / 2)

    def expected_wait(self, uid: str, landed: Container[str], now: float) -> float | None:
        """Seconds until ``uid`` should arrive with the stream; None while order or rate are unknown."""
        ahead = self.ahead_of(uid, landed)
        rate = self.rate()
        if ahead is None or rate is None:
            return None
        # Counted from the last arrival: a stream that paused since has not sent the ones ahead.
        return max(0.0, self.last_at + (ahead + 1) / rate - now)

    def first_store_latency(self) -> float | None:
        """Request to first arrival: association, matching and one C-STORE, i.e. a round trip."""
        return self.first_at - self.started if self.arrivals else None


def updated_round_trip(previous: float | None, sample: float) -> float:
    """The running single-instance round-trip estimate after one more measured ``sample``."""
    if previous is None:
        return sample
    return (1 - ROUND_TRIP_WEIGHT) * previous + ROUND_TRIP_WEIGHT * sample


def worth_hurrying(
    expected_wait: float | None,
    round_trip: float | None,
    hurried: int,
    *,
    predictable: bool = True,
    passed: int = 0,
) -> bool:
    """The hurry rule: the wait is known and clearly longer than a round trip, and budget is left.

    Parameters
    ----------
    expected_wait : float or None
        Seconds until the stream should deliver the instance (``Stream.expected_wait``).
    round_trip : float or None
        Seconds a single-instance retrieval is expected to take.
    hurried : int
        Hurried retrievals this series has had so far.
    predictable : bool
        Whether the send order is known (ascending or descending). In a shuffled stream the
        expected wait is only an average, and a reader of what is about to arrive (a viewer
        following the stream) must not be hurried: there the reader must first have seen
        ``SHUFFLED_MIN_PASSED`` other instances arrive while it waited. Counting arrivals, not
        seconds, keeps a stream that merely paused (a busy CPU, a slow PACS) from hurrying it.
    passed : int
        Instances the stream delivered while this reader waited.
    """
    if expected_wait is None or round_trip is None or hurried >= MAX_HURRIED:
        return False
    if not predictable and passed < SHUFFLED_MIN_PASSED:
        return False
    return expected_wait > max(HURRY_MIN_WAIT_S, HURRY_FACTOR * round_trip)
