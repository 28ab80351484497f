"""Directories of catalog records and the instance files below them: what every view shares.

A view decides what its upper levels are (patients at the root; years, months and days; UIDs;
identifiers; searches); below a directory whose ``Node.ref`` is a record, or a :class:`Search`,
every view serves the same ``<study>/<series>/<n>.dcm`` through :class:`RecordTree`: one catalog
listing per directory, named once per catalog answer (:class:`NamedListings`), instance files
sized and opened through ``core.instances``. A file node's ``instance`` is the record's
:class:`~dicomfs.core.model.InstanceKey`, so a study reached by two views is one set of cached
files. Views name records by a :data:`Namer` (the patient tree's is :func:`base_name`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dicomfs.core.catalog import Catalog
from dicomfs.core.errors import NotFound
from dicomfs.core.instances import Instances
from dicomfs.core.model import InstanceKey
from dicomfs.core.records import InstanceRecord, PatientRecord, Record, SeriesRecord, StudyRecord
from dicomfs.views import naming
from dicomfs.views.node import Node

#: Named listings kept (least recently stored out first). A root of thousands of patients is a few
#: hundred kB named; 256 covers the directories a user walks through without growing unbounded.
MAX_NAMED_LISTINGS = 256

#: How a view names a record before names are made unique among siblings.
Namer = Callable[[Record], str]


def base_name(record: Record) -> str:
    """The name a record is shown under in the patient tree before it is made unique."""
    row = record.row
    if isinstance(record, PatientRecord):
        return naming.patient_dir_name(row["PatientName"], record.patient_id)
    if isinstance(record, StudyRecord):
        return naming.study_dir_name(row["StudyDate"], row["StudyDescription"], row["AccessionNumber"])
    if isinstance(record, SeriesRecord):
        return naming.series_dir_name(row["SeriesNumber"], row["Modality"], row["SeriesDescription"])
    return naming.instance_file_name(row["InstanceNumber"], row["SOPInstanceUID"])


def patient_study_name(record: Record) -> str:
    """As :func:`base_name`, but a study says whose it is (a day or a search holds many people's)."""
    if isinstance(record, StudyRecord):
        row = record.row
        return naming.patient_study_dir_name(
            record.patient.shown_name,
            record.patient.patient_id,
            row["StudyDate"],
            row["StudyDescription"],
            row["AccessionNumber"],
        )
    return base_name(record)


def _identity(record: Record) -> str:
    """What tells two records of one listing apart when their names clash (``make_unique``)."""
    if isinstance(record, PatientRecord):
        return record.key.text
    if isinstance(record, StudyRecord):
        return record.study_uid
    if isinstance(record, SeriesRecord):
        return record.series_uid
    return record.sop_uid


def search_identity(record: Record) -> str:
    """As ``_identity``, but a study is its whole chain: a search may list one Study Instance UID
    under two patients (issue #7), whose names must still differ."""
    return record.chain_text if isinstance(record, StudyRecord) else _identity(record)


def _node(name: str, record: Record) -> Node:
    if isinstance(record, InstanceRecord):
        return Node(name, False, record.series.mtime, record.key, record)
    return Node(name, True, record.mtime, None, record)


@dataclass(frozen=True)
class Search:
    """The ref of a directory that lists the studies a search finds (``Catalog.matching``)."""

    keys: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, keys: Mapping[str, str]) -> Search:
        return cls(tuple(keys.items()))


@dataclass(frozen=True)
class NamedListing:
    """One catalog answer, named: its nodes sorted by name, and by name."""

    records: tuple[Record, ...]
    nodes: tuple[Node, ...]
    by_name: dict[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {node.name: node for node in self.nodes})

    @classmethod
    def of(
        cls, records: tuple[Record, ...], namer: Namer = base_name, identity: Namer = _identity
    ) -> NamedListing:
        """Name ``records`` (``naming.make_unique`` over ``namer``'s names, clashes told apart by
        ``identity``) and sort them by name."""
        names = naming.make_unique([(namer(record), identity(record)) for record in records])
        nodes = sorted(
            (_node(name, record) for name, record in zip(names, records, strict=True)),
            key=lambda node: node.name,
        )
        return cls(records, tuple(nodes))


class NamedListings:
    """Catalog answers named, at most ``max_entries`` of them (least recently stored out first).

    An answer is known by identity: the catalog hands out the very same tuple for a listing
    until the listing changes, so a lookup costs no hashing of records. The ``id`` of a tuple
    held here cannot be reused while it is held. Thread-safe; ``_lock`` is a leaf.
    """

    def __init__(
        self, max_entries: int = MAX_NAMED_LISTINGS, namer: Namer = base_name, identity: Namer = _identity
    ) -> None:
        self._max_entries = max_entries
        self._namer = namer
        self._identity = identity
        self._named: dict[int, NamedListing] = {}
        self._lock = threading.Lock()

    def named(self, records: tuple[Record, ...]) -> NamedListing:
        """``records`` (one catalog answer) named: from memory while it is the same answer."""
        known = self._named.get(id(records))
        if known is not None and known.records is records:
            return known
        listing = NamedListing.of(records, self._namer, self._identity)
        with self._lock:
            self._named.pop(id(records), None)
            if len(self._named) >= self._max_entries:
                self._named.pop(next(iter(self._named)))
            self._named[id(records)] = listing
        return listing

    def __len__(self) -> int:
        return len(self._named)


class RecordTree:
    """Record directories and instance files over the catalog; views build on it.

    Parameters
    ----------
    catalog : Catalog
        The archive's listings.
    instances : Instances
        Size and open of instance files.
    namer : Namer
        How this view names records (:func:`base_name`, :func:`patient_study_name`, ...).
    identity : Namer
        What tells records with one name apart (``_identity``; :func:`search_identity` where a
        listing holds many patients' studies).
    max_named_listings : int
        Named listings kept in memory (:class:`NamedListings`).
    """

    def __init__(
        self,
        catalog: Catalog,
        instances: Instances,
        *,
        namer: Namer = base_name,
        identity: Namer = _identity,
        max_named_listings: int = MAX_NAMED_LISTINGS,
    ) -> None:
        self._catalog = catalog
        self._instances = instances
        self._named = NamedListings(max_named_listings, namer, identity)

    def walk(self, node: Node, parts: Sequence[str], path: str) -> Node:
        """The node ``parts`` below the directory ``node``. Raises ``NotFound`` (``path`` named),
        and ``PacsError`` when a directory on the way cannot be listed."""
        for part in parts:
            found = self.listing(node).by_name.get(part)
            if found is None:
                raise NotFound(path)
            node = found
        return node

    def children(self, node: Node) -> Sequence[Node]:
        """A directory node's entries, sorted by name. Raises ``NotFound`` for a file node."""
        return self.listing(node).nodes

    def listing(self, node: Node) -> NamedListing:
        """The named listing of a record or search directory."""
        if not node.is_dir:
            raise NotFound(node.name)
        ref = node.ref
        if isinstance(ref, Search):
            return self._named.named(self._catalog.matching(dict(ref.keys)))
        records = self._catalog.children(ref)  # type: ignore[arg-type]  # ours: None or a parent
        return self._named.named(records)

    # -- instance files -----------------------------------------------------------------------

    def cached_size(self, node: Node) -> int | None:
        """The file's size in bytes if its instance is cached, else None (never retrieves)."""
        return self._instances.cached_size(_instance_of(node))

    def size(self, node: Node, *, walker: int = 0) -> int:
        """The file's size in bytes, retrieving its series first if needed (see Namespace.size)."""
        return self._instances.size(_instance_of(node), lambda: self._series_members(node), walker=walker)

    def open(self, node: Node, *, reader: int = 0) -> int:
        """An OS file descriptor (read-only, the caller's) on the file's cached instance."""
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


#: The ref of a flat view's own root, which lists nothing.
_UNLISTED = object()


class FlatView(RecordTree):
    """A view whose root lists nothing, each top-level name resolved on its own (by-uid, by-id,
    query directories): a directory never lists what it would have to query everything for.

    Subclasses give :meth:`resolve` (a top-level name -> its node, or ``NotFound``) and
    :attr:`depth` (levels below the root: the top name, then the record levels).
    """

    depth = 4

    def __init__(
        self,
        catalog: Catalog,
        instances: Instances,
        *,
        mount_time: float,
        namer: Namer = patient_study_name,
        identity: Namer = search_identity,
    ) -> None:
        super().__init__(catalog, instances, namer=namer, identity=identity)
        self.mount_time = mount_time
        self._root = Node("", True, mount_time, ref=_UNLISTED)

    def lookup(self, path: str) -> Node:
        """The node at ``path``. Raises ``NotFound``, and ``PacsError`` when a directory on the
        way cannot be listed."""
        parts = [part for part in path.split("/") if part]
        if not parts:
            return self._root
        if len(parts) > self.depth:
            raise NotFound(path)
        return self.walk(self.resolve(parts[0], path), parts[1:], path)

    def children(self, node: Node) -> Sequence[Node]:
        """A directory node's entries, sorted by name; none for the view's root."""
        if node.ref is _UNLISTED:
            return ()
        return self.listing(node).nodes

    def resolve(self, name: str, path: str) -> Node:
        """The top-level directory ``name`` (``path``: the whole path, for ``NotFound``)."""
        raise NotImplementedError
