"""The control directory ``/.dicomfs``: what the mount is doing, as files (``status.json``).

The root mounts it hidden (``views.root``): reached by name, never listed, so ``ls -a``, ``find``
and indexers walk past it. ``status.json`` is a snapshot of the mount taken at each ``open``
(``dicomfs status`` reads it). Its size is fixed (``STATUS_SIZE``: the JSON, then spaces and a
newline), so the size the kernel caches from ``stat`` is always the size a read finds, and the
node is *volatile*, so front ends do not keep its contents between opens (FUSE: direct I/O).
The report itself is made elsewhere (``app/statusreport.py``) and handed in as a callable: views
know nothing of the engine's parts.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence

from dicomfs.core.errors import NotFound
from dicomfs.views.node import Node

LOGGER = logging.getLogger(__name__)

#: The control directory's name at the root (front ends let this one dotted name through).
CONTROL_DIR = ".dicomfs"

STATUS_FILE = "status.json"

#: Bytes of ``status.json``, whatever it says: the report's lists are bounded to fit well within.
STATUS_SIZE = 64 * 1024

_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE

#: A report: JSON-serialisable (str, numbers, bool, None, lists and mappings of them).
Report = Callable[[], Mapping[str, object]]


def render(report: Mapping[str, object], size: int = STATUS_SIZE) -> bytes:
    """``report`` as indented JSON padded with spaces to exactly ``size`` bytes (last byte newline).

    A report too large to fit (it should never be: its lists are bounded) keeps its scalar
    fields only, with ``"truncated": true``, so the file is always valid JSON.
    """
    text = json.dumps(report, indent=1, ensure_ascii=False).encode()
    if len(text) >= size:
        LOGGER.warning("status report of %d bytes does not fit in %d: lists left out", len(text), size)
        scalars = {key: value for key, value in report.items() if not isinstance(value, (list, dict))}
        text = json.dumps({**scalars, "truncated": True}, indent=1, ensure_ascii=False).encode()[: size - 1]
    return text + b" " * (size - 1 - len(text)) + b"\n"


class ControlView:
    """A :class:`~dicomfs.views.node.Namespace` of one directory holding ``status.json``.

    Parameters
    ----------
    report : Report
        Called at each open of ``status.json``: the snapshot to show.
    mount_time : float
        Seconds since the epoch: the time of the directory and the file.
    """

    def __init__(self, report: Report, mount_time: float) -> None:
        self._report = report
        self.mount_time = mount_time

    def lookup(self, path: str) -> Node:
        """``/`` (the directory) or ``/status.json``; anything else raises ``NotFound``."""
        parts = [part for part in path.split("/") if part]
        if not parts:
            return Node("", True, self.mount_time)
        if parts == [STATUS_FILE]:
            return Node(STATUS_FILE, False, self.mount_time, volatile=True)
        raise NotFound(path)

    def children(self, node: Node) -> Sequence[Node]:
        """The directory's one file."""
        if not node.is_dir:
            raise NotFound(node.name)
        return [self.lookup("/" + STATUS_FILE)]

    def cached_size(self, node: Node) -> int | None:
        """``STATUS_SIZE``: fixed, nothing to retrieve."""
        return STATUS_SIZE

    def size(self, node: Node, *, walker: int = 0) -> int:
        """``STATUS_SIZE``."""
        return STATUS_SIZE

    def open(self, node: Node, *, reader: int = 0) -> int:
        """A read-only file descriptor on a fresh snapshot (an anonymous memory file).

        Raises
        ------
        NotFound
            ``node`` is the directory.
        OSError
            No memory for the snapshot.
        """
        if node.is_dir:
            raise NotFound(node.name)
        return sealed_memfd("dicomfs-status", render(self._report()))


def sealed_memfd(name: str, data: bytes) -> int:
    """A read-only snapshot of ``data``: an anonymous memory file, sealed, so it can no longer
    change or change size (memfd_create(2)). Raises OSError when there is no memory for it."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, data)  # a memfd (shmem) takes the whole buffer in one write
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd
