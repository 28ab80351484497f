"""A small Study Root Q/R SCP whose misbehaviour each test chooses: the peers real archives can be.

It serves a handful of synthetic instances over C-FIND (STUDY, SERIES, IMAGE), C-MOVE and C-GET, and
can be switched at any time (:attr:`BrokenPacs.behaviour`) to: send fewer instances than C-FIND
listed, end a retrieval with failed or warning sub-operations, accept the association and then
never answer, send an object other than the one it announced, send bytes that do not parse, or
answer C-FIND with malformed rows. Everything runs in this process, on 127.0.0.1 only.

The forged C-STOREs need bytes that pynetdicom would never produce, so :func:`_encode` wraps
pynetdicom's encoder for :class:`ForgedInstance` datasets only; every other dataset is encoded as
usual.
"""

from __future__ import annotations

import collections
import copy
import enum
import logging
import ssl
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynetdicom.association
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE

from dicomfs.demo.samples import deterministic_uid, make_instance
from dicomfs.dimse import statuses
from tests.mounting import pacs_options
from tests.pacs_servers import free_port

LOGGER = logging.getLogger(__name__)

AE_TITLE = "BROKENPACS"
PATIENT_ID = "BROKEN-1"
PATIENT_NAME = "Broken^Pacs"

# PS3.4 Annex C.4: the statuses we send ourselves, as pynetdicom names them (dimse.statuses).
STATUS_PENDING = statuses.PENDING
STATUS_SUCCESS = statuses.SUCCESS
STATUS_UNABLE_TO_PERFORM_SUBOPERATIONS = statuses.SUBOPERATIONS_REFUSED
STATUS_WARNING = statuses.SUBOPERATIONS_WARNING

FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
UNCOMPRESSED: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

#: How long a silent handler hangs at most, so that no association thread outlives a test run.
SILENCE_LIMIT_S = 60.0
#: Pending responses of ``Behaviour.PENDING_FOREVER`` come this often (seconds).
PENDING_INTERVAL_S = 1.0


class Behaviour(enum.Enum):
    """What the SCP does; the retrieval misbehaviours touch the *last* instance of a series."""

    NORMAL = "normal"
    FEWER = "fewer"  # the last instance is not sent; final status Success
    FAILED = "failed"  # the last is not sent; final 0xA702 counting it as failed
    WARNING = "warning"  # the last is not sent; final 0xB000 counting it as failed
    SILENT_FIND = "silent-find"  # C-FIND requests are never answered
    SILENT_RETRIEVE = "silent-retrieve"  # C-GET and C-MOVE requests are never answered
    MISMATCHED_UID = "mismatched-uid"  # the last is announced but another object is sent
    UNPARSEABLE = "unparseable"  # the last is announced but the bytes do not parse
    MALFORMED_FIND = "malformed-find"  # C-FIND adds rows without UID, duplicated, of another level
    FIRST_THEN_SILENT = "first-then-silent"  # C-GET sends the first instance, then nothing more
    # Retrieval pacing (issue #9), answered with raw DIMSE responses (pynetdicom's own C-MOVE SCP
    # always sends a Pending after each C-STORE and stops at C-CANCEL):
    PENDING_FOREVER = "pending-forever"  # Pending every second, never a C-STORE; C-CANCEL ignored
    SLOW_NO_PENDING = "slow-no-pending"  # C-STOREs `store_interval_s` apart, no Pending, then final
    LATE_STORES = "late-stores"  # C-MOVE: final Success with N completed first, C-STOREs after
    # The conformance suite (tests/conformance):
    SHORT_LISTING_ONCE = "short-listing-once"  # the first IMAGE-level C-FIND of a series lacks a row
    MOVE_FAILS = "move-fails"  # C-MOVE fails every sub-operation (0xA702); C-GET works


class ForgedInstance(Dataset):
    """Announced (AffectedSOPInstanceUID) as itself, but encoded on the wire as ``payload``.

    ``payload`` None sends bytes that no DICOM parser accepts.
    """

    payload: Dataset | None


def forge(announced: Dataset, payload: Dataset | None) -> ForgedInstance:
    forged = ForgedInstance(announced)
    forged.file_meta = copy.deepcopy(announced.file_meta)
    forged.payload = payload
    return forged


def garbage(is_implicit_vr: bool) -> bytes:
    """A SOP Class UID element of undefined length followed by bytes that are no sequence item."""
    head = struct.pack("<HH", 0x0008, 0x0016)
    if not is_implicit_vr:
        head += b"SQ\0\0"
    return head + struct.pack("<L", 0xFFFFFFFF) + bytes(range(1, 33))


_ORIGINAL_ENCODE = pynetdicom.association.encode


def _encode(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    if isinstance(ds, ForgedInstance):
        if ds.payload is None:
            return garbage(is_implicit_vr)
        return _ORIGINAL_ENCODE(ds.payload, is_implicit_vr, is_little_endian, deflated)
    return _ORIGINAL_ENCODE(ds, is_implicit_vr, is_little_endian, deflated)


pynetdicom.association.encode = _encode


@dataclass(frozen=True)
class SeriesData:
    uid: str
    description: str
    instances: tuple[Dataset, ...]


def make_series(study_uid: str, key: str, number: int, count: int) -> SeriesData:
    uid = deterministic_uid("broken-series", key)
    instances = tuple(
        make_instance(
            patient_name=PATIENT_NAME,
            patient_id=PATIENT_ID,
            study_uid=study_uid,
            series_uid=uid,
            sop_uid=deterministic_uid("broken-instance", key, n),
            study_description="Broken study",
            series_number=number,
            series_description=f"Series {key}",
            instance_number=n,
            rows=8,
            columns=8,
            seed=number * 100 + n,
        )
        for n in range(1, count + 1)
    )
    return SeriesData(uid, f"Series {key}", instances)


STUDY_UID = deterministic_uid("broken-study")
SERIES = (make_series(STUDY_UID, "a", 1, 3), make_series(STUDY_UID, "b", 2, 2))
INSTANCES: tuple[Dataset, ...] = tuple(ds for series in SERIES for ds in series.instances)
LEVEL_KEYS = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
_MATCH_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def select(identifier: Dataset) -> list[Dataset]:
    """Instances matching the identifier's unique keys (single-value matching, PS3.4 C.2.2.2.1)."""
    wanted = {k: str(identifier.get(k, "") or "") for k in _MATCH_KEYS}
    return [ds for ds in INSTANCES if all(not v or str(ds.get(k, "")) == v for k, v in wanted.items())]


def match_rows(identifier: Dataset) -> list[Dataset]:
    """One response per distinct entity at the identifier's level, with the keys it asked for."""
    level = str(identifier.get("QueryRetrieveLevel", ""))
    unique = LEVEL_KEYS.get(level)
    if unique is None:
        return []
    rows: dict[str, Dataset] = {}
    selected = select(identifier)
    for ds in selected:
        row = Dataset()
        for elem in identifier:
            if elem.keyword and elem.keyword in ds:
                setattr(row, elem.keyword, ds.get(elem.keyword))
        row.QueryRetrieveLevel = level
        row.setdefault(unique, ds.get(unique))
        if level == "SERIES" and "NumberOfSeriesRelatedInstances" in identifier:
            # A computed key (PS3.4 C.6.2.1.2), as real archives answer it.
            row.NumberOfSeriesRelatedInstances = sum(
                1 for other in selected if other.SeriesInstanceUID == ds.SeriesInstanceUID
            )
        rows.setdefault(str(ds.get(unique)), row)
    return list(rows.values())


def malformed_rows(rows: Sequence[Dataset], level: str) -> list[Dataset]:
    """Rows a careless PACS sends: no unique key, a duplicated key, another level's row."""
    if not rows:
        return []
    unique = LEVEL_KEYS[level]
    nameless = copy.deepcopy(rows[0])
    del nameless[unique]
    duplicate = copy.deepcopy(rows[0])
    if "InstanceNumber" in duplicate:
        duplicate.InstanceNumber = 999
    if "StudyDescription" in duplicate:
        duplicate.StudyDescription = "Duplicate"
    if "SeriesDescription" in duplicate:
        duplicate.SeriesDescription = "Duplicate"
    other_level = copy.deepcopy(rows[0])
    other_level.QueryRetrieveLevel = "PATIENT" if level != "PATIENT" else "STUDY"
    setattr(other_level, unique, deterministic_uid("broken-ghost", level))
    if "PatientID" in other_level:
        other_level.PatientID = "GHOST"
    return [nameless, *rows, duplicate, other_level]


class BrokenPacs:
    """The misbehaving SCP; ``behaviour`` may be switched while it runs."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, move_ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """``ssl_context``: serve over TLS; ``move_ssl_context``: C-MOVE sub-associations over TLS."""
        self._behaviour = Behaviour.NORMAL
        self._wake = threading.Event()  # set: silent handlers stop hanging
        self.first_sent = threading.Event()  # FIRST_THEN_SILENT: the first C-STORE was answered
        self._ssl_context = ssl_context
        self._move_ssl_context = move_ssl_context
        self._server: Any = None
        self.move_port = 0  # where C-MOVE sends its C-STOREs, whatever the destination AE
        self.move_called_aet = ""  # the called AE title of C-MOVE sub-associations ('' = the destination)
        self.host = "127.0.0.1"
        self.ae_title = AE_TITLE
        self.store_interval_s = 2.0  # Behaviour.SLOW_NO_PENDING: seconds between C-STOREs
        self.stores_sent = 0  # C-STOREs of the paced behaviours that the destination accepted
        #: "C-FIND", "C-MOVE", "C-GET", and "C-FIND IMAGE <Series Instance UID>" (instance listings).
        self.requests: collections.Counter[str] = collections.Counter()
        self._shortened: set[str] = set()  # SHORT_LISTING_ONCE: series whose short listing was sent
        self.cancels = 0  # C-CANCELs seen by PENDING_FOREVER handlers
        self._count_lock = threading.Lock()
        self._late: list[threading.Thread] = []

    @property
    def behaviour(self) -> Behaviour:
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: Behaviour) -> None:
        self._behaviour = value
        if value in (
            Behaviour.SILENT_FIND,
            Behaviour.SILENT_RETRIEVE,
            Behaviour.FIRST_THEN_SILENT,
            Behaviour.PENDING_FOREVER,
        ):
            self._wake.clear()
        else:
            self._wake.set()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        ae = AE(ae_title=AE_TITLE)
        ae.maximum_associations = 64  # silent associations linger until woken
        ae.network_timeout = SILENCE_LIMIT_S
        ae.dimse_timeout = SILENCE_LIMIT_S
        ae.add_supported_context("1.2.840.10008.1.1", UNCOMPRESSED)
        for model in (FIND, MOVE, GET):
            ae.add_supported_context(model, UNCOMPRESSED)
        # C-GET: the C-STOREs go back over the requestor's association (PS3.7 D.3.3.4).
        ae.add_supported_context(CTImageStorage, UNCOMPRESSED, scu_role=False, scp_role=True)
        handlers: list[Any] = [
            (evt.EVT_C_FIND, self._handle_find),
            (evt.EVT_C_GET, self._handle_get),
            (evt.EVT_C_MOVE, self._handle_move),
        ]
        self._server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=handlers, ssl_context=self._ssl_context
        )
        LOGGER.info("broken PACS listening on 127.0.0.1:%d", self.port)

    def stop(self) -> None:
        self._wake.set()
        for thread in self._late:
            thread.join(timeout=SILENCE_LIMIT_S)
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            for assoc in server.active_associations:
                assoc.abort()

    def __enter__(self) -> BrokenPacs:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- handlers -------------------------------------------------------------------------------

    def _hang(self, event: evt.Event) -> None:
        """Say nothing until woken, stopped, or the peer has gone."""
        LOGGER.info("broken PACS: staying silent")
        waited = 0.0
        while not self._wake.wait(0.05) and waited < SILENCE_LIMIT_S:
            waited += 0.05
            if not event.assoc.is_established:
                return

    def _handle_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        behaviour = self._behaviour
        if behaviour is Behaviour.SILENT_FIND:
            self._hang(event)
            return
        identifier = event.identifier
        self._count("C-FIND")
        rows = match_rows(identifier)
        if str(identifier.get("QueryRetrieveLevel", "")) == "IMAGE":
            series_uid = str(identifier.get("SeriesInstanceUID", ""))
            self._count(f"C-FIND IMAGE {series_uid}")
            if behaviour is Behaviour.SHORT_LISTING_ONCE and rows and self._first_listing(series_uid):
                rows = rows[:-1]  # a response gone missing (issue #4)
        if behaviour is Behaviour.MALFORMED_FIND:
            rows = malformed_rows(rows, str(identifier.QueryRetrieveLevel))
        for row in rows:
            yield STATUS_PENDING, row
        yield STATUS_SUCCESS, None

    def _count(self, what: str) -> None:
        with self._count_lock:
            self.requests[what] += 1

    def _first_listing(self, series_uid: str) -> bool:
        with self._count_lock:
            first = series_uid not in self._shortened
            self._shortened.add(series_uid)
            return first

    def _handle_get(self, event: evt.Event) -> Iterator[Any]:
        self._count("C-GET")
        behaviour = self._behaviour
        if behaviour is Behaviour.SILENT_RETRIEVE:
            self._hang(event)
            return
        if self._behaviour is Behaviour.FIRST_THEN_SILENT:
            instances = select(event.identifier)
            yield len(instances)
            yield STATUS_PENDING, instances[0]
            # pynetdicom resumes this generator once the C-STORE response came back.
            self.first_sent.set()
            self._hang(event)
            return
        if behaviour in (Behaviour.PENDING_FOREVER, Behaviour.SLOW_NO_PENDING):
            yield from self._paced(event, behaviour, None)
            return
        yield from self._send(select(event.identifier))

    def _handle_move(self, event: evt.Event) -> Iterator[Any]:
        self._count("C-MOVE")
        behaviour = self._behaviour
        if behaviour is Behaviour.SILENT_RETRIEVE:
            self._hang(event)
            return
        if behaviour in (Behaviour.PENDING_FOREVER, Behaviour.SLOW_NO_PENDING, Behaviour.LATE_STORES):
            yield from self._paced(event, behaviour, str(event.request.MoveDestination).strip())
            return
        options: dict[str, Any] = {"contexts": [build_context(CTImageStorage, UNCOMPRESSED)]}
        if self._move_ssl_context is not None:
            options["tls_args"] = (self._move_ssl_context, "127.0.0.1")
        if self.move_called_aet:  # a PACS whose entry for the destination names another AE title
            options["ae_title"] = self.move_called_aet
        yield "127.0.0.1", self.move_port, options
        if behaviour is Behaviour.MOVE_FAILS:
            # As a PACS that cannot send the stored transfer syntax: every sub-operation failed.
            instances = select(event.identifier)
            failed = Dataset()
            failed.FailedSOPInstanceUIDList = [str(ds.SOPInstanceUID) for ds in instances]
            yield len(instances)
            yield STATUS_UNABLE_TO_PERFORM_SUBOPERATIONS, failed
            return
        yield from self._send(select(event.identifier))

    # -- raw DIMSE pacing (PENDING_FOREVER, SLOW_NO_PENDING, LATE_STORES) -----------------------

    def _paced(self, event: evt.Event, behaviour: Behaviour, destination: str | None) -> Iterator[Any]:
        """Answer a C-MOVE (``destination`` set) or C-GET ourselves, paced as ``behaviour`` says.

        Everything is sent before the first yield, with raw responses. Afterwards the handler
        waits for the SCU's A-RELEASE and answers it itself, so pynetdicom, finding the association
        no longer established, sends nothing more.
        """
        instances = select(event.identifier)
        if behaviour is Behaviour.PENDING_FOREVER:
            self._pend_forever(event, len(instances))
            return
        if behaviour is Behaviour.LATE_STORES and destination is not None:
            self._respond(event, STATUS_SUCCESS, completed=len(instances))
            thread = threading.Thread(target=self._store_late, args=(instances, destination), daemon=True)
            self._late.append(thread)
            thread.start()
        else:
            sent = self._store_slowly(event, instances, destination)
            time.sleep(self.store_interval_s)  # the final response comes late too
            self._respond(event, STATUS_SUCCESS, completed=sent)
        self._await_release(event)
        yield "127.0.0.1", self.move_port  # unused: the association is no longer established

    def _respond(
        self, event: evt.Event, status: int, *, remaining: int | None = None, completed: int = 0
    ) -> None:
        request: Any = event.request
        response: Any = C_GET() if isinstance(request, C_GET) else C_MOVE()
        response.MessageIDBeingRespondedTo = request.MessageID
        response.AffectedSOPClassUID = request.AffectedSOPClassUID
        response.Status = status
        if remaining is not None:
            response.NumberOfRemainingSuboperations = remaining
        response.NumberOfCompletedSuboperations = completed
        response.NumberOfFailedSuboperations = 0
        response.NumberOfWarningSuboperations = 0
        event.assoc.dimse.send_msg(response, event.context.context_id)

    def _pend_forever(self, event: evt.Event, count: int) -> None:
        """Pending (same counts) every PENDING_INTERVAL_S until woken, aborted or the limit."""
        cancelled = False
        deadline = time.monotonic() + SILENCE_LIMIT_S
        while time.monotonic() < deadline and not event.assoc.acse.is_aborted():
            if event.is_cancelled and not cancelled:
                cancelled = True  # and ignored, as the misbehaving PACS of issue #9 does
                with self._count_lock:
                    self.cancels += 1
            self._respond(event, STATUS_PENDING, remaining=count)
            if self._wake.wait(PENDING_INTERVAL_S):
                event.assoc.abort()
                return

    def _store_slowly(self, event: evt.Event, instances: Sequence[Dataset], destination: str | None) -> int:
        """C-STOREs ``store_interval_s`` apart, no Pending; over ``event.assoc`` for C-GET."""
        if destination is None:
            sent = 0
            for number, ds in enumerate(instances):
                if number:
                    time.sleep(self.store_interval_s)
                if not event.assoc.is_established:
                    break
                status = event.assoc.send_c_store(ds)
                sent += int(getattr(status, "Status", -1) == STATUS_SUCCESS)
                self.stores_sent += int(getattr(status, "Status", -1) == STATUS_SUCCESS)
            return sent
        return self._store_to(destination, instances, self.store_interval_s)

    def _store_late(self, instances: Sequence[Dataset], destination: str) -> None:
        time.sleep(0.5)  # after the final response, as an asynchronous mover does
        self._store_to(destination, instances, 0.2)

    def _store_to(self, destination: str, instances: Sequence[Dataset], interval_s: float) -> int:
        """C-STORE ``instances`` on our own association to the move destination (``move_port``)."""
        ae = AE(ae_title=AE_TITLE)
        ae.add_requested_context(CTImageStorage, UNCOMPRESSED)
        assoc = ae.associate("127.0.0.1", self.move_port, ae_title=destination)
        if not assoc.is_established:
            LOGGER.warning("broken PACS: cannot reach the move destination")
            return 0
        sent = 0
        try:
            for number, ds in enumerate(instances):
                if number:
                    time.sleep(interval_s)
                if not assoc.is_established:
                    break
                status = assoc.send_c_store(ds)
                sent += int(getattr(status, "Status", -1) == STATUS_SUCCESS)
                self.stores_sent += int(getattr(status, "Status", -1) == STATUS_SUCCESS)
        finally:
            assoc.release()
        return sent

    @staticmethod
    def _await_release(event: evt.Event) -> None:
        """Answer the SCU's A-RELEASE ourselves (the reactor that would is running this handler)."""
        assoc: Any = event.assoc
        deadline = time.monotonic() + SILENCE_LIMIT_S
        while time.monotonic() < deadline and not assoc.acse.is_aborted():
            if assoc.acse.is_release_requested():
                assoc.acse.send_release(is_response=True)
                assoc.is_released = True
                assoc.is_established = False
                return
            time.sleep(0.01)  # polling the ACSE, bounded by the deadline
        assoc.abort()

    def _send(self, instances: Sequence[Dataset]) -> Iterator[Any]:
        """Sub-operations for ``instances``, spoilt at the last one as ``behaviour`` says."""
        behaviour = self._behaviour
        if not instances:
            yield 0
            return
        *good, last = instances
        yield len(good) if behaviour is Behaviour.FEWER else len(instances)
        for ds in good:
            yield STATUS_PENDING, ds
        if behaviour is Behaviour.MISMATCHED_UID:
            impostor = copy.deepcopy(last)
            impostor.SOPInstanceUID = deterministic_uid("broken-impostor")
            yield STATUS_PENDING, forge(last, impostor)
        elif behaviour is Behaviour.UNPARSEABLE:
            yield STATUS_PENDING, forge(last, None)
        elif behaviour in (Behaviour.FAILED, Behaviour.WARNING):
            failed = Dataset()
            failed.FailedSOPInstanceUIDList = [str(last.SOPInstanceUID)]
            code = (
                STATUS_WARNING if behaviour is Behaviour.WARNING else STATUS_UNABLE_TO_PERFORM_SUBOPERATIONS
            )
            yield code, failed
        elif behaviour is not Behaviour.FEWER:
            yield STATUS_PENDING, last


def options_for(pacs: BrokenPacs, cachedir: Path, retrieve: str, timeout: float, **extra: object) -> str:
    """Mount options for a dicomfs mount of ``pacs``; its C-MOVEs go to the mount's storage SCP."""
    port = free_port()
    pacs.move_port = port
    return pacs_options(pacs, cachedir, localport=port, timeout=timeout, retrieve=retrieve, **extra)
