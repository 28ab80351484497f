"""Is our storage SCP's port free, and if not, who holds it?

Right after ``fusermount3 -u`` the kernel has dropped the mount, but the dicomfs process behind it
may still be running its FUSE destroy() and still listen on ``localport`` for a moment. A script
that unmounts and mounts again at once must not get "already in use" for that: a port held by a
dicomfs is waited for (bounded), one held by any other program is reported at once, naming it.

The holder is found as ``ss -ltnp`` does: the listening socket's inode in /proc/net/tcp{,6}, then
the process whose /proc/<pid>/fd links to it (Linux procfs; only our own user's processes are
visible, which is where another dicomfs of ours would be).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

#: How long a new mount waits for a dicomfs that is shutting down to let go of the port. Its
#: destroy() closes the storage SCP within about a second; this is a deadline, not a delay.
RELEASE_WAIT_S = 10.0
_POLL_S = 0.1
_TCP_LISTEN = "0A"  # st column of /proc/net/tcp (include/net/tcp_states.h: TCP_LISTEN = 10)


@dataclass(frozen=True)
class PortHolder:
    """A process listening on the port."""

    pid: int
    command: str

    @property
    def is_dicomfs(self) -> bool:
        """True for ``dicomfs``, ``dicomfs.py`` and ``python -m dicomfs`` (any install)."""
        words = self.command.split()
        names = {os.path.basename(word) for word in words}
        return bool(names & {"dicomfs", "dicomfs.py"}) or ("-m", "dicomfs") in itertools.pairwise(words)


def bind_error(address: str, port: int) -> OSError | None:
    """The error binding ``address:port`` for listening gives now, or None when it is free.

    SO_REUSEADDR as the storage SCP sets it (pynetdicom's server does): connections of an
    earlier mount in TIME_WAIT do not count, only a socket someone still listens on.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            return exc
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == _TCP_LISTEN:
                    inodes.add(fields[9])
    return inodes


def _pids() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                yield int(name)


def _command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def port_holders(port: int) -> list[PortHolder]:
    """The processes we can see that listen on TCP ``port`` (any address); [] when none visible."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    links = {f"socket:[{inode}]" for inode in inodes}
    holders = []
    for pid in _pids():
        with contextlib.suppress(OSError):
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(_readlink(f"/proc/{pid}/fd/{fd}") in links for fd in fds):
                holders.append(PortHolder(pid, _command_of(pid)))
    return holders


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def wait_for_port(
    address: str, port: int, wait_s: float = RELEASE_WAIT_S
) -> tuple[OSError, list[PortHolder]] | None:
    """None once ``address:port`` can be bound; else the bind error and who holds the port.

    Waits (at most ``wait_s``) only while every visible holder is a dicomfs, i.e. one that is
    shutting down after ``fusermount3 -u``; anything else is reported at once. The holders are
    [] when the error is not EADDRINUSE or the holder is not visible (another user's process).
    """
    deadline = time.monotonic() + wait_s
    looked_again = False
    while True:
        error = bind_error(address, port)
        if error is None:
            return None
        if error.errno != errno.EADDRINUSE:
            return error, []
        holders = port_holders(port)
        if not holders and not looked_again:
            looked_again = True  # it may have closed between the bind and the look: bind again
            continue
        waiting = bool(holders) and all(holder.is_dicomfs for holder in holders)
        if not waiting or time.monotonic() >= deadline:
            return error, holders
        time.sleep(_POLL_S)  # polling for the other dicomfs to close its socket, bounded above
