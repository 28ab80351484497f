"""``dicomfs echo``'s checks, in the order a connection is built: each step says what failed and why.

    resolve -> connect -> associate -> echo -> find -> move (retrieve=move) | get (retrieve=get)

The first failing step ends the run (later steps cannot work without it). Every wait is bounded
by ``EchoTarget.timeout``; :meth:`Diagnosis.cancel` ends a run early from another thread (the
mount's start-up check gives it a few seconds, no more). The causes and fixes come from
:mod:`dicomfs.dimse.explain`, which is pure and shared with the mount's own log lines.

The return path (``move``) is tested for real (:mod:`dicomfs.dimse.returnpath`): a temporary
storage SCP of ours listens on ``localport``, and the PACS is asked for a C-MOVE of one instance
(found by C-FINDs down from the root match) to ``aet``.

This module orders the checks and makes the association, the C-ECHO and the C-GET/C-MOVE
checks; the steps below DICOM are :mod:`dicomfs.dimse.reachability`'s, the C-FINDs
:mod:`dicomfs.dimse.findprobe`'s, and :class:`EchoTarget` and :class:`Step` come from
:mod:`dicomfs.dimse.checkstep` (importable from here, as before).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from dicomfs.dimse import statuses
from dicomfs.dimse.checkstep import EchoTarget, Step, accepts, failed, no_response
from dicomfs.dimse.explain import association_failure, explain_move_failure, explain_silent_peer
from dicomfs.dimse.findprobe import find_root, one_instance
from dicomfs.dimse.progress import MESSAGE_ID
from dicomfs.dimse.qrmodels import MODELS, ROOT_NAME, VERIFICATION, QueryModel
from dicomfs.dimse.reachability import connect, resolve
from dicomfs.dimse.returnpath import ReturnPath, move_identifier, send_move_probe

LOGGER = logging.getLogger(__name__)

#: The models in the order their contexts are proposed (PS3.4 C.6.1, C.6.2), as always.
_MODEL_ORDER = (QueryModel.PATIENT_ROOT.value, QueryModel.STUDY_ROOT.value)
#: An A-ABORT right after our A-ASSOCIATE-RQ can hide the A-ASSOCIATE-RJ that came first (Orthanc
#: rejects and closes at once; pynetdicom sometimes sees the close first): ask again this often.
_ASSOCIATE_ATTEMPTS = 3


class Diagnosis:
    """One run of the checks against ``target``; ``run`` returns the steps done, in order.

    Parameters
    ----------
    target : EchoTarget
        The PACS and our side of it; ``timeout`` bounds every wait.
    return_path : bool
        With ``retrieve=move``, test the C-MOVE back to our storage SCP on ``localport`` (False
        for the mount's start-up check: the mount's own SCP is about to take that port).
    """

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
        yield connect(target, address, self._hold)
        assoc, step = self._associate(address)
        yield step
        if assoc is None:
            return
        try:
            yield self._echo(assoc)
            match, step = find_root(assoc, target)
            yield step
            if target.retrieve == "get":
                yield self._check_get(assoc)
            elif self._return_path:
                yield self._move(assoc, match)
            self._complete = not self._cancelled.is_set()
        finally:
            if assoc.is_established:
                assoc.release()

    # -- associate ------------------------------------------------------------------------------

    def _new_ae(self) -> AE:
        target = self.target
        ae = AE(ae_title=target.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout
        ae.connection_timeout = target.timeout
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        ae.add_requested_context(VERIFICATION, syntaxes)
        for model in _MODEL_ORDER:
            for service in ("find", target.retrieve):
                ae.add_requested_context(MODELS[model][service], syntaxes)
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
            return None, failed(
                "associate", explain_silent_peer(timeout=target.timeout, tls=target.ssl_context is not None)
            )
        why = association_failure(
            assoc,
            called_aet=target.called_aet,
            calling_aet=target.calling_aet,
            tls=target.ssl_context is not None,
            connected=True,  # the connect step has just reached the port
        )
        return None, failed("associate", why)

    # -- echo ---------------------------------------------------------------------------------

    def _echo(self, assoc: Any) -> Step:
        if not accepts(assoc, VERIFICATION):
            return Step("echo", True, "the PACS does not offer C-ECHO (Verification); not needed")
        started = time.monotonic()
        status = assoc.send_c_echo(msg_id=MESSAGE_ID)
        code = getattr(status, "Status", None)
        if code is None:
            return failed("echo", no_response("C-ECHO", assoc, started, self.target))
        if int(code) != statuses.SUCCESS:
            detail = f"C-ECHO answered with status 0x{int(code):04X}"
            return Step("echo", False, detail, "check the PACS's log")
        return Step("echo", True, "C-ECHO answered Success")

    # -- return path -----------------------------------------------------------------------------

    def _check_get(self, assoc: Any) -> Step:
        model = self.target.model
        if not accepts(assoc, MODELS[model]["get"]):
            return Step(
                "get",
                False,
                f"the PACS does not accept C-GET in the {ROOT_NAME[model]} model",
                "use retrieve=move (the PACS must then know aet= as a move destination)",
            )
        detail = f"C-GET accepted in the {ROOT_NAME[model]} model (no connection back needed)"
        return Step("get", True, detail)

    def _move(self, assoc: Any, match: Dataset | None) -> Step:
        target = self.target
        model = target.model
        uid = MODELS[model]["move"]
        if not accepts(assoc, uid):
            return Step(
                "move",
                False,
                f"the PACS does not accept C-MOVE in the {ROOT_NAME[model]} model",
                "use retrieve=get",
            )
        instance = one_instance(assoc, match, target)
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
            return failed("move", no_response("C-MOVE", assoc, started, target))
        why = explain_move_failure(report, destination=target.calling_aet, localport=target.localport)
        what = "one instance" if instance is not None else "nothing (the PACS holds no instance)"
        if why is None:
            return Step(
                "move",
                True,
                f"C-MOVE of {what} to {target.calling_aet}: the PACS connected back to {where} and "
                f"stored {report.stored}",
            )
        return failed("move", why)


def _accepted_services(assoc: Any) -> list[str]:
    names = {VERIFICATION: "C-ECHO"}
    for model, services in MODELS.items():
        for service, uid in services.items():
            names[uid] = f"{ROOT_NAME[model]} C-{service.upper()}"
    seen = [names.get(str(cx.abstract_syntax), "") for cx in assoc.accepted_contexts]
    return list(dict.fromkeys(name for name in seen if name))


__all__ = ["Diagnosis", "EchoTarget", "Step", "association_failure", "resolve"]
