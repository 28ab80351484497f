"""Which SOP classes a series holds, asked of the PACS (IMAGE-level C-FIND), once per retrieval job.

C-GET must offer a presentation context for each SOP class the PACS will send (PS3.4 C.4.3.1.3),
so the first C-GET of a job offers the class of the series' first instance, and after failed
sub-operations the classes of the whole series. SOPClassUID is an optional return key at the
IMAGE level (PS3.4 C.6.1.1.5): a PACS may ignore it (dcmqrscp never returns it), and it is not an
indexed key for every PACS (Orthanc opens the file), hence one instance first, all only when needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from pydicom.dataset import Dataset

from dicomfs.core.errors import PacsError
from dicomfs.core.model import SeriesRef
from dicomfs.dimse.retrievekeys import sop_class_query

LOGGER = logging.getLogger(__name__)


class Finder(Protocol):
    """The C-FIND of ``dimse.client.PacsClient``."""

    model: str

    def find(self, identifier: Dataset, model_name: str = "") -> list[Dataset]:
        """Every C-FIND match of ``identifier``; raises PacsError when the PACS fails."""


class SeriesSopClasses:
    """The SOP classes known for one job's series; thread-safe (its parts share it).

    Parameters
    ----------
    client : Finder
        Asked with IMAGE-level C-FINDs in the mount's query model.
    ref : SeriesRef
        The series.
    order : sequence of str
        Its SOP Instance UIDs in listing order; the first is asked about first.
    """

    def __init__(self, client: Finder, ref: SeriesRef, order: Sequence[str]) -> None:
        self._client = client
        self._ref = ref
        self._first_uid = order[0] if order else ""
        self._classes: list[str] | None = None
        self._lock = threading.Lock()

    def first(self) -> list[str]:
        """The classes known so far: at first, that of the series' first instance (one C-FIND,
        once per job); [] when unknown. Never raises: an unanswered query leaves it unknown."""
        with self._lock:
            if self._classes is None:
                self._classes = self._probe(self._first_uid) if self._first_uid else []
            return list(self._classes)

    def learn_all(self) -> list[str]:
        """Every class the PACS says the series holds (one C-FIND); [] if it does not say.

        Only after failed sub-operations: it may cost the PACS a file read per instance.
        """
        classes = self._probe("")
        with self._lock:
            self._classes = list(dict.fromkeys([*(self._classes or []), *classes]))
        if classes:
            LOGGER.info("series %s holds SOP classes %s", self._ref.series_uid, ", ".join(classes))
        return classes

    def _probe(self, sop_uid: str) -> list[str]:
        """The SOP classes of one instance of the series, or of all (``sop_uid`` empty)."""
        try:
            rows = self._client.find(sop_class_query(self._client.model, self._ref, sop_uid))
        except PacsError as exc:
            LOGGER.info("series %s: SOP class unknown (%s)", self._ref.series_uid, exc)
            return []
        return sorted({str(row.get("SOPClassUID", "")) for row in rows} - {""})
