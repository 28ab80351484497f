"""The upload table: files written into ``upload/``, each sent by one C-STORE when it is closed.

What ``upload/`` holds, by path relative to it (``"study/1.dcm"``, no leading slash):

    directories   made by mkdir (``cp -r``, ``rsync -r``): kept while they hold entries, and for
                  ``DONE_GRACE_S`` after their last change
    writing       a spool file in the mount's partial folder (the cache's file system), open while
                  a writer holds it; sent when it is flushed (``close(2)``) after a write
    done          sent; only its size and time are kept, for ``DONE_GRACE_S``, so that rsync's
                  rename, utimens and chmod after the close find it
    failed        ``failed/<name>.txt``: why, the last ``MAX_FAILED``; the file itself stays
                  while a handle is open (a write starts it over), then goes

A flush of a file with nothing written since it was created (or truncated to 0) sends nothing
and succeeds: bash's ``cmd > upload/x`` opens the file, dup2()s it onto stdout and closes the
first fd before ``cmd`` writes a byte, and that close is a flush. A file closed for the last time
with nothing written (``touch``, ``: >``) is no upload: it goes, nothing sent, no report.

A send is one C-STORE through a :class:`~dicomfs.core.ports.StoreService`: one DIMSE message, so a
failure leaves nothing at the PACS. After a success ``on_stored`` is told what was stored (the
catalog discards the listings that must change). Nothing here knows FUSE or DIMSE.

Lock order: ``Uploads._lock`` is a leaf, never held across a C-STORE.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable

from dicomfs.core.errorlog import OncePerCause
from dicomfs.core.errors import DicomFSError, MediaDirectory, NotDicom, PacsError
from dicomfs.core.ports import StoredObject, StoreService
from dicomfs.core.uploadfailures import FAILED_DIR, FailureReports, shown_path
from dicomfs.core.uploadtree import DONE, WRITING, Upload, UploadTree

LOGGER = logging.getLogger(__name__)

#: Files open for writing at once; one more is refused (EMFILE): each holds a spool file and fd.
MAX_WRITING = 256


class Uploads:
    """The upload table of one mount.

    Parameters
    ----------
    sender : StoreService
        Sends one file by C-STORE (``dicomfs.dimse.sender.DimseSender``).
    new_spool : callable
        A new spool file, as (fd, path), where written data waits for its close: the mount's own
        partial folder on the cache's file system (``InstanceStore.new_partial``; swept after a
        crash like any partial file).
    on_stored : callable
        Told each ``StoredObject`` after a successful C-STORE (``Catalog.stored``).
    clock : callable
        Monotonic seconds; injectable for tests.

    Path arguments are relative to ``upload/`` without a leading slash; ``""`` is ``upload/``.
    Errors the caller maps to errno are ``OSError``s with their errno; a failed send raises
    ``NotDicom`` (EINVAL) or ``PacsError`` (EIO), once said in the log.
    """

    def __init__(
        self,
        sender: StoreService,
        new_spool: Callable[[], tuple[int, str]],
        on_stored: Callable[[StoredObject], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sender = sender
        self._new_spool = new_spool
        self._on_stored = on_stored
        self._clock = clock
        self._lock = threading.Lock()
        self._tree = UploadTree(clock)
        self._files = self._tree.files  # path -> Upload
        self._by_fd: dict[int, Upload] = {}
        self._failed = FailureReports()
        self._said = OncePerCause(LOGGER, level=logging.WARNING, counted="failed uploads")
        self._skipped = OncePerCause(LOGGER, level=logging.INFO, counted="files not sent")

    # -- what upload/ shows ---------------------------------------------------------------------

    def kind(self, path: str) -> str:
        """``"dir"``, ``"file"`` or ``"failure"`` for an existing entry; FileNotFoundError else."""
        with self._lock:
            self._tree.sweep()
            if self._tree.is_dir(path):
                return "dir"
            if path in self._files:
                return "file"
            if self._failed.get(path) is not None:
                return "failure"
        raise FileNotFoundError(errno.ENOENT, "no such upload", path)

    def mtime(self, path: str) -> float | None:
        """Seconds since the epoch of a file or directory (None: the view's own time)."""
        with self._lock:
            if path in self._files:
                return self._files[path].mtime
            if path in self._tree.dirs:
                return self._tree.dirs[path][0]
            failure = self._failed.get(path)
            return failure.mtime if failure else None

    def size(self, path: str) -> int:
        """Bytes of a file being written or sent, or of a failure report."""
        with self._lock:
            upload = self._files.get(path)
            if upload is not None:
                if upload.state == WRITING and upload.fds:
                    return os.fstat(next(iter(upload.fds))).st_size
                return upload.size
            failure = self._failed.get(path)
        if failure is None:
            raise FileNotFoundError(errno.ENOENT, "no such upload", path)
        return len(failure.text)

    def report(self, path: str) -> bytes:
        """The text of ``failed/<name>``."""
        with self._lock:
            failure = self._failed.get(path)
        if failure is None:
            raise FileNotFoundError(errno.ENOENT, "no such failure report", path)
        return failure.text

    def children(self, path: str) -> list[tuple[str, bool]]:
        """(name, is a directory) of a directory's entries; ``upload/`` always has ``failed/``."""
        if self.kind(path) != "dir":
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        with self._lock:
            if path == FAILED_DIR:
                return [(name, False) for name in self._failed.names()]
            return self._tree.children(path)

    # -- the namespace's changes (``dicomfs.core.uploadtree``) ------------------------------------

    def mkdir(self, path: str) -> None:
        """A directory for a tree being copied (``cp -r``, ``rsync -r``)."""
        with self._lock:
            self._tree.sweep()
            self._tree.mkdir(path)

    def rmdir(self, path: str) -> None:
        """Remove an empty directory made by mkdir."""
        with self._lock:
            self._tree.rmdir(path)

    def unlink(self, path: str) -> None:
        """Forget a file (sent or not: an open writer still sends it at close), or a report."""
        with self._lock:
            if self._failed.remove(path):
                return
            if self._files.pop(path, None) is None:
                raise FileNotFoundError(errno.ENOENT, "no such upload", path)

    def rename(self, old: str, new: str) -> None:
        """Rename a file or directory (rsync's temporary file to its name, after the close)."""
        with self._lock:
            self._tree.sweep()
            self._tree.rename(old, new)

    def set_mtime(self, path: str, mtime: float | None) -> None:
        """utimens (rsync -t): the time shown (None: now)."""
        with self._lock:
            self._tree.set_mtime(path, time.time() if mtime is None else mtime)

    # -- writing and sending ----------------------------------------------------------------------

    def create(self, path: str) -> int:
        """A new file (or a new version of a sent one): an fd on its spool file, the FUSE handle."""
        with self._lock:
            self._tree.sweep()
            writing = sum(1 for upload in self._by_fd.values() if upload.state == WRITING)
            if writing >= MAX_WRITING:
                raise OSError(errno.EMFILE, f"more than {MAX_WRITING} uploads open at once", path)
            if self._tree.is_dir(path):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            self._tree.check_parent(path)
            fd, spool = self._new_spool()
            upload = Upload(path, spool, time.time())
            upload.fds.add(fd)
            self._tree.add(upload)
            self._by_fd[fd] = upload
            return fd

    def reopen(self, path: str, truncate: bool) -> int:
        """Open for writing: another handle on a file being written, else a new version of it."""
        with self._lock:
            upload = self._files.get(path)
            if upload is not None and upload.state == WRITING and upload.fds:
                fd = os.dup(next(iter(upload.fds)))
                upload.fds.add(fd)
                self._by_fd[fd] = upload
                if truncate:
                    os.ftruncate(fd, 0)
                    self._changed(upload, written=False)
                return fd
        return self.create(path)

    def truncate(self, path: str, length: int) -> None:
        """Truncate a file being written; a sent file may only be started over (length 0)."""
        with self._lock:
            upload = self._files.get(path)
            if upload is None:
                raise FileNotFoundError(errno.ENOENT, "no such upload", path)
            if upload.state == WRITING and upload.fds:
                os.ftruncate(next(iter(upload.fds)), length)
                self._changed(upload, written=length > 0)
            elif length == 0:
                del self._files[path]  # the open(O_TRUNC) that follows starts a new version
            else:
                raise OSError(errno.EPERM, "a sent file cannot change", path)

    def owns(self, fd: int) -> bool:
        """Whether ``fd`` is a handle of ours."""
        with self._lock:
            return fd in self._by_fd

    def write(self, fd: int, data: bytes, offset: int) -> int:
        """Write to the spool file; the file is sent again at the next flush."""
        with self._lock:
            self._changed(self._by_fd[fd], written=True)
        return os.pwrite(fd, data, offset)

    def _changed(self, upload: Upload, *, written: bool) -> None:
        """A write or truncation (lock held): to be sent again; an earlier failure no longer holds."""
        upload.dirty = True
        upload.written = written
        upload.error = None
        upload.state = WRITING

    def flush(self, fd: int) -> None:
        """``close(2)`` of a handle: send the file if it was written since its last send.

        Sends nothing for a file with nothing written (see the module's notes). Raises the send's
        failure (``NotDicom``, ``PacsError``), also to later flushes of the same unchanged file
        (its other handles), so every close of a failed file fails until it is written again.
        """
        with self._lock:
            upload = self._by_fd[fd]
            if not upload.dirty:
                if upload.error is not None:
                    raise upload.error
                return
            if not upload.written:  # nothing to send yet: bash's dup2() and close before writing
                return
            upload.dirty = False
            path = upload.path
        try:
            # Read back by path: pwrite() went through the page cache, no fsync is needed.
            stored = self._sender.store(upload.spool)
        except MediaDirectory as exc:  # a CD's DICOMDIR: cp -r and rsync of the CD go on
            self._skipped.say(f"upload {shown_path(path)}", str(exc))
            self._sent(upload, fd)
            return
        except (NotDicom, PacsError, OSError) as exc:
            self._failed_send(upload, exc)
            raise
        except Exception as exc:  # a bug of ours or a library's: still one line and a report
            LOGGER.debug("upload %s: traceback", path, exc_info=True)
            words = " ".join(str(exc).split())  # one line
            failure = PacsError(
                f"not sent: {type(exc).__name__}: {words}; fix: copy the file again; if it fails the "
                "same way, mount with -d for the traceback and report it"
            )
            self._failed_send(upload, failure)
            raise failure from exc
        self._sent(upload, fd)
        LOGGER.debug("upload %s: stored %s", path, stored.sop_uid)
        self._on_stored(stored)

    def _sent(self, upload: Upload, fd: int) -> None:
        """Done (stored, or accepted and not sent): listed for a while, an earlier failure over."""
        path = upload.path
        size = os.fstat(fd).st_size
        with self._lock:
            if not upload.dirty:  # else written again during the C-STORE: sent again at its flush
                upload.state = DONE
            upload.size = size
            upload.ended = self._clock()
            self._failed.discard(path)  # an earlier failure of this name is over

    def release(self, fd: int) -> None:
        """The last ``close`` of a handle: its fd is closed; the spool file goes with the last one,
        and so does a file that failed or holds nothing (it stays listed only once sent)."""
        with self._lock:
            upload = self._by_fd.pop(fd)
            upload.fds.discard(fd)
            last = not upload.fds
            unsent = last and upload.dirty and upload.written
        os.close(fd)
        if unsent:  # closed without a flush (FUSE sends one at every close): nothing was sent
            self._failed_send(upload, OSError(errno.EIO, "closed without a flush: not sent"))
        if not last:
            return
        with self._lock:
            spool, upload.spool = upload.spool, ""
            if upload.state == WRITING and self._files.get(upload.path) is upload:
                # failed (its report is in failed/), or empty: touch, ': > x'
                LOGGER.debug("upload %s: closed %s", upload.path, "unsent" if upload.written else "empty")
                del self._files[upload.path]
        if spool:
            _remove(spool)

    def _failed_send(self, upload: Upload, exc: Exception) -> None:
        reason = str(exc)
        with self._lock:
            upload.error = exc if isinstance(exc, DicomFSError) else PacsError(reason)
            path = upload.path
            self._failed.add(path, reason)  # the file itself goes with its last handle
        self._said.say(f"upload {shown_path(path)}", reason)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # swept already
        os.unlink(path)
