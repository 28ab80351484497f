"""Notice when libfuse's session is ending, so that readers waiting for a retrieval let go.

libfuse's signal handlers (SIGTERM, SIGINT, SIGHUP) and a failed read of /dev/fuse (unmounted)
only mark the session exited (``fuse_session_exit``, fuse_lowlevel.h); the multithreaded loop
then waits for every request in progress to finish before ``destroy()`` runs. A `cat` waiting for
an instance that is still streaming in would hold the daemon for the rest of the transfer. This
watch polls ``fuse_session_exited`` and, once it is set, tells the mount to end its retrievals:
the waiting requests fail at once, the loop ends, ``destroy()`` runs.

libfuse 3 API relied on: ``fuse_get_context()->fuse`` (valid in ``init``), ``fuse_get_session``,
``fuse_session_exited``. Where the library lacks them the watch does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import Any

LOGGER = logging.getLogger(__name__)

#: How often the session is looked at, in seconds: a signal takes effect within this.
POLL_INTERVAL_S = 0.2


class SessionWatch:
    """Calls ``on_exit`` once libfuse's session has been asked to exit.

    Parameters
    ----------
    libfuse : ctypes.CDLL
        The libfuse mfusepy loaded (``mfusepy._libfuse``).
    on_exit : callable
        Called once, from the watch's thread.
    """

    def __init__(self, libfuse: Any, on_exit: Callable[[], None]) -> None:
        self._libfuse = libfuse
        self._on_exit = on_exit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching; call from FUSE ``init`` (the context names the session only there)."""
        try:
            fuse = self._libfuse.fuse_get_context().contents.fuse
            get_session = self._libfuse.fuse_get_session
            exited = self._libfuse.fuse_session_exited
        except (AttributeError, ValueError) as exc:  # not libfuse 3, or no context
            LOGGER.debug("not watching the FUSE session: %s", exc)
            return
        get_session.argtypes, get_session.restype = [ctypes.c_void_p], ctypes.c_void_p
        exited.argtypes, exited.restype = [ctypes.c_void_p], ctypes.c_int
        session = get_session(fuse)
        if not session:
            return
        self._thread = threading.Thread(
            target=self._watch, args=(exited, session), name="fuse-session-watch", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, and wait for the thread: the session is freed after ``destroy``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _watch(self, exited: Callable[[int], int], session: int) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            if exited(session):
                LOGGER.info("unmounting: ending the retrievals that readers wait for")
                self._on_exit()
                return
