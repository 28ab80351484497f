"""Associations to one PACS: at most a few at once, fewer once the PACS pushes back.

A PACS that rejects an association *transiently* (A-ASSOCIATE-RJ result 2, PS3.8 9.3.4: e.g. its
limit of associations per calling AE is reached) is pushing back: the request is tried again after
a short back-off, within ``timeout``, and the number of associations dicomfs opens to that PACS is
lowered to what it accepted (logged once). Every attempt reports to
:class:`~dicomfs.core.health.PacsHealth` whether the PACS answered.

Lock order: ``AssociationSlots._cond`` is a leaf.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt

from dicomfs.core.errors import PacsError, QueryRefused
from dicomfs.core.health import PacsHealth
from dicomfs.dimse.explain import association_failure
from dicomfs.dimse.patches import MAX_RECEIVE_PDU, tune_socket

LOGGER = logging.getLogger(__name__)

# PS3.8 9.3.4 A-ASSOCIATE-RJ Result: 1 rejected-permanent, 2 rejected-transient ("try again later":
# temporary congestion or local limit exceeded, source 3).
RESULT_REJECTED_TRANSIENT = 0x02
#: First pause after a transient rejection, doubled each time up to the longest; all within timeout.
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0

#: (abstract syntax, transfer syntaxes) of one requested presentation context.
Context = tuple[str, Sequence[str]]


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
        """The current bound (associations at once)."""
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
        """Give a slot back (``established``: it held an established association)."""
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


class Associations:
    """Opens associations to one PACS within its slots; reports every attempt to ``health``.

    Parameters
    ----------
    address : PacsAddress
        The PACS and our calling AE title; ``timeout`` bounds every wait (seconds).
    health : PacsHealth
        Told whether the PACS answered each attempt (an A-ASSOCIATE-AC or -RJ is an answer).
    """

    def __init__(self, address: PacsAddress, health: PacsHealth) -> None:
        self.address = address
        self.health = health
        self.where = f"{address.called_aet}@{address.host}:{address.port}"
        self._slots = AssociationSlots(address.max_associations)
        self._learning = False  # a transient rejection has lowered the limit
        self._limit_unlogged = threading.Lock()  # taken (for good) by the one "lowered" log line

    @property
    def limit(self) -> int:
        """The current limit: ``maxassoc``, or lower once the PACS has pushed back."""
        return self._slots.limit

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
    def open(
        self,
        contexts: Sequence[Context],
        *,
        roles: Sequence[Any] = (),
        handlers: Sequence[tuple[Any, Callable[..., Any]]] = (),
        retry_transient: bool = True,
    ) -> Iterator[Any]:
        """An established association, released (or aborted) on exit; waits for a free slot.

        A-RELEASE takes pynetdicom ~10 ms of polling, so it happens in the background, after the
        caller has its answer; the slot is given back only once the association is gone. A
        transient rejection is retried with a back-off until ``timeout`` (``retry_transient``).

        Raises
        ------
        QueryRefused
            The PACS rejected the association (permanently, or transiently until ``timeout``).
        AssociationsBusy
            No slot of ours came free within ``timeout``.
        PacsError
            The PACS cannot be reached, aborted, or ended the association under the caller.
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
        contexts: Sequence[Context],
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
        except OSError as exc:
            # socket.gaierror and friends: a name that does not resolve, no route. Its errno is
            # negative (EAI_*), which FUSE cannot answer with: say it as a PACS error (EIO).
            self._slots.release()
            reason = f"cannot reach PACS {self.where}: {exc.strerror or exc} (check serveraddress=)"
            self.health.failed(reason)
            raise PacsError(reason) from exc
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
        if assoc.is_rejected or assoc.acceptor.primitive is not None:
            # The PACS answered and refused: which AE title, which reason (PS3.8 9.3.4), the fix.
            why = association_failure(
                assoc,
                called_aet=self.address.called_aet,
                calling_aet=self.address.calling_aet,
                tls=self.address.ssl_context is not None,
            )
            return f"{where}: {why.line()}"
        # no A-ASSOCIATE-AC/RJ: refused, unreachable or silent
        return f"cannot reach PACS {where}"
