"""The return path of a C-MOVE, tested: a temporary storage SCP on ``localport`` and one C-MOVE to it.

``dicomfs echo`` (:mod:`dicomfs.dimse.diagnose`) asks the PACS for a C-MOVE of one instance to
``aet`` while :class:`ReturnPath` listens where the mount's storage SCP would. It accepts any
called AE title and records the one the PACS used, acknowledges every C-STORE and keeps nothing.
:func:`send_move_probe` turns the final C-MOVE response and what arrived into a
:class:`~dicomfs.dimse.explain.MoveReport`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt

from dicomfs.dimse import statuses
from dicomfs.dimse.explain import MoveReport
from dicomfs.dimse.negotiation import TRANSFER_SYNTAXES
from dicomfs.dimse.progress import MESSAGE_ID
from dicomfs.dimse.qrmodels import QueryModel

#: A Study Instance UID nobody holds, for a C-MOVE of nothing (a PACS holding no object at all):
#: some PACS check the move destination first and answer 0xA801 even then.
NOTHING_UID = "2.25.1"


class ReturnPath:
    """A storage SCP of ours for one C-MOVE: records who connected (called AE title, address) and
    which instances arrived; acknowledges every C-STORE and keeps nothing."""

    def __init__(
        self, ae_title: str, address: str, port: int, timeout: float, ssl_context: Any = None
    ) -> None:
        """``ae_title``: ours (``aet``); ``address``, ``port``: ``localaddress``, ``localport``;
        ``ssl_context``: the server side of TLS, or None."""
        self._ae_title = ae_title
        self._address = (address, port)
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._server: Any = None
        self._arrived = threading.Condition()
        self.called_as: list[str] = []
        self.peers: list[str] = []
        self.stored: list[str] = []

    def start(self) -> None:
        """Listen on ``localaddress:localport``; OSError when that is impossible."""
        ae = AE(ae_title=self._ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self._timeout
        ae.require_calling_aet = []  # any PACS may connect back
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), list(TRANSFER_SYNTAXES))
        handlers: list[Any] = [(evt.EVT_REQUESTED, self._on_request), (evt.EVT_C_STORE, self._on_store)]
        self._server = ae.start_server(
            self._address, block=False, evt_handlers=handlers, ssl_context=self._ssl_context
        )

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            for assoc in list(server.active_associations):
                assoc.abort()

    def _on_request(self, event: evt.Event) -> None:
        request: Any = event.assoc.requestor.primitive
        with self._arrived:
            self.called_as.append(str(getattr(request, "called_ae_title", "")).strip())
            self.peers.append(str(event.assoc.requestor.address))
            self._arrived.notify_all()

    def _on_store(self, event: evt.Event) -> int:
        request: Any = event.request
        with self._arrived:
            self.stored.append(str(request.AffectedSOPInstanceUID))
            self._arrived.notify_all()
        return statuses.SUCCESS  # PS3.4 B.2.3; the object is dropped, this is only a test

    def wait_for_stores(self, count: int, timeout: float) -> int:
        """Wait until ``count`` C-STOREs arrived, ``timeout`` seconds at most; how many did."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.stored) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            return len(self.stored)


def send_move_probe(
    assoc: Any, model_uid: str, identifier: Dataset, destination: str, listener: ReturnPath, timeout: float
) -> MoveReport | None:
    """C-MOVE ``identifier`` to ``destination`` on ``assoc`` (pynetdicom); None when the PACS gave
    no final response (timed out, or dropped the association).

    After a final response counting completed sub-operations, their C-STOREs are waited for up to
    ``timeout``: an asynchronous mover (Orthanc with ``SynchronousCMove`` false) answers first.
    """
    final: Dataset | None = None
    try:
        responses = assoc.send_c_move(identifier, destination, model_uid, msg_id=MESSAGE_ID)
        for status, _ in responses:
            code = getattr(status, "Status", None)
            if code is None:
                return None
            if not statuses.is_pending(int(code)):
                final = status
                break
    except RuntimeError:  # the association went away under pynetdicom
        return None
    if final is None:
        return None
    completed = int(final.get("NumberOfCompletedSuboperations", 0) or 0)
    # An asynchronous mover (Orthanc with SynchronousCMove false) answers before it sends.
    stored = listener.wait_for_stores(completed, timeout if completed else 0.0)
    return MoveReport(
        status=int(final.Status),
        comment=str(final.get("ErrorComment", "") or ""),
        completed=completed,
        failed=int(final.get("NumberOfFailedSuboperations", 0) or 0),
        warning=int(final.get("NumberOfWarningSuboperations", 0) or 0),
        connected_back=bool(listener.called_as),
        called_back_as=listener.called_as[0] if listener.called_as else "",
        stored=stored,
    )


def move_identifier(keys: dict[str, str] | None, model: str) -> Dataset:
    """IMAGE-level unique keys of one instance; without one, a study nobody holds (a C-MOVE of
    nothing: some PACS check the destination first, and answer 0xA801 even then)."""
    identifier = Dataset()
    if keys is None:
        identifier.QueryRetrieveLevel = "STUDY"
        if model == QueryModel.PATIENT_ROOT:
            identifier.PatientID = ""
        identifier.StudyInstanceUID = NOTHING_UID
        return identifier
    identifier.QueryRetrieveLevel = "IMAGE"
    for name, value in keys.items():
        setattr(identifier, name, value)
    return identifier
