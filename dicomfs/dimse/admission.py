"""Which C-STOREs our receiver lets in: today only those a pending retrieval expects.

The sub-operations of a C-MOVE or C-GET are C-STOREs of the instances it matched (PS3.4
C.4.2.3.1, C.4.3.3.1); a C-STORE nobody asked for is a third party filling the cache, and is
refused. Expectations are per (series, SOP Instance UID): two retrievals may expect the same SOP
Instance UID for two different series, and each gets only the object of its own series (the
receiver routes by the three UIDs in the received header).

A later policy (allow-listed senders pushing studies) implements the same ``admit``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dicomfs.core.model import SeriesKey
from dicomfs.core.ports import InstanceSink


def routing(series: SeriesKey) -> SeriesKey:
    """A series key as routes compare it: Patient ID without its padding (PS3.5 6.2, LO)."""
    return (series[0].strip(), series[1], series[2])


@dataclass(frozen=True)
class Admitted:
    """A C-STORE let in: the sinks that may take it, by series (:func:`routing` keys)."""

    sinks: Mapping[SeriesKey, InstanceSink]


class ExpectedOnly:
    """Admits the instances pending retrievals expect (``core.ports.Expectations``).

    Bounded by the retrievals running: each job's expectations are forgotten when it ends.
    Thread-safe; ``_lock`` is a leaf.
    """

    #: Why a C-STORE is refused, for the receiver's log line.
    refusal = "no retrieval asked for it"

    def __init__(self) -> None:
        self._expected: dict[str, dict[SeriesKey, InstanceSink]] = {}
        self._lock = threading.Lock()

    def expect(self, series: SeriesKey, sop_uids: Iterable[str], sink: InstanceSink) -> None:
        """Accept C-STOREs of ``sop_uids`` belonging to ``series`` from now on, for ``sink``."""
        series = routing(series)
        with self._lock:
            for sop_uid in sop_uids:
                self._expected.setdefault(sop_uid, {})[series] = sink

    def forget(self, series: SeriesKey, sop_uids: Iterable[str]) -> None:
        """Refuse C-STOREs of ``sop_uids`` for ``series`` again."""
        series = routing(series)
        with self._lock:
            for sop_uid in sop_uids:
                sinks = self._expected.get(sop_uid)
                if sinks is not None:
                    sinks.pop(series, None)
                    if not sinks:
                        del self._expected[sop_uid]

    def admit(self, sop_uid: str, calling_aet: str) -> Admitted | None:
        """The retrievals expecting ``sop_uid`` (whoever sends it); None when none does.

        The calling AE title is not checked: a PACS's own title may differ from the one we call.
        """
        with self._lock:
            sinks = self._expected.get(sop_uid)
            return Admitted(dict(sinks)) if sinks else None
