"""The PACS client: C-ECHO, C-FIND, C-MOVE and C-GET over pynetdicom.

Every association gets the same tuning (why: measured on loopback against Orthanc, see issue #3):

* ``TCP_NODELAY`` on our sockets, because neither side disables Nagle and every DIMSE
  request/response pair otherwise stalls ~40 ms on delayed ACKs;
* ``max_pdu=0`` (unlimited receive PDU), because the stock 16 kB PDU costs ~10 %;
* identifiers are not formatted for the debug log (``LOG_RESPONSE_IDENTIFIERS``), which costs
  ~40 % on large listings even when logging is off.

Every network wait is bounded by the mount's ``timeout``; a silent PACS becomes :class:`PacsError`.
Each query uses its own short association: pynetdicom 3.0.4 can lose a C-FIND response on a
reused association when queries come back to back (issue #4).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, build_role, evt

from dicomfs.errors import PacsError, QueryRefused
from dicomfs.negotiation import MAX_CONTEXTS, get_storage_contexts
from dicomfs.tuning import install, tune_socket

LOGGER = logging.getLogger(__name__)

# Formatting every C-FIND identifier for a debug log nobody reads costs ~40 % of a listing.
_config.LOG_RESPONSE_IDENTIFIERS = False
_config.LOG_REQUEST_IDENTIFIERS = False
install()

# PS3.4 C.4: statuses of C-FIND/C-MOVE/C-GET responses.
STATUS_SUCCESS = 0x0000
STATUS_PENDING = frozenset({0xFF00, 0xFF01})
STATUS_WARNING = 0xB000
STATUS_CANCEL = 0xFE00
#: Message ID of our C-MOVE/C-GET requests: one per association, so C-CANCEL can name it.
MESSAGE_ID = 1

# SOP Class UIDs (PS3.4 Annex A.4 and C.6); pynetdicom exposes them only as dynamic attributes.
Verification = "1.2.840.10008.1.1"
PatientRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.1.1"
PatientRootQueryRetrieveInformationModelMove = "1.2.840.10008.5.1.4.1.2.1.2"
PatientRootQueryRetrieveInformationModelGet = "1.2.840.10008.5.1.4.1.2.1.3"
StudyRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.2.1"
StudyRootQueryRetrieveInformationModelMove = "1.2.840.10008.5.1.4.1.2.2.2"
StudyRootQueryRetrieveInformationModelGet = "1.2.840.10008.5.1.4.1.2.2.3"

_MODELS: Mapping[str, Mapping[str, str]] = {
    "study": {
        "find": StudyRootQueryRetrieveInformationModelFind,
        "move": StudyRootQueryRetrieveInformationModelMove,
        "get": StudyRootQueryRetrieveInformationModelGet,
    },
    "patient": {
        "find": PatientRootQueryRetrieveInformationModelFind,
        "move": PatientRootQueryRetrieveInformationModelMove,
        "get": PatientRootQueryRetrieveInformationModelGet,
    },
}


@dataclass(frozen=True)
class PacsAddress:
    """Where the PACS is and who we are to it."""

    host: str
    port: int
    called_aet: str
    calling_aet: str
    timeout: float
    max_associations: int = 4
    ssl_context: Any = None  # ssl.SSLContext for DICOM over TLS, or None


@dataclass(frozen=True)
class RetrieveOutcome:
    """The final C-MOVE/C-GET response: PS3.4 C.4.2.1.4 sub-operation counts."""

    status: int
    completed: int
    failed: int
    warning: int


def _status_of(status: Dataset) -> int:
    """The Status of a response; a missing one means pynetdicom gave up (timeout or abort)."""
    value = getattr(status, "Status", None)
    if value is None:
        raise PacsError("no response from the PACS (timed out or aborted)")
    return int(value)


class PacsClient:
    """Speaks DIMSE to one PACS. Thread-safe; at most ``max_associations`` associations at once."""

    def __init__(self, address: PacsAddress, model: str = "study") -> None:
        self.address = address
        self.model = model
        self._slots = threading.BoundedSemaphore(address.max_associations)

    # -- associations -------------------------------------------------------------------------

    def _new_ae(self) -> AE:
        ae = AE(ae_title=self.address.calling_aet)
        timeout = self.address.timeout
        ae.acse_timeout = timeout
        ae.dimse_timeout = timeout
        ae.network_timeout = timeout
        ae.connection_timeout = timeout
        ae.maximum_pdu_size = 0
        return ae

    @contextmanager
    def _association(
        self,
        contexts: Sequence[tuple[str, Sequence[str]]],
        *,
        roles: Sequence[Any] = (),
        handlers: Sequence[tuple[Any, Callable[..., Any]]] = (),
    ) -> Iterator[Any]:
        """An established association, released (or aborted) on exit; waits for a free slot.

        A-RELEASE takes pynetdicom ~10 ms of polling, so it happens in the background, after the
        caller has its answer; the slot is given back only once the association is gone.
        """
        if not self._slots.acquire(timeout=self.address.timeout):
            raise PacsError(f"all {self.address.max_associations} associations to the PACS stay busy")
        releasing = False
        try:
            ae = self._new_ae()
            for abstract, syntaxes in contexts:
                ae.add_requested_context(abstract, list(syntaxes))
            tls_args = (self.address.ssl_context, self.address.host) if self.address.ssl_context else None
            assoc = ae.associate(
                self.address.host,
                self.address.port,
                ae_title=self.address.called_aet,
                max_pdu=0,
                ext_neg=list(roles) or None,
                evt_handlers=[(evt.EVT_CONN_OPEN, tune_socket), *handlers],
                tls_args=tls_args,
            )
            if not assoc.is_established:
                # A rejection is an answer (e.g. no proposed context accepted); anything else is not.
                failure = QueryRefused if assoc.is_rejected else PacsError
                raise failure(self._refusal_reason(assoc))
            try:
                yield assoc
            except BaseException:
                assoc.abort()
                raise
            releasing = True
            threading.Thread(target=self._release, args=(assoc,), name="release", daemon=True).start()
        finally:
            if not releasing:
                self._slots.release()

    def _release(self, assoc: Any) -> None:
        try:
            assoc.release()
        except Exception:  # the peer may be gone already; nothing is waiting for this
            LOGGER.debug("A-RELEASE failed", exc_info=True)
        finally:
            self._slots.release()

    def _refusal_reason(self, assoc: Any) -> str:
        where = f"{self.address.called_aet}@{self.address.host}:{self.address.port}"
        if assoc.is_rejected:
            return f"association rejected by {where}"
        if assoc.is_aborted:
            return f"association aborted by {where}"
        return f"cannot reach PACS {where}"

    # -- services ------------------------------------------------------------------------------

    def echo(self) -> None:
        """C-ECHO; raises PacsError unless the PACS answers Success."""
        with self._association([(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
            status = assoc.send_c_echo()
            if _status_of(status) != STATUS_SUCCESS:
                raise PacsError(f"C-ECHO failed with status 0x{int(status.Status):04X}")

    def find(self, identifier: Dataset, model_name: str = "") -> list[Dataset]:
        """C-FIND with ``identifier`` in the mount's query model (or ``model_name``); all matches.

        Raises QueryRefused when the PACS does not accept the model or fails the query, and
        PacsError when it cannot be reached or gives up.
        """
        model = _MODELS[model_name or self.model]["find"]
        started = time.monotonic()
        matches: list[Dataset] = []
        # Both models are proposed: a PACS that accepts none of the contexts aborts the association
        # (pynetdicom), which would look like an outage; with two, the missing one is a clear "no".
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        contexts = [(models["find"], syntaxes) for models in _MODELS.values()]
        with self._association(contexts) as assoc:
            if not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
                raise QueryRefused(
                    f"the PACS does not accept C-FIND in the {model_name or self.model} root model"
                )
            for status, match in assoc.send_c_find(identifier, model):
                code = _status_of(status)
                if code in STATUS_PENDING:
                    if match is not None:
                        matches.append(match)
                elif code == STATUS_SUCCESS:
                    break
                else:
                    raise QueryRefused(f"C-FIND failed with status 0x{code:04X}")
        LOGGER.debug(
            "C-FIND %s: %d matches in %.3f s",
            identifier.get("QueryRetrieveLevel", "?"),
            len(matches),
            time.monotonic() - started,
        )
        return matches

    def move(
        self,
        identifier: Dataset,
        destination: str,
        *,
        progress: Callable[[], float] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> RetrieveOutcome:
        """C-MOVE to ``destination`` (our storage SCP's AE title); sub-operations arrive there.

        ``progress`` returns when (monotonic seconds) the caller last saw one of the retrieval's
        C-STOREs land, ``cancelled`` whether it no longer wants the retrieval: see
        :class:`ProgressWatch`. Raises PacsError when the PACS fails, is silent, or the retrieval
        makes no progress for ``timeout`` seconds (it is then cancelled).
        """
        model = _MODELS[self.model]["move"]
        contexts = [(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
        with (
            self._association(contexts) as assoc,
            ProgressWatch(assoc, model, self.address.timeout, progress, cancelled) as watch,
        ):
            return watch.collect(assoc.send_c_move(identifier, destination, model, msg_id=MESSAGE_ID))

    def get(
        self,
        identifier: Dataset,
        on_store: Callable[[evt.Event], int],
        sop_classes: Sequence[str] = (),
        compressed_first: bool = False,
        *,
        progress: Callable[[], float] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> RetrieveOutcome:
        """C-GET: the PACS sends C-STOREs on this same association, to ``on_store``.

        ``sop_classes`` (the series', or [] when unknown) and ``compressed_first`` choose the
        storage contexts offered: see ``negotiation.get_storage_contexts``. ``progress`` and
        ``cancelled`` as for :meth:`move`.
        """
        model = _MODELS[self.model]["get"]
        uncompressed = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        contexts: list[tuple[str, Sequence[str]]] = [(model, uncompressed)]
        contexts += get_storage_contexts(sop_classes, MAX_CONTEXTS - 1, compressed_first)
        classes = list(dict.fromkeys(uid for uid, _ in contexts[1:]))
        # PS3.4 C.4.3.1.3: the C-GET SCU must take the SCP role for the storage classes.
        roles = [build_role(uid, scp_role=True) for uid in classes]
        handlers = [(evt.EVT_C_STORE, on_store)]
        with (
            self._association(contexts, roles=roles, handlers=handlers) as assoc,
            ProgressWatch(assoc, model, self.address.timeout, progress, cancelled) as watch,
        ):
            return watch.collect(assoc.send_c_get(identifier, model, msg_id=MESSAGE_ID))


class ProgressWatch:
    """Bounds a C-MOVE/C-GET by its progress instead of a fixed DIMSE timeout.

    Pending responses are optional (PS3.4 C.4.2.1.4): a PACS may store for minutes and answer
    once at the end, so a response timeout would abort a retrieval that is working, and later
    C-STOREs would be refused. And a PACS may send Pending forever without storing anything. So
    pynetdicom's DIMSE timeout is lifted for the wait, and a thread watches instead: progress is
    a C-STORE landing (``progress``) or a Pending response whose sub-operation counts changed.
    After ``timeout`` seconds without progress, or when ``cancelled()`` says the caller gave up,
    it sends C-CANCEL (PS3.7 9.3.2.3); if no final response follows within ``CANCEL_GRACE_S``
    (at once when the PACS never sent a response: it is not listening), it aborts the
    association, which ends the wait (pynetdicom then yields an empty status).
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
        counts = tuple(
            int(status.get(keyword, 0) or 0)
            for keyword in (
                "NumberOfRemainingSuboperations",
                "NumberOfCompletedSuboperations",
                "NumberOfFailedSuboperations",
                "NumberOfWarningSuboperations",
            )
        )
        if counts != self._counts:
            self._counts = counts
            self._last = time.monotonic()

    def collect(self, responses: Iterator[tuple[Dataset, Dataset | None]]) -> RetrieveOutcome:
        """Drain C-MOVE/C-GET responses to the final one (PS3.4 C.4.2.1.4)."""
        final: Dataset | None = None
        try:
            for status, _identifier in responses:
                code = _status_of(status)
                if code not in STATUS_PENDING:
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
        if self.reason and outcome.status == STATUS_CANCEL:
            raise PacsError(f"retrieval cancelled: {self.reason}")
        return outcome
