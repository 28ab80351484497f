"""The FUSE operations: paths to ``Namespace`` nodes, and domain errors to errno in one place.

A thin adapter in the manner of ratarmount's FuseMount: it never speaks DIMSE and knows no DICOM
levels, only directory and file nodes (``dicomfs.views.node``). The tree is read-only, so every
modifying call answers EROFS (the mount is also ``ro`` for the kernel), but under ``upload/``
with ``upload=on``: there ``dicomfs.fuse.writes`` takes them (the mount is then ``rw``).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import mfusepy

from dicomfs.core.errorlog import OncePerCause
from dicomfs.core.errors import FailedFast, NotFound, PacsError, RetrievalFailed, StorageFull
from dicomfs.fuse.caller import caller_process
from dicomfs.fuse.fdreply import reply_with_fd
from dicomfs.fuse.listings import Entry, OpenListings, entries_from
from dicomfs.fuse.lookups import SeenPaths, ask_parallel_dirops, libfuse_version
from dicomfs.fuse.modes import Ownership
from dicomfs.fuse.session import SessionWatch
from dicomfs.fuse.writes import WRITE_FLAGS, UploadWrites, upload_path
from dicomfs.views.attributes import PREFIX as ATTRIBUTE_PREFIX
from dicomfs.views.control import CONTROL_DIR
from dicomfs.views.node import Namespace, Node

LOGGER = logging.getLogger(__name__)

#: Names desktops and shells probe for on every new mount. Generated names never start with a
#: dot, so any dotted name (but the control directory at the root), and these, are answered
#: ENOENT without a C-FIND.
PROBE_NAMES = frozenset({"autorun.inf", "desktop.ini", "thumbs.db", "folder.jpg", "albumart.jpg"})

F = TypeVar("F", bound=Callable[..., Any])

#: A failing series fails every file of it: its cause is logged once, not once per file.
_ERRORS = OncePerCause(LOGGER)


class Services(Protocol):
    """What the filesystem needs from the mount: started in init(), stopped in destroy()."""

    namespace: Namespace

    def start(self) -> None: ...

    def end_retrievals(self) -> None: ...

    def stop(self) -> None: ...

    def usage(self) -> tuple[int, int]:
        """Bytes the instance cache uses, and its limit (``cachesize``): what ``df`` shows."""
        ...


#: ``statfs`` block size: df's numbers are the instance cache in blocks of this many bytes.
BLOCK_SIZE = 4096


def is_probe(path: str) -> bool:
    """True for desktop/shell probe names that no PACS entry can have (``/.dicomfs`` is ours)."""
    parts = [part for part in path.split("/") if part]
    if parts and parts[0] == CONTROL_DIR:
        parts = parts[1:]
    return any(part.startswith(".") or part.lower() in PROBE_NAMES for part in parts)


def translate_errors(method: F) -> F:
    """Turn domain errors into FuseOSError, logging backend failures (tracebacks at DEBUG)."""

    @functools.wraps(method)
    def wrapper(self: DicomFS, *args: Any) -> Any:
        try:
            return method(self, *args)
        except mfusepy.FuseOSError:
            raise
        except NotFound as exc:
            raise mfusepy.FuseOSError(errno.ENOENT) from exc
        except FailedFast as exc:  # its cause was logged once; one line per file would flood
            LOGGER.debug("%s %s: %s", method.__name__, args[0] if args else "", exc)
            raise mfusepy.FuseOSError(errno.EIO) from exc
        except StorageFull as exc:
            _ERRORS.error(method.__name__, args[0] if args else "", str(exc))
            raise mfusepy.FuseOSError(errno.ENOSPC) from exc
        except (PacsError, RetrievalFailed) as exc:
            _ERRORS.error(method.__name__, args[0] if args else "", str(exc))
            LOGGER.debug("traceback", exc_info=True)
            raise mfusepy.FuseOSError(errno.EIO) from exc
        except PermissionError as exc:  # a refusal by design (upload/ is write-only), no failure
            LOGGER.debug("%s %s: %s", method.__name__, args[0] if args else "", exc)
            raise mfusepy.FuseOSError(errno.EACCES) from exc
        except OSError as exc:
            _ERRORS.error(method.__name__, args[0] if args else "", str(exc))
            # A negative errno (a resolver's EAI_*) is no errno for FUSE: mfusepy would say EINVAL.
            code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else errno.EIO
            raise mfusepy.FuseOSError(code) from exc
        except Exception as exc:
            LOGGER.exception("%s %s failed", method.__name__, args[0] if args else "")
            raise mfusepy.FuseOSError(errno.EIO) from exc

    return wrapper  # type: ignore[return-value]


def loaded_libfuse_version() -> tuple[int, ...]:
    """The version of the libfuse mfusepy loaded ("3.14.0" -> (3, 14, 0)); () if it does not say."""
    version_of = getattr(mfusepy._libfuse, "fuse_pkgversion", None)  # libfuse 3 exports it
    if version_of is None:
        return ()
    version_of.restype = ctypes.c_char_p
    return libfuse_version(version_of().decode("ascii", "replace"))


def _read_only(*_args: Any) -> Any:
    raise mfusepy.FuseOSError(errno.EROFS)


class DicomFS(mfusepy.Operations):
    """Read-only FUSE view of a PACS."""

    use_ns = True

    def __init__(self, services: Services, ownership: Ownership | None = None) -> None:
        self._services = services
        self._own = ownership or Ownership.from_options()  # modes and owner (dicomfs.fuse.modes)
        # Without FUSE_PARALLEL_DIROPS, LOOKUPs answer uncached instances at once (dicomfs.fuse.lookups).
        self.lookups_wait = True
        self._seen = SeenPaths()
        self._listings = OpenListings()  # what opendir listed, paged by readdir_with_offset
        self._session_watch: SessionWatch | None = None
        #: Open files whose contents are a snapshot per open (``Node.volatile``): served with
        #: direct I/O, so the page cache (``kernel_cache``) never shows an older one.
        self.direct_io_fds: set[int] = set()
        #: The writing calls under upload/ (``upload=on``), set once the services have started.
        self._writes: UploadWrites | None = None

    # -- lifecycle: threads start after libfuse has daemonized ---------------------------------

    def init_with_config(self, conn: Any, config: Any) -> None:
        """Ask for parallel directory operations, or keep LOOKUP from waiting (dicomfs.fuse.lookups)."""
        if conn is not None:
            self.lookups_wait = ask_parallel_dirops(conn, config, loaded_libfuse_version())
        self._services.start()
        uploads = getattr(self._services, "uploads", None)
        if uploads is not None:
            self._writes = UploadWrites(uploads)
        # A signal or an unmount must not wait for the transfers that readers wait for.
        self._session_watch = SessionWatch(mfusepy._libfuse, self._services.end_retrievals)
        self._session_watch.start()

    def destroy(self, path: str) -> None:
        if self._session_watch is not None:
            self._session_watch.stop()
        self._services.stop()
        self.served = True  # the mount was up and has been torn down cleanly

    #: Set by destroy(): the FUSE loop ran and ended (by unmount or by a signal).
    served = False

    # -- lookups ------------------------------------------------------------------------------

    def _resolve(self, path: str) -> Node:
        # Names in upload/ are the user's own (rsync's ".name.XXXXXX"), never a desktop's probe.
        if is_probe(path) and (self._writes is None or upload_path(path) is None):
            raise NotFound(path)
        return self._services.namespace.lookup(path)

    def _mode(self, node: Node) -> int:
        if node.link:  # symlink(7): the permissions of a link are not used
            return stat.S_IFLNK | 0o777
        return self._own.dir_mode if node.is_dir else self._own.file_mode

    def _stat(self, node: Node, size: int = 0) -> dict[str, int]:
        mtime = int(node.mtime * 1e9)
        is_file = not node.is_dir
        return {
            "st_mode": self._mode(node),
            "st_nlink": 1 if is_file else 2,
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_uid": self._own.uid,
            "st_gid": self._own.gid,
            "st_mtime": mtime,
            "st_ctime": mtime,
            "st_atime": mtime,
        }

    @translate_errors
    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        node = self._resolve(path)
        if node.is_dir:
            return self._stat(node)
        if node.link:  # lstat(2): a link's size is its target's length
            return self._stat(node, len(node.link.encode()))
        namespace = self._services.namespace
        size = namespace.cached_size(node)
        if size is None:
            if not self.lookups_wait and fh is None and self._seen.first_sight(path):
                # A LOOKUP: answered at once; the kernel asks again before anyone sees this size.
                return self._stat(node, 0)
            # A stat of a closed file: the caller may be walking the tree (du, an indexer).
            size = namespace.size(node, walker=caller_process() if fh is None else 0)
        elif not self.lookups_wait:
            self._seen.first_sight(path)
        return self._stat(node, size)

    def _children(self, path: str) -> Sequence[Node]:
        node = self._resolve(path)
        if not node.is_dir:
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        return self._services.namespace.children(node)

    @translate_errors
    def opendir(self, path: str) -> int:
        """List the directory once; its pages come from this listing (dicomfs.fuse.listings)."""
        return self._listings.open(self._children(path))

    @translate_errors
    def readdir_with_offset(self, path: str, offset: int, fh: int) -> Iterator[Entry]:
        """One reply buffer's worth of entries after ``offset``; libfuse asks again for the rest,
        so a huge listing is never copied whole into libfuse's memory."""
        children = self._listings.get(fh)
        if children is None:  # dropped from the bounded table: list again
            children = self._children(path)
        return entries_from(children, offset, self._mode, self._own.dir_mode)

    def releasedir(self, path: str, fh: int) -> int:
        self._listings.release(fh)
        return 0

    @translate_errors
    def readlink(self, path: str) -> str:
        """A link's target, relative to its directory (``by-date/today``); EINVAL for others."""
        node = self._resolve(path)
        if not node.link:
            raise mfusepy.FuseOSError(errno.EINVAL)
        return node.link

    @translate_errors
    def access(self, path: str, amode: int) -> int:
        if amode & os.W_OK:
            self._writable(path)
        self._resolve(path)
        return 0

    # -- contents -----------------------------------------------------------------------------

    @translate_errors
    def open(self, path: str, flags: int) -> int:
        if flags & WRITE_FLAGS:
            return self._writable(path).open(path, flags)
        node = self._resolve(path)
        if node.is_dir:
            raise mfusepy.FuseOSError(errno.EISDIR)
        if node.link:  # the kernel follows links itself: an open of the link is a bug
            raise mfusepy.FuseOSError(errno.ELOOP)
        fd = self._services.namespace.open(node, reader=caller_process())
        if node.volatile:
            self.direct_io_fds.add(fd)
        return fd

    @translate_errors
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def read_buf(self, path: str, bufpp: Any, size: int, offset: int, fh: int) -> int:
        """Preferred by libfuse over read(): it reads the cached file itself (see fdreply)."""
        if not reply_with_fd(bufpp, fh, size, offset):
            raise mfusepy.FuseOSError(errno.ENOMEM)
        return 0

    def release(self, path: str, fh: int) -> int:
        if self._writes is not None and self._writes.owns(fh):
            return self._writes.release(path, fh)
        self.direct_io_fds.discard(fh)
        os.close(fh)
        return 0

    # -- identity as extended attributes (dicomfs.views.attributes) -----------------------------

    @translate_errors
    def listxattr(self, path: str) -> list[str]:
        """The ``user.dicom.*`` names of the entry (xattr(7)); none for the root and view dirs."""
        return list(self._services.namespace.attributes(self._resolve(path)))

    @translate_errors
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        """One attribute's value as UTF-8; ENODATA for a name the entry does not have.

        Names outside ``user.dicom.`` (``security.selinux``, POSIX ACLs that ``ls -l`` and the
        kernel ask for) are answered at once, without resolving the path.
        """
        if not name.startswith(ATTRIBUTE_PREFIX):
            raise mfusepy.FuseOSError(errno.ENODATA)
        value = self._services.namespace.attributes(self._resolve(path)).get(name)
        if value is None:
            raise mfusepy.FuseOSError(errno.ENODATA)
        return value.encode("utf-8")

    @translate_errors
    def statfs(self, path: str) -> dict[str, int]:
        """The instance cache for ``df``: size ``cachesize``, used what it holds."""
        used, limit = self._services.usage()
        free = max(0, limit - used) // BLOCK_SIZE
        return {
            "f_bsize": BLOCK_SIZE,
            "f_frsize": BLOCK_SIZE,
            "f_blocks": limit // BLOCK_SIZE,
            "f_bfree": free,
            "f_bavail": free,
            "f_namemax": 255,
        }

    # -- everything that would change the tree --------------------------------------------------

    link = mknod = setxattr = removexattr = symlink = _read_only

    def _writable(self, path: str) -> UploadWrites:
        """The upload writer for a path under ``upload/`` (``upload=on``); EROFS anywhere else."""
        if self._writes is None or upload_path(path) is None:
            raise mfusepy.FuseOSError(errno.EROFS)
        return self._writes

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return self._writable(path).create(path)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return self._writable(path).write(path, data, offset, fh)

    def flush(self, path: str, fh: int) -> int:
        """close(2) answers what this answers: an upload is sent here (``fuse.writes``)."""
        if self._writes is not None and self._writes.owns(fh):
            return self._writes.flush(path, fh)
        return 0

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        return self._writable(path).truncate(path, length, fh)

    def mkdir(self, path: str, mode: int) -> int:
        return self._writable(path).mkdir(path)

    def rmdir(self, path: str) -> int:
        return self._writable(path).rmdir(path)

    def unlink(self, path: str) -> int:
        return self._writable(path).unlink(path)

    def rename(self, old: str, new: str) -> int:
        self._writable(new)
        return self._writable(old).rename(old, new)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        return self._writable(path).utimens(path, times)

    def chmod(self, path: str, mode: int) -> int:
        return self._writable(path).chmod(path, mode)

    def chown(self, path: str, uid: int, gid: int) -> int:
        return self._writable(path).chown(path, uid, gid)
