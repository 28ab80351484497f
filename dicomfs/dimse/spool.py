"""Where pynetdicom spools received data sets: our partial folder, and a full disk is an answer.

With ``_config.STORE_RECV_CHUNKED_DATASET`` pynetdicom (>= 2.0) writes each C-STORE's data set
fragment by fragment into ``tempfile.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")``
(``dimse_messages.DIMSEMessage.decode_msg``), then hands the handler its path. Two things about
that file matter to us, and pynetdicom offers no hook for either:

* where it is made: in the mount's own ``partial/`` folder, on the cache's file system, so a
  finished object is renamed into the cache (never copied) and a crash leaves it where the next
  start sweeps it;
* what a full disk does: a failed write raises inside pynetdicom's state machine, which logs a
  traceback and kills the association (every other instance of the series is lost with it).
  :class:`SpoolFile` instead remembers the error, frees what it wrote, and swallows the rest of
  the object; the C-STORE handler then answers 0xA700 "Out of Resources" (PS3.4 B.2.3) for that
  one instance, and the association goes on.

:func:`install` replaces the name ``NamedTemporaryFile`` in ``pynetdicom.dimse_messages`` only,
after checking that it still is the standard one (a version guard).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from typing import IO, Any

from pynetdicom import dimse_messages

LOGGER = logging.getLogger(__name__)

_spool_dir: str | None = None
#: Running mounts that installed the spool (one process-wide spool folder: the first mount's).
_users = 0
_lock = threading.Lock()


class SpoolFile:
    """A write-only temporary file that survives a full disk (see the module docstring).

    Attributes
    ----------
    name : str
        Its path (pynetdicom reads ``name``, as of a NamedTemporaryFile).
    error : OSError or None
        The first write error; the file is then emptied and further writes are dropped.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dir", _spool_dir)
        try:
            self._file: IO[bytes] = tempfile.NamedTemporaryFile(**kwargs)  # noqa: SIM115 - closed by pynetdicom
        except FileNotFoundError:  # the cachedir was removed while mounted: make our folder again
            os.makedirs(kwargs["dir"], exist_ok=True)
            self._file = tempfile.NamedTemporaryFile(**kwargs)  # noqa: SIM115 - closed by pynetdicom
        self.name: str = self._file.name
        self.error: OSError | None = None

    @property
    def file(self) -> SpoolFile:
        """pynetdicom flushes through ``.file``, as on a NamedTemporaryFile wrapper."""
        return self

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                self._file.write(data)
            except OSError as exc:
                self._fail(exc)
        return len(data)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._file.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        with contextlib.suppress(OSError):
            self._file.truncate(0)  # give the space back at once; the object is lost anyway
        LOGGER.debug("spooling %s failed: %s", self.name, exc)


def install(spool_dir: str) -> None:
    """Make pynetdicom spool received data sets as :class:`SpoolFile` s in ``spool_dir``.

    Counted, as :func:`dicomfs.dimse.patches.install`: pynetdicom has one spool per process, so a
    second mount in the same process spools into the first one's folder (on its cache's file
    system), and the last :func:`uninstall` restores pynetdicom's own.

    Raises
    ------
    RuntimeError
        When pynetdicom no longer uses ``tempfile.NamedTemporaryFile`` there (a version this
        patch was not written for).
    """
    global _spool_dir, _users
    with _lock:
        current = getattr(dimse_messages, "NamedTemporaryFile", None)
        if current is not SpoolFile and current is not tempfile.NamedTemporaryFile:
            raise RuntimeError("pynetdicom.dimse_messages no longer spools through NamedTemporaryFile")
        _users += 1
        if _users == 1:
            _spool_dir = spool_dir
            dimse_messages.NamedTemporaryFile = SpoolFile  # type: ignore[assignment]


def uninstall() -> None:
    """Undo one :func:`install`; the last lets pynetdicom spool through ``tempfile`` again."""
    global _spool_dir, _users
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users == 0 and getattr(dimse_messages, "NamedTemporaryFile", None) is SpoolFile:
            dimse_messages.NamedTemporaryFile = tempfile.NamedTemporaryFile
            _spool_dir = None


def spool_error(request: Any) -> OSError | None:
    """The write error of the file a C-STORE request was spooled to, if any."""
    spooled = getattr(request, "_dataset_file", None)
    return spooled.error if isinstance(spooled, SpoolFile) else None


def discard_spooled(path: str) -> None:
    """Remove a spooled file we do not keep."""
    with contextlib.suppress(OSError):
        os.unlink(path)
