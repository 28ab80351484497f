"""A 20,000-study Q/R SCP that costs a test seconds: C-FIND over a generated index, C-GET/C-MOVE of
the few instances a test opens, and a count of every C-FIND by level and keys.

dcmqrscp caps its index at 500 studies per AE (tests/pacs_servers.py) and loading 20,000 files
into Orthanc takes minutes, so this in-process pynetdicom SCP answers from
:class:`tests.big_index.BigIndex` instead, in the spirit of ``dicomfs.demo.scp``. Instances are
made with pydicom when retrieved (deterministic: the same UID gives the same bytes, see
:meth:`BigArchive.instance`), one at a time.

A *universal* query, one at PATIENT or STUDY level with no matching key (PS3.4 C.2.2.2.3: every
key empty), would list the whole archive: it is refused with 0xA700 (Refused: Out of Resources,
PS3.4 C.4.1.1.4, as dcm4chee's ``QueryMaxNumberOfResults`` does) and counted in
:attr:`BigArchive.universal`, so a test can prove the root was never listed whole. Loopback only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydicom.dataset import Dataset, FileDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt

from dicomfs.demo.samples import make_instance
from dicomfs.dimse import statuses
from tests.big_index import CT_IMAGE_STORAGE, BigIndex, Entity, accession, patient_id, patient_name, study_uid
from tests.mounting import DICOMFS_AET, pacs_options
from tests.pacs_servers import free_port

LOGGER = logging.getLogger(__name__)

AE_TITLE = "BIGPACS"
VERIFICATION = "1.2.840.10008.1.1"
#: Patient Root and Study Root FIND, MOVE, GET (PS3.4 C.6.1, C.6.2).
FIND_MODELS = ("1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1")
MOVE_MODELS = ("1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2")
GET_MODELS = ("1.2.840.10008.5.1.4.1.2.1.3", "1.2.840.10008.5.1.4.1.2.2.3")
UNCOMPRESSED: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
#: PS3.4 C.4.1.1.4: Refused: Out of Resources (C-FIND).
OUT_OF_RESOURCES = 0xA700
#: Levels whose universal query lists the whole archive.
ROOT_LEVELS = ("PATIENT", "STUDY")
#: Generated instances are this small (rows x columns, 16 bit): a test opens a few.
IMAGE_SIDE = 8


@dataclass
class FindRequest:
    """One C-FIND as received: its level, the keys that had a value (matching keys), and how it
    ended (refused; matches sent; cancelled by the requestor, PS3.4 C.4.1.2.3)."""

    level: str
    keys: Mapping[str, str]
    refused: bool = False
    answered: int = 0
    cancelled: bool = False

    @property
    def universal(self) -> bool:
        """At PATIENT or STUDY level with no matching key: a query for the whole archive."""
        return self.level in ROOT_LEVELS and not self.keys


def matching_keys(identifier: Dataset) -> dict[str, str]:
    """Keyword -> text of every key of ``identifier`` with a value, the level left out."""
    keys = {}
    for elem in identifier:
        if elem.keyword and elem.keyword != "QueryRetrieveLevel" and elem.VR != "SQ":
            value = elem.value
            text = "\\".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value or "")
            if text:
                keys[elem.keyword] = text
    return keys


class BigArchive:
    """The SCP: serves ``index`` on 127.0.0.1 (a free port, chosen at :meth:`start`).

    Parameters
    ----------
    index : BigIndex
        The archive (built by the caller, so a test can compare listings with it).
    refuse_universal : bool
        Refuse (0xA700) and count a PATIENT/STUDY-level query without matching keys; False
        answers it (and still counts it).
    move_destinations : Mapping[str, tuple[str, int]]
        AE title -> (host, port) of known C-MOVE destinations; others get 0xA801.

    Thread-safe: the index never changes; :attr:`finds` and :attr:`retrieved` are guarded by a lock.
    """

    def __init__(
        self,
        index: BigIndex,
        *,
        refuse_universal: bool = True,
        move_destinations: Mapping[str, tuple[str, int]] = MappingProxyType({}),
    ) -> None:
        self.index = index
        self.ae_title = AE_TITLE
        self.host = "127.0.0.1"
        self.refuse_universal = refuse_universal
        self._destinations = dict(move_destinations)
        self._lock = threading.Lock()
        self._server: Any = None
        #: Every C-FIND received, in order.
        self.finds: list[FindRequest] = []
        #: SOP Instance UIDs sent by C-GET or C-MOVE, in order.
        self.retrieved: list[str] = []

    # -- what tests read -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server is not None else 0

    @property
    def universal(self) -> list[FindRequest]:
        """The C-FINDs that asked for the whole archive (PATIENT/STUDY level, no matching key)."""
        with self._lock:
            return [find for find in self.finds if find.universal]

    @property
    def listed_whole(self) -> list[FindRequest]:
        """The universal C-FINDs that were answered beyond their first match (not refused, not
        cancelled after one match as a start-up check does): the archive listed itself whole."""
        return [
            find for find in self.universal if not find.refused and (find.answered > 1 or not find.cancelled)
        ]

    def finds_at(self, level: str) -> list[FindRequest]:
        with self._lock:
            return [find for find in self.finds if find.level == level]

    def reset_counts(self) -> None:
        with self._lock:
            self.finds.clear()
            self.retrieved.clear()

    def add_move_destination(self, ae_title: str, host: str, port: int) -> None:
        with self._lock:
            self._destinations[ae_title] = (host, port)

    def instance(self, entity: Entity) -> FileDataset:
        """The instance ``entity`` (IMAGE level) stands for, made with pydicom: the same bytes for
        the same entity every time (``make_instance`` is deterministic)."""
        study = entity.study
        return make_instance(
            patient_name=patient_name(study.patient),
            patient_id=patient_id(study.patient),
            study_uid=study_uid(study.number),
            series_uid=str(self.index.value(entity, "SeriesInstanceUID")),
            sop_uid=str(self.index.value(entity, "SOPInstanceUID")),
            study_date=study.date,
            study_description=f"Scale study {study.number}",
            accession=accession(study.number),
            series_number=entity.series,
            series_description=f"Series {entity.series}",
            instance_number=entity.instance,
            rows=IMAGE_SIDE,
            columns=IMAGE_SIDE,
            sop_class_uid=CT_IMAGE_STORAGE,
            seed=study.number * 10 + entity.series * 3 + entity.instance,
        )

    # -- handlers -------------------------------------------------------------------------------

    def _handle_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        identifier = event.identifier
        level = str(identifier.get("QueryRetrieveLevel", ""))
        keys = matching_keys(identifier)
        keys = {keyword: value for keyword, value in keys.items() if value != "*"}
        request = FindRequest(level, keys)
        request.refused = refused = request.universal and self.refuse_universal
        with self._lock:
            self.finds.append(request)
        if request.universal:
            LOGGER.warning("universal %s-level C-FIND%s", level, " refused (0xA700)" if refused else "")
        if refused:
            yield OUT_OF_RESOURCES, None
            return
        try:
            matches = self.index.match(level, keys)
            asked = [
                elem.keyword for elem in identifier if elem.keyword and elem.keyword != "QueryRetrieveLevel"
            ]
            for entity in matches:
                if event.is_cancelled:
                    request.cancelled = True
                    yield statuses.CANCEL, None
                    return
                request.answered += 1
                yield statuses.PENDING, self._response(entity, asked)
        except ValueError as exc:
            LOGGER.warning("C-FIND refused: %s", exc)
            yield statuses.IDENTIFIER_MISMATCH, None

    def _response(self, entity: Entity, asked: list[str]) -> Dataset:
        """The keys asked for, with the entity's values (empty where it has none, PS3.4 C.4.1.2.2)."""
        response = Dataset()
        response.QueryRetrieveLevel = entity.level
        for keyword in asked:
            setattr(response, keyword, self.index.value(entity, keyword) or "")
        response.RetrieveAETitle = self.ae_title
        return response

    def _selected(self, event: evt.Event) -> list[Entity]:
        """Every instance below what a C-GET/C-MOVE identifier names (refusing a whole-root one)."""
        identifier = event.identifier
        keys = matching_keys(identifier)
        if not keys:
            return []
        return list(self.index.match("IMAGE", keys))

    def _send(self, event: evt.Event, entities: list[Entity]) -> Iterator[Any]:
        for entity in entities:
            if event.is_cancelled:
                yield statuses.CANCEL, None
                return
            instance = self.instance(entity)
            with self._lock:
                self.retrieved.append(str(instance.SOPInstanceUID))
            yield statuses.PENDING, instance

    def _handle_get(self, event: evt.Event) -> Iterator[Any]:
        entities = self._selected(event)
        yield len(entities)
        yield from self._send(event, entities)

    def _handle_move(self, event: evt.Event) -> Iterator[Any]:
        with self._lock:
            destination = self._destinations.get((event.move_destination or "").strip())
        if destination is None:
            yield None, None  # pynetdicom answers 0xA801, move destination unknown
            return
        entities = self._selected(event)
        yield destination[0], destination[1], {"contexts": [build_context(CT_IMAGE_STORAGE, UNCOMPRESSED)]}
        yield len(entities)
        yield from self._send(event, entities)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(VERIFICATION, UNCOMPRESSED)
        for model in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
            ae.add_supported_context(model, UNCOMPRESSED)
        # C-GET sends C-STOREs back over the requestor's association (PS3.7 D.3.3.4).
        ae.add_supported_context(CT_IMAGE_STORAGE, UNCOMPRESSED, scu_role=False, scp_role=True)
        ae.maximum_associations = 20
        handlers: list[Any] = [
            (evt.EVT_C_FIND, self._handle_find),
            (evt.EVT_C_GET, self._handle_get),
            (evt.EVT_C_MOVE, self._handle_move),
        ]
        self._server = ae.start_server((self.host, 0), block=False, evt_handlers=handlers)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            for assoc in server.active_associations:
                assoc.abort()

    def __enter__(self) -> BigArchive:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def big_options(archive: BigArchive, cachedir: Path, *, retrieve: str = "get", **extra: Any) -> str:
    """Mount options for ``archive``: C-GET by default (no storage SCP to reach); with
    ``retrieve="move"`` our storage SCP's port becomes a known destination first."""
    if retrieve == "move":
        port = free_port()
        archive.add_move_destination(DICOMFS_AET, "127.0.0.1", port)
        return pacs_options(archive, cachedir, localport=port, retrieve="move", **extra)
    return pacs_options(archive, cachedir, retrieve=retrieve, **extra)
