"""Real dicomfs mounts for tests: run the CLI, wait for the mount, always unmount and stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from tests.pacs_servers import HOST, free_port

T = TypeVar("T")

#: Our storage SCP's AE title in every test mount; the test PACSes know it as a move destination.
DICOMFS_AET = "DICOMFS"

MOUNT_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


def is_mounted(mountpoint: Path) -> bool:
    target = os.path.realpath(mountpoint)
    with open("/proc/mounts", encoding="utf-8") as mounts:
        return any(
            line.split()[1].encode().decode("unicode_escape") == target and "fuse" in line.split()[2]
            for line in mounts
        )


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``condition`` until true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def ends_within(call: Callable[[], T], timeout_s: float, what: str) -> T:
    """``call()``'s result, run in a thread; AssertionError naming ``what`` if it has not ended
    after ``timeout_s``. A guard against hangs only: give it a generous bound, it measures nothing.

    The thread is a daemon: a call stuck in a FUSE request ends (ENOTCONN) once the mount's
    context manager has stopped the daemon, and must not keep the test from getting there.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="ends-within", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise AssertionError(f"{what} still running after {timeout_s} s (a hang)")
    if failure:
        raise failure[0]
    return outcome[0]


def dicomfs_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dicomfs", *args]


@dataclass
class Mount:
    """A running foreground dicomfs process and its mount point."""

    mountpoint: Path
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def unmount(self) -> None:
        """Unmount with fusermount3 (as a user would) and wait for the process to end."""
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", str(self.mountpoint)], check=False, capture_output=True)
        self._reap()

    def _reap(self) -> None:
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)
        if is_mounted(self.mountpoint):  # the process died without unmounting
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], check=False, capture_output=True)


class Peer(Protocol):
    """A PACS a test mounts: every test server (Orthanc, dcmqrscp, the demo and broken SCPs)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def ae_title(self) -> str: ...


@dataclass(frozen=True)
class PeerAddress:
    """A :class:`Peer` given by hand: a relay in front of a server, or a port nobody listens on."""

    host: str
    port: int
    ae_title: str


def pacs_options(
    pacs: Peer, cachedir: Path, *, localport: int | None = None, timeout: float = 10, **extra: object
) -> str:
    """The ``-o`` text of a test mount of ``pacs``: the one place tests build mount options.

    Parameters
    ----------
    pacs : Peer
        The PACS (called AE title, host, port).
    cachedir : Path
        The mount's cache directory.
    localport : int, optional
        Our storage SCP's port (the C-MOVE destination the PACS knows as ``DICOMFS_AET``); a free
        port when not given. The storage SCP listens on loopback only.
    timeout : float
        Seconds, for every network operation of the mount.
    **extra
        More options (``retrieve="get"``, ``ttl=1``, ...), or replacements of the above
        (``serverport=relay.port``).
    """
    options: dict[str, object] = {
        "serveraddress": pacs.host,
        "serverport": pacs.port,
        "aec": pacs.ae_title,
        "aet": DICOMFS_AET,
        "localport": free_port() if localport is None else localport,
        "localaddress": HOST,
        "cachedir": cachedir,
        "timeout": timeout,
    }
    options.update(extra)
    return mount_options(**options)


def mount_options(**options: object) -> str:
    """``name=value,...`` of the options given, as ``-o`` takes them (for tests that mount no PACS
    of their own, or check option handling; :func:`pacs_options` for a PACS)."""
    return ",".join(f"{key}={value}" for key, value in options.items())


@contextlib.contextmanager
def mounted(mountpoint: Path, options: str, extra_args: Sequence[str] = ()) -> Iterator[Mount]:
    """Mount in the foreground (so the test owns the PID); unmount and stop it even on failure."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    log = mountpoint.with_name(mountpoint.name + ".log")
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            dicomfs_command(str(mountpoint), "-f", "-o", options, *extra_args),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    handle = Mount(mountpoint, process, log)
    try:
        wait_until(lambda: is_mounted(mountpoint) or process.poll() is not None, MOUNT_TIMEOUT_S, "the mount")
        if not is_mounted(mountpoint):
            raise AssertionError(f"dicomfs exited with {process.returncode}:\n{handle.log_text()}")
        yield handle
    finally:
        handle.unmount()


def terminate(handle: Mount, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to the dicomfs process we started."""
    handle.process.send_signal(signum)


def daemon_pids(mountpoint: Path, *, program: bytes | None = None) -> list[int]:
    """PIDs of dicomfs processes serving ``mountpoint`` (the daemons we started, after they detached):
    a command line naming the mount point and dicomfs (``program``: exactly that argument)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        named = program in argv if program is not None else any(b"dicomfs" in arg for arg in argv)
        if str(mountpoint).encode() in argv and named:
            pids.append(int(entry.name))
    return pids


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
