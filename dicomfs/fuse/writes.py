"""The FUSE calls that write, for paths under ``upload/`` (everything else is EROFS in ``ops``).

``cp file.dcm``, ``cp -r study/`` and ``rsync -r`` into ``upload/`` become: mkdir, create, write,
flush (the C-STORE: FUSE's FLUSH is sent at every ``close(2)`` and its answer is what close
returns, while RELEASE's answer is dropped: libfuse ``fuse_lowlevel_ops.flush``/``release``),
release, then rsync's rename, utimens and chmod. The table (``dicomfs.core.uploads.Uploads``)
does the work; this module maps paths and errors: a non-DICOM file is EINVAL, a refusal or a
failed PACS EIO (said once in the log by the table), table errors keep their errno.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import mfusepy

from dicomfs.core.errors import DicomFSError, NotDicom
from dicomfs.core.uploads import Uploads
from dicomfs.views.uploads import UPLOAD_DIR

LOGGER = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: open(2) flags that mean writing.
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


def upload_path(path: str) -> str | None:
    """``/upload/a/b`` -> ``a/b``, ``/upload`` -> ``""``; None for a path outside ``upload/``."""
    parts = [part for part in path.split("/") if part]
    if not parts or parts[0] != UPLOAD_DIR:
        return None
    return "/".join(parts[1:])


def upload_errors(method: F) -> F:
    """Failed sends and table errors -> FuseOSError, without another log line."""

    @functools.wraps(method)
    def wrapper(*args: Any) -> Any:
        try:
            return method(*args)
        except NotDicom as exc:
            raise mfusepy.FuseOSError(errno.EINVAL) from exc
        except DicomFSError as exc:  # refused or failed: logged once by the table
            raise mfusepy.FuseOSError(errno.EIO) from exc
        except OSError as exc:
            code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else errno.EIO
            LOGGER.debug("%s %s: %s", method.__name__, args[1:2], exc)
            raise mfusepy.FuseOSError(code) from exc
        except Exception as exc:  # one line, as every upload failure; the traceback with -d
            LOGGER.error("%s %s failed: %s: %s", method.__name__, args[1:2], type(exc).__name__, exc)
            LOGGER.debug("traceback", exc_info=True)
            raise mfusepy.FuseOSError(errno.EIO) from exc

    return wrapper  # type: ignore[return-value]


def _relative(path: str) -> str:
    relative = upload_path(path)
    if relative is None:
        raise mfusepy.FuseOSError(errno.EROFS)
    return relative


def _file(path: str) -> str:
    relative = _relative(path)
    if not relative:
        raise mfusepy.FuseOSError(errno.EISDIR)
    return relative


class UploadWrites:
    """The writing calls under ``upload/``; paths are the mount's (``/upload/...``)."""

    def __init__(self, uploads: Uploads) -> None:
        self.uploads = uploads

    def owns(self, fh: int) -> bool:
        """Whether ``fh`` is an upload's handle (else a reader's fd)."""
        return self.uploads.owns(fh)

    @upload_errors
    def create(self, path: str) -> int:
        return self.uploads.create(_file(path))

    @upload_errors
    def open(self, path: str, flags: int) -> int:
        return self.uploads.reopen(_file(path), truncate=bool(flags & os.O_TRUNC))

    @upload_errors
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return self.uploads.write(fh, data, offset)

    @upload_errors
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self.uploads.truncate(_file(path), length)
        return 0

    @upload_errors
    def flush(self, path: str, fh: int) -> int:
        self.uploads.flush(fh)
        return 0

    def release(self, path: str, fh: int) -> int:
        try:
            self.uploads.release(fh)
        except Exception:  # release's answer reaches nobody (libfuse); the table logged a failure
            LOGGER.debug("release %s", path, exc_info=True)
        return 0

    @upload_errors
    def mkdir(self, path: str) -> int:
        self.uploads.mkdir(_file(path))
        return 0

    @upload_errors
    def rmdir(self, path: str) -> int:
        self.uploads.rmdir(_file(path))
        return 0

    @upload_errors
    def unlink(self, path: str) -> int:
        self.uploads.unlink(_file(path))
        return 0

    @upload_errors
    def rename(self, old: str, new: str) -> int:
        self.uploads.rename(_file(old), _file(new))
        return 0

    @upload_errors
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        # mfusepy with use_ns: (atime, mtime) in nanoseconds; None means now.
        self.uploads.set_mtime(_relative(path), None if times is None else times[1] / 1e9)
        return 0

    @upload_errors
    def chmod(self, path: str, mode: int) -> int:
        # Modes are the mount's (umask=): accepted so that cp -p and rsync -p do not fail.
        self.uploads.kind(_relative(path))
        return 0

    @upload_errors
    def chown(self, path: str, uid: int, gid: int) -> int:
        self.uploads.kind(_relative(path))
        return 0
