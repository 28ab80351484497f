"""The short receive path for Pending C-FIND responses (dicomfs.dimse.findrecv) gives pynetdicom's
own primitives: the same messages, encoded by pynetdicom, fed to both paths, compared field by
field; and a real association whose C-FIND answers come through it (in a fresh interpreter: the
patch is process-wide and the test process keeps stock pynetdicom)."""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom._handlers import standard_dimse_recv_handler
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from dicomfs.dimse import findrecv

#: A generous bound that only guards against hangs.
HANG_GUARD_S = 60
CONTEXT_ID = 3


def identifier(number: int) -> bytes:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1.{number}"
    ds.PatientName = f"DOE^JANE{number}"
    ds.StudyDescription = "x" * (number % 50)
    encoded = encode(ds, False, True)  # Explicit VR Little Endian
    assert encoded is not None
    return encoded


def response(status: int, data: bytes | None = None, comment: str = "", message_id: int = 7) -> C_FIND:
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    primitive.Status = status
    if comment:
        primitive.ErrorComment = comment
    if data is not None:
        primitive.Identifier = BytesIO(data)
    return primitive


def encoded(primitive: C_FIND, max_pdu: int = 16382) -> list[P_DATA]:
    """The P-DATA primitives pynetdicom sends for ``primitive`` (PS3.8 E.2 fragments)."""
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    return list(message.encode_msg(CONTEXT_ID, max_pdu))


def provider() -> DIMSEServiceProvider:
    """A DIMSE provider of a real (unconnected) association, without the logging handler (as
    the daemon's associations are when pynetdicom's logger is off)."""
    assoc = Association(AE(), "requestor")
    assoc.unbind(evt.EVT_DIMSE_RECV, standard_dimse_recv_handler)
    return DIMSEServiceProvider(assoc)


def received(provider: DIMSEServiceProvider, fast: bool, pdatas: list[P_DATA]) -> list[tuple[Any, ...]]:
    """What the provider queued for ``pdatas``, as comparable tuples."""
    for pdata in pdatas:
        if fast:
            findrecv.receive_primitive(provider, pdata)
        else:
            DIMSEServiceProvider.receive_primitive(provider, pdata)
    out = []
    while not provider.msg_queue.empty():
        context_id, primitive = provider.msg_queue.get()
        assert isinstance(primitive, C_FIND)
        ident = primitive.Identifier
        out.append(
            (
                context_id,
                primitive.MessageIDBeingRespondedTo,
                primitive.AffectedSOPClassUID,
                primitive.Status,
                primitive.ErrorComment,
                None if ident is None else ident.getvalue(),
                primitive.is_valid_response,
            )
        )
    return out


def both(pdatas: list[P_DATA]) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    """Feed ``pdatas`` to the stock and the short path; assert the same result; return it and
    how many messages each way the short path counted."""
    before = dict(findrecv.counts)
    fast = received(provider(), True, pdatas)
    ways = {key: findrecv.counts[key] - before[key] for key in before}
    stock = received(provider(), False, pdatas)
    assert fast == stock
    return fast, ways


def test_a_pending_response_comes_out_as_pynetdicom_makes_it() -> None:
    out, ways = both(encoded(response(0xFF00, identifier(1))))
    assert len(out) == 1 and out[0][5] == identifier(1) and out[0][0] == CONTEXT_ID
    assert ways == {"fast": 1, "stock": 0}


@pytest.mark.parametrize(("max_pdu", "fast"), [(40, 0), (64, 0), (120, 1), (130, 1)])
def test_an_identifier_in_many_fragments_is_joined(max_pdu: int, fast: int) -> None:
    """Below ~100 bytes the command set itself is fragmented: that is left to pynetdicom."""
    pdatas = encoded(response(0xFF01, identifier(49)), max_pdu)
    assert len(pdatas) > 2  # really fragmented
    out, ways = both(pdatas)
    assert [row[5] for row in out] == [identifier(49)]
    assert ways == {"fast": fast, "stock": 0 if fast else len(pdatas)}


def test_many_responses_then_the_final_one() -> None:
    pdatas = [p for n in range(20) for p in encoded(response(0xFF00, identifier(n)))]
    pdatas += encoded(response(0x0000))
    out, ways = both(pdatas)
    assert [row[5] for row in out] == [identifier(n) for n in range(20)] + [b""]
    assert [row[3] for row in out] == [0xFF00] * 20 + [0x0000]
    assert ways == {"fast": 20, "stock": 1}  # the final status is pynetdicom's own


def merged(*primitives: C_FIND) -> P_DATA:
    """One P-DATA holding every PDV of ``primitives`` (one P-DATA-TF PDU, PS3.8 9.3.5)."""
    out = P_DATA()
    for primitive in primitives:
        for pdata in encoded(primitive):
            out.presentation_data_value_list += [list(pdv) for pdv in pdata.presentation_data_value_list]
    return out


def test_command_and_identifier_in_one_p_data() -> None:
    out, ways = both([merged(response(0xFF00, identifier(1)))])
    assert [row[5] for row in out] == [identifier(1)]
    assert ways["fast"] == 1


def test_two_responses_in_one_p_data_are_both_kept() -> None:
    """Stock pynetdicom 3.0 keeps only the first message of a P-DATA and drops the rest."""
    pdata = merged(response(0xFF00, identifier(1)), response(0xFF00, identifier(2)))
    out = received(provider(), True, [pdata])
    assert [row[5] for row in out] == [identifier(1), identifier(2)]
    assert [row[5] for row in received(provider(), False, [pdata])] == [identifier(1)]


def test_failures_and_error_comments_go_the_stock_way() -> None:
    out, ways = both(encoded(response(0xA700, comment="out of resources")))
    assert out[0][3:5] == (0xA700, "out of resources")
    assert ways == {"fast": 0, "stock": 1}


def test_a_message_that_stops_fitting_is_replayed_to_pynetdicom() -> None:
    first = encoded(response(0xFF00, identifier(3)), 64)
    other = encoded(response(0xFF00, identifier(4), message_id=9), 64)
    # the command set of a second message arrives before the first one's identifier is whole
    pdatas = [first[0], first[1], *other]
    before = dict(findrecv.counts)
    fast_provider, stock_provider = provider(), provider()
    results = []
    for prov, fast in ((fast_provider, True), (stock_provider, False)):
        try:
            results.append(("ok", received(prov, fast, pdatas)))
        except Exception as exc:  # whatever pynetdicom makes of it, both paths make the same
            results.append(("raised", type(exc).__name__))
    assert results[0] == results[1]
    assert findrecv.counts["stock"] - before["stock"] >= 1
    assert getattr(fast_provider, "_dicomfs_find", None) is None


def test_a_bound_dimse_handler_gets_pynetdicom_s_messages() -> None:
    seen: list[Any] = []
    prov = provider()
    prov.assoc.bind(evt.EVT_DIMSE_RECV, lambda event: seen.append(event.message))
    before = dict(findrecv.counts)
    received(prov, True, encoded(response(0xFF00, identifier(5))))
    assert len(seen) == 1
    assert findrecv.counts["fast"] == before["fast"]


def test_parse_command_refuses_what_it_does_not_know() -> None:
    assert findrecv.parse_command(b"") == {}
    assert findrecv.parse_command(b"\x00\x00\x02") is None  # truncated header
    assert findrecv.parse_command(b"\x08\x00\x20\x00\x00\x00\x00\x00") is None  # not group 0000
    assert findrecv.parse_command(b"\x00\x00\x00\x09\x02\x00\x00\x00\x00\xff") == {0x0900: b"\x00\xff"}
    assert findrecv.parse_command(b"\x00\x00\x00\x09\x04\x00\x00\x00\x00\xff") is None  # overruns


_ASSOCIATION = """
import sys
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND
from dicomfs.dimse import findrecv, patches

N = 300
def on_find(event):
    for n in range(N):
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = f"1.2.3.{n}"
        ds.PatientName = f"DOE^{n}"
        yield 0xFF00, ds

patches.install()
scp = AE(ae_title="SCP")
scp.add_supported_context(FIND)
server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
try:
    scu = AE(ae_title="SCU")
    scu.add_requested_context(FIND)
    scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = 30
    assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="SCP",
                          evt_handlers=[(evt.EVT_CONN_OPEN, patches.tune_socket)])
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.PatientName = ""
    got = []
    final = None
    for status, ds in assoc.send_c_find(query, FIND):
        if ds is None:
            final = status.Status
        else:
            got.append((ds.StudyInstanceUID, str(ds.PatientName)))
    assoc.release()
finally:
    server.shutdown()
    patches.uninstall()
assert got == [(f"1.2.3.{n}", f"DOE^{n}") for n in range(N)], got[:3]
print(final, findrecv.counts["fast"], findrecv.counts["stock"])
"""


def test_a_real_association_s_matches_come_through_the_short_path() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _ASSOCIATION],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    final, fast, stock = (int(word) for word in result.stdout.split())
    assert final == 0x0000
    assert fast == 300  # every Pending response
    # the rest is pynetdicom's own (P-DATA primitives): the SCP's C-FIND-RQ, command and
    # identifier, and the SCU's final response
    assert stock == 3


@pytest.mark.parametrize("uid", [b"1.2.840.10008.5.1.4.1.2.2.X\x00", b"1.2.840..3\x00", b"\xff\xfe"])
def test_an_odd_affected_sop_class_uid_gets_what_pynetdicom_makes_of_it(uid: bytes) -> None:
    pdatas = encoded(response(0xFF00, identifier(8)))
    context_id, command = pdatas[0].presentation_data_value_list[0]
    good = str(StudyRootQueryRetrieveInformationModelFind).encode() + b"\x00"
    assert good in command and len(uid) <= len(good)
    uid = uid.ljust(len(good), b"\x00")  # same length: the group length stays right
    pdatas[0].presentation_data_value_list = [[context_id, command.replace(good, uid)]]
    fast_provider, stock_provider = provider(), provider()
    fast = received(fast_provider, True, pdatas)
    assert fast == received(stock_provider, False, pdatas)
    assert list(fast_provider.dul.event_queue.queue) == list(stock_provider.dul.event_queue.queue)
    assert len(findrecv._sop_classes) <= findrecv.MAX_SOP_CLASSES
