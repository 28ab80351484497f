"""A Q/R SCP that allows only so many associations at once, and counts what it saw.

dicomfs's demo archive (a full Study/Patient Root Q/R SCP serving a folder) with pynetdicom's
``AE.maximum_associations`` set: one association more is rejected with A-ASSOCIATE-RJ
rejected-transient, source "service-provider (presentation)", reason local-limit-exceeded
(pynetdicom acse.py; PS3.8 9.3.4), as a PACS with a limit per calling AE does.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pynetdicom import evt

from dicomfs.demo.scp import DemoArchive


class LimitedPacs(DemoArchive):
    """At most ``limit`` associations at once; ``peak``, ``established``, ``rejected`` count them."""

    def __init__(
        self, folder: Path, limit: int, *, ae_title: str, move_destinations: Mapping[str, tuple[str, int]]
    ) -> None:
        super().__init__(folder, ae_title=ae_title, move_destinations=move_destinations)
        self.limit = limit
        self._counts = threading.Lock()
        self._open: set[int] = set()  # id() of the established associations not yet ended
        self.peak = 0
        self.established = 0
        self.rejected = 0

    def start(self) -> None:
        super().start()
        server: Any = self._server  # pynetdicom's ThreadedAssociationServer, started just now
        server.ae.maximum_associations = self.limit
        server.bind(evt.EVT_ESTABLISHED, self._on_established)
        server.bind(evt.EVT_RELEASED, self._on_ended)
        server.bind(evt.EVT_ABORTED, self._on_ended)
        server.bind(evt.EVT_REJECTED, self._on_rejected)

    def _on_established(self, event: evt.Event) -> None:
        with self._counts:
            self._open.add(id(event.assoc))
            self.established += 1
            self.peak = max(self.peak, len(self._open))

    def _on_ended(self, event: evt.Event) -> None:
        with self._counts:
            self._open.discard(id(event.assoc))

    def _on_rejected(self, _event: evt.Event) -> None:
        with self._counts:
            self.rejected += 1
