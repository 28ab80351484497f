"""The first two checks of ``dicomfs echo``: can ``serveraddress`` be resolved, does its port accept TCP.

Both below DICOM: a failure here names the network (name service, firewall, a PACS not running
or on another port), not the PACS's configuration. Each wait is bounded by ``target.timeout``.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

from dicomfs.dimse.checkstep import EchoTarget, Step


def resolve(target: EchoTarget) -> tuple[tuple[int, str] | None, Step]:
    """``serveraddress`` -> the address pynetdicom will use, within ``timeout``.

    pynetdicom's rule: the first IPv4 address, else the first IPv6 one. ``getaddrinfo`` has no
    timeout, so it runs in a daemon thread that is left behind when the name service is silent.

    Parameters
    ----------
    target : EchoTarget
        ``host``, ``port`` and ``timeout`` (seconds).

    Returns
    -------
    tuple
        ((address family, IP address as text) or None when it failed, the "resolve" step).
    """
    answers: queue.Queue[list[Any] | OSError] = queue.Queue()

    def lookup() -> None:
        try:
            answers.put(socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answers.put(exc)

    threading.Thread(target=lookup, name="resolve", daemon=True).start()
    try:
        answer = answers.get(timeout=target.timeout)
    except queue.Empty:
        return None, Step(
            "resolve",
            False,
            f"no answer from the name service for {target.host!r} within {target.timeout:g} s",
            "check the DNS servers (/etc/resolv.conf), or give serveraddress= as an IP address",
        )
    if isinstance(answer, OSError):
        return None, Step(
            "resolve",
            False,
            f"cannot resolve {target.host!r}: {getattr(answer, 'strerror', None) or answer}",
            "check serveraddress= (spelling, DNS, /etc/hosts), or give it as an IP address",
        )
    ipv4 = [entry for entry in answer if entry[0] == socket.AF_INET]
    chosen = (ipv4 or answer)[0]
    ip = str(chosen[4][0])
    return (int(chosen[0]), ip), Step("resolve", True, f"{target.host} is {ip}")


def connect(target: EchoTarget, address: tuple[int, str], hold: Callable[[socket.socket], None]) -> Step:
    """Open and close one TCP connection to the PACS's port, within ``timeout``.

    Parameters
    ----------
    target : EchoTarget
        ``port``, ``timeout`` (seconds) and ``default_address`` (for the hint).
    address : tuple of (int, str)
        Address family and IP address, from :func:`resolve`.
    hold : callable
        Given the socket before it connects, so that a cancelling thread can close it.

    Returns
    -------
    Step
        The "connect" step: refused (nothing listens), no answer (a firewall drops the packets,
        or the host is down) or another OSError.
    """
    family, ip = address
    where = f"{ip}:{target.port}"
    sock = socket.socket(family, socket.SOCK_STREAM)
    hold(sock)
    sock.settimeout(target.timeout)
    try:
        sock.connect((ip, target.port))
    except ConnectionRefusedError:
        hint = "is the PACS running, and is serverport= its DICOM port?"
        if target.default_address:
            hint = (
                "no serveraddress= or serverport= given, so dicomfs tried the defaults "
                "(localhost:104): give the PACS's serveraddress= and serverport="
            )
        return Step("connect", False, f"connection refused by {where}: nothing listens there", hint)
    except TimeoutError:
        return Step(
            "connect",
            False,
            f"no answer from {where} within {target.timeout:g} s",
            "a firewall drops the packets, or the host is down: check serveraddress=, serverport= "
            "and the network path (through SSH: ssh -L)",
        )
    except OSError as exc:
        return Step(
            "connect",
            False,
            f"cannot connect to {where}: {exc.strerror or exc}",
            "check serveraddress=, the network and the routes to it",
        )
    finally:
        sock.close()
    return Step("connect", True, f"{where} accepts TCP connections")
