"""The PACS client: C-ECHO, C-FIND, C-MOVE and C-GET over pynetdicom.

Every association gets the same tuning (why: measured on loopback against Orthanc, see issue #3):

* ``TCP_NODELAY`` on our sockets, because neither side disables Nagle and every DIMSE
  request/response pair otherwise stalls ~40 ms on delayed ACKs;
* a 4 MiB receive PDU (``tuning.MAX_RECEIVE_PDU``), because the stock 16 kB PDU costs ~10 %,
  and an unlimited one lets a peer send a whole huge object as one PDU (memory);
* identifiers are not formatted for the debug log (``LOG_RESPONSE_IDENTIFIERS``), which costs
  ~40 % on large listings even when logging is off.

Every network wait is bounded by the mount's ``timeout``; a silent PACS becomes :class:`PacsError`.
Each query uses its own short association: pynetdicom 3.0.4 can lose a C-FIND response on a
reused association when queries come back to back (issue #4).

Every association attempt reports to :class:`~dicomfs.core.health.PacsHealth` whether the PACS answered.
A PACS that rejects an association *transiently* (A-ASSOCIATE-RJ result 2, PS3.8 9.3.4: e.g. its
limit of associations per calling AE is reached) is pushing back: the request is tried again after
a short back-off, within ``timeout``, and the number of associations dicomfs opens to that PACS is
lowered to what it accepted (logged once).
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

from dicomfs.core.errors import PacsError, QueryRefused
from dicomfs.core.health import PacsHealth
from dicomfs.dimse.negotiation import MAX_CONTEXTS
from dicomfs.dimse.patches import MAX_RECEIVE_PDU, install, tune_socket

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

# PS3.8 9.3.4 A-ASSOCIATE-RJ Result: 1 rejected-permanent, 2 rejected-transient ("try again later":
# temporary congestion or local limit exceeded, source 3).
RESULT_REJECTED_TRANSIENT = 0x02
#: First pause after a transient rejection, doubled each time up to the longest; all within timeout.
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0

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


class AssociationsBusy(PacsError):
    """No association slot came free within ``timeout``: ours are all in use (not the PACS's fault)."""


class AssociationSlots:
    """At most ``limit`` associations at once; the PACS's push-back can lower the limit.

    A bounded semaphore whose bound can shrink: it is never raised again, because a PACS's limit
    of associations per calling AE is configuration, not load.
    """

    def __init__(self, limit: int) -> None:
        self._cond = threading.Condition()
        self._limit = max(1, limit)
        self._in_use = 0
        self._established = 0
        self._peak_established = 0

    @property
    def limit(self) -> int:
        with self._cond:
            return self._limit

    def acquire(self, timeout: float) -> bool:
        """Take a slot within ``timeout`` seconds; False when none came free."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._in_use >= self._limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self._in_use += 1
            return True

    def established(self) -> None:
        """The caller's slot now holds an established association."""
        with self._cond:
            self._established += 1
            self._peak_established = max(self._peak_established, self._established)

    def release(self, established: bool = False) -> None:
        with self._cond:
            self._in_use -= 1
            if established:
                self._established -= 1
            self._cond.notify()

    def lower_to_others(self) -> int | None:
        """A transient rejection of the caller's attempt: at most the *other* slots in use.

        The others (established, or still negotiating) bound from above what the PACS accepts,
        so simultaneous rejections walk the limit down to it. It never goes below the most
        associations the PACS has had established at once: a rejection then comes from the
        PACS still counting one that has just ended (pynetdicom counts its association threads).
        Returns the new limit, or None when it did not change.
        """
        with self._cond:
            accepted = max(1, self._in_use - 1, self._peak_established)
            if accepted >= self._limit:
                return None
            self._limit = accepted
            return accepted


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
        self._slots = AssociationSlots(address.max_associations)
        self._learning = False  # a transient rejection has lowered the limit
        self._limit_unlogged = threading.Lock()  # taken (for good) by the one "lowered" log line
        self.where = f"{address.called_aet}@{address.host}:{address.port}"
        self.health = PacsHealth(self.probe, where=self.where)

    def close(self) -> None:
        """Stop the background reachability check (FUSE destroy())."""
        self.health.close()

    @property
    def max_associations(self) -> int:
        """The current limit: ``maxassoc``, or lower once the PACS has pushed back."""
        return self._slots.limit

    # -- associations -------------------------------------------------------------------------

    def _new_ae(self) -> AE:
        ae = AE(ae_title=self.address.calling_aet)
        timeout = self.address.timeout
        ae.acse_timeout = timeout
        ae.dimse_timeout = timeout
        ae.network_timeout = timeout
        ae.connection_timeout = timeout
        ae.maximum_pdu_size = MAX_RECEIVE_PDU
        return ae

    @contextmanager
    def _association(
        self,
        contexts: Sequence[tuple[str, Sequence[str]]],
        *,
        roles: Sequence[Any] = (),
        handlers: Sequence[tuple[Any, Callable[..., Any]]] = (),
        retry_transient: bool = True,
    ) -> Iterator[Any]:
        """An established association, released (or aborted) on exit; waits for a free slot.

        A-RELEASE takes pynetdicom ~10 ms of polling, so it happens in the background, after the
        caller has its answer; the slot is given back only once the association is gone. A
        transient rejection is retried with a back-off until ``timeout`` (``retry_transient``).
        """
        deadline = time.monotonic() + self.address.timeout
        backoff = BACKOFF_FIRST_S
        while True:
            assoc = self._open(contexts, roles, handlers, deadline)
            if assoc is not None:
                break
            self._learning = True
            if not retry_transient or time.monotonic() + backoff > deadline:
                raise QueryRefused(
                    f"{self.where} kept rejecting the association as busy (rejected-transient, "
                    f"PS3.8 9.3.4) for {self.address.timeout:g} s"
                )
            time.sleep(backoff)  # back-off the PACS asked for, bounded by the deadline above
            backoff = min(2 * backoff, BACKOFF_MAX_S)
        lowered = self._learning and self._slots.limit < self.address.max_associations
        if lowered and self._limit_unlogged.acquire(blocking=False):
            # Logged once, when a retry after the push-back got through: the limit has settled.
            LOGGER.warning(
                "%s rejected associations as busy (rejected-transient, PS3.8 9.3.4): "
                "lowered to at most %d associations at once (maxassoc=%d)",
                self.where,
                self._slots.limit,
                self.address.max_associations,
            )
        releasing = False
        try:
            try:
                try:
                    yield assoc
                except RuntimeError as exc:
                    if assoc.is_established:
                        raise
                    # pynetdicom's send_c_* raise RuntimeError on an association the peer (or
                    # our progress watch) has just aborted: that is the PACS going away.
                    raise PacsError(f"the PACS ended the association ({exc})") from exc
            except BaseException as exc:
                assoc.abort()
                if isinstance(exc, PacsError) and not isinstance(exc, QueryRefused):
                    self.health.failed(str(exc))  # it stopped answering mid-association
                raise
            releasing = True
            threading.Thread(target=self._release, args=(assoc,), name="release", daemon=True).start()
        finally:
            if not releasing:
                self._slots.release(established=True)

    def _open(
        self,
        contexts: Sequence[tuple[str, Sequence[str]]],
        roles: Sequence[Any],
        handlers: Sequence[tuple[Any, Callable[..., Any]]],
        deadline: float,
    ) -> Any:
        """Take a slot and associate: the association (holding the slot), or None after a
        transient rejection (slot given back). Raises PacsError/QueryRefused otherwise."""
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise AssociationsBusy(f"all {self._slots.limit} associations to the PACS stay busy")
        try:
            ae = self._new_ae()
            for abstract, syntaxes in contexts:
                ae.add_requested_context(abstract, list(syntaxes))
            tls_args = (self.address.ssl_context, self.address.host) if self.address.ssl_context else None
            assoc = ae.associate(
                self.address.host,
                self.address.port,
                ae_title=self.address.called_aet,
                max_pdu=MAX_RECEIVE_PDU,
                ext_neg=list(roles) or None,
                evt_handlers=[(evt.EVT_CONN_OPEN, tune_socket), *handlers],
                tls_args=tls_args,
            )
        except BaseException:
            self._slots.release()
            raise
        if assoc.is_established:
            self._slots.established()
            self.health.answered()
            return assoc
        reason = self._refusal_reason(assoc)
        # The acceptor's A-ASSOCIATE response (accept or reject) means the PACS answered, even
        # when pynetdicom aborted afterwards because no presentation context was accepted.
        if assoc.is_rejected or assoc.acceptor.primitive is not None:
            self.health.answered()
        else:
            self.health.failed(reason)
        if not assoc.is_rejected:
            self._slots.release()
            raise PacsError(reason)
        if getattr(assoc.acceptor.primitive, "result", None) != RESULT_REJECTED_TRANSIENT:
            self._slots.release()
            raise QueryRefused(reason)
        lowered = self._slots.lower_to_others()
        self._slots.release()
        if lowered is not None:
            LOGGER.debug("%s rejected an association as busy: at most %d at once", self.where, lowered)
        return None

    def _release(self, assoc: Any) -> None:
        try:
            assoc.release()
        except Exception:  # the peer may be gone already; nothing is waiting for this
            LOGGER.debug("A-RELEASE failed", exc_info=True)
        finally:
            self._slots.release(established=True)

    def _refusal_reason(self, assoc: Any) -> str:
        where = self.where
        if assoc.is_rejected:
            return f"association rejected by {where}"
        if assoc.acceptor.primitive is None:  # no A-ASSOCIATE-AC/RJ: refused, unreachable or silent
            return f"cannot reach PACS {where}"
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

    def probe(self) -> None:
        """The cheap reachability check: an association, and a C-ECHO where Verification is accepted.

        Any answer counts (an accepted association, a rejection, any C-ECHO status): only "cannot
        be reached" or silence raises PacsError. The other Q/R contexts are proposed too, so a
        PACS without the Verification SOP class still accepts the association. Never retried.
        """
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        contexts = [(Verification, syntaxes), *((models["find"], syntaxes) for models in _MODELS.values())]
        try:
            with self._association(contexts, retry_transient=False) as assoc:
                if any(cx.abstract_syntax == Verification for cx in assoc.accepted_contexts):
                    _status_of(assoc.send_c_echo())
        except (QueryRefused, AssociationsBusy):
            # An answer; or every slot is in use by associations that will report themselves.
            return

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
        storage_contexts: Sequence[tuple[str, Sequence[str]]],
        *,
        progress: Callable[[], float] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> RetrieveOutcome:
        """C-GET: the PACS sends C-STOREs on this same association, to ``on_store``.

        ``storage_contexts`` are (SOP class, transfer syntaxes) pairs, at most ``MAX_CONTEXTS - 1``
        (see ``negotiation``); we take the SCP role for each class. The outcome says which pairs
        the PACS accepted. ``progress`` and ``cancelled`` as for :meth:`move`.
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
        with (
            self._association(contexts, roles=roles, handlers=handlers) as assoc,
            ProgressWatch(assoc, model, self.address.timeout, progress, cancelled) as watch,
        ):
            storage = [cx for cx in assoc.accepted_contexts if str(cx.abstract_syntax) != model]
            _take_scp_role(storage)
            accepted = tuple((str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in storage)
            outcome = watch.collect(assoc.send_c_get(identifier, model, msg_id=MESSAGE_ID))
        return dataclasses.replace(outcome, accepted=accepted)


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
