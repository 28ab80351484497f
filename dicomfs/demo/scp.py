"""In-process DICOM Query/Retrieve SCP that serves a folder of files: the archive behind ``dicomfs demo``.

It lets dicomfs run on a machine with no PACS, and gives the tests a real DIMSE peer. It behaves like a
small PACS: C-ECHO; C-FIND, C-MOVE and C-GET on the Patient Root and Study Root Information Models
(PS3.4 C.6.1, C.6.2) with the matching rules of PS3.4 C.2.2.2, applied leniently (a key that is not
defined for the level is still matched against the instance data rather than refused).

The index is built once in :meth:`DemoArchive.start` and never changes afterwards, so the handler
threads read it without locks; only the C-MOVE destination table is guarded by a lock.

Instances are sent in their stored transfer syntax and never decompressed. pynetdicom's Q/R handler
API takes :class:`~pydicom.dataset.Dataset` objects (not file paths), so each instance is read from
disk just before its C-STORE sub-operation: one instance in memory at a time.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicomfs.dimse import statuses

LOGGER = logging.getLogger(__name__)

# DIMSE statuses we yield ourselves (PS3.4 C.4.1.1.4) are pynetdicom's (``dimse.statuses``).
# pynetdicom itself answers 0xA801 (move destination unknown) when the C-MOVE handler yields
# (None, None), and computes the final C-GET/C-MOVE status from the sub-operation counts.

# Unique key of each Q/R level (PS3.4 C.6.1.1, C.6.2.1).
LEVEL_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "PATIENT": "PatientID",
        "STUDY": "StudyInstanceUID",
        "SERIES": "SeriesInstanceUID",
        "IMAGE": "SOPInstanceUID",
    }
)
_PATIENT_ROOT_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_STUDY_ROOT_LEVELS = ("STUDY", "SERIES", "IMAGE")
MODEL_LEVELS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        PatientRootQueryRetrieveInformationModelFind: _PATIENT_ROOT_LEVELS,
        PatientRootQueryRetrieveInformationModelMove: _PATIENT_ROOT_LEVELS,
        PatientRootQueryRetrieveInformationModelGet: _PATIENT_ROOT_LEVELS,
        StudyRootQueryRetrieveInformationModelFind: _STUDY_ROOT_LEVELS,
        StudyRootQueryRetrieveInformationModelMove: _STUDY_ROOT_LEVELS,
        StudyRootQueryRetrieveInformationModelGet: _STUDY_ROOT_LEVELS,
    }
)

# Keys that are computed per entity rather than read from an instance (PS3.4 C.6.1.1.2-4).
_COUNT_KEYS = frozenset(
    {
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "NumberOfSeriesRelatedInstances",
    }
)
_SUMMARY_KEYS = _COUNT_KEYS | {
    "ModalitiesInStudy",
    "SOPClassesInStudy",
    "RetrieveAETitle",
    "InstanceAvailability",
}
_NOT_MATCHED = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"}) | _COUNT_KEYS
_NUMERIC_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "UV", "SV"})
_RANGE_VRS = frozenset({"DA", "TM", "DT"})
# A C-MOVE sub-association can propose at most 128 presentation contexts (PS3.8 9.3.2.2).
_MAX_CONTEXTS = 128


class QueryError(ValueError):
    """The identifier cannot be processed (bad or missing Query/Retrieve Level)."""


@dataclass(frozen=True)
class IndexedInstance:
    """One stored file: its path, its attributes (no pixel data) and how it is encoded."""

    path: Path
    dataset: Dataset
    sop_class_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True)
class Entity:
    """A patient, study, series or image, with every instance below it and its computed attributes."""

    instances: tuple[IndexedInstance, ...]
    summary: Dataset


def _strings(value: Any) -> list[str]:
    """A DICOM value as a list of strings, one per value (VM)."""
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _string_matches(pattern: str, value: str, *, is_pn: bool) -> bool:
    """Single value or wildcard matching (PS3.4 C.2.2.2.1, C.2.2.2.4); PN ignores case."""
    flags = re.IGNORECASE if is_pn else 0
    candidates = [value, *value.split("=")] if is_pn and "=" in value else [value]
    if "*" in pattern or "?" in pattern:
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        return any(re.fullmatch(regex, c, flags | re.DOTALL) for c in candidates)
    if is_pn:
        return any(pattern.casefold() == c.casefold() for c in candidates)
    return pattern in candidates


def _range_matches(pattern: str, value: str) -> bool:
    """Range matching on DA/TM/DT (PS3.4 C.2.2.2.5), comparing the value truncated to each bound."""
    low, _, high = pattern.replace(":", "").partition("-")
    value = value.replace(":", "")
    if not value:
        return False
    return (not low or value[: len(low)] >= low) and (not high or value[: len(high)] <= high)


def _number_matches(pattern: str, value: str) -> bool:
    try:
        return float(pattern) == float(value)
    except ValueError:
        return False


def element_matches(key: DataElement, dataset: Dataset) -> bool:
    """Whether `dataset` matches one query key (PS3.4 C.2.2.2).

    Empty keys and sequence keys match universally; UI keys with several values use list-of-UID
    matching; a multi-valued attribute matches when any of its values does.
    """
    if key.is_empty or key.VR == "SQ":
        return True
    data = dataset.get(key.tag)
    values = _strings(data.value) if data is not None else []
    values = values or [""]
    patterns = _strings(key.value)
    if key.VR == "UI":
        return any(v in patterns for v in values)
    for pattern in patterns:
        for value in values:
            if key.VR in _RANGE_VRS and "-" in pattern:
                matched = _range_matches(pattern, value)
            elif key.VR in _NUMERIC_VRS:
                matched = _number_matches(pattern, value)
            else:
                matched = _string_matches(pattern, value, is_pn=key.VR == "PN")
            if matched:
                return True
    return False


def _summarize(instances: Sequence[IndexedInstance], ae_title: str) -> Dataset:
    """The computed attributes of an entity, so they can be matched and returned like the others."""

    def distinct(keyword: str) -> list[str]:
        return sorted({str(i.dataset.get(keyword, "")) for i in instances} - {""})

    summary = Dataset()
    summary.NumberOfPatientRelatedStudies = len(distinct("StudyInstanceUID"))
    summary.NumberOfPatientRelatedSeries = len(distinct("SeriesInstanceUID"))
    summary.NumberOfPatientRelatedInstances = len(instances)
    summary.NumberOfStudyRelatedSeries = len(distinct("SeriesInstanceUID"))
    summary.NumberOfStudyRelatedInstances = len(instances)
    summary.NumberOfSeriesRelatedInstances = len(instances)
    summary.ModalitiesInStudy = distinct("Modality")
    summary.SOPClassesInStudy = sorted({i.sop_class_uid for i in instances})
    summary.RetrieveAETitle = ae_title
    summary.InstanceAvailability = "ONLINE"
    return summary


def read_instance(path: Path) -> IndexedInstance | None:
    """Index one file, or None when it is not a DICOM instance we can serve."""
    try:
        dataset = dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # any unreadable file is skipped: the demo serves what it can
        LOGGER.debug("skipping %s: %s", path, exc)
        return None
    meta = getattr(dataset, "file_meta", None) or Dataset()
    transfer_syntax = str(meta.get("TransferSyntaxUID", ""))
    sop_class = str(dataset.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))
    uids = (dataset.get(kw) for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
    if not (transfer_syntax and sop_class and all(uids)):
        LOGGER.debug("skipping %s: not a composite instance with file meta", path)
        return None
    _convert_elements(dataset, path)
    return IndexedInstance(path, dataset, sop_class, transfer_syntax)


def entity_key(dataset: Dataset, level: str) -> tuple[str, ...]:
    """What makes an entity of ``level`` one: its own key *and* those of every level above.

    Archives hold the same SOP Instance UID in two series, the same Series Instance UID in two
    studies, the same Patient ID from two issuers (PS3.3 C.7.1.1: an ID is unique only within its
    issuer); like a hierarchical PACS we keep those apart instead of merging them.
    """
    chain = ("PatientID", "IssuerOfPatientID", *(LEVEL_KEYS[lv] for lv in _PATIENT_ROOT_LEVELS[1:]))
    depth = 2 + _PATIENT_ROOT_LEVELS.index(level)
    return tuple(str(dataset.get(keyword, "") or "").strip() for keyword in chain[:depth])


def _convert_elements(dataset: Dataset, path: Path) -> None:
    """Convert every raw element now, so handler threads only ever read the dataset.

    A value pydicom cannot convert (IS '1e400' overflows ``int(float())``) stays as stored, as
    bytes, the way a PACS keeps it: one odd value must not keep the file, or the whole archive
    (``from_folder``), from being served. The bytes go out as OB: pydicom gives an element of a
    known tag declared UN its dictionary VR back, and would fail on it again.
    """
    for tag in list(dataset.keys()):
        try:
            element = dataset[tag]
        except Exception as exc:
            LOGGER.debug("%s: %s kept as stored: %s", path, tag, exc)
            dataset[tag] = DataElement(tag, "OB", dataset.get_item(tag).value)
            continue
        if element.VR == "SQ":
            for item in element.value or []:
                _convert_elements(item, path)


class ArchiveIndex:
    """The in-memory index of a folder: instances grouped per Q/R level, and query matching."""

    def __init__(self, instances: Iterable[IndexedInstance], ae_title: str) -> None:
        self.instances = tuple(instances)
        self._entities: dict[str, list[Entity]] = {}
        for level in LEVEL_KEYS:
            groups: dict[tuple[str, ...], list[IndexedInstance]] = {}
            for instance in self.instances:
                groups.setdefault(entity_key(instance.dataset, level), []).append(instance)
            self._entities[level] = [Entity(tuple(g), _summarize(g, ae_title)) for g in groups.values()]

    @classmethod
    def from_folder(cls, folder: Path, ae_title: str) -> ArchiveIndex:
        """Index every DICOM file under `folder`; a duplicate object (same patient, study, series
        and SOP Instance UID) keeps the first file."""
        seen: set[tuple[str, ...]] = set()
        instances = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            instance = read_instance(path)
            if instance is None:
                continue
            key = entity_key(instance.dataset, "IMAGE")
            if key in seen:
                LOGGER.warning("skipping %s: duplicate object %s", path, key[-1])
                continue
            seen.add(key)
            instances.append(instance)
        LOGGER.info("demo archive: %d instances indexed under %s", len(instances), folder)
        return cls(instances, ae_title)

    def query(self, identifier: Dataset, model_uid: str) -> tuple[str, list[tuple[Entity, IndexedInstance]]]:
        """The level asked for and the matching entities, each with its first matching instance.

        Raises
        ------
        QueryError
            If the Query/Retrieve Level is missing or not part of the information model.
        """
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        if level not in MODEL_LEVELS.get(model_uid, ()):
            raise QueryError(f"Query/Retrieve Level {level!r} is not valid for {model_uid}")
        keys = [e for e in identifier if e.tag.element != 0 and e.keyword not in _NOT_MATCHED]
        summary_keys = [e for e in keys if e.keyword in _SUMMARY_KEYS]
        instance_keys = [e for e in keys if e.keyword not in _SUMMARY_KEYS]
        matches = []
        for entity in self._entities[level]:
            if not all(element_matches(k, entity.summary) for k in summary_keys):
                continue
            first = next(
                (i for i in entity.instances if all(element_matches(k, i.dataset) for k in instance_keys)),
                None,
            )
            if first is not None:
                matches.append((entity, first))
        return level, matches


def build_response(identifier: Dataset, level: str, entity: Entity, instance: IndexedInstance) -> Dataset:
    """A C-FIND response holding exactly the requested keys, valued from the index (PS3.4 C.4.1.1.3.2)."""
    response = Dataset()
    charset = instance.dataset.get("SpecificCharacterSet")
    if charset:
        response.SpecificCharacterSet = charset
    for key in identifier:
        if key.tag.element == 0 or key.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        source = entity.summary if key.keyword in _SUMMARY_KEYS else instance.dataset
        if key.tag in source:
            response.add(copy.deepcopy(source[key.tag]))
        else:
            response.add(DataElement(key.tag, key.VR, [] if key.VR == "SQ" else None))
    response.QueryRetrieveLevel = level
    return response


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
        self._lock = threading.Lock()  # guards _destinations, read from association threads
        self._server: Any = None
        self.index: ArchiveIndex | None = None

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
        # (PS3.7 D.3.3.4).
        for sop_class, syntaxes in get_storage_syntaxes(self.index).items():
            ae.add_supported_context(sop_class, syntaxes, scu_role=False, scp_role=True)
        handlers: list[Any] = [
            (evt.EVT_C_FIND, handle_find, [self.index]),
            (evt.EVT_C_GET, handle_get, [self.index]),
            (evt.EVT_C_MOVE, handle_move, [self.index, self._lookup_destination]),
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
