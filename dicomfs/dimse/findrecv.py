"""A short receive path for C-FIND Pending responses in pynetdicom's DIMSE layer (issue #12).

pynetdicom turns every received DIMSE message into a pydicom ``Dataset`` command set (PS3.7 6.3.1:
always Implicit VR Little Endian), converts each element and copies it onto the primitive through
validating setters: ~0.1 ms of the DUL reactor thread's time per message, which is a third of what
a by-date day of 2,000 matches costs after the PACS's first response (bench/RESULTS.md).

:func:`receive_primitive` stands in for ``DIMSEServiceProvider.receive_primitive``. It reads the
command set of a C-FIND-RSP (CommandField 0x8020) with Pending status (0xFF00 / 0xFF01, PS3.4
C.4.1.1.4) and only the elements such a response carries (PS3.7 9.3.2.2) straight from its bytes,
gathers the Identifier's fragments (PS3.8 E.2 message control header) and queues the same
``C_FIND`` primitive pynetdicom would: the same parameters, the Identifier as encoded bytes in a
``BytesIO``, the same presentation context ID. Everything else (other messages, final statuses,
error comments, fragmented command sets, a handler bound to ``EVT_DIMSE_RECV`` that wants the
message) goes through pynetdicom's own code, and so does a response whose fragments stop fitting
(replayed from what was kept).
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

from pydicom.uid import UID
from pynetdicom import dimse as _dimse
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.pdu_primitives import P_DATA

#: CommandField of a C-FIND-RSP (PS3.7 E.1-1).
C_FIND_RSP = 0x8020
#: Pending statuses of a C-FIND-RSP (PS3.4 C.4.1.1.4): the only ones with an Identifier.
PENDING = frozenset((0xFF00, 0xFF01))
#: CommandDataSetType value that means "no data set" (PS3.7 E.1-1).
NO_DATA_SET = 0x0101
#: Command elements (0000,eeee) a Pending C-FIND-RSP may carry that this path understands: group
#: length, Affected SOP Class UID, Command Field, Message ID Being Responded To, Command Data Set
#: Type, Status (PS3.7 9.3.2.2). Anything else (Error Comment, Offending Element, ...) goes stock.
_KNOWN = frozenset((0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900))
#: Affected SOP Class UIDs already validated, by their encoded value (a C-FIND repeats one).
MAX_SOP_CLASSES = 32
_sop_classes: dict[bytes, UID | None] = {}
_US = struct.Struct("<H")
_HEADER = struct.Struct("<HHL")

#: pynetdicom's own method, which every message this path does not take goes through.
_stock = _dimse.DIMSEServiceProvider.receive_primitive
#: Since import: messages taken by this path ("fast") and P-DATA primitives left to pynetdicom
#: ("stock"), for tests (counts, never timing).
counts = {"fast": 0, "stock": 0}


def parse_command(raw: bytes) -> dict[int, bytes] | None:
    """The elements of an Implicit VR Little Endian command set, ``{element: value bytes}``.

    Returns ``None`` when ``raw`` is not a well-formed group 0000 command set holding only
    elements of :data:`_KNOWN` (so that the caller leaves it to pynetdicom).
    """
    elements: dict[int, bytes] = {}
    offset = 0
    end = len(raw)
    while offset < end:
        if end - offset < 8:
            return None
        group, element, length = _HEADER.unpack_from(raw, offset)
        offset += 8
        if group != 0 or element not in _KNOWN or length > end - offset:
            return None
        elements[element] = raw[offset : offset + length]
        offset += length
    return elements


def _us(elements: dict[int, bytes], element: int) -> int | None:
    value = elements.get(element)
    if value is None or len(value) != 2:
        return None
    return int(_US.unpack(value)[0])


def pending_find(raw: bytes) -> C_FIND | None:
    """The ``C_FIND`` primitive of a Pending C-FIND-RSP command set (its Identifier still to come),
    or ``None`` when ``raw`` is anything else."""
    elements = parse_command(raw)
    if elements is None:
        return None
    if _us(elements, 0x0100) != C_FIND_RSP or _us(elements, 0x0900) not in PENDING:
        return None
    data_set_type = _us(elements, 0x0800)
    responding_to = _us(elements, 0x0120)
    if data_set_type is None or data_set_type == NO_DATA_SET or responding_to is None:
        return None
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = responding_to
    primitive.Status = _us(elements, 0x0900)
    raw_uid = elements.get(0x0002)
    if raw_uid is not None:
        try:
            # Set as the setter would (validated once per value: every response repeats it).
            primitive._affected_sop_class_uid = _sop_class(raw_uid)
        except (ValueError, TypeError, UnicodeDecodeError):
            return None  # pynetdicom reports it (an invalid DIMSE message)
    return primitive


def _sop_class(raw: bytes) -> UID | None:
    """The Affected SOP Class UID ``C_FIND``'s setter makes of ``raw`` (memoised, bounded)."""
    if raw in _sop_classes:
        return _sop_classes[raw]
    probe = C_FIND()
    # UI values are padded to even length with NUL (PS3.5 6.2); pydicom strips it too.
    probe.AffectedSOPClassUID = raw.rstrip(b"\x00 ").decode("ascii")
    if len(_sop_classes) >= MAX_SOP_CLASSES:
        _sop_classes.clear()
    _sop_classes[raw] = probe.AffectedSOPClassUID
    return probe.AffectedSOPClassUID


class _Pending:
    """A Pending C-FIND-RSP whose command set was read here and whose Identifier is arriving."""

    __slots__ = ("context_id", "fragments", "primitive")

    def __init__(self, primitive: C_FIND, context_id: int, command: bytes) -> None:
        self.primitive = primitive
        self.context_id = context_id
        #: Every PDV (context ID, bytes with the control header) of this message, for a replay.
        self.fragments: list[tuple[int, bytes]] = [(context_id, command)]


def _replay(provider: Any, pending: _Pending, primitive: P_DATA) -> None:
    """Hand a message this path started back to pynetdicom: what was kept, then ``primitive``."""
    provider._dicomfs_find = None
    kept = P_DATA()
    # The setter wants [ID, PDV] lists at run time (pynetdicom 3.0 P_DATA), though typed as tuples.
    kept.presentation_data_value_list = [[cid, data] for cid, data in pending.fragments]  # type: ignore[misc]
    counts["stock"] += 1
    _stock(provider, kept)
    _stock(provider, primitive)


def receive_primitive(self: Any, primitive: P_DATA) -> None:
    """``DIMSEServiceProvider.receive_primitive`` with the Pending C-FIND-RSP path (module doc)."""
    pending: _Pending | None = getattr(self, "_dicomfs_find", None)
    pdvs = primitive.presentation_data_value_list
    if pending is None:
        if (
            self.message is not None
            or not pdvs
            or not pdvs[0][1]
            or pdvs[0][1][0] & 3 != 3  # a whole command set: its last fragment (PS3.8 E.2)
            or self.assoc.get_handlers(evt.EVT_DIMSE_RECV)
        ):
            counts["stock"] += 1
            _stock(self, primitive)
            return
        context_id, command = pdvs[0]
        found = pending_find(command[1:])
        if found is None:
            counts["stock"] += 1
            _stock(self, primitive)
            return
        pending = _Pending(found, context_id, command)
        self._dicomfs_find = pending
        pdvs = pdvs[1:]
    for index, (context_id, data) in enumerate(pdvs):
        if context_id != pending.context_id or not data or data[0] & 1:
            # Not a data fragment of this message: pynetdicom decides what it is.
            rest = P_DATA()
            rest.presentation_data_value_list = list(pdvs[index:])
            _replay(self, pending, rest)
            return
        pending.fragments.append((context_id, data))
        if data[0] & 2:  # the last data fragment
            if index != len(pdvs) - 1:
                rest = P_DATA()
                rest.presentation_data_value_list = list(pdvs[index + 1 :])
                self._dicomfs_find = None
                _finish(self, pending)
                receive_primitive(self, rest)
                return
            self._dicomfs_find = None
            _finish(self, pending)


def _setter_names(owner: type, name: str) -> set[str]:
    """The names the setter of property ``owner.name`` uses (empty when there is none)."""
    setter = getattr(vars(owner).get(name) or getattr(owner, name, None), "fset", None)
    return set(getattr(getattr(setter, "__code__", None), "co_names", ()))


def stock_fits() -> bool:
    """Whether ``DIMSEServiceProvider.receive_primitive`` is still the stock method this path
    replaces: it keeps the message being assembled in ``self.message``, decodes it with
    ``decode_msg``, converts it with ``message_to_primitive`` and queues ``(context ID,
    primitive)`` on ``msg_queue``, and ``C_FIND`` still takes the parameters set here."""
    current = _dimse.DIMSEServiceProvider.receive_primitive
    if current is receive_primitive:
        return True
    code = getattr(current, "__code__", None)
    names = set(getattr(code, "co_names", ()))
    return (
        current is _stock
        and {"message", "decode_msg", "message_to_primitive", "msg_queue", "put"} <= names
        and all(
            isinstance(getattr(C_FIND, name, None), property)
            for name in ("MessageIDBeingRespondedTo", "Status", "AffectedSOPClassUID", "Identifier")
        )
        # the attribute the Affected SOP Class UID setter keeps its value in
        and "_affected_sop_class_uid" in _setter_names(C_FIND, "AffectedSOPClassUID")
    )


def _finish(provider: Any, pending: _Pending) -> None:
    primitive = pending.primitive
    primitive.Identifier = BytesIO(b"".join(data[1:] for _, data in pending.fragments[1:]))
    primitive._context_id = pending.context_id
    counts["fast"] += 1
    provider.msg_queue.put((pending.context_id, primitive))
