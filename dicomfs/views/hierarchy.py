"""The patient hierarchy: the archive as patients, studies, series and instance files.

    /                                      patients      (catalog.patients)
    /<patient>                             studies       (catalog.studies)
    /<patient>/<study>                     series        (catalog.series)
    /<patient>/<study>/<series>            instances     (catalog.instances)
    /<patient>/<study>/<series>/<n>.dcm    one SOP instance, retrieved with its series

Names come from :mod:`dicomfs.views.naming` (safe, unique within their directory, stable across
remounts); a study directory and everything below it carry the study's date and time. The view
keeps the named form of the listings it served last (:class:`NamedListings`), so resolving a path
names a directory once per catalog answer, not once per ``stat``. It never sees DIMSE or FUSE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from dicomfs.core.catalog import Catalog
from dicomfs.core.errors import NotFound
from dicomfs.core.instances import Instances
from dicomfs.core.model import InstanceKey
from dicomfs.core.records import InstanceRecord, PatientRecord, Record, SeriesRecord, StudyRecord
from dicomfs.views import naming
from dicomfs.views.control import sealed_memfd
from dicomfs.views.guide import MARKER_FILE, marker_text
from dicomfs.views.node import Node

LOGGER = logging.getLogger(__name__)

#: Named listings kept (least recently stored out first). A root of thousands of patients is a few
#: hundred kB named; 256 covers the directories a user walks through without growing unbounded.
MAX_NAMED_LISTINGS = 256

#: Levels below the root: patient, study, series, instance file.
DEPTH = 4


def base_name(record: Record) -> str:
    """The name a record is shown under before it is made unique among its siblings."""
    row = record.row
    if isinstance(record, PatientRecord):
        return naming.patient_dir_name(row["PatientName"], record.patient_id)
    if isinstance(record, StudyRecord):
        return naming.study_dir_name(row["StudyDate"], row["StudyDescription"], row["AccessionNumber"])
    if isinstance(record, SeriesRecord):
        return naming.series_dir_name(row["SeriesNumber"], row["Modality"], row["SeriesDescription"])
    return naming.instance_file_name(row["InstanceNumber"], row["SOPInstanceUID"])


def _identity(record: Record) -> str:
    """What tells two records of one listing apart when their names clash (``make_unique``)."""
    if isinstance(record, PatientRecord):
        return record.key.text
    if isinstance(record, StudyRecord):
        return record.study_uid
    if isinstance(record, SeriesRecord):
        return record.series_uid
    return record.sop_uid


def _node(name: str, record: Record) -> Node:
    if isinstance(record, InstanceRecord):
        return Node(name, False, record.series.mtime, record.key, record)
    return Node(name, True, record.mtime, None, record)


@dataclass(frozen=True)
class Marker:
    """The ref of a listing's ``_INCOMPLETE_LISTING.txt``: the file's text."""

    text: bytes


@dataclass(frozen=True)
class NamedListing:
    """One catalog answer, named: its nodes sorted by name, and by name; a listing the PACS's
    cap kept incomplete (``missing``) holds a marker file saying so."""

    records: tuple[Record, ...]
    nodes: tuple[Node, ...]
    missing: str = ""
    by_name: dict[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {node.name: node for node in self.nodes})

    @classmethod
    def of(cls, records: tuple[Record, ...], missing: str = "", mtime: float = 0.0) -> NamedListing:
        """Name ``records`` (``naming.make_unique`` over their base names) and sort them by name;
        with ``missing``, the marker file (of time ``mtime``) among them."""
        names = naming.make_unique([(base_name(record), _identity(record)) for record in records])
        nodes = sorted(
            (_node(name, record) for name, record in zip(names, records, strict=True)),
            key=lambda node: node.name,
        )
        if missing:
            nodes.append(Node(MARKER_FILE, False, mtime, ref=Marker(marker_text(missing))))
            nodes.sort(key=lambda node: node.name)
        return cls(records, tuple(nodes), missing)


class NamedListings:
    """Catalog answers named, at most ``max_entries`` of them (least recently stored out first).

    An answer is known by identity: the catalog hands out the very same tuple for a listing
    until the listing changes, so a lookup costs no hashing of records. The ``id`` of a tuple
    held here cannot be reused while it is held. Thread-safe; ``_lock`` is a leaf.
    """

    def __init__(self, max_entries: int = MAX_NAMED_LISTINGS) -> None:
        self._max_entries = max_entries
        self._named: dict[int, NamedListing] = {}
        self._lock = threading.Lock()

    def named(self, records: tuple[Record, ...], missing: str = "", mtime: float = 0.0) -> NamedListing:
        """``records`` (one catalog answer) named: from memory while it is the same answer."""
        known = self._named.get(id(records))
        if known is not None and known.records is records and known.missing == missing:
            return known
        listing = NamedListing.of(records, missing, mtime)
        with self._lock:
            self._named.pop(id(records), None)
            if len(self._named) >= self._max_entries:
                self._named.pop(next(iter(self._named)))
            self._named[id(records)] = listing
        return listing

    def __len__(self) -> int:
        return len(self._named)


class PatientHierarchy:
    """``/patient/study/series/n.dcm`` over the catalog: a :class:`~dicomfs.views.node.View`.

    Parameters
    ----------
    catalog : Catalog
        The archive's listings.
    instances : Instances
        Size and open of instance files.
    max_named_listings : int
        Named listings kept in memory (:class:`NamedListings`).
    """

    def __init__(
        self, catalog: Catalog, instances: Instances, *, max_named_listings: int = MAX_NAMED_LISTINGS
    ) -> None:
        self._catalog = catalog
        self._instances = instances
        self._named = NamedListings(max_named_listings)
        self.mount_time = time.time()
        self._root = Node("", True, self.mount_time)

    def lookup(self, path: str) -> Node:
        """The node at ``path`` (``"/"``: the root). Raises ``NotFound``, and ``PacsError`` when a
        directory on the way cannot be listed."""
        parts = [part for part in path.split("/") if part]
        if len(parts) > DEPTH:
            raise NotFound(path)
        node = self._root
        for part in parts:
            found = self._listing(node).by_name.get(part)
            if found is None:
                raise NotFound(path)
            node = found
        return node

    def children(self, node: Node) -> Sequence[Node]:
        """A directory node's entries, sorted by name. Raises ``NotFound`` for a file node."""
        return self._listing(node).nodes

    def _listing(self, node: Node) -> NamedListing:
        if not node.is_dir:
            raise NotFound(node.name)
        records = self._catalog.children(node.ref)  # type: ignore[arg-type]  # ours: None or a parent
        # Only a patient's studies are split (core.splitting); other listings are whole or fail.
        missing = self._catalog.missing(node.ref) if isinstance(node.ref, PatientRecord) else ""
        return self._named.named(records, missing, node.mtime)

    # -- instance files -----------------------------------------------------------------------

    def cached_size(self, node: Node) -> int | None:
        """The file's size in bytes if its instance is cached, else None (never retrieves)."""
        if isinstance(node.ref, Marker):
            return len(node.ref.text)
        return self._instances.cached_size(_instance_of(node))

    def size(self, node: Node, *, walker: int = 0) -> int:
        """The file's size in bytes, retrieving its series first if needed (see Namespace.size)."""
        if isinstance(node.ref, Marker):
            return len(node.ref.text)
        return self._instances.size(_instance_of(node), lambda: self._series_members(node), walker=walker)

    def open(self, node: Node, *, reader: int = 0) -> int:
        """An OS file descriptor (read-only, the caller's) on the file's cached instance (or
        on the marker's text)."""
        if isinstance(node.ref, Marker):
            return sealed_memfd("dicomfs-marker", node.ref.text)
        return self._instances.open(_instance_of(node), lambda: self._series_members(node), reader=reader)

    def _series_members(self, node: Node) -> list[str]:
        """The SOP Instance UIDs of the file's series, from its cached listing (stale is fine)."""
        record: InstanceRecord = node.ref  # type: ignore[assignment]  # a file node of ours
        listed = self._catalog.cached_instances(record.series)
        return [sibling.sop_uid for sibling in listed] if listed is not None else [record.sop_uid]


def _instance_of(node: Node) -> InstanceKey:
    if node.instance is None:
        raise NotFound(node.name)
    return node.instance
