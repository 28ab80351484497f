"""The patched receive path reads ahead (dicomfs.dimse.patches ``_recv`` / ``_ready``): bytes come
out exactly as sent, in the sizes asked, and the reactor's ``ready`` reports what was read ahead
even when the socket itself holds nothing more. Real sockets (a connected pair); the functions are
called directly, so the test process keeps stock pynetdicom."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

from dicomfs.dimse import patches

Pair = tuple[AssociationSocket, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    ours, peer = socket.socketpair()
    ours.settimeout(10)  # only guards against a hang
    assoc = Association(AE(), "requestor")
    wrapped = AssociationSocket(assoc, client_socket=ours)
    try:
        yield wrapped, peer
    finally:
        ours.close()
        peer.close()


def pdus(count: int, size: int) -> list[bytes]:
    """P-DATA-TF-shaped byte strings: a 6-byte header (type, reserved, length) and a body."""
    return [b"\x04\x00" + size.to_bytes(4, "big") + bytes([n % 256]) * size for n in range(count)]


def test_many_small_pdus_sent_at_once_come_out_whole_and_ready_says_so(pair: Pair) -> None:
    wrapped, peer = pair
    sent = pdus(50, 300)
    peer.sendall(b"".join(sent))
    got = []
    for expected in sent:
        assert patches._ready(wrapped)  # the socket or the bytes read ahead hold the next PDU
        header = bytes(patches._recv(wrapped, 6))
        body = bytes(patches._recv(wrapped, int.from_bytes(header[2:], "big")))
        got.append(header + body)
        assert len(got[-1]) == len(expected)
    assert got == sent
    assert not patches._ready(wrapped)  # everything consumed, nothing more sent


def test_a_large_read_after_a_read_ahead_gets_every_byte(
    pair: tuple[AssociationSocket, socket.socket],
) -> None:
    wrapped, peer = pair
    big = bytes(range(256)) * 40_000  # 10 MB: read in chunks, straight into the buffer
    peer.sendall(b"\x04\x00" + len(big).to_bytes(4, "big"))
    peer.sendall(big[:1000])
    header = bytes(patches._recv(wrapped, 6))
    assert int.from_bytes(header[2:], "big") == len(big)
    sender = threading.Thread(target=peer.sendall, args=(big[1000:],))
    sender.start()
    body = patches._recv(wrapped, len(big))
    sender.join(10)
    assert bytes(body) == big


def test_a_connection_closed_mid_pdu_gives_the_short_read(
    pair: tuple[AssociationSocket, socket.socket],
) -> None:
    wrapped, peer = pair
    peer.sendall(b"\x04\x00\x00\x00\x01\x00" + b"x" * 100)  # announces 256 bytes, sends 100
    peer.close()
    header = bytes(patches._recv(wrapped, 6))
    assert bytes(patches._recv(wrapped, int.from_bytes(header[2:], "big"))) == b"x" * 100
    assert bytes(patches._recv(wrapped, 6)) == b""
