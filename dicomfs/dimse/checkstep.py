"""What each check of ``dicomfs echo`` is given (:class:`EchoTarget`) and gives back (:class:`Step`).

Shared by the checks (:mod:`dicomfs.dimse.reachability`, :mod:`dicomfs.dimse.findprobe`,
:mod:`dicomfs.dimse.diagnose`), with the few judgements they all make: which services an
association accepted, and what a missing response means.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from typing import Any

from dicomfs.dimse.explain import Explanation, explain_no_response


@dataclass(frozen=True)
class EchoTarget:
    """The PACS and our side of it, as the mount would use them (``MountOptions`` in DICOM terms)."""

    # The association to the PACS.
    host: str
    port: int
    called_aet: str
    calling_aet: str
    #: Seconds: the bound of every wait (name service, TCP, ACSE, DIMSE, the return path).
    timeout: float
    ssl_context: ssl.SSLContext | None = None  # client side of DICOM over TLS
    # The services asked for: the mount's ``model=`` and ``retrieve=``.
    model: str = "study"
    retrieve: str = "move"
    # The return path: our storage SCP, where the PACS sends what a C-MOVE asks for.
    localaddress: str = ""
    localport: int = 11112
    server_ssl_context: ssl.SSLContext | None = None
    #: serveraddress and serverport are the defaults (nobody set them): say so when nothing listens.
    default_address: bool = False

    @property
    def where(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Step:
    """One check's outcome, as ``dicomfs echo`` prints it (one line) or ``--json`` gives it.

    Attributes
    ----------
    name : str
        resolve, connect, associate, echo, find, move or get.
    ok : bool
        The check passed (a passing step may still carry a ``hint``: a note).
    detail : str
        What was seen: the cause, when the step failed.
    hint : str
        The fix, or "".
    """

    name: str
    ok: bool
    detail: str
    hint: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}


def failed(name: str, why: Explanation) -> Step:
    """The step ``name`` as ``why`` judges it: failed, unless the explanation is not fatal.

    Parameters
    ----------
    name : str
        The step's name.
    why : Explanation
        Cause and fix, from :mod:`dicomfs.dimse.explain`.

    Returns
    -------
    Step
        ``ok`` is ``not why.fatal``; ``detail`` the cause, ``hint`` the fix.
    """
    return Step(name, not why.fatal, why.cause, why.hint)


def accepts(assoc: Any, uid: str) -> bool:
    """Whether the PACS accepted a presentation context for the SOP class ``uid`` on ``assoc``
    (a pynetdicom ``Association``; PS3.8 9.3.3.2)."""
    return any(cx.abstract_syntax == uid for cx in assoc.accepted_contexts)


def no_response(service: str, assoc: Any, started: float, target: EchoTarget) -> Explanation:
    """Cause and fix of a request (``service``, e.g. "C-FIND") that got no response.

    pynetdicom yields an empty status both for a timeout and for an association the PACS
    dropped (and marks it aborted only a moment later), so an empty status well before
    ``timeout`` is the PACS dropping it.

    Parameters
    ----------
    service : str
        The DIMSE service, for the message.
    assoc : pynetdicom Association
        The association the request was sent on.
    started : float
        ``time.monotonic()`` when the request was sent.
    target : EchoTarget
        Its ``timeout`` and ``calling_aet``.

    Returns
    -------
    Explanation
        From :func:`dicomfs.dimse.explain.explain_no_response`.
    """
    early = time.monotonic() - started < 0.9 * target.timeout
    return explain_no_response(
        service,
        aborted=bool(early or assoc.is_aborted or not assoc.is_established),
        calling_aet=target.calling_aet,
        timeout=target.timeout,
    )
