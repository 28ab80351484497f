"""Receiving instances: the C-STORE handler shared by our storage SCP (C-MOVE) and our C-GETs.

What is let in is the admission policy's decision (:class:`AdmissionPolicy`); today's is
``admission.ExpectedOnly``: only instances that a pending retrieval asked for are accepted,
anything else is refused with 0x0124 "Refused: Not Authorised" (PS3.7 C.4), so no third party can
fill the cache. pynetdicom streams each received data set to a file as its P-DATA fragments arrive
(``STORE_RECV_CHUNKED_DATASET``, installed by ``patches``; the file is made in the mount's
``partial/`` folder by ``spool``, so it is renamed into the cache, never copied), behind a File
Meta Information header built from the negotiated transfer syntax (PS3.10 7.1): no object is ever
held in memory whole, whatever its size, and the bytes are kept as they came off the wire (no
decode, no transcode). The file is then checked: it must parse, carry the SOP Instance UID that
was announced, and belong to a series that a pending retrieval asked for (Study and Series
Instance UIDs too: one SOP Instance UID may be stored in two series by a PACS). Only then is it
renamed into the cache, under all three UIDs.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import pydicom
from pynetdicom import evt

from dicomfs.core.errors import StorageFull
from dicomfs.core.model import InstanceKey
from dicomfs.core.ports import InstanceSink
from dicomfs.core.store import InstanceStore, discard
from dicomfs.dimse import decode, statuses
from dicomfs.dimse.admission import Admitted, routing
from dicomfs.dimse.spool import spool_error

LOGGER = logging.getLogger(__name__)

#: Data elements no larger than this are read when checking a received file; larger values (a
#: 600 MB private blob before the pixels) are skipped, not loaded.
_CHECK_DEFER_SIZE = 1024


class AdmissionPolicy(Protocol):
    """Decides which C-STOREs are let in, and who is told about each (``admission``)."""

    #: Why a refused C-STORE was refused, for its log line.
    refusal: str

    def admit(self, sop_uid: str, calling_aet: str) -> Admitted | None:
        """The sinks that may take the object announced as ``sop_uid``; None refuses it."""


class InstanceReceiver:
    """The C-STORE handler: admits (``policy``), checks and stores each incoming object.

    pynetdicom (with ``STORE_RECV_CHUNKED_DATASET``, installed by ``patches``) streams each
    received data set to a file; without it the handler writes the data set it was given.

    Parameters
    ----------
    store : InstanceStore
        Where admitted objects are committed, under all three UIDs.
    policy : AdmissionPolicy
        Which objects are let in (``admission.ExpectedOnly``: those a retrieval asked for).
    """

    def __init__(self, store: InstanceStore, policy: AdmissionPolicy) -> None:
        self._store = store
        self._policy = policy
        #: C-STOREs received, kept or refused (a C-MOVE's destination was reached; not exact under
        #: concurrent retrievals, which only makes "the PACS cannot reach us" rarer to conclude).
        self.stores_seen = 0

    def handle_store(self, event: evt.Event) -> int:
        """The EVT_C_STORE handler: store what was asked for; returns the C-STORE status.

        Source: pynetdicom's EVT_C_STORE contract (``_handlers.doc_handle_store``); statuses of
        PS3.4 B.2.3.
        """
        request: Any = event.request  # a C_STORE primitive for this event
        self.stores_seen += 1  # the PACS reached us, whatever becomes of this object
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        sender = str(event.assoc.requestor.ae_title)
        admitted = self._policy.admit(sop_uid, sender)
        if admitted is None:
            _drop_received(event)
            LOGGER.warning(
                "refused C-STORE of %s from %s: %s", sop_uid or "(no UID)", sender, self._policy.refusal
            )
            return statuses.REFUSED_NOT_AUTHORISED
        sinks = admitted.sinks
        try:
            partial = self._received_file(event, sop_uid)
        except StorageFull as exc:
            _tell_lost(sinks.values(), sop_uid, str(exc))
            return statuses.OUT_OF_RESOURCES
        except OSError as exc:
            LOGGER.error("could not store %s: %s", sop_uid, exc)
            _tell_lost(sinks.values(), sop_uid, str(exc))
            return statuses.OUT_OF_RESOURCES
        try:
            key = identify_instance(partial, sop_uid)
        except ValueError as exc:
            discard(partial)
            LOGGER.error("received %s but did not keep it: %s", sop_uid, exc)
            _tell_lost(sinks.values(), sop_uid, f"the PACS sent an object that is not it: {exc}")
            return statuses.CANNOT_UNDERSTAND
        sink = sinks.get(routing(key.series))
        if sink is None:
            discard(partial)
            reason = (
                f"the PACS sent the object of patient {key.patient_id!r}, study {key.study_uid}, "
                f"series {key.series_uid} under this SOP Instance UID, not the one asked for"
            )
            LOGGER.error("received %s but did not keep it: %s", sop_uid, reason)
            _tell_lost(sinks.values(), sop_uid, reason)
            return statuses.CANNOT_UNDERSTAND
        try:
            size = self._store.commit(key, partial)
        except StorageFull as exc:
            sink.lost(sop_uid, str(exc))
            return statuses.OUT_OF_RESOURCES
        except OSError as exc:
            LOGGER.error("could not store %s: %s", sop_uid, exc)
            sink.lost(sop_uid, str(exc))
            return statuses.OUT_OF_RESOURCES
        sink.landed(sop_uid, size)
        return statuses.SUCCESS

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
        path = event.dataset_path
    except AttributeError:  # not a C-STORE
        return None
    # pynetdicom 3.0 gives None without STORE_RECV_CHUNKED_DATASET (patches not installed).
    return None if path is None else os.fspath(path)


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
