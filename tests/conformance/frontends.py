"""The two front ends the conformance scenarios run through: a real FUSE mount, and in-process.

A scenario sees only :class:`FrontEnd` (rclone's ``vfstest`` pattern: one suite, several front
ends). Paths are absolute within the archive ("/", "/DOE^JANE (PID1)/...").

- :class:`FuseFrontEnd`: a real mount (``tests.mounting.mounted``) used with ``os.listdir``,
  ``os.scandir``, ``os.stat`` and ``open``, as any program would.
- :class:`NamespaceFrontEnd`: the ``Namespace`` protocol of :mod:`dicomfs.views.node`
  (``lookup``/``children``/``size``/``open`` of nodes), with no FUSE and no subprocess. The
  namespace comes from ``dicomfs.app.compose.build_namespace(opts)``; until that factory exists
  (issue #10's catalog split), the in-process scenarios are skipped (:func:`namespace_factory`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from dicomfs.app.commandline import parse_args
from dicomfs.app.options import MountOptions
from dicomfs.views.node import Namespace, Node
from tests.mounting import mounted

#: Bound on one step of a scenario: it only turns a hang into a failure, it measures nothing.
HANG_GUARD_S = 120.0


class FrontEnd(Protocol):
    """What a scenario may do with the archive: list, tell directories from files, size, read."""

    def listdir(self, path: str) -> list[str]:
        """The names in the directory at ``path``, sorted."""
        ...

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a directory; never retrieves a file to answer."""
        ...

    def size(self, path: str) -> int:
        """The file's size in bytes as the front end reports it (``st_size``; may retrieve)."""
        ...

    def read(self, path: str) -> bytes:
        """The whole file."""
        ...


class FuseFrontEnd:
    """A real dicomfs mount, used through the operating system."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint

    def _local(self, path: str) -> Path:
        return self.mountpoint / path.lstrip("/")

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self._local(path)))

    def is_dir(self, path: str) -> bool:
        local = self._local(path)
        if local == self.mountpoint:
            return True
        # The type READDIR gives (d_type): a stat() of an uncached file would retrieve its series.
        with os.scandir(local.parent) as entries:
            for entry in entries:
                if entry.name == local.name:
                    return entry.is_dir(follow_symlinks=False)
        raise FileNotFoundError(path)

    def size(self, path: str) -> int:
        return os.stat(self._local(path)).st_size

    def read(self, path: str) -> bytes:
        return self._local(path).read_bytes()


class NamespaceFrontEnd:
    """The views' ``Namespace``, called directly (no FUSE)."""

    def __init__(self, namespace: Namespace) -> None:
        self.namespace = namespace

    def _node(self, path: str) -> Node:
        return self.namespace.lookup(path if path.startswith("/") else "/" + path)

    def listdir(self, path: str) -> list[str]:
        return sorted(child.name for child in self.namespace.children(self._node(path)))

    def is_dir(self, path: str) -> bool:
        return self._node(path).is_dir

    def size(self, path: str) -> int:
        return self.namespace.size(self._node(path))

    def read(self, path: str) -> bytes:
        fd = self.namespace.open(self._node(path))
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


@dataclass
class Served:
    """A running SCP and the port of our storage SCP, where its C-MOVEs go."""

    pacs: Any  # DemoArchive or BrokenPacs: host, port, ae_title, requests (a Counter), stop()
    localport: int


#: ``connect(served, **options)``: the front end of the test's parametrization on ``served``.
Connect = Callable[..., contextlib.AbstractContextManager["FrontEnd"]]


def namespace_factory() -> Callable[[MountOptions], Any]:
    """``dicomfs.app.compose.build_namespace``; skips the calling test while it does not exist."""
    compose = importlib.import_module("dicomfs.app.compose")
    build = getattr(compose, "build_namespace", None)
    if build is None:
        pytest.skip("in-process front end: dicomfs.app.compose.build_namespace does not exist yet")
    return build  # type: ignore[no-any-return]


@contextlib.contextmanager
def fuse_front_end(mountpoint: Path, options: str) -> Iterator[FuseFrontEnd]:
    """A real mount with ``options`` (``-o`` text); unmounted and stopped on exit, even on failure."""
    with mounted(mountpoint, options) as mount:
        yield FuseFrontEnd(mount.mountpoint)


@contextlib.contextmanager
def in_process_front_end(workdir: Path, options: str) -> Iterator[NamespaceFrontEnd]:
    """The namespace built from the same ``options`` a mount would get; stopped on exit.

    ``build_namespace(opts)`` is expected to return a context manager that starts the mount's
    parts (client, caches, storage SCP, scheduler) and yields the ``Namespace``; a plain
    namespace (with an optional ``stop()``) is accepted too.
    """
    build = namespace_factory()
    opts = parse_args([str(workdir / "not-mounted"), "-o", options])
    built = build(opts)
    if hasattr(built, "__enter__"):
        with built as namespace:
            yield NamespaceFrontEnd(namespace)
        return
    try:
        yield NamespaceFrontEnd(built)
    finally:
        stop = getattr(built, "stop", None)
        if callable(stop):
            stop()
