"""The names under ``upload/``: directories made by mkdir and the files written into them.

Pure bookkeeping for :class:`~dicomfs.core.uploads.Uploads`, which guards it with its lock: what
exists, renames (rsync's temporary file to its name), and forgetting what is over. Paths are
relative to ``upload/`` (``"study/1.dcm"``); ``""`` is ``upload/`` itself and ``failed`` is
reserved at its top for the reports (``dicomfs.core.uploadfailures``). Errors are ``OSError``s
carrying the errno the caller answers with.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dicomfs.core.errors import DicomFSError
from dicomfs.core.uploadfailures import FAILED_DIR

#: Sent files and directories remembered at once (oldest out once their grace is over).
MAX_ENTRIES = 4096
#: How long a sent file stays listed: rsync renames it, then sets its times and modes, right after
#: the close; ``ls`` soon after ``cp`` shows what went. Bounded, so ``upload/`` empties by itself.
DONE_GRACE_S = 60.0

#: An upload's states.
WRITING, DONE = "writing", "done"


@dataclass
class Upload:
    """One file written into ``upload/`` (guarded by the table's lock)."""

    path: str
    spool: str  # the spool file ('' once it is gone)
    mtime: float  # seconds since the epoch, as shown
    state: str = WRITING
    size: int = 0
    dirty: bool = True  # changed since the last send (a new file counts as changed)
    written: bool = False  # holds data written since it was created or truncated to 0
    error: DicomFSError | None = None  # the last send's failure, answered to flushes until a write
    ended: float = 0.0  # monotonic time it was sent
    fds: set[int] = field(default_factory=set)  # open handles (OS fds on the spool file)


def parent_of(path: str) -> str:
    """``a/b/c`` -> ``a/b``; ``a`` -> ``""``."""
    return path.rpartition("/")[0]


class UploadTree:
    """Directories and files by path (not thread-safe: the table's lock guards it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.files: dict[str, Upload] = {}
        self.dirs: dict[str, tuple[float, float]] = {}  # path -> (mtime, monotonic last change)

    def is_dir(self, path: str) -> bool:
        return path in ("", FAILED_DIR) or path in self.dirs

    def children(self, path: str) -> list[tuple[str, bool]]:
        """(name, is a directory) of ``path``'s entries (``upload/`` lists ``failed`` too)."""
        entries = [(FAILED_DIR, True)] if path == "" else []
        entries += [(p.rpartition("/")[2], True) for p in self.dirs if parent_of(p) == path]
        entries += [(p.rpartition("/")[2], False) for p in self.files if parent_of(p) == path]
        return entries

    def mkdir(self, path: str) -> None:
        if path in ("", FAILED_DIR) or path in self.dirs or path in self.files:
            raise FileExistsError(errno.EEXIST, "exists", path)
        self.check_parent(path)
        if len(self.dirs) >= MAX_ENTRIES:
            raise OSError(errno.ENOSPC, f"more than {MAX_ENTRIES} upload directories at once", path)
        self.dirs[path] = (time.time(), self._clock())
        self.touch(parent_of(path))

    def rmdir(self, path: str) -> None:
        if path not in self.dirs:
            raise FileNotFoundError(errno.ENOENT, "no such upload directory", path)
        if self._holds(path):
            raise OSError(errno.ENOTEMPTY, "directory not empty", path)
        del self.dirs[path]

    def add(self, upload: Upload) -> None:
        """A new file (replacing a sent one of that name)."""
        if self.is_dir(upload.path):
            raise IsADirectoryError(errno.EISDIR, "is a directory", upload.path)
        self.check_parent(upload.path)
        self.files[upload.path] = upload
        self.touch(parent_of(upload.path))

    def rename(self, old: str, new: str) -> None:
        if FAILED_DIR in (parent_of(old), parent_of(new), new):
            raise OSError(errno.EPERM, "failed/ holds reports only", new)
        self.check_parent(new)
        if old in self.files:
            if new in self.dirs:
                raise IsADirectoryError(errno.EISDIR, "is a directory", new)
            upload = self.files.pop(old)
            upload.path = new
            self.files[new] = upload  # replaces a file of that name, as rename(2) does
        elif old in self.dirs:
            if new in self.files or self._holds(new) or new.startswith(old + "/"):
                raise OSError(errno.ENOTEMPTY, "target exists", new)
            self.dirs[new] = self.dirs.pop(old)
            prefix = old + "/"
            for path in [p for p in self.dirs if p.startswith(prefix)]:
                self.dirs[new + path[len(old) :]] = self.dirs.pop(path)
            for path in [p for p in self.files if p.startswith(prefix)]:
                upload = self.files.pop(path)
                upload.path = new + path[len(old) :]
                self.files[upload.path] = upload
        else:
            raise FileNotFoundError(errno.ENOENT, "no such upload", old)
        self.touch(parent_of(new))

    def set_mtime(self, path: str, mtime: float) -> None:
        if path in self.files:
            self.files[path].mtime = mtime
        elif path in self.dirs:
            self.dirs[path] = (mtime, self._clock())
        elif not self.is_dir(path):
            raise FileNotFoundError(errno.ENOENT, "no such upload", path)

    def check_parent(self, path: str) -> None:
        """ENOENT/ENOTDIR unless ``path``'s parent is a directory that takes files."""
        parent = parent_of(path)
        if parent == FAILED_DIR:
            raise OSError(errno.EPERM, "failed/ holds reports only", path)
        if parent and parent not in self.dirs:
            if parent in self.files:
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", parent)
            raise FileNotFoundError(errno.ENOENT, "no such upload directory", parent)

    def touch(self, path: str) -> None:
        if path in self.dirs:
            self.dirs[path] = (self.dirs[path][0], self._clock())

    def sweep(self) -> None:
        """Forget sent files and idle empty directories whose grace is over (bounded tables)."""
        over = self._clock() - DONE_GRACE_S
        finished = [u for u in self.files.values() if u.state == DONE and not u.fds]
        finished.sort(key=lambda upload: upload.ended)
        excess = len(self.files) - MAX_ENTRIES
        for index, upload in enumerate(finished):
            if upload.ended < over or index < excess:
                del self.files[upload.path]
        for path in sorted(self.dirs, key=len, reverse=True):  # deepest first: parents empty next
            if self.dirs[path][1] < over and not self._holds(path):
                del self.dirs[path]

    def _holds(self, path: str) -> bool:
        prefix = path + "/"
        return any(p.startswith(prefix) for p in (*self.dirs, *self.files))
