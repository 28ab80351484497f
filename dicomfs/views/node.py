"""What every front end sees of the archive: named nodes, and the one interface that serves them.

A front end (the FUSE operations today; a DICOMweb server later) never learns DICOM levels or
DIMSE: it resolves a path to a :class:`Node`, lists a directory node's children, and asks a file
node's size or an open file descriptor. Views (the patient hierarchy today; by-date, by-uid and
query directories later) implement :class:`Namespace`; the root composes them by top-level name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dicomfs.core.model import InstanceKey


@dataclass(frozen=True)
class Node:
    """One entry of the tree: a directory, or an instance file.

    Attributes
    ----------
    name : str
        The entry's file name (safe: no ``/``, no NUL, at most 255 bytes); ``""`` for the root.
    is_dir : bool
        A directory (listing it may cost a C-FIND) or a file (an instance: reading it may retrieve).
    mtime : float
        Seconds since the epoch (UTC); stable across remounts (from the PACS's dates, never the
        mount time except for the root when nothing better is known).
    instance : InstanceKey or None
        For a file, the stored object it stands for (whole parent chain); None for directories.
    ref : object
        Opaque to front ends: what the view that made the node needs to serve it again (a
        catalog record). Not part of equality.
    volatile : bool
        A file whose contents are a snapshot taken at each ``open`` (the status file): front ends
        must not keep them between opens (FUSE: direct I/O). Instances never change: False.
    link : str
        A symbolic link's target, relative to the link's directory (``by-date/today`` ->
        ``2026/2026-11/2026-11-30``); ``""`` for every other node. A link is no directory
        (``is_dir`` False) and no instance: front ends show it as a symlink and never open it.
    """

    name: str
    is_dir: bool
    mtime: float
    instance: InstanceKey | None = None
    ref: object = field(default=None, compare=False, repr=False)
    volatile: bool = False
    link: str = ""


class Namespace(Protocol):
    """The interface a front end consumes (implemented by the views' root).

    Every method raises only the domain errors of :mod:`dicomfs.core.errors` (``NotFound``,
    ``PacsError``, ``RetrievalFailed``, ``FailedFast``, ``StorageFull``); the front end maps them to
    its own error codes in one place.
    """

    #: Seconds since the epoch: the time of nodes that have no date of their own.
    mount_time: float

    def lookup(self, path: str) -> Node:
        """The node at an absolute path (``"/"`` is the root). Raises ``NotFound``."""
        ...

    def children(self, node: Node) -> Sequence[Node]:
        """A directory node's entries, sorted by name. Raises ``NotFound`` for a file node."""
        ...

    def cached_size(self, node: Node) -> int | None:
        """A file node's exact size in bytes if its instance is cached, else None (never retrieves)."""
        ...

    def size(self, node: Node, *, walker: int = 0) -> int:
        """A file node's size in bytes, retrieving its series first if needed.

        ``walker``: the process that asks for the size alone (a ``stat``), which may get an
        estimate once it has retrieved enough without reading (``dicomfs.core.walkguard``); 0
        (a reader) always gets the exact size.
        """
        ...

    def open(self, node: Node, *, reader: int = 0) -> int:
        """An OS file descriptor (read-only, owned by the caller) on a file node's cached instance;
        ``reader``: the process opening it (0 when unknown)."""
        ...
