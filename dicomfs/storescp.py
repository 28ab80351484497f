"""Receiving instances: our storage SCP for C-MOVE, and the C-STORE handler shared with C-GET.

Only instances that a pending retrieval asked for are accepted; anything else is refused with
0x0124 "Refused: Not Authorized" (PS3.7 C.4), so no third party can fill the cache. Received bytes
are written as they came off the wire (no decode, no transcode) behind a File Meta Information
header that pynetdicom builds from the negotiated transfer syntax (PS3.10 7.1), then checked to
parse and to carry the SOP Instance UID that was asked for, and only then committed to the cache.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any, Protocol

import pydicom
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from dicomfs.cache import InstanceStore, discard
from dicomfs.errors import StorageFull
from dicomfs.negotiation import TRANSFER_SYNTAXES
from dicomfs.tuning import tune_socket

LOGGER = logging.getLogger(__name__)

# Accept every storage context with the transfer syntax the sender lists first, and unknown or
# private storage classes too: we store bytes and never decode, so the sender's preference (its
# stored syntax) is the right one. pynetdicom's default would pick from *our* list, and a PACS that
# cannot convert (dcmqrscp) then fails the sub-operation.
_config.UNRESTRICTED_STORAGE_SERVICE = True

# PS3.4 B.2.3 / PS3.7 C.4: C-STORE response statuses.
STORE_SUCCESS = 0x0000
STORE_REFUSED_NOT_AUTHORIZED = 0x0124
STORE_OUT_OF_RESOURCES = 0xA700
STORE_CANNOT_UNDERSTAND = 0xC000


class InstanceSink(Protocol):
    """What a retrieval offers to be told about its instances."""

    def landed(self, sop_uid: str, size: int) -> None: ...

    def lost(self, sop_uid: str, reason: str) -> None: ...


class InstanceReceiver:
    """Routes each incoming C-STORE to the retrieval that expects it, and stores it."""

    def __init__(self, store: InstanceStore) -> None:
        self._store = store
        self._expected: dict[str, InstanceSink] = {}
        self._lock = threading.Lock()

    def expect(self, sop_uids: Iterable[str], sink: InstanceSink) -> None:
        with self._lock:
            for sop_uid in sop_uids:
                self._expected[sop_uid] = sink

    def forget(self, sop_uids: Iterable[str]) -> None:
        with self._lock:
            for sop_uid in sop_uids:
                self._expected.pop(sop_uid, None)

    def handle_store(self, event: evt.Event) -> int:
        """The EVT_C_STORE handler: returns the C-STORE response status."""
        request: Any = event.request  # a C_STORE primitive for this event
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        with self._lock:
            sink = self._expected.get(sop_uid)
        if sink is None:
            LOGGER.warning(
                "refused C-STORE of %s from %s: no retrieval asked for it",
                sop_uid or "(no UID)",
                event.assoc.requestor.ae_title,
            )
            return STORE_REFUSED_NOT_AUTHORIZED
        cached_size = self._store.size_of(sop_uid)
        if cached_size is not None:  # a SOP instance never changes: keep what we have
            sink.landed(sop_uid, cached_size)
            return STORE_SUCCESS
        try:
            size = self._receive(event, sop_uid)
        except StorageFull as exc:
            sink.lost(sop_uid, str(exc))
            return STORE_OUT_OF_RESOURCES
        except ValueError as exc:
            LOGGER.error("received %s but did not keep it: %s", sop_uid, exc)
            sink.lost(sop_uid, str(exc))
            return STORE_CANNOT_UNDERSTAND
        except OSError as exc:
            LOGGER.error("could not store %s: %s", sop_uid, exc)
            sink.lost(sop_uid, str(exc))
            return STORE_OUT_OF_RESOURCES
        sink.landed(sop_uid, size)
        return STORE_SUCCESS

    def _receive(self, event: evt.Event, sop_uid: str) -> int:
        """Write, check and commit one instance; raises ValueError when it is not what we asked."""
        data = event.encoded_dataset(include_meta=True)
        check_instance(data, sop_uid)
        fd, partial = self._store.new_partial()
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        except OSError as exc:
            discard(partial)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left in the cache for {sop_uid}") from exc
            raise
        return self._store.commit(sop_uid, partial)


def check_instance(data: bytes, sop_uid: str) -> None:
    """Raise ValueError unless ``data`` is a DICOM file whose SOP Instance UID is ``sop_uid``."""
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except Exception as exc:  # pydicom raises many types for garbage
        raise ValueError(f"does not parse as DICOM ({exc})") from exc
    found = str(header.get("SOPInstanceUID", ""))
    if found != sop_uid:
        raise ValueError(f"dataset carries SOP Instance UID {found!r}, not the one announced")


class StorageSCP:
    """Our C-STORE SCP on ``localaddress:localport``, the destination of our C-MOVEs."""

    def __init__(
        self,
        receiver: InstanceReceiver,
        ae_title: str,
        address: str,
        port: int,
        timeout: float,
        ssl_context: Any = None,
    ) -> None:
        self._receiver = receiver
        self._ae_title = ae_title
        self._address = (address, port)
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._server: Any = None

    def start(self) -> None:
        ae = AE(ae_title=self._ae_title)
        ae.maximum_pdu_size = 0  # the PACS may send PDUs as large as it likes (issue #3)
        ae.acse_timeout = self._timeout
        ae.dimse_timeout = self._timeout
        ae.network_timeout = self._timeout
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), list(TRANSFER_SYNTAXES))
        # Accept any calling AE: the PACS's own title may differ from the one we call.
        ae.require_calling_aet = []
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._receiver.handle_store),
            (evt.EVT_CONN_OPEN, tune_socket),
        ]
        self._server = ae.start_server(
            self._address, block=False, evt_handlers=handlers, ssl_context=self._ssl_context
        )
        LOGGER.info("storage SCP %s listening on %s:%d", self._ae_title, *self._address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
