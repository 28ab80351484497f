"""``upload/``: the files being sent to the PACS, those sent moments ago, and ``failed/`` reports.

A view over the upload table (``dicomfs.core.uploads.Uploads``), mounted by ``views.root.Root``
under :data:`UPLOAD_DIR` when ``upload=on``. It only shows; writing is the front end's
(``dicomfs.fuse.writes``), which calls the table directly. Reports in ``failed/`` are read as a
snapshot per open (``volatile``: a later failure of the same name has another text).
"""

from __future__ import annotations

from collections.abc import Sequence

from dicomfs.core.errors import NotFound
from dicomfs.core.uploads import Uploads
from dicomfs.views.control import sealed_memfd
from dicomfs.views.node import Node

#: The top-level name of the view.
UPLOAD_DIR = "upload"


class UploadView:
    """The :class:`~dicomfs.views.node.View` of ``upload/``.

    Parameters
    ----------
    uploads : Uploads
        The mount's upload table.
    mount_time : float
        Seconds since the epoch: the time of ``upload/`` and ``failed/``.
    """

    def __init__(self, uploads: Uploads, mount_time: float) -> None:
        self.uploads = uploads
        self.mount_time = mount_time

    def lookup(self, path: str) -> Node:
        """The node at ``path`` (relative to ``upload/``); NotFound if the table has no such entry."""
        relative = path.strip("/")
        try:
            kind = self.uploads.kind(relative)
        except FileNotFoundError:
            raise NotFound(f"{UPLOAD_DIR}/{relative}") from None
        name = relative.rpartition("/")[2]
        mtime = self.uploads.mtime(relative)
        return Node(
            name,
            kind == "dir",
            self.mount_time if mtime is None else mtime,
            ref=relative,
            volatile=kind == "failure",
        )

    def children(self, node: Node) -> Sequence[Node]:
        """A directory's entries, sorted by name."""
        relative = str(node.ref)
        try:
            entries = self.uploads.children(relative)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{UPLOAD_DIR}/{relative}") from None
        prefix = f"{relative}/" if relative else ""
        nodes = []
        for name, is_dir in sorted(entries):
            mtime = self.uploads.mtime(prefix + name)
            nodes.append(Node(name, is_dir, self.mount_time if mtime is None else mtime, ref=prefix + name))
        return nodes

    def cached_size(self, node: Node) -> int | None:
        """The bytes written so far (in flight), sent, or of a failure report."""
        try:
            return self.uploads.size(str(node.ref))
        except FileNotFoundError:
            raise NotFound(f"{UPLOAD_DIR}/{node.ref}") from None

    def size(self, node: Node, *, walker: int = 0) -> int:
        """As :meth:`cached_size` (nothing to retrieve)."""
        return self.cached_size(node) or 0

    def open(self, node: Node, *, reader: int = 0) -> int:
        """A failure report, as a sealed memfd; uploads themselves are write-only (PermissionError)."""
        relative = str(node.ref)
        try:
            text = self.uploads.report(relative)
        except FileNotFoundError:
            raise PermissionError(13, "upload/ is write-only: read the stored study from the tree") from None
        return sealed_memfd("dicomfs-upload-failure", text)
