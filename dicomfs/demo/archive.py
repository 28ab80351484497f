"""The demo archive's index: a folder of DICOM files, grouped per Q/R level, and query matching.

Matching follows PS3.4 C.2.2.2, applied leniently (a key that is not defined for the level is still
matched against the instance data rather than refused). The index is built once and never changes
afterwards, so the Q/R SCP's handler threads (:mod:`dicomfs.demo.scp`) read it without locks.
Nothing here speaks DIMSE: the SCP hands identifiers in and responses out.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

LOGGER = logging.getLogger(__name__)


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
        self._ae_title = ae_title
        self._adding = threading.Lock()
        self._index(tuple(instances))

    def _index(self, instances: tuple[IndexedInstance, ...]) -> None:
        entities: dict[str, list[Entity]] = {}
        for level in LEVEL_KEYS:
            groups: dict[tuple[str, ...], list[IndexedInstance]] = {}
            for instance in instances:
                groups.setdefault(entity_key(instance.dataset, level), []).append(instance)
            entities[level] = [Entity(tuple(g), _summarize(g, self._ae_title)) for g in groups.values()]
        # Two assignments: a query running meanwhile sees the old or the new entities, never half.
        self.instances = instances
        self._entities = entities

    def add(self, instance: IndexedInstance) -> None:
        """Index a stored instance (a C-STORE), replacing one of the same identity; O(n), a demo."""
        key = entity_key(instance.dataset, "IMAGE")
        with self._adding:
            kept = tuple(i for i in self.instances if entity_key(i.dataset, "IMAGE") != key)
            self._index((*kept, instance))

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
