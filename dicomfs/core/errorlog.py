"""One log line per cause, not per file or series: `cp -r` of a series the PACS cannot send fails 500 files.

Each failing FUSE call is still answered with its errno; the log says the cause once, with the
first path it struck, and how many more calls it failed when it is next said (after
``window_s``). Causes are compared without the SOP Instance UID that retrieval errors start with.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

#: A retrieval error names its instance first ("1.2.3.4: the PACS did not send it").
_LEADING_UID = re.compile(r"^[0-9.]+: ")

#: Causes remembered at once (oldest forgotten first): far more than a session has distinct causes.
MAX_CAUSES = 256


def cause_of(message: str) -> str:
    """The part of an error message that is the same for every file it strikes."""
    return _LEADING_UID.sub("", message, count=1)


class OncePerCause:
    """Logs an error the first time its cause is seen, then at most once per ``window_s``.

    Parameters
    ----------
    logger : logging.Logger
        Where the lines go (at ``level``; repeats within the window at DEBUG).
    window_s : float
        Seconds during which the same cause is not said again, only counted.
    clock : callable
        Monotonic seconds; injectable for tests.
    level : int
        The level of the lines that are said (``logging.ERROR`` by default).
    counted : str
        What the repeats are, in "(and 3 more failed calls since)".
    """

    def __init__(
        self,
        logger: logging.Logger,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        level: int = logging.ERROR,
        counted: str = "failed calls",
    ) -> None:
        self._logger = logger
        self._level = level
        self._counted = counted
        self._window_s = window_s
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # cause -> (when said, calls failed since)
        self._lock = threading.Lock()

    def error(self, operation: str, path: str, message: str) -> None:
        """Say that ``operation`` on ``path`` failed with ``message``, unless said moments ago."""
        self.say(f"{operation} {path}", message)

    def say(self, what: str, message: str) -> None:
        """Say ``what: message`` unless the cause (``message`` without a leading UID) was said
        within the window; then it is only counted (and logged at DEBUG)."""
        cause = cause_of(message)
        now = self._clock()
        with self._lock:
            said_at, since = self._last.get(cause, (float("-inf"), 0))
            if now - said_at < self._window_s:
                self._last[cause] = (said_at, since + 1)
                quiet = True
            else:
                if len(self._last) >= MAX_CAUSES and cause not in self._last:
                    self._last.pop(next(iter(self._last)))
                self._last[cause] = (now, 0)
                quiet = False
        if quiet:
            self._logger.debug("%s: %s", what, message)
        elif since:
            self._logger.log(
                self._level, "%s: %s (and %d more %s since)", what, message, since, self._counted
            )
        else:
            self._logger.log(self._level, "%s: %s", what, message)
