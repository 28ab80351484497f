"""Direct I/O for the files the operations name, with mfusepy's ``open`` (which hides ``fi``).

The mount asks libfuse for ``kernel_cache`` (instances never change): libfuse then sets
``keep_cache`` on every open (``fuse_lib_open`` in lib/fuse.c), and the kernel keeps a file's
pages across opens. A file that is a fresh snapshot at each open (``/.dicomfs/status.json``)
would show its first snapshot for as long as the pages stay. ``direct_io`` in the open reply
(``fuse_file_info.direct_io``, which libfuse only ever sets, never clears) makes the kernel send
every read to us instead. mfusepy passes ``fuse_file_info`` to the operations only with
``raw_fi``, which would change every file operation's signature; this subclass sets the flag
after the operations' ``open`` for the file handles they list in ``direct_io_fds``.
"""

from __future__ import annotations

from typing import Any

import mfusepy


class FuseWithDirectIO(mfusepy.FUSE):
    """``mfusepy.FUSE`` whose ``open`` replies with direct I/O for ``operations.direct_io_fds``."""

    def open(self, path: bytes, fip: Any) -> int:
        status = int(super().open(path, fip))
        info = fip.contents
        if status == 0 and info.fh in getattr(self.operations, "direct_io_fds", ()):
            info.direct_io = 1
        return status
