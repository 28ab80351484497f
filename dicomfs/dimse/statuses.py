"""DIMSE status values, named from pynetdicom's own tables (``pynetdicom.status``).

pynetdicom names only a few codes (``Status``: Success, Cancel, Pending, Move Destination
Unknown); the others we send or judge are taken from its code tables (PS3.4 B.2.3, C.4.1.1.4,
C.4.2.1.5, C.4.3.1.4; PS3.7 Annex C) by their description, so that no module declares a status
as a bare number. A pynetdicom whose tables no longer list a description fails at import with
a clear message, not with a wrong code on the wire.

Nothing here patches pynetdicom: importing this module is free of side effects.
"""

from __future__ import annotations

from collections.abc import Mapping

from pynetdicom.status import (
    GENERAL_STATUS,
    QR_FIND_SERVICE_CLASS_STATUS,
    QR_GET_SERVICE_CLASS_STATUS,
    QR_MOVE_SERVICE_CLASS_STATUS,
    STATUS_PENDING,
    STATUS_WARNING,
    STORAGE_SERVICE_CLASS_STATUS,
    Status,
    code_to_category,
)


def named(table: Mapping[int, tuple[str, str]], description: str) -> int:
    """The status code that pynetdicom's ``table`` lists under ``description``.

    Parameters
    ----------
    table : mapping of int to (str, str)
        One of pynetdicom's ``*_STATUS`` tables: code -> (category, description).
    description : str
        The description as the table spells it. A ranged status (``0xA7xx``, ``0xCxxx``) gives
        its first code, the one PS3.4 lists.

    Returns
    -------
    int
        The code, e.g. 0xA700 for "Refused: Out of Resources" in the storage table.

    Raises
    ------
    RuntimeError
        When the table lists no such description (a pynetdicom this module was not written for).
    """
    codes = [code for code, (_category, text) in table.items() if text == description]
    if not codes:
        raise RuntimeError(f"pynetdicom.status no longer lists the status {description!r}")
    return min(codes)


SUCCESS = int(Status.SUCCESS)
CANCEL = int(Status.CANCEL)
PENDING = int(Status.PENDING)
MOVE_DESTINATION_UNKNOWN = int(Status.MOVE_DESTINATION_UNKNOWN)

# C-STORE responses (PS3.4 B.2.3; 0x0124 is a general status, PS3.7 C.4.3).
REFUSED_NOT_AUTHORISED = named(GENERAL_STATUS, "Refused: Not Authorised")
OUT_OF_RESOURCES = named(STORAGE_SERVICE_CLASS_STATUS, "Refused: Out of Resources")
CANNOT_UNDERSTAND = named(STORAGE_SERVICE_CLASS_STATUS, "Cannot Understand")

# C-MOVE/C-GET final responses (PS3.4 C.4.2.1.5, C.4.3.1.4).
SUBOPERATIONS_REFUSED = named(
    QR_MOVE_SERVICE_CLASS_STATUS, "Refused: Out of resources, unable to perform sub-operations"
)
SUBOPERATIONS_WARNING = named(QR_MOVE_SERVICE_CLASS_STATUS, "Sub-operations completed, one or more failures")
# The same code in the C-GET table, checked so that a diverging pynetdicom fails here.
if named(QR_GET_SERVICE_CLASS_STATUS, "Sub-operations complete, one or more failures or warnings") != (
    SUBOPERATIONS_WARNING
):
    raise RuntimeError("pynetdicom.status: C-MOVE and C-GET warning statuses differ")

# C-FIND (PS3.4 C.4.1.1.4).
IDENTIFIER_MISMATCH = named(QR_FIND_SERVICE_CLASS_STATUS, "Identifier Does Not Match SOP Class")
# The statuses a PACS answers a C-FIND with when the answer is too large (``dimse.client.find``):
# 0xA700 refuses it (dcm4chee's QueryMaxNumberOfResults is documented as "the C-FIND request will
# be refused"); 0xB001 (PS3.4 C.4.1.1.4, a warning) ends it at a response limit. Orthanc 1.10
# ends an answer cut at LimitFindResults / LimitFindInstances with 0xFE00 (Cancel) although no
# C-CANCEL was sent (measured: exactly the limit of Pending responses, then 0xFE00).
FIND_OUT_OF_RESOURCES = named(QR_FIND_SERVICE_CLASS_STATUS, "Refused: Out of Resources")
FIND_RESPONSE_LIMIT = named(
    QR_FIND_SERVICE_CLASS_STATUS,
    "Matching reached response limit, subsequent request may return additional matches",
)


def is_pending(code: int) -> bool:
    """Whether ``code`` is a Pending status (0xFF00, or 0xFF01 with optional keys unsupported).

    Source: ``pynetdicom.status.code_to_category`` (PS3.4 C.4.1.1.4, C.4.2.1.5).
    """
    return bool(code_to_category(code) == STATUS_PENDING)


def is_warning(code: int) -> bool:
    """Whether ``code`` is a Warning status (0x0001, 0x0107, 0x0116, 0xBxxx).

    Source: ``pynetdicom.status.code_to_category`` (PS3.7 C.3, PS3.4 C.4.1.1.4).
    """
    return bool(code_to_category(code) == STATUS_WARNING)
