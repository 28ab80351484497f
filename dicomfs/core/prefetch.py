"""Listings fetched ahead, by one background thread, so that the next ``ls`` is answered from the cache.

Only a guess at what comes next: a failure is logged at DEBUG and forgotten, and when the queue is
full a guess is dropped rather than queued (the user's own ``ls`` fetches it anyway).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from dicomfs.core.errors import DicomFSError

LOGGER = logging.getLogger(__name__)

#: Guesses waiting at most: a few directories' children (at most 8 each, see
#: ``catalog.PREFETCH_MAX_CHILDREN``); more would only fetch what nobody looks at any more.
MAX_QUEUED_PREFETCHES = 64

T = TypeVar("T")


class Prefetcher(Generic[T]):
    """One thread calling ``fetch`` on queued items, started in FUSE init() and stopped in destroy().

    Parameters
    ----------
    fetch : Callable[[T], object]
        Fetches (and caches) one item's listing; may raise any :class:`DicomFSError`.
    describe : Callable[[T], str]
        How the DEBUG line of a failed guess names the item.
    max_queued : int
        Items waiting at most; further ones are dropped.
    """

    def __init__(
        self,
        fetch: Callable[[T], object],
        describe: Callable[[T], str] = str,
        max_queued: int = MAX_QUEUED_PREFETCHES,
    ) -> None:
        self._fetch = fetch
        self._describe = describe
        self._queue: queue.Queue[tuple[T] | None] = queue.Queue(maxsize=max_queued)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end after its current item; it is a daemon, so nothing waits for it."""
        if self._thread is not None:
            self._thread = None
            while True:
                try:
                    self._queue.put_nowait(None)
                    return
                except queue.Full:  # make room for the stop mark: the guesses are worth nothing now
                    self._discard_one()

    def add(self, items: Iterable[T]) -> None:
        """Queue items to fetch, dropping those that find the queue full (no-op when stopped)."""
        if self._thread is None:
            return
        for item in items:
            try:
                self._queue.put_nowait((item,))
            except queue.Full:
                LOGGER.debug("prefetch queue full; dropping a guess")
                return

    def _discard_one(self) -> None:
        with contextlib.suppress(queue.Empty):
            self._queue.get_nowait()

    def _run(self) -> None:
        while True:
            queued = self._queue.get()
            if queued is None:
                return
            try:
                self._fetch(queued[0])
            except DicomFSError as exc:  # only a guess at what comes next: never an error
                LOGGER.debug("prefetching %s: %s", self._describe(queued[0]), exc)
