"""Pure: why the PACS said no, and what the user should change. One cause and one fix per failure.

Used by ``dicomfs echo`` (:mod:`dicomfs.dimse.diagnose`) and meant for the mount's own log lines:
a rejected association, a request the PACS dropped, a failed C-MOVE. Nothing here touches the
network or pynetdicom; callers pass the numbers they read from the wire.

Sources of the vendor-specific rules (read in their code, not guessed):

* Orthanc (``CommandDispatcher.cpp``): a wrong called AE title (``DicomCheckCalledAet``) is an
  A-ASSOCIATE-RJ permanent / service-user / reason 7; a calling AE title it does not know, when no
  ``DicomAlwaysAllow*`` option lets it in, reason 3. With ``DicomAlwaysAllowEcho`` (its default) it
  accepts the association of an unknown calling AE, answers C-ECHO, and *drops the association*
  at a C-FIND, C-MOVE or C-GET (``IsAllowedRequest``): no response at all.
* Orthanc (``MoveScp.cpp``, ``OrthancMoveRequestHandler.cpp``): every failure of a C-MOVE is
  0xC000 (unable to process) without an Error Comment, whether the move destination is not in
  its ``DicomModalities``, it cannot connect to the destination, or nothing matched. Never 0xA801.
* DCMTK ``dcmqrscp`` (``dcmqrcbm.cc``): an unknown move destination is 0xA801; a destination it
  cannot connect to fails every sub-operation (0xA702 with the failed count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# PS3.8 9.3.4 A-ASSOCIATE-RJ: Result, Source, Reason/Diag.
RESULT_PERMANENT = 1
RESULT_TRANSIENT = 2
SOURCE_SERVICE_USER = 1
SOURCE_PROVIDER_ACSE = 2
SOURCE_PROVIDER_PRESENTATION = 3

_RESULTS = {RESULT_PERMANENT: "permanent", RESULT_TRANSIENT: "transient"}
_SOURCES = {
    SOURCE_SERVICE_USER: "service user",
    SOURCE_PROVIDER_ACSE: "service provider (ACSE)",
    SOURCE_PROVIDER_PRESENTATION: "service provider (presentation)",
}
_REASONS = {
    (SOURCE_SERVICE_USER, 1): "no reason given",
    (SOURCE_SERVICE_USER, 2): "application context name not supported",
    (SOURCE_SERVICE_USER, 3): "calling AE title not recognized",
    (SOURCE_SERVICE_USER, 7): "called AE title not recognized",
    (SOURCE_PROVIDER_ACSE, 1): "no reason given",
    (SOURCE_PROVIDER_ACSE, 2): "protocol version not supported",
    (SOURCE_PROVIDER_PRESENTATION, 1): "temporary congestion",
    (SOURCE_PROVIDER_PRESENTATION, 2): "local limit exceeded",
}

# PS3.4 C.4.2.1.5 C-MOVE statuses (and the general 0xCxxx "unable to process" range).
MOVE_SUCCESS = 0x0000
MOVE_WARNING = 0xB000
MOVE_CANCEL = 0xFE00
MOVE_OUT_OF_RESOURCES_MATCHES = 0xA701
MOVE_OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702
MOVE_DESTINATION_UNKNOWN = 0xA801
MOVE_IDENTIFIER_MISMATCH = 0xA900
_UNABLE_TO_PROCESS_MASK = 0xF000
_UNABLE_TO_PROCESS = 0xC000

_GET_INSTEAD = "or use retrieve=get (no connection back to this machine needed)"


@dataclass(frozen=True)
class Explanation:
    """One failure: what happened (``cause``) and what to change (``hint``); ``fatal`` False for
    something that works but is worth knowing."""

    cause: str
    hint: str
    fatal: bool = True

    def line(self) -> str:
        """The one log line: cause, then the fix."""
        return f"{self.cause}; fix: {self.hint}" if self.hint else self.cause


def rejection_words(result: int, source: int, reason: int) -> str:
    """``A-ASSOCIATE-RJ`` fields in PS3.8 9.3.4's words, e.g. ``permanent, service user: called AE
    title not recognized``; unknown values are shown as numbers."""
    words = _RESULTS.get(result, f"result {result}")
    who = _SOURCES.get(source, f"source {source}")
    why = _REASONS.get((source, reason), f"reason {reason}")
    return f"{words}, {who}: {why}"


def explain_rejection(
    result: int, source: int, reason: int, *, called_aet: str, calling_aet: str
) -> Explanation:
    """An A-ASSOCIATE-RJ (PS3.8 9.3.4): which AE title was refused and what to check.

    Parameters
    ----------
    result, source, reason
        The Result, Source and Reason/Diag. fields of the A-ASSOCIATE-RJ PDU (PS3.8 9.3.4).
    called_aet, calling_aet
        ``aec`` and ``aet`` of the association we asked for.
    """
    words = rejection_words(result, source, reason)
    cause = f"association rejected ({words})"
    if source == SOURCE_SERVICE_USER and reason == 7:
        return Explanation(
            f"{cause}: the PACS is not called {called_aet!r}",
            "set aec= to the PACS's own AE title (case matters; Orthanc: DicomAet)",
        )
    if source == SOURCE_SERVICE_USER and reason == 3:
        return Explanation(
            f"{cause}: the PACS does not accept our AE title {calling_aet!r}",
            f"have {calling_aet!r} registered at the PACS with this machine's address "
            "(Orthanc: DicomModalities), or set aet= to a title it knows",
        )
    if source == SOURCE_SERVICE_USER and reason == 2:
        return Explanation(cause, "serverport= does not lead to a DICOM application: check host and port")
    if result == RESULT_TRANSIENT or source == SOURCE_PROVIDER_PRESENTATION:
        return Explanation(
            f"{cause}: the PACS is busy or limits associations",
            "try again later, or lower maxassoc=",
        )
    return Explanation(
        f"{cause}: the PACS gives no reason",
        f"check aec={called_aet} (its AE title) and that it knows aet={calling_aet} with this "
        "machine's address; many PACS refuse unknown AE titles or addresses this way",
    )


def explain_silent_close(*, called_aet: str, calling_aet: str, tls: bool) -> Explanation:
    """The TCP connection was accepted, then closed with no A-ASSOCIATE-AC or -RJ at all."""
    tls_hint = "; tls= must match what the PACS speaks there" if tls else " (or the PACS wants TLS: tls=)"
    return Explanation(
        "the PACS closed the connection without answering the association request",
        f"check that serverport= is the PACS's DICOM port{tls_hint}; some PACS close the connection "
        f"on an unknown calling AE title ({calling_aet!r}) or called AE title ({called_aet!r})",
    )


def explain_silent_peer(*, timeout: float, tls: bool) -> Explanation:
    """The TCP connection was accepted, and no A-ASSOCIATE answer came within ``timeout``."""
    tls_hint = (
        "the PACS may not speak TLS there (tls=)"
        if tls
        else "the PACS may want TLS there (tls=, tlscert=, tlskey=)"
    )
    return Explanation(
        f"no answer to the association request within {timeout:g} s",
        f"check that serverport= is the PACS's DICOM port (not a web or other service); {tls_hint}",
    )


def explain_no_response(service: str, *, aborted: bool, calling_aet: str, timeout: float) -> Explanation:
    """An accepted association on which ``service`` (``C-FIND``, ``C-MOVE``, ...) got no response.

    ``aborted``: the PACS dropped the association (A-ABORT or a closed connection) instead of
    answering, which is how Orthanc refuses a request from an AE title it does not know
    (``DicomAlwaysAllowEcho`` lets such a title associate and echo, nothing more).
    """
    if aborted:
        return Explanation(
            f"the PACS dropped the association at our {service} request instead of answering it",
            f"the PACS probably does not allow {service} from our AE title {calling_aet!r}: have it "
            "registered with this machine's address (Orthanc: DicomModalities), or set aet= to a title "
            "it knows",
        )
    return Explanation(
        f"no answer to our {service} request within {timeout:g} s",
        "the PACS is overloaded or stuck; raise timeout= if it is merely slow",
    )


def status_words(status: int) -> str:
    """A C-MOVE/C-GET status in PS3.4 C.4.2.1.5's words, e.g. ``0xA801 (move destination unknown)``."""
    names = {
        MOVE_SUCCESS: "success",
        MOVE_WARNING: "sub-operations complete, one or more failures",
        MOVE_CANCEL: "cancelled",
        MOVE_OUT_OF_RESOURCES_MATCHES: "out of resources: number of matches",
        MOVE_OUT_OF_RESOURCES_SUBOPERATIONS: "out of resources: unable to perform sub-operations",
        MOVE_DESTINATION_UNKNOWN: "move destination unknown",
        MOVE_IDENTIFIER_MISMATCH: "identifier does not match SOP class",
    }
    name = names.get(status)
    if name is None and status & _UNABLE_TO_PROCESS_MASK == _UNABLE_TO_PROCESS:
        name = "unable to process"
    return f"0x{status:04X} ({name})" if name else f"0x{status:04X}"


@dataclass(frozen=True)
class MoveReport:
    """What one C-MOVE to our own AE title showed (PS3.4 C.4.2.1.4 counts; our receiving side)."""

    status: int
    comment: str = ""  # Error Comment (0000,0902) of the final response, if any
    completed: int = 0
    failed: int = 0
    warning: int = 0
    #: Whether an association reached our storage SCP during the C-MOVE; None: not known.
    connected_back: bool | None = None
    #: The called AE title the PACS used when it connected back ('' when it did not).
    called_back_as: str = ""
    #: C-STOREs that reached us.
    stored: int = 0


def explain_move_failure(
    report: MoveReport, *, destination: str, localport: int | None = None
) -> Explanation | None:
    """Why a C-MOVE to ``destination`` (our AE title) brought nothing back, or None when it worked.

    Tells apart: the PACS does not know the destination (0xA801; Orthanc's 0xC000 without a
    connection back), it accepted but never connected back (firewall, NAT, missing ``ssh -R``),
    it sent the objects elsewhere (reported them complete, nothing reached us), and it connected
    back under another called AE title (works, worth knowing).

    Parameters
    ----------
    report
        The final response and what our storage SCP saw; ``connected_back`` None when the caller
        cannot know (the mount's retrievals), which gives the hint for both possibilities.
    destination
        The Move Destination we asked for (``aet``).
    localport
        Where our storage SCP listens, for the hint (None: "localport=").
    """
    words = status_words(report.status)
    comment = f" ({report.comment.strip()})" if report.comment.strip() else ""
    port = "localport=" if localport is None else f"port {localport}"
    where = f"this machine's address and {port}"
    register = f"register AE title {destination!r} at the PACS with {where} (Orthanc: DicomModalities)"
    if report.connected_back and report.stored and report.status in (MOVE_SUCCESS, MOVE_WARNING):
        if report.called_back_as and report.called_back_as != destination:
            return Explanation(
                f"the PACS connected back with called AE title {report.called_back_as!r}, "
                f"not {destination!r}",
                f"harmless for dicomfs; the PACS's entry for {destination!r} names another AE title",
                fatal=False,
            )
        return None
    if report.status == MOVE_DESTINATION_UNKNOWN:
        return Explanation(
            f"the PACS does not know {destination!r} as a move destination: {words}{comment}",
            f"{register}, {_GET_INSTEAD}",
        )
    unable = report.status & _UNABLE_TO_PROCESS_MASK == _UNABLE_TO_PROCESS
    if unable and not report.connected_back and not report.completed:
        return Explanation(
            f"the PACS failed the C-MOVE to {destination!r} with {words}{comment}"
            + ("" if report.connected_back is None else " and never connected back"),
            f"Orthanc answers this when {destination!r} is not in its DicomModalities or when it "
            f"cannot connect to the address it has for it: {register}; check firewalls and NAT "
            f"(ssh -R through a tunnel), {_GET_INSTEAD}",
        )
    if report.connected_back is False and report.completed and not report.stored:
        return Explanation(
            f"the PACS reports {report.completed} sub-operation(s) completed to {destination!r} "
            f"({words}), but nothing reached our storage SCP on {port}",
            f"the PACS sent them to another host or port: correct its entry for {destination!r} to {where}",
        )
    if report.connected_back is False and (report.failed or report.status != MOVE_SUCCESS):
        return Explanation(
            f"the PACS accepted the C-MOVE to {destination!r} but never connected back to {port} "
            f"({words}, {report.failed} failed sub-operation(s){comment})",
            f"the PACS cannot reach {where}: check the address and port it has for {destination!r}, "
            f"firewalls and NAT, ssh -R through a tunnel; {_GET_INSTEAD}",
        )
    if report.connected_back and not report.stored:
        return Explanation(
            f"the PACS connected back but stored nothing ({words}, {report.failed} failed "
            f"sub-operation(s){comment})",
            "the PACS could not send over the contexts we accepted (transfer syntax, TLS); "
            "run with -d for the negotiation, or use retrieve=get",
        )
    if report.status == MOVE_SUCCESS and not report.completed and not report.failed:
        return Explanation(
            "the PACS matched nothing to send",
            "nothing to test the return path with: retry once the PACS holds an object",
            fatal=False,
        )
    return Explanation(
        f"C-MOVE to {destination!r} failed with {words}{comment}: {report.completed} completed, "
        f"{report.failed} failed sub-operation(s)",
        f"check the PACS's log; {_GET_INSTEAD}",
    )


def explain_move_status(
    status: int, *, completed: int, destination: str, comment: str = "", localport: int | None = None
) -> Explanation | None:
    """For the mount's retrievals: the cause and fix when a C-MOVE's final status says the PACS
    could not send to ``destination`` at all (0xA801, or a 0xCxxx "unable to process" with nothing
    completed, which is how Orthanc answers an unknown move destination); None for any other
    outcome, whose sub-operation counts the caller reports itself.

    The text holds no counts or UIDs, so every file of every series it fails has the same cause
    (``core.errorlog`` then logs it once, not once per file).
    """
    unable = status & _UNABLE_TO_PROCESS_MASK == _UNABLE_TO_PROCESS
    if status != MOVE_DESTINATION_UNKNOWN and not (unable and not completed):
        return None
    report = MoveReport(status=status, comment=comment, completed=completed)
    return explain_move_failure(report, destination=destination, localport=localport)


def association_failure(
    assoc: Any, *, called_aet: str, calling_aet: str, tls: bool, connected: bool | None = None
) -> Explanation:
    """Why a pynetdicom association attempt (``AE.associate``'s result) was not established.

    Reads the attributes of the ``Association`` only (``is_rejected``, ``acceptor.primitive``'s
    ``result``, ``result_source`` and ``diagnostic``); nothing is imported from pynetdicom.

    Parameters
    ----------
    assoc
        The ``pynetdicom.association.Association`` (None: the attempt was cancelled).
    called_aet, calling_aet
        ``aec`` and ``aet``.
    tls
        Whether the attempt used TLS (for the hint).
    connected
        Whether the TCP connection was made (an ``EVT_CONN_OPEN`` handler can tell); None when
        unknown: pynetdicom marks a refused connection, a closed one and a silent peer alike
        (aborted, no A-ASSOCIATE answer).
    """
    primitive: Any = assoc.acceptor.primitive if assoc is not None else None
    if primitive is not None and assoc.is_rejected:
        return explain_rejection(
            int(primitive.result or 0),
            int(primitive.result_source or 0),
            int(primitive.diagnostic or 0),
            called_aet=called_aet,
            calling_aet=calling_aet,
        )
    if primitive is not None:  # accepted, then aborted by pynetdicom: no context was accepted
        return Explanation(
            "the PACS accepted the association but none of the services we proposed (Verification, "
            "Q/R C-FIND, C-MOVE/C-GET)",
            "the PACS is not a Query/Retrieve SCP, or not for our AE title: check with its administrator",
        )
    if connected is False:
        return Explanation(
            "cannot connect to the PACS",
            "is it running, and are serveraddress= and serverport= right? (dicomfs echo tells more)",
        )
    why = explain_silent_close(called_aet=called_aet, calling_aet=calling_aet, tls=tls)
    if connected is None:
        return Explanation(
            "no answer to the association request: the PACS cannot be reached, or it closed the "
            "connection without answering",
            f"is the PACS running at serveraddress= and serverport=? If so: {why.hint}",
        )
    return why


#: Why a C-FIND answer is known to be capped (``dimse.client.PacsClient.find``) -> (cause, fix).
_CAPPED = {
    "cancel": (
        "the PACS ended the C-FIND answer with Cancel (0xFE00) though none was asked for: "
        "Orthanc does so at its LimitFindResults / LimitFindInstances",
        "narrow a study search (by-date, by-id, a query directory); a series or instance listing "
        "cannot be narrowed: raise the PACS's limit (Orthanc: LimitFindInstances)",
    ),
    "refused": (
        "the PACS refused the C-FIND for its size (0xA700 out of resources; "
        "dcm4chee's QueryMaxNumberOfResults)",
        "narrow a study search (by-date, by-id, a query directory); a series or instance listing "
        "cannot be narrowed: raise the PACS's limit (Orthanc: LimitFindInstances)",
    ),
    "warning": (
        "the PACS ended the C-FIND answer with a warning status (0xB001: response limit reached)",
        "narrow a study search (by-date, by-id, a query directory); a series or instance listing "
        "cannot be narrowed: raise the PACS's limit (Orthanc: LimitFindInstances)",
    ),
    "findlimit": (
        "the PACS answered exactly findlimit= matches, its known cap: the answer may be cut",
        "narrow the query (by-date, by-id, a query directory); findlimit=0 if the PACS has no cap",
    ),
}


def explain_capped_find(how: str) -> Explanation:
    """Cause and fix of a C-FIND answer the PACS capped: ``how`` is ``cancel`` (an unasked
    Cancel status, Orthanc), ``refused`` (0xA700, dcm4chee), ``warning`` (a warning status such
    as 0xB001, PS3.4 C.4.1.1.4) or ``findlimit`` (as many matches as the known cap). No counts in
    the text: one cause is one log line."""
    cause, hint = _CAPPED[how]
    return Explanation(cause, hint)
