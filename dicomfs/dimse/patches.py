"""Socket tuning for pynetdicom associations, measured on loopback against Orthanc (issue #3).

* ``TCP_NODELAY``: neither pynetdicom nor Orthanc disables Nagle, so every small DIMSE message
  waits for the peer's delayed ACK.
* ``TCP_QUICKACK`` after every receive: the peer (which keeps Nagle on) sends a response in two
  writes and holds the second until we ACK the first; Linux delays that ACK up to 40 ms, and quick-ACK
  mode is not sticky, so it is re-armed after each read. A C-ECHO drops from ~45 ms to ~1 ms.
* Larger reads: pynetdicom reads PDUs 4 KiB at a time into a growing bytearray; reading into a
  preallocated buffer in large chunks costs far fewer Python calls per megabyte. Small reads (PDU
  headers, C-FIND responses) read ahead up to 64 KiB and keep the surplus, which ``ready`` reports:
  a PACS streaming responses costs one read per batch instead of two reads, two quick-ACK re-arms
  and a ``select`` per PDU, each of which also hands the GIL over (issue #12).
* The DUL reactor's idle sleep (1 ms between polls of the socket) waits on the socket instead, so
  a PDU that arrives is read at once rather than up to 1 ms later (~6 % of a series transfer).
* Pending C-FIND responses skip pynetdicom's pydicom decoding of their command set
  (:mod:`dicomfs.dimse.findrecv`), and, unless pynetdicom's own logger is on (``-d``), no
  association gets its logging handlers (``_config.LOG_HANDLER_LEVEL``), which format every PDU
  and DIMSE message received for lines nobody sees: together about half of what a 2,000-match
  C-FIND costs the daemon after the PACS's first response (issue #12).

The receive path and the reactor clock are patched process-wide, because pynetdicom offers no
hook for them, and so are three of pynetdicom's ``_config`` switches (chunked receiving and
unrestricted storage, which the receiver relies on; quiet identifiers). Importing this module
changes nothing: :func:`install` does it, called once by ``dicomfs.app.compose``, after checking
that the attributes it replaces still look as this module expects (a pynetdicom release that
changed them gets a clear error, or, for the speed-ups, a warning and stock behaviour). So the
demo archive's SCP and in-process test SCPs keep stock pynetdicom unless a mount is built.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import select
import socket
import threading
import time
from typing import Any

import pynetdicom
from pynetdicom import _config, evt
from pynetdicom import dimse as _dimse
from pynetdicom import dul as _dul
from pynetdicom.transport import AssociationSocket

from dicomfs.dimse import findrecv

LOGGER = logging.getLogger(__name__)

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only

#: The largest PDU we let a peer send us (PS3.8 D.3.3.1, Maximum Length Received), in bytes.
#: Unlimited (0) invited peers to send a whole 600 MB object as one PDU, which pynetdicom then held
#: in memory several times over; 4 MiB keeps a PDU's cost per association small while the
#: per-PDU overhead stays under 1 % (the stock 16 KiB cost ~10 % of a transfer, issue #3).
MAX_RECEIVE_PDU = 4 * 1024 * 1024
_CHUNK = 1024 * 1024
#: Reads smaller than this take what the socket holds up to this size (bytes); see _recv.
_READ_AHEAD = 64 * 1024
#: The stock ``AssociationSocket.ready`` getter (replaced by ``_ready`` when it fits).
_stock_ready = vars(AssociationSocket)["ready"].fget
#: pynetdicom releases these patches were written and measured against.
TESTED_VERSIONS = ("3.0.",)
#: ``_config`` switches the receiver relies on: streamed C-STORE data sets (no object held in
#: memory whole) and every storage class accepted in the sender's own syntax (dcmqrscp cannot
#: convert). Without them dicomfs is wrong, not slower.
REQUIRED_CONFIG = {"STORE_RECV_CHUNKED_DATASET": True, "UNRESTRICTED_STORAGE_SERVICE": True}
#: Formatting every C-FIND identifier for a debug log nobody reads costs ~40 % of a listing.
#: Uploads (``sender``) stream a file's data set from disk in its own transfer syntax, not
#: decoded and held whole in memory (pynetdicom ``send_c_store`` of a path).
OPTIONAL_CONFIG = {
    "LOG_RESPONSE_IDENTIFIERS": False,
    "LOG_REQUEST_IDENTIFIERS": False,
    "STORE_SEND_CHUNKED_DATASET": True,
}
_install_lock = threading.Lock()
#: Running users of the patches (mounts, in-process namespaces); the last to go restores pynetdicom.
_users = 0
#: What install() replaced, for uninstall(): (object, attribute name, original value).
_replaced: list[tuple[Any, str, Any]] = []


def tune_socket(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle and start in quick-ACK mode."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if _QUICKACK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    except OSError:  # a socket the peer already closed
        LOGGER.debug("could not tune socket", exc_info=True)


def _recv(self: Any, nr_bytes: int) -> bytearray:
    """AssociationSocket.recv: ``nr_bytes`` or fewer if the connection broke (as the original).

    A small read (a PDU header, a C-FIND response) takes whatever the socket holds, up to
    :data:`_READ_AHEAD`, and keeps the surplus for the next reads (:func:`_ready` reports it): a
    PACS streaming C-FIND responses is read in one call per batch instead of two per PDU.
    """
    sock = self.socket
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    nr_read = _take_ahead(self, view)
    while nr_read < nr_bytes:
        wanted = nr_bytes - nr_read
        if wanted < _READ_AHEAD:
            chunk = sock.recv(_READ_AHEAD)
            count = min(len(chunk), wanted)
            view[nr_read : nr_read + count] = chunk[:count]
            if len(chunk) > count:
                self._dicomfs_ahead = chunk
                self._dicomfs_ahead_at = count
        else:
            count = sock.recv_into(view[nr_read:], min(wanted, _CHUNK))
        if not count:
            view.release()  # a bytearray with a live export cannot be resized (BufferError)
            del buffer[nr_read:]
            break
        nr_read += count
        if _QUICKACK is not None and not hasattr(sock, "version"):  # plain TCP, not an SSLSocket
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    return buffer


def _take_ahead(owner: Any, view: memoryview) -> int:
    """Copy bytes read ahead on ``owner`` (an AssociationSocket) into ``view``; how many."""
    ahead: bytes | None = getattr(owner, "_dicomfs_ahead", None)
    if not ahead:
        return 0
    at: int = owner._dicomfs_ahead_at
    count = min(len(ahead) - at, len(view))
    view[:count] = ahead[at : at + count]
    at += count
    if at >= len(ahead):
        owner._dicomfs_ahead = None
    else:
        owner._dicomfs_ahead_at = at
    return count


def _has_ahead(owner: Any) -> bool:
    return bool(getattr(owner, "_dicomfs_ahead", None))


def _ready(self: Any) -> bool:
    """AssociationSocket.ready: also ``True`` while bytes read ahead wait (the socket may hold none)."""
    if _has_ahead(self) and self.socket is not None:
        return True
    return bool(_stock_ready(self))


class _ReactorClock:
    """Stands in for ``time`` inside ``pynetdicom.dul``: the reactor's idle ``sleep`` returns as soon
    as its socket has data. It never waits longer than the sleep it replaces."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        thread = threading.current_thread()
        sock = None
        if isinstance(thread, _dul.DULServiceProvider):
            if _has_ahead(thread.socket):
                return  # bytes read ahead are waiting: no reason to idle
            sock = getattr(thread.socket, "socket", None)
        if sock is None or seconds <= 0:
            time.sleep(seconds)
            return
        try:
            select.select([sock], [], [], seconds)
        except (OSError, ValueError):  # closed under us: behave as before
            time.sleep(seconds)


def _stock_recv_fits() -> bool:
    """Whether ``AssociationSocket.recv`` is still the stock ``recv(self, nr_bytes)`` reading
    ``self.socket`` (or already ours)."""
    current = AssociationSocket.recv
    if current is _recv:
        return True
    code = getattr(current, "__code__", None)
    try:
        parameters = list(inspect.signature(current).parameters)
    except (TypeError, ValueError):
        return False
    return (
        code is not None
        and getattr(current, "__module__", "") == "pynetdicom.transport"
        and parameters == ["self", "nr_bytes"]
        and {"socket", "recv"} <= set(code.co_names)
    )


def _stock_ready_fits() -> bool:
    """Whether ``AssociationSocket.ready`` is still the stock property (or already ours): the
    reactor asks it before every read, so bytes read ahead must show there."""
    current = vars(AssociationSocket).get("ready")
    fget = getattr(current, "fget", None)
    return isinstance(current, property) and (
        fget is _ready or (fget is _stock_ready and getattr(fget, "__module__", "") == "pynetdicom.transport")
    )


def _stock_reactor_fits() -> bool:
    """Whether ``pynetdicom.dul`` still idles with ``time.sleep`` in a ``DULServiceProvider``
    thread that holds its ``AssociationSocket`` in ``.socket`` (or already uses our clock)."""
    if isinstance(_dul.time, _ReactorClock):
        return True
    provider = getattr(_dul, "DULServiceProvider", None)
    reactor = getattr(getattr(provider, "run_reactor", None), "__code__", None)
    init = getattr(getattr(provider, "__init__", None), "__code__", None)
    return (
        _dul.time is time
        and reactor is not None
        and init is not None
        and {"time", "sleep"} <= set(reactor.co_names)
        and "socket" in init.co_names
    )


def _replace(owner: Any, name: str, value: Any) -> None:
    _replaced.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


def _set_config() -> None:
    """Set pynetdicom's ``_config`` switches; RuntimeError if a required one is gone."""
    for name, value in {**REQUIRED_CONFIG, **OPTIONAL_CONFIG}.items():
        if not isinstance(getattr(_config, name, None), bool):
            if name in REQUIRED_CONFIG:
                raise RuntimeError(
                    f"pynetdicom {pynetdicom.__version__} has no _config.{name}: dicomfs needs a "
                    f"pynetdicom {' or '.join(v + 'x' for v in TESTED_VERSIONS)}"
                )
            LOGGER.warning("pynetdicom %s has no _config.%s; left as is", pynetdicom.__version__, name)
            continue
        _replace(_config, name, value)
    # Only ever "standard" or "none" (pynetdicom 3.0 _config); pynetdicom's logger is CRITICAL
    # unless -d (app/logs.py), so its handlers' formatting would be thrown away.
    quiet = not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)
    if quiet and getattr(_config, "LOG_HANDLER_LEVEL", None) == "standard":
        _replace(_config, "LOG_HANDLER_LEVEL", "none")


def install() -> None:
    """Install dicomfs's process-wide pynetdicom settings and patches (counted: each call wants
    one :func:`uninstall`; the first installs, the last uninstall restores stock pynetdicom).

    Called by ``dicomfs.app.compose`` before any association; importing dicomfs changes nothing,
    and a process that stops its mounts (tests, other front ends) gets stock pynetdicom back.
    Each patched attribute is checked first: a pynetdicom whose receive path or reactor no
    longer looks as expected keeps its stock code, with one warning (slower, still correct).

    Raises
    ------
    RuntimeError
        When pynetdicom lacks a ``_config`` switch the receiver relies on (``REQUIRED_CONFIG``).
    """
    global _users
    with _install_lock:
        if _users:
            _users += 1
            return
        try:
            _set_config()
        except RuntimeError:
            while _replaced:  # leave pynetdicom as it was
                owner, name, original = _replaced.pop()
                setattr(owner, name, original)
            raise
        _users = 1
        version = pynetdicom.__version__
        if not version.startswith(TESTED_VERSIONS):
            LOGGER.info("pynetdicom %s: socket tuning written for %s", version, ", ".join(TESTED_VERSIONS))
        if _stock_recv_fits() and _stock_ready_fits():
            _replace(AssociationSocket, "recv", _recv)
            _replace(AssociationSocket, "ready", property(_ready))
        else:
            LOGGER.warning("pynetdicom %s: AssociationSocket.recv changed; reads left unpatched", version)
        if _stock_reactor_fits():
            _replace(_dul, "time", _ReactorClock())
        else:
            LOGGER.warning("pynetdicom %s: the DUL reactor changed; its idle sleep left unpatched", version)
        if findrecv.stock_fits():
            _replace(_dimse.DIMSEServiceProvider, "receive_primitive", findrecv.receive_primitive)
        else:
            LOGGER.warning("pynetdicom %s: DIMSE receiving changed; C-FIND responses decoded stock", version)


def uninstall() -> None:
    """Undo one :func:`install`; the last one puts back every attribute install() replaced."""
    global _users
    with _install_lock:
        if _users == 0:
            return
        _users -= 1
        if _users:
            return
        while _replaced:
            owner, name, original = _replaced.pop()
            setattr(owner, name, original)
