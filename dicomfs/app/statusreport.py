"""What ``/.dicomfs/status.json`` says: one mount's state, gathered from its parts at each open.

The PACS and how it is reached, the instance cache's use against ``cachesize``, how many opens
the cache answered, the retrievals under way with their progress, the last warnings and errors,
and how long the mount has run. ``views.control`` renders it; ``dicomfs status`` reads it.
Every list is bounded, so the report always fits the status file's fixed size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from dicomfs import __version__
from dicomfs.app.options import MountOptions
from dicomfs.core.recentlog import LoggedProblem
from dicomfs.core.retrieval import InFlight

#: Retrievals listed at most (the report says how many run in all): a few fit on a screen, and
#: there are at most ``maxassoc`` running and a few queued anyway.
MAX_LISTED_RETRIEVALS = 32

#: Format version of the report, for scripts reading it.
REPORT_VERSION = 1


class OpenCounts(Protocol):
    """Opens answered from the cache and opens that needed a retrieval (``core.instances.Instances``)."""

    hits: int
    misses: int


def iso_time(stamp: float) -> str:
    """Seconds since the epoch -> local ISO 8601 with offset, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stamp))


@dataclass(frozen=True)
class StatusReport:
    """Gathers the report; ``report()`` is the callable ``views.control.ControlView`` takes.

    Attributes
    ----------
    opts : MountOptions
        The mount's options (PACS, retrieval mode, cachedir, cachesize).
    usage : callable returning (int, int)
        Bytes the instance cache uses, and its limit.
    opens : OpenCounts
        Cache hits and misses of opens.
    in_flight : callable returning list of InFlight
        The retrievals under way (``RetrievalScheduler.in_flight``).
    problems : callable returning list of LoggedProblem
        The last warnings and errors (``core.recentlog.RecentProblems.recent``).
    pacs_down : callable returning str or None
        Why the PACS is unreachable now, or None while it answers.
    """

    opts: MountOptions
    usage: Callable[[], tuple[int, int]]
    opens: OpenCounts
    in_flight: Callable[[], list[InFlight]]
    problems: Callable[[], list[LoggedProblem]]
    pacs_down: Callable[[], str | None]
    started: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)

    def report(self) -> dict[str, object]:
        """The report as a JSON-serialisable mapping (keys documented in the README, "Status")."""
        opts = self.opts
        used, limit = self.usage()
        hits, misses = self.opens.hits, self.opens.misses
        flights = self.in_flight()
        return {
            "report_version": REPORT_VERSION,
            "dicomfs": __version__,
            "pid": os.getpid(),
            "mountpoint": opts.mountpoint,
            "pacs": f"{opts.aec}@{opts.serveraddress}:{opts.serverport}",
            "profile": opts.profile or None,
            "calling_aet": opts.aet,
            "retrieve": opts.retrieve,
            "pacs_unreachable": self.pacs_down(),
            "cachedir": opts.cachedir,
            "cache_used_bytes": used,
            "cache_limit_bytes": limit,
            "opens_from_cache": hits,
            "opens_retrieved": misses,
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
            "retrievals_in_flight": len(flights),
            "retrievals": [
                {
                    "series_uid": flight.series_uid,
                    "instances_done": flight.received,
                    "instances_expected": flight.expected,
                    "bytes_done": flight.received_bytes,
                    "running_s": round(flight.running_s, 1),
                }
                for flight in flights[:MAX_LISTED_RETRIEVALS]
            ],
            "last_errors": [
                {"time": iso_time(problem.time), "level": problem.level, "message": problem.message}
                for problem in self.problems()
            ],
            "started": iso_time(self.started),
            "uptime_s": round(time.monotonic() - self.started_monotonic, 1),
            "now": iso_time(time.time()),
        }
