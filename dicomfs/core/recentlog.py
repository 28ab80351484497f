"""The last warnings and errors of a mount, kept in memory for ``dicomfs status``.

A :class:`logging.Handler` on the ``dicomfs`` logger (installed by ``app/compose.py`` while the
mount runs) keeps the newest WARNING-and-above records in a bounded deque, so the status file can
show what went wrong lately without reading the log (which may be in journald or syslog).
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass

#: Records kept: enough to see the causes of the last few failures (each cause is logged once,
#: not once per file: ``errorlog``), few enough to fit the fixed-size status file.
MAX_RECORDS = 20

#: Characters kept of one message (a PACS's error comment can be long).
MAX_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class LoggedProblem:
    """One WARNING-or-worse log record, as the status file shows it.

    Attributes
    ----------
    time : float
        When it was logged, seconds since the epoch.
    level : str
        ``"WARNING"``, ``"ERROR"`` or ``"CRITICAL"``.
    message : str
        The formatted message, at most ``MAX_MESSAGE_CHARS`` characters (no traceback).
    """

    time: float
    level: str
    message: str


class RecentProblems(logging.Handler):
    """Keeps the last ``max_records`` records of ``level`` or worse (oldest out first).

    Parameters
    ----------
    max_records : int
        Bound of the table.
    level : int
        The least severe level kept (``logging.WARNING``).
    """

    def __init__(self, max_records: int = MAX_RECORDS, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self._records: collections.deque[LoggedProblem] = collections.deque(maxlen=max_records)
        self._guard = threading.Lock()  # logging.Handler's own lock is taken by handle()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break the caller's logging call
            message = str(record.msg)
        problem = LoggedProblem(record.created, record.levelname, message[:MAX_MESSAGE_CHARS])
        with self._guard:
            self._records.append(problem)

    def recent(self) -> list[LoggedProblem]:
        """The records kept, oldest first."""
        with self._guard:
            return list(self._records)

    def install(self, logger_name: str = "dicomfs") -> None:
        """Start keeping the records of ``logger_name`` and its children."""
        logging.getLogger(logger_name).addHandler(self)

    def remove(self, logger_name: str = "dicomfs") -> None:
        """Stop keeping records (the mount ends)."""
        logging.getLogger(logger_name).removeHandler(self)
