"""In-process DICOM Query/Retrieve SCP that serves a folder of files: the archive behind ``dicomfs demo``.

It lets dicomfs run on a machine with no PACS, and gives the tests a real DIMSE peer. It behaves like a
small PACS: C-ECHO; C-FIND, C-MOVE and C-GET on the Patient Root and Study Root Information Models
(PS3.4 C.6.1, C.6.2), matching as :mod:`dicomfs.demo.archive` does.

The index is built in :meth:`DemoArchive.start`; a C-STORE (``dicomfs`` with ``upload=on``) is
kept under ``uploaded/`` in the folder and indexed at once (``ArchiveIndex.add`` swaps the
index's tables whole, so handler threads read them without locks). The C-MOVE destination table
and the request counts are guarded by a lock.

Instances are sent in their stored transfer syntax and never decompressed. pynetdicom's Q/R handler
API takes :class:`~pydicom.dataset.Dataset` objects (not file paths), so each instance is read from
disk just before its C-STORE sub-operation: one instance in memory at a time.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import time

from dicomfs.demo.archive import (
    MODEL_LEVELS,
    ArchiveIndex,
    IndexedInstance,
    QueryError,
    build_response,
    read_instance,
)
from dicomfs.dimse import statuses

LOGGER = logging.getLogger(__name__)

# DIMSE statuses we yield ourselves (PS3.4 C.4.1.1.4) are pynetdicom's (``dimse.statuses``).
# pynetdicom itself answers 0xA801 (move destination unknown) when the C-MOVE handler yields
# (None, None), and computes the final C-GET/C-MOVE status from the sub-operation counts.

# A C-MOVE sub-association can propose at most 128 presentation contexts (PS3.8 9.3.2.2).
_MAX_CONTEXTS = 128


def storage_contexts(instances: Iterable[IndexedInstance]) -> list[PresentationContext]:
    """Contexts proposing each (SOP Class, stored transfer syntax) pair, for a C-MOVE sub-association.

    Uncompressed instances also offer the other uncompressed syntaxes (pynetdicom converts between
    them); compressed ones are offered only as stored, since we never decompress.
    """
    pairs = dict.fromkeys((i.sop_class_uid, i.transfer_syntax_uid) for i in instances)
    if len(pairs) > _MAX_CONTEXTS:
        LOGGER.warning("%d SOP Class/transfer syntax pairs; only %d proposed", len(pairs), _MAX_CONTEXTS)
    contexts = []
    for sop_class, syntax in list(pairs)[:_MAX_CONTEXTS]:
        syntaxes = [syntax]
        if syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            syntaxes += [s for s in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if s != syntax]
        contexts.append(build_context(sop_class, syntaxes))
    return contexts


def get_storage_syntaxes(index: ArchiveIndex) -> dict[str, list[str]]:
    """Transfer syntaxes we accept per storage SOP Class for C-GET, most preferred first.

    pynetdicom picks, for each proposed context, the first of *our* syntaxes that the requestor also
    proposed; putting the stored syntaxes first means instances usually go out exactly as stored.
    """
    stored: dict[str, Counter[str]] = {}
    for instance in index.instances:
        stored.setdefault(instance.sop_class_uid, Counter())[instance.transfer_syntax_uid] += 1
    sop_classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    result = {}
    for sop_class in dict.fromkeys([*sop_classes, *stored]):
        preferred = [syntax for syntax, _count in stored.get(sop_class, Counter()).most_common()]
        result[sop_class] = list(dict.fromkeys([*preferred, ExplicitVRLittleEndian, *ALL_TRANSFER_SYNTAXES]))
    return result


def _retrieve(event: evt.Event, index: ArchiveIndex) -> list[IndexedInstance]:
    """Every instance below the entities that a C-GET/C-MOVE identifier selects."""
    _level, matches = index.query(event.identifier, event.context.abstract_syntax)
    return [instance for entity, _first in matches for instance in entity.instances]


def _send(event: evt.Event, instances: Sequence[IndexedInstance]) -> Iterator[tuple[int, Dataset | None]]:
    """Yield the C-STORE sub-operations, reading each file only when it is its turn."""
    for instance in instances:
        if event.is_cancelled:
            yield statuses.CANCEL, None
            return
        yield statuses.PENDING, dcmread(instance.path)


def handle_find(event: evt.Event, index: ArchiveIndex) -> Iterator[tuple[int, Dataset | None]]:
    """EVT_C_FIND: one pending response per matching entity."""
    identifier = event.identifier
    try:
        level, matches = index.query(identifier, event.context.abstract_syntax)
    except QueryError as exc:
        LOGGER.warning("C-FIND refused: %s", exc)
        yield statuses.IDENTIFIER_MISMATCH, None
        return
    for entity, instance in matches:
        if event.is_cancelled:
            yield statuses.CANCEL, None
            return
        yield statuses.PENDING, build_response(identifier, level, entity, instance)


def handle_get(event: evt.Event, index: ArchiveIndex) -> Iterator[Any]:
    """EVT_C_GET: the sub-operation count, then the instances over the same association."""
    instances = _retrieve(event, index)
    yield len(instances)
    yield from _send(event, instances)


def handle_move(
    event: evt.Event, index: ArchiveIndex, destinations: Callable[[str], tuple[str, int] | None]
) -> Iterator[Any]:
    """EVT_C_MOVE: the destination (None -> 0xA801), the count, then the instances."""
    destination = destinations(event.move_destination or "")
    if destination is None:
        LOGGER.warning("C-MOVE refused: unknown destination %r", event.move_destination)
        yield None, None
        return
    instances = _retrieve(event, index)
    yield destination[0], destination[1], {"contexts": storage_contexts(instances)}
    yield len(instances)
    yield from _send(event, instances)


def handle_store(event: evt.Event, index: ArchiveIndex, folder: Path) -> int:
    """C-STORE: keep the object under ``folder/uploaded/`` and index it (0xC000 if unreadable)."""
    request = cast(C_STORE, event.request)
    target = folder / "uploaded" / f"{request.AffectedSOPInstanceUID}.dcm"
    target.parent.mkdir(exist_ok=True)
    try:
        spooled = event.dataset_path  # STORE_RECV_CHUNKED_DATASET (dicomfs.dimse.patches)
    except AttributeError:
        spooled = None
    if spooled is not None:
        shutil.copyfile(spooled, target)
    else:
        target.write_bytes(event.encoded_dataset(include_meta=True))
    instance = read_instance(target)
    if instance is None:
        target.unlink()
        return statuses.CANNOT_UNDERSTAND
    index.add(instance)
    return statuses.SUCCESS


class DemoArchive:
    """Serves every DICOM file under `folder` over DIMSE on loopback.

    Parameters
    ----------
    folder : Path
        Indexed once, at :meth:`start`.
    ae_title : str
        Our AE title; the called AE title of incoming associations is not checked.
    host, port : str, int
        Listening address; port 0 picks a free port at :meth:`start` (see :attr:`port`).
    move_destinations : Mapping[str, tuple[str, int]]
        AE title -> (host, port) of the C-MOVE destinations we know; others get 0xA801.
    """

    def __init__(
        self,
        folder: Path,
        *,
        ae_title: str = "DEMOPACS",
        host: str = "127.0.0.1",
        port: int = 0,
        move_destinations: Mapping[str, tuple[str, int]] = MappingProxyType({}),
    ) -> None:
        self.folder = Path(folder)
        self.ae_title = ae_title
        self.host = host
        self._port = port
        self._destinations = dict(move_destinations)
        self._lock = threading.Lock()  # guards _destinations and requests (association threads)
        self._server: Any = None
        self.index: ArchiveIndex | None = None
        #: Requests received so far, by DIMSE service ("C-FIND", "C-MOVE", "C-GET").
        self.requests: Counter[str] = Counter()

    @property
    def port(self) -> int:
        """The port we listen on (the requested one until :meth:`start` has bound it)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    def add_move_destination(self, ae_title: str, host: str, port: int) -> None:
        """Make `ae_title` a known C-MOVE destination (replacing any earlier address)."""
        with self._lock:
            self._destinations[ae_title] = (host, port)

    def _lookup_destination(self, ae_title: str) -> tuple[str, int] | None:
        with self._lock:
            return self._destinations.get(ae_title.strip())

    def _counted(self, service: str, handler: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        """``handler`` counting each request in :attr:`requests` (pynetdicom allows one handler
        per intervention event, so the count cannot be a second handler)."""

        def count_then_handle(event: evt.Event, *args: Any) -> Iterator[Any]:
            with self._lock:
                self.requests[service] += 1
            return handler(event, *args)

        return count_then_handle

    def start(self) -> None:
        """Index the folder and start listening in background threads."""
        if self._server is not None:
            raise RuntimeError("demo archive already started")
        self.index = ArchiveIndex.from_folder(self.folder, self.ae_title)
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        for model in MODEL_LEVELS:
            ae.add_supported_context(model)
        # C-GET sends C-STOREs back over the requestor's association: accept its proposed SCP role
        # (PS3.7 D.3.3.4). The same contexts take C-STOREs from dicomfs's upload/ (default roles).
        for sop_class, syntaxes in get_storage_syntaxes(self.index).items():
            ae.add_supported_context(sop_class, syntaxes, scu_role=False, scp_role=True)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, handle_store, [self.index, self.folder]),
            (evt.EVT_C_FIND, self._counted("C-FIND", handle_find), [self.index]),
            (evt.EVT_C_GET, self._counted("C-GET", handle_get), [self.index]),
            (evt.EVT_C_MOVE, self._counted("C-MOVE", handle_move), [self.index, self._lookup_destination]),
        ]
        self._server = ae.start_server((self.host, self._port), block=False, evt_handlers=handlers)
        LOGGER.info("demo archive %s listening on %s:%d", self.ae_title, self.host, self.port)

    def stop(self) -> None:
        """Stop listening and abort the associations in progress; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            # shutdown() only stops accepting; end the associations still running too.
            for assoc in server.active_associations:
                assoc.abort()

    def __enter__(self) -> DemoArchive:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
