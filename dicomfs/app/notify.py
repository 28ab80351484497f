"""Telling systemd (``Type=notify``) that the mount is up or going down: the ``sd_notify`` protocol.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by ``$NOTIFY_SOCKET``
(a path, or ``@name`` for Linux's abstract namespace): sd_notify(3), "NOTIFY_SOCKET". It is stable
and small enough that a few lines here are better than a dependency. Without ``$NOTIFY_SOCKET``
(not started by systemd) nothing is sent. systemd takes messages only from the unit's main process,
so the unit runs ``dicomfs ... -f`` (no detaching: that would be another process).
"""

from __future__ import annotations

import logging
import os
import socket

LOGGER = logging.getLogger(__name__)

READY = "READY=1"
STOPPING = "STOPPING=1"


def notify(*lines: str) -> bool:
    """Send ``lines`` (e.g. ``READY=1``, ``STATUS=...``) as one message; True if one was sent.

    Never raises: a service manager that went away must not stop the mount; the failure is
    logged once per call at WARNING.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace: a leading NUL byte (unix(7))
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        LOGGER.warning("NOTIFY_SOCKET=%s is not a unix socket path; systemd is not told", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode("utf-8", "replace"))
    except OSError as exc:
        LOGGER.warning("cannot tell the service manager %s: %s", lines[0] if lines else "", exc)
        return False
    return True
