"""A Q/R SCP that cuts every C-FIND answer after ``cap`` matches and reports plain success.

Many PACSes do this (500 or 1,000 rows, Success, nothing said): the answer looks whole. This is
dicomfs's demo archive (a full Study/Patient Root Q/R SCP serving a folder) with its C-FIND
handler replaced; it counts the C-FINDs it answers and the C-CANCELs it sees (PS3.4 C.4.1.2.3).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from dicomfs.demo.archive import QueryError, build_response
from dicomfs.demo.scp import DemoArchive
from dicomfs.dimse import statuses

#: How long the handler watches for a C-CANCEL once it is told to (a guard against hangs only:
#: the client cancels as soon as it has read its limit).
CANCEL_WATCH_S = 5.0


class CappingPacs(DemoArchive):
    """At most ``cap`` matches per C-FIND, then Success. ``requests["C-FIND"]`` counts queries,
    ``cancels`` the C-CANCELs seen; with ``watch_cancel_after`` N > 0, after its N-th match the
    handler waits (at most ``CANCEL_WATCH_S``) for the client's C-CANCEL before going on."""

    def __init__(self, folder: Path, cap: int, *, ae_title: str = "CAPPING") -> None:
        super().__init__(folder, ae_title=ae_title)
        self.cap = cap
        #: The final status after ``cap`` matches: Success (a silent cut), or what a PACS that
        #: says so answers (0xA700 refuses outright: then no match is sent; 0xB001 warns).
        self.final_status = statuses.SUCCESS
        self.watch_cancel_after = 0
        self.cancels = 0
        self._seen = threading.Lock()

    def start(self) -> None:
        super().start()
        server: Any = self._server  # pynetdicom's ThreadedAssociationServer, started just now
        # An intervention event has one handler: binding ours replaces the demo archive's.
        server.bind(evt.EVT_C_FIND, self._find)

    @property
    def finds(self) -> int:
        """C-FIND requests answered so far."""
        with self._seen:
            return self.requests["C-FIND"]

    def _find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        with self._seen:
            self.requests["C-FIND"] += 1
        assert self.index is not None
        try:
            level, matches = self.index.query(event.identifier, event.context.abstract_syntax)
        except QueryError:
            yield statuses.IDENTIFIER_MISMATCH, None
            return
        if self.final_status == statuses.FIND_OUT_OF_RESOURCES and len(matches) > self.cap:
            yield statuses.FIND_OUT_OF_RESOURCES, None  # refused for its size (dcm4chee)
            return
        final = self.final_status if len(matches) > self.cap else statuses.SUCCESS
        for number, (entity, instance) in enumerate(matches[: self.cap], start=1):
            if event.is_cancelled:
                yield self._cancelled()
                return
            yield statuses.PENDING, build_response(event.identifier, level, entity, instance)
            if self.watch_cancel_after and number >= self.watch_cancel_after and self._await_cancel(event):
                yield self._cancelled()
                return
        yield final, None  # Success: cut silently, the answer looks whole

    def _cancelled(self) -> tuple[int, None]:
        with self._seen:
            self.cancels += 1
        return statuses.CANCEL, None

    @staticmethod
    def _await_cancel(event: evt.Event) -> bool:
        deadline = time.monotonic() + CANCEL_WATCH_S
        while not event.is_cancelled:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True
