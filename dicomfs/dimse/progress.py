"""A C-MOVE/C-GET bounded by its progress, not by a response timeout; its final response.

Pending responses are optional (PS3.4 C.4.2.1.4): a PACS may store for minutes and answer once
at the end, so a response timeout would abort a retrieval that is working, and later C-STOREs
would be refused. And a PACS may send Pending forever without storing anything. So pynetdicom's
DIMSE timeout is lifted for the wait, and :class:`ProgressWatch` watches instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from dicomfs.core.errors import PacsError
from dicomfs.dimse import statuses

LOGGER = logging.getLogger(__name__)

#: Message ID of our C-MOVE/C-GET requests: one per association, so C-CANCEL can name it.
MESSAGE_ID = 1

_COUNT_KEYWORDS = (
    "NumberOfRemainingSuboperations",
    "NumberOfCompletedSuboperations",
    "NumberOfFailedSuboperations",
    "NumberOfWarningSuboperations",
)


@dataclass(frozen=True)
class RetrieveOutcome:
    """The final C-MOVE/C-GET response: PS3.4 C.4.2.1.4 sub-operation counts."""

    status: int
    completed: int
    failed: int
    warning: int
    #: C-GET: the storage (SOP class, transfer syntax) pairs the PACS accepted (PS3.8 9.3.3.2).
    accepted: tuple[tuple[str, str], ...] = ()


def status_of(status: Dataset) -> int:
    """The Status (0000,0900) of a response.

    Raises
    ------
    PacsError
        When it has none: pynetdicom gave up waiting (timeout) or the association was aborted.
    """
    value = getattr(status, "Status", None)
    if value is None:
        raise PacsError("no response from the PACS (timed out or aborted)")
    return int(value)


class ProgressWatch:
    """Bounds a C-MOVE/C-GET by its progress instead of a fixed DIMSE timeout.

    Progress is a C-STORE landing (``progress``: when the caller last saw one, monotonic seconds)
    or a Pending response whose sub-operation counts changed. After ``timeout`` seconds without
    progress, or when ``cancelled()`` says the caller gave up, it sends C-CANCEL (PS3.7 9.3.2.3);
    if no final response follows within ``CANCEL_GRACE_S`` (at once when the PACS never sent a
    response: it is not listening), it aborts the association, which ends the wait (pynetdicom
    then yields an empty status).
    """

    #: Seconds a PACS has to answer C-CANCEL with its final (Cancel) response before A-ABORT.
    CANCEL_GRACE_S = 2.0

    def __init__(
        self,
        assoc: Any,
        model: str,
        timeout: float,
        progress: Callable[[], float] | None,
        cancelled: Callable[[], bool] | None,
    ) -> None:
        self._assoc = assoc
        self._model = model
        self._timeout = timeout
        self._progress = progress
        self._cancelled = cancelled
        self._last = time.monotonic()
        self._counts: tuple[int, ...] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-watch", daemon=True)
        self.reason: str | None = None

    def __enter__(self) -> ProgressWatch:
        self._assoc.dimse_timeout = None  # bounded by this watch instead
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join(timeout=self._timeout + self.CANCEL_GRACE_S)

    def _idle(self, now: float) -> float:
        last = self._last
        if self._progress is not None:
            last = max(last, self._progress())
        return now - last

    def _run(self) -> None:
        interval = max(0.05, min(0.25, self._timeout / 8))
        cancel_sent = 0.0
        while not self._done.wait(interval):
            now = time.monotonic()
            if cancel_sent:
                if now - cancel_sent >= min(self.CANCEL_GRACE_S, self._timeout):
                    self._abort()
                    return
                continue
            idle = self._idle(now)
            if self._cancelled is not None and self._cancelled():
                self.reason = "the retrieval was abandoned"
            elif idle > self._timeout:
                self.reason = f"no progress for {idle:.0f} s (no C-STORE, no sub-operation counted)"
            else:
                continue
            cancel_sent = now
            try:
                self._assoc.send_c_cancel(MESSAGE_ID, query_model=self._model)
            except Exception:  # the association may be gone already; the abort follows anyway
                LOGGER.debug("C-CANCEL not sent", exc_info=True)
            if self._counts is None:  # a PACS that never answered will not answer C-CANCEL either
                self._abort()
                return

    def _abort(self) -> None:
        LOGGER.debug("no final response to C-CANCEL; aborting the association")
        self._assoc.abort()
        # Wake the reader blocked on the DIMSE queue (pynetdicom's own abort paths put the same
        # marker there when the peer goes).
        self._assoc.dimse.msg_queue.put((None, None))

    def responded(self, status: Dataset) -> None:
        """A Pending response: progress only when its sub-operation counts changed."""
        counts = tuple(int(status.get(keyword, 0) or 0) for keyword in _COUNT_KEYWORDS)
        if counts != self._counts:
            self._counts = counts
            self._last = time.monotonic()

    def collect(self, responses: Iterator[tuple[Dataset, Dataset | None]]) -> RetrieveOutcome:
        """Drain C-MOVE/C-GET responses to the final one (PS3.4 C.4.2.1.4, C.4.3.1.4).

        Raises
        ------
        PacsError
            When the PACS falls silent or aborts, when no final response comes, or when the
            watch cancelled the retrieval (the message starts "retrieval cancelled: ").
        """
        final: Dataset | None = None
        try:
            for status, _identifier in responses:
                if not statuses.is_pending(status_of(status)):
                    final = status
                    break
                self.responded(status)
        except PacsError as exc:
            if self.reason:
                raise PacsError(f"retrieval cancelled: {self.reason}") from exc
            raise
        if final is None:
            raise PacsError("the retrieval ended without a final response")
        outcome = RetrieveOutcome(
            status=int(final.Status),
            completed=int(final.get("NumberOfCompletedSuboperations", 0) or 0),
            failed=int(final.get("NumberOfFailedSuboperations", 0) or 0),
            warning=int(final.get("NumberOfWarningSuboperations", 0) or 0),
        )
        LOGGER.debug("final status 0x%04X: %s", outcome.status, outcome)
        if self.reason and outcome.status == statuses.CANCEL:
            raise PacsError(f"retrieval cancelled: {self.reason}")
        return outcome
