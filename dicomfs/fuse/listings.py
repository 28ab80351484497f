"""Directory listings served a page at a time: what ``opendir`` listed, for ``readdir`` to page through.

libfuse's high-level API copies a whole listing into its own memory (a linked list of entries with
a full ``struct stat`` each) when ``readdir`` fills entries at offset 0; with non-zero offsets it
asks for one reply buffer at a time and resumes at the offset of the last entry the kernel took
(libfuse lib/fuse.c ``fill_dir``; mfusepy's ``readdir_with_offset``). So a 50,000-study day is
never held twice, and each page costs only its own entries.

The listing is taken once, at ``opendir``, and kept with the directory handle until
``releasedir``: every page of one ``ls`` comes from the same listing (a cached listing that
expires mid-way is not asked for again, and offsets stay meaningful). The snapshot is the very
sequence the view returned (no copy). The table is bounded: past :data:`MAX_OPEN_LISTINGS` open
directory handles the oldest snapshot is dropped, and its next page lists the directory again.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

from dicomfs.views.node import Node

#: Open directory handles whose listing is kept. A shell or file manager holds a few at once; a
#: parallel tree walk (``find``, ``du``) one per level and worker. Past this, the oldest
#: handle's listing is dropped (and taken again if it reads on).
MAX_OPEN_LISTINGS = 1024

#: ``(name, st_mode, offset of the next entry)``: what mfusepy's ``readdir_with_offset`` yields
#: (libfuse keeps only the file type bits of the mode: lib/fuse_lowlevel.c fuse_add_dirent).
Entry = tuple[str, int, int]


class OpenListings:
    """Listings taken at ``opendir``, by directory handle (bounded, thread-safe)."""

    def __init__(self, max_open: int = MAX_OPEN_LISTINGS) -> None:
        self._max_open = max_open
        self._lock = threading.Lock()
        self._listings: OrderedDict[int, Sequence[Node]] = OrderedDict()
        self._handles = itertools.count(1)  # 0 is mfusepy's "no handle"

    def open(self, children: Sequence[Node]) -> int:
        """Keep ``children`` under a new directory handle, dropping the oldest past the bound."""
        with self._lock:
            handle = next(self._handles)
            self._listings[handle] = children
            while len(self._listings) > self._max_open:
                self._listings.popitem(last=False)
            return handle

    def get(self, handle: int) -> Sequence[Node] | None:
        """The listing kept under ``handle``; None when it was dropped (or never kept)."""
        with self._lock:
            return self._listings.get(handle)

    def release(self, handle: int) -> None:
        with self._lock:
            self._listings.pop(handle, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._listings)


def entries_from(
    children: Sequence[Node], offset: int, mode_of: Callable[[Node], int], dir_mode: int
) -> Iterator[Entry]:
    """The entries after ``offset``: ``.`` is 1, ``..`` is 2, ``children[i]`` is ``i + 3``.

    Parameters
    ----------
    children : Sequence[Node]
        The directory's listing (sorted by name, as ``Namespace.children`` returns it).
    offset : int
        What libfuse passes: 0 for the first page, else the offset of the last entry it kept.
    mode_of : Callable[[Node], int]
        A child's ``st_mode`` (only its file type bits reach the kernel: directory, file, link).
    dir_mode : int
        The ``st_mode`` of ``.`` and ``..``.

    Yields
    ------
    Entry
        Lazily: libfuse stops taking entries when its reply buffer is full, and the rest are
        never made.
    """
    for position, name in ((1, "."), (2, "..")):
        if offset < position:
            yield name, dir_mode, position
    for index in range(max(0, offset - 2), len(children)):
        child = children[index]
        yield child.name, mode_of(child), index + 3
