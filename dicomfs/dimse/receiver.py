"""Receiving instances: our storage SCP for C-MOVE, and the C-STORE handler shared with C-GET.

Only instances that a pending retrieval asked for are accepted; anything else is refused with
0x0124 "Refused: Not Authorized" (PS3.7 C.4), so no third party can fill the cache. pynetdicom
streams each received data set to a file as its P-DATA fragments arrive
(``STORE_RECV_CHUNKED_DATASET``), behind a File Meta Information header built from the negotiated
transfer syntax (PS3.10 7.1): no object is ever held in memory whole, whatever its size, and the
bytes are kept as they came off the wire (no decode, no transcode). The file is then checked: it
must parse, carry the SOP Instance UID that was announced, and belong to a series that a pending
retrieval asked for (Study and Series Instance UIDs too: one SOP Instance UID may be stored in two
series by a PACS). Only then is it renamed into the cache, under all three UIDs.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import pydicom
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from dicomfs.core.errors import StorageFull
from dicomfs.core.model import InstanceKey, SeriesKey
from dicomfs.core.store import InstanceStore, discard
from dicomfs.dimse import decode
from dicomfs.dimse.negotiation import TRANSFER_SYNTAXES
from dicomfs.dimse.patches import MAX_RECEIVE_PDU, tune_socket
from dicomfs.dimse.spool import spool_error

LOGGER = logging.getLogger(__name__)

# Accept every storage context with the transfer syntax the sender lists first, and unknown or
# private storage classes too: we store bytes and never decode, so the sender's preference (its
# stored syntax) is the right one. pynetdicom's default would pick from *our* list, and a PACS that
# cannot convert (dcmqrscp) then fails the sub-operation.
_config.UNRESTRICTED_STORAGE_SERVICE = True
# pynetdicom >= 2.0 writes a C-STORE's data set to a NamedTemporaryFile fragment by fragment and
# hands the handler its path (Event.dataset_path) instead of the bytes: a 1 GB object costs no
# memory. dicomfs.dimse.spool makes that file in the mount's ``partial/`` folder (same file system as
# the cache, so the file is renamed, not copied) and survives a full disk.
_config.STORE_RECV_CHUNKED_DATASET = True

# PS3.4 B.2.3 / PS3.7 C.4: C-STORE response statuses.
STORE_SUCCESS = 0x0000
STORE_REFUSED_NOT_AUTHORIZED = 0x0124
STORE_OUT_OF_RESOURCES = 0xA700
STORE_CANNOT_UNDERSTAND = 0xC000

#: Data elements no larger than this are read when checking a received file; larger values (a
#: 600 MB private blob before the pixels) are skipped, not loaded.
_CHECK_DEFER_SIZE = 1024


class InstanceSink(Protocol):
    """What a retrieval offers to be told about its instances."""

    def landed(self, sop_uid: str, size: int) -> None: ...

    def lost(self, sop_uid: str, reason: str) -> None: ...


class InstanceReceiver:
    """Routes each incoming C-STORE to the retrieval that expects it, and stores it.

    Expectations are per (series, SOP Instance UID): two retrievals may expect the same SOP
    Instance UID for two different series, and each gets only the object of its own series.
    """

    def __init__(self, store: InstanceStore) -> None:
        self._store = store
        self._expected: dict[str, dict[SeriesKey, InstanceSink]] = {}
        self._lock = threading.Lock()

    def expect(self, series: SeriesKey, sop_uids: Iterable[str], sink: InstanceSink) -> None:
        """Accept C-STOREs of ``sop_uids`` belonging to ``series`` from now on, for ``sink``."""
        series = _routing(series)
        with self._lock:
            for sop_uid in sop_uids:
                self._expected.setdefault(sop_uid, {})[series] = sink

    def forget(self, series: SeriesKey, sop_uids: Iterable[str]) -> None:
        """Refuse C-STOREs of ``sop_uids`` for ``series`` again."""
        series = _routing(series)
        with self._lock:
            for sop_uid in sop_uids:
                sinks = self._expected.get(sop_uid)
                if sinks is not None:
                    sinks.pop(series, None)
                    if not sinks:
                        del self._expected[sop_uid]

    def handle_store(self, event: evt.Event) -> int:
        """The EVT_C_STORE handler: store what was asked for; returns the C-STORE status.

        Source: pynetdicom's EVT_C_STORE contract (``_handlers.doc_handle_store``); statuses of
        PS3.4 B.2.3.
        """
        request: Any = event.request  # a C_STORE primitive for this event
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        with self._lock:
            sinks = dict(self._expected.get(sop_uid, {}))
        if not sinks:
            _drop_received(event)
            LOGGER.warning(
                "refused C-STORE of %s from %s: no retrieval asked for it",
                sop_uid or "(no UID)",
                event.assoc.requestor.ae_title,
            )
            return STORE_REFUSED_NOT_AUTHORIZED
        try:
            partial = self._received_file(event, sop_uid)
        except StorageFull as exc:
            _tell_lost(sinks.values(), sop_uid, str(exc))
            return STORE_OUT_OF_RESOURCES
        except OSError as exc:
            LOGGER.error("could not store %s: %s", sop_uid, exc)
            _tell_lost(sinks.values(), sop_uid, str(exc))
            return STORE_OUT_OF_RESOURCES
        try:
            key = identify_instance(partial, sop_uid)
        except ValueError as exc:
            discard(partial)
            LOGGER.error("received %s but did not keep it: %s", sop_uid, exc)
            _tell_lost(sinks.values(), sop_uid, f"the PACS sent an object that is not it: {exc}")
            return STORE_CANNOT_UNDERSTAND
        sink = sinks.get(_routing(key.series))
        if sink is None:
            discard(partial)
            reason = (
                f"the PACS sent the object of patient {key.patient_id!r}, study {key.study_uid}, "
                f"series {key.series_uid} under this SOP Instance UID, not the one asked for"
            )
            LOGGER.error("received %s but did not keep it: %s", sop_uid, reason)
            _tell_lost(sinks.values(), sop_uid, reason)
            return STORE_CANNOT_UNDERSTAND
        try:
            size = self._store.commit(key, partial)
        except StorageFull as exc:
            sink.lost(sop_uid, str(exc))
            return STORE_OUT_OF_RESOURCES
        except OSError as exc:
            LOGGER.error("could not store %s: %s", sop_uid, exc)
            sink.lost(sop_uid, str(exc))
            return STORE_OUT_OF_RESOURCES
        sink.landed(sop_uid, size)
        return STORE_SUCCESS

    def _received_file(self, event: evt.Event, sop_uid: str) -> str:
        """The received object as a file in ``partial/`` (meta header + data set as sent)."""
        streamed = _streamed_path(event)
        failed = spool_error(event.request)
        if failed is not None:  # the disk filled while pynetdicom spooled it (dicomfs.dimse.spool)
            if streamed is not None:
                discard(streamed)
            if failed.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left in the cache for {sop_uid}") from failed
            raise failed
        fd, partial = self._store.new_partial()
        os.close(fd)
        try:
            if streamed is not None:
                _adopt(streamed, partial)
            else:  # pynetdicom kept the data set in memory (chunked receiving is off)
                with open(partial, "wb") as out:
                    out.write(event.encoded_dataset(include_meta=True))
        except OSError as exc:
            discard(partial)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left in the cache for {sop_uid}") from exc
            raise
        return partial


def _streamed_path(event: evt.Event) -> str | None:
    """The file pynetdicom streamed the data set into, or None when it kept it in memory."""
    try:
        return os.fspath(event.dataset_path)
    except AttributeError:
        return None


def _adopt(streamed: str, partial: str) -> None:
    """Move pynetdicom's temporary file to ``partial`` (a copy only across file systems).

    pynetdicom removes the temporary file after the handler when it is still there (C-MOVE) or
    leaves it (C-GET on our own association); once renamed it is ours either way.
    """
    try:
        os.replace(streamed, partial)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(streamed, partial)
        with contextlib.suppress(OSError):
            os.unlink(streamed)


def _drop_received(event: evt.Event) -> None:
    """Remove the streamed file of a refused C-STORE (C-GET leaves it to us)."""
    streamed = _streamed_path(event)
    if streamed is not None:
        with contextlib.suppress(OSError):
            os.unlink(streamed)


def _routing(series: SeriesKey) -> SeriesKey:
    """A series key as routes compare it: Patient ID without its padding (PS3.5 6.2, LO)."""
    return (series[0].strip(), series[1], series[2])


def _tell_lost(sinks: Iterable[InstanceSink], sop_uid: str, reason: str) -> None:
    for sink in sinks:
        sink.lost(sop_uid, reason)


def identify_instance(path: str | Path, sop_uid: str) -> InstanceKey:
    """The Patient ID and the Study, Series and SOP Instance UIDs of the DICOM file at ``path``.

    Reads the header only (values over 1 KiB are skipped, pixel data never read).

    Raises
    ------
    ValueError
        When the file does not parse as DICOM, lacks one of the three UIDs, or carries a SOP
        Instance UID other than ``sop_uid`` (the one the C-STORE announced, PS3.7 9.1.1.1).
    """
    try:
        header = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            defer_size=_CHECK_DEFER_SIZE,
            specific_tags=[
                "SpecificCharacterSet",
                "PatientID",
                "StudyInstanceUID",
                "SeriesInstanceUID",
                "SOPInstanceUID",
            ],
        )
    except Exception as exc:  # pydicom raises many types for garbage
        raise ValueError(f"does not parse as DICOM ({exc})") from exc
    found = str(header.get("SOPInstanceUID", "") or "").strip()
    if found != sop_uid:
        raise ValueError(f"dataset carries SOP Instance UID {found!r}, not the one announced")
    study = str(header.get("StudyInstanceUID", "") or "").strip()
    series = str(header.get("SeriesInstanceUID", "") or "").strip()
    if not study or not series:
        raise ValueError("dataset carries no Study or Series Instance UID")
    # The Patient ID as listings read it (a backslash is not a value separator for us, etc.).
    return InstanceKey(decode.text_of(header, "PatientID"), study, series, found)


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
        ae.maximum_pdu_size = MAX_RECEIVE_PDU
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
        """Stop listening and abort the associations still storing (shutdown() only stops
        accepting): their objects would land in a partial folder that is about to go."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            for assoc in list(server.active_associations):
                assoc.abort()
