"""``dicomfs echo``'s checks, in the order a connection is built: each step says what failed and why.

    resolve -> connect -> associate -> echo -> find -> move (retrieve=move) | get (retrieve=get)

The first failing step ends the run (later steps cannot work without it). Every wait is bounded
by ``EchoTarget.timeout``; :meth:`Diagnosis.cancel` ends a run early from another thread (the
mount's start-up check gives it a few seconds, no more). The causes and fixes come from
:mod:`dicomfs.dimse.explain`, which is pure and shared with the mount's own log lines.

The return path (``move``) is tested for real (:mod:`dicomfs.dimse.returnpath`): a temporary
storage SCP of ours listens on ``localport``, and the PACS is asked for a C-MOVE of one instance
(found by C-FINDs down from the root match) to ``aet``.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from dicomfs.dimse.explain import (
    Explanation,
    association_failure,
    explain_move_failure,
    explain_no_response,
    explain_silent_peer,
)
from dicomfs.dimse.returnpath import ReturnPath, move_identifier, send_move_probe

LOGGER = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"  # PS3.4 A.4
#: Q/R SOP classes (PS3.4 C.6): model -> service -> UID.
MODELS: dict[str, dict[str, str]] = {
    "patient": {
        "find": "1.2.840.10008.5.1.4.1.2.1.1",
        "move": "1.2.840.10008.5.1.4.1.2.1.2",
        "get": "1.2.840.10008.5.1.4.1.2.1.3",
    },
    "study": {
        "find": "1.2.840.10008.5.1.4.1.2.2.1",
        "move": "1.2.840.10008.5.1.4.1.2.2.2",
        "get": "1.2.840.10008.5.1.4.1.2.2.3",
    },
}
_ROOT_NAME = {"patient": "Patient Root", "study": "Study Root"}
#: Levels from the root down to one instance, per model (PS3.4 C.6.1.1 and C.6.2.1).
_LEVELS = {"patient": ("PATIENT", "STUDY", "SERIES", "IMAGE"), "study": ("STUDY", "SERIES", "IMAGE")}
_UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_PENDING = (0xFF00, 0xFF01)
_MESSAGE_ID = 1  # one request at a time on the association; C-CANCEL names it
#: An A-ABORT right after our A-ASSOCIATE-RQ can hide the A-ASSOCIATE-RJ that came first (Orthanc
#: rejects and closes at once; pynetdicom sometimes sees the close first): ask again this often.
_ASSOCIATE_ATTEMPTS = 3


@dataclass(frozen=True)
class EchoTarget:
    """The PACS and our side of it, as the mount would use them (``MountOptions`` in DICOM terms)."""

    host: str
    port: int
    called_aet: str
    calling_aet: str
    timeout: float
    model: str = "study"
    retrieve: str = "move"
    localaddress: str = ""
    localport: int = 11112
    ssl_context: Any = None  # client side (associations to the PACS)
    server_ssl_context: Any = None  # our storage SCP, for the return path
    #: serveraddress and serverport are the defaults (nobody set them): say so when nothing listens.
    default_address: bool = False

    @property
    def where(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Step:
    """One check's outcome: ``name`` (resolve, connect, associate, echo, find, move, get)."""

    name: str
    ok: bool
    detail: str
    hint: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}


def _failed(name: str, why: Explanation) -> Step:
    return Step(name, not why.fatal, why.cause, why.hint)


class Diagnosis:
    """One run of the checks against ``target``; ``run`` returns the steps done, in order."""

    def __init__(self, target: EchoTarget, *, return_path: bool = True) -> None:
        self.target = target
        self._return_path = return_path
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._live: list[Any] = []  # sockets, associations and SCPs to end on cancel()
        self.steps: list[Step] = []
        self._complete = False

    def cancel(self) -> None:
        """End the run from another thread: close what is open; ``run`` returns soon after."""
        self._cancelled.set()
        with self._lock:
            live, self._live = self._live, []
        for thing in live:
            try:
                if isinstance(thing, socket.socket):
                    thing.close()
                elif isinstance(thing, ReturnPath):
                    thing.stop()
                else:
                    thing.abort()
            except Exception:  # ending early is best effort; the run reports what it saw
                LOGGER.debug("while cancelling the PACS check", exc_info=True)

    def _hold(self, thing: Any) -> None:
        with self._lock:
            self._live.append(thing)
        if self._cancelled.is_set():
            self.cancel()

    def run(self, on_step: Callable[[Step], None] | None = None) -> list[Step]:
        """Run every check until the first failure; each step is also handed to ``on_step``."""
        steps = self._steps()
        try:
            for step in steps:
                self.steps.append(step)
                if on_step is not None:
                    on_step(step)
                if not step.ok or self._cancelled.is_set():
                    break
        finally:
            steps.close()  # releases the association of a run that stopped early
        return self.steps

    @property
    def ok(self) -> bool:
        """Every check ran (none skipped by a failure or ``cancel``) and passed."""
        return self._complete and all(step.ok for step in self.steps)

    def _steps(self) -> Generator[Step, None, None]:
        target = self.target
        address, step = resolve(target)
        yield step
        if address is None:
            return
        yield self._connect(address)
        assoc, step = self._associate(address)
        yield step
        if assoc is None:
            return
        try:
            yield self._echo(assoc)
            match, step = self._find_root(assoc)
            yield step
            if target.retrieve == "get":
                yield self._check_get(assoc)
            elif self._return_path:
                yield self._move(assoc, match)
            self._complete = not self._cancelled.is_set()
        finally:
            if assoc.is_established:
                assoc.release()

    # -- connect -----------------------------------------------------------------------------

    def _connect(self, address: tuple[int, str]) -> Step:
        family, ip = address
        target = self.target
        where = f"{ip}:{target.port}"
        sock = socket.socket(family, socket.SOCK_STREAM)
        self._hold(sock)
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

    # -- associate ------------------------------------------------------------------------------

    def _new_ae(self) -> AE:
        target = self.target
        ae = AE(ae_title=target.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout
        ae.connection_timeout = target.timeout
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        ae.add_requested_context(VERIFICATION, syntaxes)
        for model in MODELS.values():
            for service in ("find", target.retrieve):
                ae.add_requested_context(model[service], syntaxes)
        return ae

    def _associate(self, address: tuple[int, str]) -> tuple[Any, Step]:
        target = self.target
        tls_args = (target.ssl_context, target.host) if target.ssl_context is not None else None
        assoc: Any = None
        silent = False
        for _attempt in range(_ASSOCIATE_ATTEMPTS):
            if self._cancelled.is_set():
                break
            started = time.monotonic()
            assoc = self._new_ae().associate(
                address[1], target.port, ae_title=target.called_aet, tls_args=tls_args
            )
            self._hold(assoc)
            if assoc.is_established or assoc.is_rejected or assoc.acceptor.primitive is not None:
                break
            silent = time.monotonic() - started > 0.9 * target.timeout
            if silent:
                break  # a silent peer, not a race: asking again would only wait again
        who = f"{target.calling_aet} -> {target.called_aet}"
        if assoc is not None and assoc.is_established:
            services = _accepted_services(assoc)
            return assoc, Step("associate", True, f"{who} accepted ({', '.join(services) or 'no services'})")
        if silent and not assoc.is_rejected and assoc.acceptor.primitive is None:
            return None, _failed(
                "associate", explain_silent_peer(timeout=target.timeout, tls=target.ssl_context is not None)
            )
        why = association_failure(
            assoc,
            called_aet=target.called_aet,
            calling_aet=target.calling_aet,
            tls=target.ssl_context is not None,
            connected=True,  # the connect step has just reached the port
        )
        return None, _failed("associate", why)

    # -- echo, find ------------------------------------------------------------------------------

    def _echo(self, assoc: Any) -> Step:
        if not _accepts(assoc, VERIFICATION):
            return Step("echo", True, "the PACS does not offer C-ECHO (Verification); not needed")
        started = time.monotonic()
        status = assoc.send_c_echo(msg_id=_MESSAGE_ID)
        code = getattr(status, "Status", None)
        if code is None:
            return _failed("echo", self._no_response("C-ECHO", assoc, started))
        if int(code) != 0x0000:
            detail = f"C-ECHO answered with status 0x{int(code):04X}"
            return Step("echo", False, detail, "check the PACS's log")
        return Step("echo", True, "C-ECHO answered Success")

    def _no_response(self, service: str, assoc: Any, started: float) -> Explanation:
        """No response to ``service``: pynetdicom yields an empty status both for a timeout and
        for an association the PACS dropped (and marks it aborted only a moment later), so an
        empty status well before ``timeout`` is the PACS dropping it."""
        early = time.monotonic() - started < 0.9 * self.target.timeout
        return explain_no_response(
            service,
            aborted=bool(early or assoc.is_aborted or not assoc.is_established),
            calling_aet=self.target.calling_aet,
            timeout=self.target.timeout,
        )

    def _find_root(self, assoc: Any) -> tuple[Dataset | None, Step]:
        model = self.target.model
        uid = MODELS[model]["find"]
        level = _LEVELS[model][0]
        other = "patient" if model == "study" else "study"
        if not _accepts(assoc, uid):
            hint = f"set model={other}" if _accepts(assoc, MODELS[other]["find"]) else "ask for Q/R C-FIND"
            return None, Step(
                "find", False, f"the PACS does not accept C-FIND in the {_ROOT_NAME[model]} model", hint
            )
        query = _query(level, {})
        started = time.monotonic()
        try:
            match, error = self._first_match(assoc, uid, query)
        except RuntimeError:  # pynetdicom: the association is gone
            return None, _failed("find", self._no_response("C-FIND", assoc, started))
        if error is not None:
            return None, _failed("find", error)
        what = f"{_ROOT_NAME[model]} {level}-level C-FIND"
        if match is None:
            return None, Step("find", True, f"{what}: no matches (the PACS holds nothing we may see)")
        name = str(match.get("PatientName", "") or "") or str(match.get("PatientID", "") or "")
        return match, Step("find", True, f"{what}: answered (first match: {name or 'unnamed'})")

    def _first_match(self, assoc: Any, uid: str, query: Dataset) -> tuple[Dataset | None, Explanation | None]:
        """The first match of a C-FIND, then C-CANCEL (PS3.4 C.4.1.2.3): the root of a production
        PACS may hold a million entries, one proves the query works."""
        context_id = next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == uid)
        first: Dataset | None = None
        started = time.monotonic()
        for status, identifier in assoc.send_c_find(query, uid, msg_id=_MESSAGE_ID):
            code = getattr(status, "Status", None)
            if code is None:
                return None, self._no_response("C-FIND", assoc, started)
            if int(code) in _PENDING:
                if first is None and identifier is not None:
                    first = identifier
                    assoc.send_c_cancel(_MESSAGE_ID, context_id)
                continue
            if int(code) in (0x0000, 0xFE00) or first is not None:
                return first, None
            return None, Explanation(
                f"C-FIND answered with status 0x{int(code):04X}",
                "the PACS refuses this query: check its log, or try model=patient / model=study",
            )
        return first, None

    # -- return path -----------------------------------------------------------------------------

    def _check_get(self, assoc: Any) -> Step:
        model = self.target.model
        if not _accepts(assoc, MODELS[model]["get"]):
            return Step(
                "get",
                False,
                f"the PACS does not accept C-GET in the {_ROOT_NAME[model]} model",
                "use retrieve=move (the PACS must then know aet= as a move destination)",
            )
        detail = f"C-GET accepted in the {_ROOT_NAME[model]} model (no connection back needed)"
        return Step("get", True, detail)

    def _one_instance(self, assoc: Any, match: Dataset | None) -> dict[str, str] | None:
        """Unique keys of one instance, walking down from the root match (first match per level)."""
        model = self.target.model
        uid = MODELS[model]["find"]
        levels = _LEVELS[model]
        if match is None:
            return None
        keys = {_UNIQUE_KEY[levels[0]]: str(match.get(_UNIQUE_KEY[levels[0]], "") or "")}
        for level in levels[1:]:
            found, error = self._first_match(assoc, uid, _query(level, keys))
            if error is not None or found is None:
                return None
            keys[_UNIQUE_KEY[level]] = str(found.get(_UNIQUE_KEY[level], "") or "")
        return keys

    def _move(self, assoc: Any, match: Dataset | None) -> Step:
        target = self.target
        model = target.model
        uid = MODELS[model]["move"]
        if not _accepts(assoc, uid):
            return Step(
                "move",
                False,
                f"the PACS does not accept C-MOVE in the {_ROOT_NAME[model]} model",
                "use retrieve=get",
            )
        instance = self._one_instance(assoc, match)
        identifier = move_identifier(instance, model)
        listener = ReturnPath(
            target.calling_aet,
            target.localaddress,
            target.localport,
            target.timeout,
            target.server_ssl_context,
        )
        where = f"{target.localaddress or '*'}:{target.localport}"
        try:
            listener.start()
        except OSError as exc:
            return Step(
                "move",
                False,
                f"cannot listen on {where} to test the return path: {exc.strerror or exc}",
                "another program (a running dicomfs mount?) holds localport=; unmount it or stop it first",
            )
        self._hold(listener)
        started = time.monotonic()
        try:
            report = send_move_probe(assoc, uid, identifier, target.calling_aet, listener, target.timeout)
        finally:
            listener.stop()
        if report is None:
            return _failed("move", self._no_response("C-MOVE", assoc, started))
        why = explain_move_failure(report, destination=target.calling_aet, localport=target.localport)
        what = "one instance" if instance is not None else "nothing (the PACS holds no instance)"
        if why is None:
            return Step(
                "move",
                True,
                f"C-MOVE of {what} to {target.calling_aet}: the PACS connected back to {where} and "
                f"stored {report.stored}",
            )
        return _failed("move", why)


def resolve(target: EchoTarget) -> tuple[tuple[int, str] | None, Step]:
    """``serveraddress`` -> the address pynetdicom will use (its rule: the first IPv4 address,
    else the first IPv6 one), within ``timeout`` (getaddrinfo has no timeout: it runs in a thread)."""
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


def _accepts(assoc: Any, uid: str) -> bool:
    return any(cx.abstract_syntax == uid for cx in assoc.accepted_contexts)


def _accepted_services(assoc: Any) -> list[str]:
    names = {VERIFICATION: "C-ECHO"}
    for model, services in MODELS.items():
        for service, uid in services.items():
            names[uid] = f"{_ROOT_NAME[model]} C-{service.upper()}"
    seen = [names.get(str(cx.abstract_syntax), "") for cx in assoc.accepted_contexts]
    return list(dict.fromkeys(name for name in seen if name))


def _query(level: str, keys: dict[str, str]) -> Dataset:
    """A C-FIND identifier at ``level`` below ``keys`` (the unique keys of the levels above)."""
    query = Dataset()
    query.QueryRetrieveLevel = level
    for name, value in keys.items():
        setattr(query, name, value)
    setattr(query, _UNIQUE_KEY[level], "")
    if level in ("PATIENT", "STUDY"):
        query.PatientName = ""
        if "PatientID" not in query:
            query.PatientID = ""
    return query


__all__ = ["Diagnosis", "EchoTarget", "Step", "association_failure", "resolve"]
