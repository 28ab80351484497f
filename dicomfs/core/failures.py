"""Series whose retrieval failed moments ago: their next requests fail at once, for a moment.

After a failed retrieval, further requests for the series fail at once for ``retry_after_s``
(the rest of an ``ls -l`` burst: its 500 files cost one retrieval, not 500), not for a fixed
penalty. An entry is void once the PACS answers again after an outage (its health epoch moved
on), so a restarted PACS is used at once. The table is bounded (``max_entries``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

#: After a failed retrieval of a series, its further requests fail at once for this long: the
#: rest of an `ls -l` burst, not a fixed penalty (the cadence of the PACS reachability check).
RETRY_FAILED_AFTER_S = 1.0
#: Bound of the table of recently failed series: a burst over more series than this only costs
#: an extra retrieval attempt for the oldest ones.
MAX_FAILED_SERIES = 1024


class RecentFailures:
    """Bounded table: series -> (until when requests fail at once, health epoch of the failure).

    Not thread-safe: the caller serialises (``RetrievalScheduler._lock``).

    Parameters
    ----------
    retry_after_s : float
        Seconds a failure refuses further requests.
    max_entries : int
        Bound of the table; when it is full, expired entries go first, else the oldest half.
    clock : callable returning float
        Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        retry_after_s: float = RETRY_FAILED_AFTER_S,
        max_entries: int = MAX_FAILED_SERIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._retry_after_s = retry_after_s
        self._max_entries = max(1, max_entries)
        self._clock = clock
        self._until: dict[Hashable, tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._until)

    def failed(self, series: Hashable, epoch: int) -> None:
        """Remember that the retrieval of ``series`` failed now, in health epoch ``epoch``."""
        now = self._clock()
        self._until.pop(series, None)
        if len(self._until) >= self._max_entries:  # bounded: drop what has expired, else the oldest
            expired = [key for key, (until, _epoch) in self._until.items() if until <= now]
            for key in expired or list(self._until)[: max(1, self._max_entries // 2)]:
                del self._until[key]
        self._until[series] = (now + self._retry_after_s, epoch)

    def succeeded(self, series: Hashable) -> None:
        """Forget any failure of ``series``."""
        self._until.pop(series, None)

    def refuses(self, series: Hashable, epoch: int) -> bool:
        """Whether a request for ``series`` fails at once: it failed moments ago, in ``epoch``."""
        until, failed_in = self._until.get(series, (0.0, -1))
        return failed_in == epoch and self._clock() < until
