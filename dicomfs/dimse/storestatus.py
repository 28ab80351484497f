"""What a C-STORE response means for an upload: stored, stored with a warning, or refused and why.

In the manner of ``explain``: each refusal gets a cause (the status as PS3.4 B.2.3 and PS3.7
Annex C name it, and the PACS's Error Comment) and a fix. The statuses' names come from
pynetdicom's table (``STORAGE_SERVICE_CLASS_STATUS``), so no code is declared here as a bare number
but the ranges PS3.4 B.2.3 gives. Pure: no association, no side effects.
"""

from __future__ import annotations

from pynetdicom.status import (
    STATUS_FAILURE,
    STATUS_SUCCESS,
    STATUS_WARNING,
    STORAGE_SERVICE_CLASS_STATUS,
    code_to_category,
)

from dicomfs.dimse import statuses
from dicomfs.dimse.explain import Explanation

#: General failures of PS3.7 C.4 a C-STORE can get, by the description pynetdicom gives them.
_GENERAL_FIXES = {
    "Refused: SOP Class Not Supported": "configure the PACS to accept this storage SOP class",
    "Invalid SOP Instance": "the file's SOP Instance UID is invalid: check the file (dciodvfy)",
    "Duplicate Invocation": "a PACS-side duplicate: send the file again",
    "Duplicate SOP Instance": "the PACS already holds this SOP Instance UID and refuses to replace it",
}


def judge_store(code: int | None, comment: str, calling_aet: str, timeout: float) -> Explanation | None:
    """None when the PACS stored the object (Success, or a Warning); else what went wrong.

    Parameters
    ----------
    code : int or None
        The C-STORE response's Status (0000,0900); None when no response came (pynetdicom returns
        an empty dataset after its DIMSE timeout or an abort).
    comment : str
        Error Comment (0000,0902), '' when absent.
    calling_aet : str
        Our AE title, named in the fix for "not authorised".
    timeout : float
        The mount's ``timeout``, seconds (named when there was no answer).
    """
    if code is None:
        return Explanation(
            f"the PACS sent no C-STORE response within {timeout:g} s (or ended the association)",
            "check that the PACS is up; if it stored the object anyway, it is listed in the tree",
        )
    category = code_to_category(code)
    if category in (STATUS_SUCCESS, STATUS_WARNING):
        return None
    name = STORAGE_SERVICE_CLASS_STATUS.get(code, (STATUS_FAILURE, "unknown status"))[1]
    said = f"the PACS refused the C-STORE: status 0x{code:04X} ({name})"
    if comment:
        said += f", Error Comment '{comment}'"
    return Explanation(said, _fix(code, name, calling_aet))


def warning_of(code: int, comment: str) -> str:
    """The words of a Warning status (PS3.4 B.2.3: stored, but coerced or elements discarded)."""
    name = STORAGE_SERVICE_CLASS_STATUS.get(code, (STATUS_WARNING, "warning"))[1]
    return f"status 0x{code:04X} ({name})" + (f", Error Comment '{comment}'" if comment else "")


def _fix(code: int, name: str, calling_aet: str) -> str:
    if code == statuses.REFUSED_NOT_AUTHORISED:
        return f"allow AE title '{calling_aet}' to store on the PACS (its list of known modalities)"
    if 0xA700 <= code <= 0xA7FF:  # PS3.4 B.2.3: Refused, Out of Resources
        return "free space on the PACS or raise its storage quota"
    if 0xA900 <= code <= 0xA9FF:  # PS3.4 B.2.3: Error, Data Set does not match SOP Class
        return "the file does not match its SOP class: check it (dciodvfy) or fix its SOP Class UID"
    if 0xC000 <= code <= 0xCFFF:  # PS3.4 B.2.3: Error, Cannot understand
        return "the PACS could not process the data set: its log says why"
    return _GENERAL_FIXES.get(name, "the PACS's log says why")
