"""Is the PACS answering? One small state per PACS, learned from every association's fate.

Every association attempt tells :class:`PacsHealth` what happened: the PACS answered (accepted or
rejected the A-ASSOCIATE-RQ, PS3.8 7.1.1), or it could not be reached or fell silent. While it is
down, retrievals fail at once instead of each waiting for ``timeout`` (`ls -l` of a 500-file series
costs one timeout, not 500), and a background thread checks the PACS again at most once per
``interval_s`` with a cheap probe (an association and C-ECHO, see ``PacsClient.probe``). The first
probe that gets an answer ends the outage: nothing fails fast for a fixed time after the PACS is
back. The probe runs in its own thread so that no reader waits for it and the state is fresh when
a user comes back after restarting the PACS or the tunnel.

The state is a handful of fields (bounded whatever happens); the clock is injectable for tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dicomfs.core.errors import PacsError

LOGGER = logging.getLogger(__name__)

#: How often a PACS that is down is checked again: often enough that a restarted PACS is used
#: within about a second, rarely enough that a dead one costs nothing (issue 8 item 2).
CHECK_INTERVAL_S = 1.0
#: A reason is shown in every fast failure; keep a hostile or huge exception text bounded.
MAX_REASON_CHARS = 300


class PacsHealth:
    """Whether one PACS answers, with a background re-check while it does not.

    Parameters
    ----------
    probe : Callable[[], None]
        Returns when the PACS answers, raises :class:`PacsError` when it cannot be reached or stays
        silent. It must bound its own wait (the mount's ``timeout``).
    where : str
        How the PACS is named in the log (``AE@host:port``).
    interval_s : float
        Least time between two probes, in seconds.
    clock : Callable[[], float]
        Monotonic seconds; injectable for tests.

    Thread-safe. Lock order: ``_lock`` is a leaf (nothing is called while holding it).
    """

    def __init__(
        self,
        probe: Callable[[], None],
        *,
        where: str,
        interval_s: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._where = where
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._reason: str | None = None  # None: the PACS answered last time we heard from it
        self._confirmed = False  # a probe, too, found it down (not just one failed operation)
        self._epoch = 0  # counts the confirmed outages that have ended
        self._last_probe = float("-inf")
        self._probes = 0
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- what the client reports ------------------------------------------------------------

    def answered(self) -> None:
        """The PACS answered an association request (accepted or rejected): it is reachable."""
        with self._lock:
            was_down = self._reason is not None
            if self._confirmed:
                self._epoch += 1
            self._reason = None
            self._confirmed = False
        if was_down:
            LOGGER.info("PACS %s answers again", self._where)

    def failed(self, reason: str) -> None:
        """The PACS could not be reached, or fell silent (``reason`` says how)."""
        reason = reason[:MAX_REASON_CHARS]
        with self._lock:
            was_up = self._reason is None
            self._reason = reason
            watcher = None
            if self._watcher is None and not self._closed.is_set():
                watcher = threading.Thread(target=self._watch, name="pacs-health", daemon=True)
                self._watcher = watcher
        if was_up:
            LOGGER.warning(
                "PACS %s unreachable (%s); requests fail at once until it answers a check (every %.0f s)",
                self._where,
                reason,
                self._interval_s,
            )
        if watcher is not None:
            watcher.start()

    # -- what readers ask -------------------------------------------------------------------

    @property
    def down_reason(self) -> str | None:
        """Why the PACS is taken to be unreachable, or None while it answers."""
        with self._lock:
            return self._reason

    @property
    def epoch(self) -> int:
        """The number of ended outages that a probe had confirmed; a failure from an earlier
        epoch is history. An operation that failed while the PACS still answers a probe at once
        (it accepts associations but its C-MOVE hangs) does not start an outage of its own."""
        with self._lock:
            return self._epoch

    @property
    def probes(self) -> int:
        """How many probes have run (for tests and the debug log)."""
        with self._lock:
            return self._probes

    # -- the re-check -----------------------------------------------------------------------

    def probe_due_in(self) -> float:
        """Seconds until the next probe may run (0: now); only meaningful while down."""
        with self._lock:
            return max(0.0, self._last_probe + self._interval_s - self._clock())

    def probe_once(self) -> bool:
        """Run the probe now and record its verdict; True when the PACS answered."""
        with self._lock:
            self._last_probe = self._clock()
            self._probes += 1
        try:
            self._probe()
        except PacsError as exc:
            self.failed(str(exc))
            with self._lock:
                self._confirmed = self._reason is not None
            return False
        self.answered()
        return True

    def _watch(self) -> None:
        """Probe at most once per interval until the PACS answers or the mount ends."""
        try:
            while not self._closed.is_set():
                if self.down_reason is None:
                    return
                delay = self.probe_due_in()
                if delay > 0:
                    self._closed.wait(delay)
                    continue
                try:
                    self.probe_once()
                except Exception:  # the watcher must not die silently and leave the PACS "down"
                    LOGGER.exception("checking PACS %s failed", self._where)
                    self._closed.wait(self._interval_s)
        finally:
            with self._lock:
                self._watcher = None
            # A failure reported between the last check and clearing _watcher needs a watcher.
            reason = self.down_reason
            if reason is not None and not self._closed.is_set():
                self.failed(reason)

    def close(self) -> None:
        """Stop re-checking (the mount is ending); waits briefly for a running probe."""
        self._closed.set()
        with self._lock:
            watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=1.0)
