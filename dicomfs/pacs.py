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

import dataclasses
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
from dicomfs.negotiation import MAX_CONTEXTS
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
    #: C-GET: the storage (SOP class, transfer syntax) pairs the PACS accepted (PS3.8 9.3.3.2).
    accepted: tuple[tuple[str, str], ...] = ()


def _take_scp_role(accepted_storage: Sequence[Any]) -> None:
    """Act as storage SCP on every accepted storage context of our C-GET, role granted or not.

    We propose the SCP role for each class (PS3.7 D.3.3.4). Orthanc 1.10 accepts contexts of
    classes it does not know (private ones, with ``UnknownSopClassAccepted``) without answering
    that proposal, so the default roles apply and pynetdicom refuses the C-STOREs Orthanc then
    sends over them (0x0122): the object it was asked for is lost. Its sending them is answer
    enough. pynetdicom keeps the negotiated role in ``PresentationContext._as_scp``.
    """
    for context in accepted_storage:
        if not context.as_scp:
            context._as_scp = True


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

    def move(self, identifier: Dataset, destination: str) -> RetrieveOutcome:
        """C-MOVE to ``destination`` (our storage SCP's AE title); sub-operations arrive there."""
        model = _MODELS[self.model]["move"]
        with self._association([(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
            return self._collect(assoc.send_c_move(identifier, destination, model), "C-MOVE")

    def get(
        self,
        identifier: Dataset,
        on_store: Callable[[evt.Event], int],
        storage_contexts: Sequence[tuple[str, Sequence[str]]],
    ) -> RetrieveOutcome:
        """C-GET: the PACS sends C-STOREs on this same association, to ``on_store``.

        ``storage_contexts`` are (SOP class, transfer syntaxes) pairs, at most ``MAX_CONTEXTS - 1``
        (see ``negotiation``); we take the SCP role for each class. The outcome says which pairs
        the PACS accepted.
        """
        model = _MODELS[self.model]["get"]
        uncompressed = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        contexts: list[tuple[str, Sequence[str]]] = [(model, uncompressed)]
        contexts += list(storage_contexts)[: MAX_CONTEXTS - 1]
        classes = list(dict.fromkeys(uid for uid, _ in contexts[1:]))
        # PS3.4 C.4.3.1.3 and PS3.7 D.3.3.4: the C-GET SCU must take the SCP role for the storage
        # classes, or the PACS may not send C-STOREs over them.
        roles = [build_role(uid, scp_role=True) for uid in classes]
        handlers = [(evt.EVT_C_STORE, on_store)]
        with self._association(contexts, roles=roles, handlers=handlers) as assoc:
            storage = [cx for cx in assoc.accepted_contexts if str(cx.abstract_syntax) != model]
            _take_scp_role(storage)
            accepted = tuple((str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in storage)
            outcome = self._collect(assoc.send_c_get(identifier, model), "C-GET")
        return dataclasses.replace(outcome, accepted=accepted)

    @staticmethod
    def _collect(responses: Iterator[tuple[Dataset, Dataset | None]], service: str) -> RetrieveOutcome:
        """Drain C-MOVE/C-GET responses to the final one (PS3.4 C.4.2.1.4)."""
        final: Dataset | None = None
        for status, _identifier in responses:
            code = _status_of(status)
            if code not in STATUS_PENDING:
                final = status
                break
        if final is None:
            raise PacsError(f"{service} ended without a final response")
        outcome = RetrieveOutcome(
            status=int(final.Status),
            completed=int(final.get("NumberOfCompletedSuboperations", 0) or 0),
            failed=int(final.get("NumberOfFailedSuboperations", 0) or 0),
            warning=int(final.get("NumberOfWarningSuboperations", 0) or 0),
        )
        LOGGER.debug("%s final status 0x%04X: %s", service, outcome.status, outcome)
        return outcome
