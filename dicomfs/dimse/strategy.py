"""How a part of a series is retrieved: C-MOVE or C-GET, the fallbacks, and judging the outcome.

This is the DIMSE side of ``core.ports.RetrieveService``; the engine (``core.retrieval``) only
schedules. For one part (a list of SOP Instance UIDs, or the whole series):

1. ``retrieve=move``: a C-MOVE to our storage SCP (PS3.4 C.4.2; its sub-operations, C.4.2.3.1,
   are C-STOREs on an association the PACS opens to us). A PACS that keys series by Series
   Instance UID alone (Orthanc) answers a SERIES-level request with another study's series of
   the same UID: then the missing instances are asked for by their SOP Instance UIDs (IMAGE
   level, list matching, PS3.4 C.4.2.2.1).
2. Failed sub-operations (a PACS that cannot convert to what it was offered: dcmqrscp) lead to
   C-GETs (PS3.4 C.4.3; C-STOREs on our own association, C.4.3.3.1) of the missing instances,
   each offering what ``offers.OfferPlanner`` has learned: the series' SOP classes exactly
   (``sopclasses``), then each compressed syntax the PACS accepted first, then further classes.
   ``retrieve=get`` starts here.
3. A PACS that matches nothing for a list of UIDs (no list matching) gets the whole series.

Outcomes are judged by their final status (``statuses``, named from ``pynetdicom.status``) and
by what has actually landed (``core.ports.RetrievalProgress.missing``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dicomfs.core.errors import PacsError
from dicomfs.core.health import PacsHealth
from dicomfs.core.model import SeriesRef
from dicomfs.core.ports import RetrievalProgress
from dicomfs.dimse import statuses
from dicomfs.dimse.client import PacsClient
from dicomfs.dimse.explain import explain_move_status
from dicomfs.dimse.offers import Offer, OfferPlanner
from dicomfs.dimse.progress import RetrieveOutcome
from dicomfs.dimse.receiver import InstanceReceiver
from dicomfs.dimse.retrievekeys import series_identifier
from dicomfs.dimse.sopclasses import SeriesSopClasses

LOGGER = logging.getLogger(__name__)

#: C-GETs one part may take after failed sub-operations: the planner rarely has more than four
#: offers (classes exactly, two or three accepted compressed syntaxes, further classes).
MAX_GET_ROUNDS = 8


class DimseRetrieval:
    """``core.ports.RetrieveService`` over one PACS: C-MOVE or C-GET with their fallbacks.

    Parameters
    ----------
    client : PacsClient
        Speaks to the PACS (its ``health`` is this service's).
    receiver : InstanceReceiver
        Handles the C-STOREs of our C-GETs (C-MOVE's go to the storage SCP, which shares it).
    method : str
        "move" (C-MOVE first) or "get" (C-GET only).
    destination_aet : str
        Our storage SCP's AE title: the C-MOVE destination (PS3.4 C.4.2.1.2).
    timeout : float
        Seconds an asynchronous C-MOVE SCP may take between late C-STOREs.
    """

    def __init__(
        self,
        client: PacsClient,
        receiver: InstanceReceiver,
        *,
        method: str,
        destination_aet: str,
        timeout: float,
    ) -> None:
        self.client = client
        self.receiver = receiver
        self.method = method
        self.destination_aet = destination_aet
        self.timeout = timeout

    @property
    def health(self) -> PacsHealth:
        """The PACS's reachability, learned from every association of ``client``."""
        return self.client.health

    def series(self, ref: SeriesRef, order: Sequence[str], progress: RetrievalProgress) -> SeriesStrategy:
        """The retrievals of one job of ``ref`` (``order``: its SOP Instance UIDs, listing order)."""
        return SeriesStrategy(self, ref, tuple(order), progress)


class SeriesStrategy:
    """The retrievals of one job: each part with every fallback. Thread-safe (parts share it)."""

    def __init__(
        self, service: DimseRetrieval, ref: SeriesRef, order: tuple[str, ...], progress: RetrievalProgress
    ) -> None:
        self._service = service
        self._client = service.client
        self._ref = ref
        self._order = order
        self._job = progress
        self._classes = SeriesSopClasses(self._client, ref, order)

    def retrieve(self, sop_uids: tuple[str, ...]) -> str | None:
        """Retrieve a part (``()``: the whole series); why instances are missing, or None.

        Never raises for the PACS's failures (``PacsError``): they become the returned reason.
        """
        wanted = sop_uids or self._order
        error: str | None = None
        if self._service.method == "move":
            try:
                error, outcome = self._move(sop_uids, wanted)
            except PacsError as exc:
                return str(exc)
            if error is None or not outcome.failed:
                return error
        return self._get_rounds(sop_uids, wanted, error)

    def _move(self, sop_uids: tuple[str, ...], wanted: Sequence[str]) -> tuple[str | None, RetrieveOutcome]:
        """C-MOVE, and once more by SOP Instance UIDs for what a SERIES-level request missed."""
        stores_before = self._service.receiver.stores_seen
        outcome = self._retrieve(sop_uids, None)
        # The PACS could not send to us at all (0xA801, Orthanc's 0xC000 when no C-STORE reached
        # us): say why and what to do, in words without counts, so the cause is logged once however
        # many files it fails. Orthanc also answers 0xC000 after we refused what it sent (another
        # patient's series of the same UID): that is for the retry by SOP Instance UID below.
        reached_us = self._service.receiver.stores_seen != stores_before
        why = (
            None
            if reached_us
            else explain_move_status(
                outcome.status, completed=outcome.completed, destination=self._service.destination_aet
            )
        )
        error = why.line() if why is not None else self._judge(wanted, outcome)
        missing = self._job.missing(wanted)
        if (
            error is not None
            and not sop_uids
            and missing
            and not self._job.finished
            and why is None
            and not outcome.failed
        ):
            # A PACS that keys series by Series Instance UID alone (Orthanc) answers a
            # SERIES-level request with another study's series of the same UID: ask for the
            # missing objects by their SOP Instance UIDs (PS3.4 C.4.2.2.1). Failed
            # sub-operations (a PACS that cannot convert) go to the C-GET offers instead.
            LOGGER.info(
                "series %s: %s; asking for the %d missing instances by SOP Instance UID",
                self._ref.series_uid,
                error,
                len(missing),
            )
            try:
                outcome = self._retrieve(missing, None)
            except PacsError as exc:
                raise PacsError(f"{error}; then: {exc}") from exc
            error = self._judge(wanted, outcome)
        return error, outcome

    def _get_rounds(self, sop_uids: tuple[str, ...], wanted: Sequence[str], error: str | None) -> str | None:
        """C-GETs, each offering what the planner learned from the last (at most MAX_GET_ROUNDS)."""
        planner = OfferPlanner(self._classes.first())
        offer: Offer | None = planner.first()
        learned = warned = False
        for _round in range(MAX_GET_ROUNDS):
            if offer is None:
                break
            if error is not None:  # the first retry is worth a warning, the next ones are details
                log = LOGGER.info if warned else LOGGER.warning
                log("series %s: %s; trying C-GET offering %s", self._ref.series_uid, error, offer.why)
                warned = True
            missing = self._job.missing(wanted)
            part = missing if error is not None and 0 < len(missing) < len(wanted) else sop_uids
            try:
                outcome = self._retrieve(part, offer)
            except PacsError as exc:
                return str(exc) if error is None else f"{error}; then C-GET: {exc}"
            error = self._judge(wanted, outcome)
            if error is None or not outcome.failed:
                return error
            planner.note_accepted(outcome.accepted)
            if not learned:  # once: which classes does the series hold?
                learned = True
                planner.learn_classes(self._classes.learn_all())
            offer = planner.next()
        return error

    def _retrieve(self, sop_uids: Sequence[str], offer: Offer | None) -> RetrieveOutcome:
        """C-MOVE (``offer`` None) or C-GET of ``sop_uids`` (() = the series); whole series if
        the PACS matches nothing for a list of UIDs (it does not do list matching)."""
        outcome = self._request(sop_uids, offer)
        if len(sop_uids) > 1 and not (outcome.completed or outcome.failed or outcome.warning):
            LOGGER.info("series %s: UID-list retrieval matched nothing; whole series", self._ref.series_uid)
            outcome = self._request((), offer)
        return outcome

    def _request(self, sop_uids: Sequence[str], offer: Offer | None) -> RetrieveOutcome:
        identifier = series_identifier(self._client.model, self._ref, sop_uids)
        job = self._job

        # A retrieval lasts while C-STOREs land for the job (its progress), not for a fixed time:
        # Pending responses are optional (PS3.4 C.4.2.1.4). An abandoned job's retrievals end.
        def progress() -> float:
            return job.last_activity

        def cancelled() -> bool:
            return job.finished

        if offer is not None:
            return self._client.get(
                identifier,
                self._service.receiver.handle_store,
                offer.contexts,
                progress=progress,
                cancelled=cancelled,
            )
        outcome = self._client.move(
            identifier, self._service.destination_aet, progress=progress, cancelled=cancelled
        )
        reported = outcome.completed + outcome.warning
        late = job.await_late(sop_uids or self._order, reported, self._service.timeout)
        if late:
            LOGGER.info(
                "series %s: %d instances arrived after the final C-MOVE response (asynchronous C-MOVE)",
                self._ref.series_uid,
                late,
            )
        return outcome

    def _judge(self, wanted: Sequence[str], outcome: RetrieveOutcome) -> str | None:
        """Why a part failed, or None; logs partial deliveries that lost nothing."""
        missing = len(self._job.missing(wanted))
        error, partial = judge(outcome, missing, len(wanted), self._service.destination_aet)
        if partial is not None:
            LOGGER.warning("series %s: %s", self._ref.series_uid, partial)
        return error


def judge(
    outcome: RetrieveOutcome, missing: int, wanted: int, destination: str
) -> tuple[str | None, str | None]:
    """Judge a final C-MOVE/C-GET response against what arrived (PS3.4 C.4.2.1.5, C.4.3.1.4).

    Parameters
    ----------
    outcome : RetrieveOutcome
        The final response's status and sub-operation counts.
    missing : int
        Wanted instances that have not landed.
    wanted : int
        Instances the request asked for.
    destination : str
        Our C-MOVE destination AE title, named when the PACS does not know it.

    Returns
    -------
    (str or None, str or None)
        Why the request failed (instances are missing, or the destination is unknown: 0xA801),
        or None; and a remark worth a warning when the PACS reported failures, warnings or a
        failure status although every wanted instance is there.
    """
    if outcome.status == statuses.MOVE_DESTINATION_UNKNOWN:
        why = explain_move_status(outcome.status, completed=outcome.completed, destination=destination)
        if why is not None:  # one wording of the cause and its fix (dimse.explain)
            return why.line(), None
    if outcome.status == statuses.SUCCESS and not (outcome.failed or outcome.warning or missing):
        return None, None
    message = (
        f"status 0x{outcome.status:04X}, {outcome.completed} completed, {outcome.failed} failed, "
        f"{outcome.warning} warning sub-operations; {missing} of {wanted} requested instances missing"
    )
    return (message, None) if missing else (None, message)
