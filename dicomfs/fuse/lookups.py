"""Keeping LOOKUP free of retrieval waits, so one stalled retrieval never holds up a directory.

The kernel serialises LOOKUP (and READDIR) per directory unless the daemon asks for
FUSE_PARALLEL_DIROPS (``fs/fuse/dir.c``: ``fuse_lock_inode``). libfuse sends that flag only from
3.17.1 on (commit "Pass FUSE_PARALLEL_DIROPS to kernel", #861); 3.14 computes it and never sends
it. In libfuse's high-level API a LOOKUP calls our ``getattr``, which for an uncached instance
used to wait for its retrieval: one reader waiting on a silent PACS blocked every other lookup in
that series directory, cached files included (issue 9.2).

So, where libfuse cannot ask for parallel directory operations (``ask_parallel_dirops``):

* **LOOKUP answers at once.** The first ``getattr`` of a path in a mount can only be its LOOKUP:
  the kernel has no inode to GETATTR before it looked the name up (readdir replies carry no
  attributes: mfusepy never fills FUSE_FILL_DIR_PLUS). An uncached instance's first ``getattr``
  therefore answers with size 0 instead of waiting.
* **Nobody sees that size.** The mount's attribute timeout is 0, so the kernel asks again
  (GETATTR, outside the directory lock) before any ``stat`` returns, and a read past the cached
  size (0) updates the size first (``fuse_cache_read_iter``). That GETATTR, the second call for
  the path, waits for the retrieval as before: ``stat`` and ``ls -l`` still give exact sizes.
  ``open()`` waits for it too. AUTO_INVAL_DATA is turned off (files never change), or every
  read() would cost a GETATTR.
* **What it costs**: a ``stat`` of a cached file is one GETATTR round trip to the daemon instead
  of none (the kernel can no longer keep attributes); listings and reads are unaffected.

``SeenPaths`` remembers which paths had their first ``getattr``. It is a Bloom filter: bounded,
and its only error is to think a new path was seen, which makes that LOOKUP wait as before -
never a wrong size. With libfuse >= 3.17.1 none of this is used: the kernel gets
FUSE_PARALLEL_DIROPS and attributes are cached for ``attr_timeout`` as usual.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

LOGGER = logging.getLogger(__name__)

#: FUSE_CAP_* bits of ``fuse_conn_info.want`` (libfuse include/fuse_common.h).
FUSE_CAP_AUTO_INVAL_DATA = 1 << 12
FUSE_CAP_PARALLEL_DIROPS = 1 << 18
#: The first libfuse release that passes FUSE_PARALLEL_DIROPS on to the kernel.
PARALLEL_DIROPS_SINCE = (3, 17, 1)


class SeenPaths:
    """A Bloom filter of the paths whose first ``getattr`` happened: ``first_sight`` is thread-safe.

    ``size_bits`` bounds the memory (1 Mibit = 128 KiB); with four hashes the false-positive rate
    stays under 1 % up to about 100,000 paths, and a false positive only means one LOOKUP waits.
    """

    HASHES = 4

    def __init__(self, size_bits: int = 1 << 20) -> None:
        self._size = size_bits
        self._bits = bytearray(size_bits // 8)
        self._lock = threading.Lock()

    def _positions(self, path: str) -> list[int]:
        key = path.encode("utf-8", "surrogateescape")
        digest = hashlib.blake2b(key, digest_size=4 * self.HASHES).digest()
        return [int.from_bytes(digest[4 * i : 4 * i + 4], "little") % self._size for i in range(self.HASHES)]

    def first_sight(self, path: str) -> bool:
        """Mark ``path`` seen; True if it certainly had not been seen before."""
        positions = self._positions(path)
        with self._lock:
            new = False
            for position in positions:
                byte, bit = divmod(position, 8)
                if not self._bits[byte] & (1 << bit):
                    new = True
                    self._bits[byte] |= 1 << bit
            return new


def libfuse_version(text: str) -> tuple[int, ...]:
    """``fuse_pkgversion()``'s "3.14.0" as (3, 14, 0); () when it does not parse."""
    try:
        return tuple(int(part) for part in text.split(".")[:3])
    except ValueError:
        return ()


def ask_parallel_dirops(conn: Any, config: Any, version: tuple[int, ...]) -> bool:
    """In FUSE init: want FUSE_CAP_PARALLEL_DIROPS; True if LOOKUP may wait (the kernel gets it).

    Otherwise (libfuse ``version`` < 3.17.1 never sends it) the attribute timeout becomes 0 and
    AUTO_INVAL_DATA is dropped, so that LOOKUP may answer uncached instances at once (see the
    module docstring). ``conn`` and ``config`` are libfuse's ``fuse_conn_info`` and
    ``fuse_config`` (mfusepy's ctypes structures; ``config`` is None under FUSE 2).
    """
    if conn.capable & FUSE_CAP_PARALLEL_DIROPS:
        conn.want |= FUSE_CAP_PARALLEL_DIROPS
        if version >= PARALLEL_DIROPS_SINCE:
            return True
    if config is None:  # FUSE 2: the attribute timeout cannot change here, so LOOKUP must wait
        return True
    # Instances never change: no need to ask for their attributes on every read().
    conn.want &= ~FUSE_CAP_AUTO_INVAL_DATA
    config.attr_timeout = 0.0
    LOGGER.info(
        "libfuse %s does not ask for parallel directory operations: attributes are not cached",
        ".".join(map(str, version)) or "(version unknown)",
    )
    return False
