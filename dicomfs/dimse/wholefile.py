"""Is a Part 10 file whole? A walk of its element headers before it is sent by C-STORE.

A writer killed mid-write, or ``head -c N file > upload/x``, closes a file that stops short: its
last element declares more bytes than are left, or an undefined-length sequence or encapsulated
pixel data has no delimiter. pydicom reads such a file without complaint (``fp.read(length)``
returns what there is; an undefined-length value without its delimiter is only a warning), and
a truncated object streamed to the PACS leaves it waiting for the rest. So this module walks the
headers itself: each element's tag, VR and length (PS3.5 7.1.2, 7.1.3), skipping defined-length
values by seeking, and walking undefined-length values item by item to their delimiters (PS3.5
7.5, A.4). Values are never read, so a 2 GB file costs a few thousand small reads.

The file meta information is explicit VR little endian (PS3.10 7.1); the data set follows in the
transfer syntax (0002,0010) names: implicit VR little endian, explicit VR big endian, deflated
(whose zlib stream must reach its end: PS3.5 A.5), or else explicit VR little endian.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import BinaryIO

from dicomfs.core.errors import NotDicom

#: PS3.10 7.1: the 128-byte preamble, then the four bytes "DICM".
PREAMBLE = 128
PREFIX = b"DICM"
#: What to do about a file that is no Part 10 file (said in ``NotDicom``'s message).
NOT_PART10_FIX = (
    "fix: copy DICOM files only; a bare data set can be given its file meta information with "
    "DCMTK's `dcmconv in.raw out.dcm`"
)

_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")  # Deflated (Image Frame) Compression
#: PS3.5 7.1.2: VRs with a 2-byte reserved field and a 4-byte length in explicit VR.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_META_GROUP = 0x0002
_META_LENGTH_TAG, _SYNTAX_TAG = 0x00020000, 0x00020010
_CHUNK = 1 << 20
#: Sequences nested deeper than this are taken for garbage (real objects nest a few levels; the
#: walk recurses once per level).
MAX_DEPTH = 64


class _Broken(Exception):
    """The walk found the file cut short or malformed (the message says where and how)."""


def check_whole(path: str) -> None:
    """Raise ``NotDicom`` unless ``path`` is a Part 10 file with every element whole.

    Raises
    ------
    NotDicom
        No preamble and "DICM" (PS3.10 7.1): "not a DICOM Part 10 file: ...; fix: ..."; or cut
        short: "truncated: element (7FE0,0010) declares 2097152 bytes, 999808 present", "truncated:
        (7FE0,0010) of undefined length ends without its sequence delimiter", ...
    OSError
        The file cannot be read.
    """
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        head = file.read(PREAMBLE + len(PREFIX))
        if head[PREAMBLE:] != PREFIX:
            # The same words for every such file: the log says them once for a cp -r of many.
            raise NotDicom(
                "not a DICOM Part 10 file: no 'DICM' after a 128-byte preamble (PS3.10 7.1); "
                + NOT_PART10_FIX
            )
        try:
            walk = _Walk(file, size)
            start, syntax = walk.meta(len(head))
            if syntax in _DEFLATED:
                _check_deflated(file, start)
            else:
                walk.data_set(start, implicit=syntax == _IMPLICIT_LE, big=syntax == _EXPLICIT_BE)
        except _Broken as exc:
            raise NotDicom(f"{exc}; fix: copy the whole file again (it is not sent cut short)") from None


class _Walk:
    """Element headers of one file, by offset (PS3.5 7.1); raises ``_Broken``."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size

    def meta(self, pos: int) -> tuple[int, str]:
        """Walk group 0002 (explicit VR little endian): (where the data set starts, its syntax)."""
        syntax, declared_end = "", 0
        while pos + 4 <= self._size and self._peek_group(pos) == _META_GROUP:
            tag, _vr, length, value_at = self._header(pos, implicit=False, big=False)
            self._need(tag, length, value_at)
            if tag == _META_LENGTH_TAG and length == 4:  # PS3.10 7.1: the bytes after it
                declared_end = value_at + 4 + struct.unpack("<I", self._read(value_at, 4))[0]
            elif tag == _SYNTAX_TAG:
                syntax = self._read(value_at, length).rstrip(b"\0 ").decode("ascii", "replace")
            pos = value_at + length
        if pos < declared_end and pos == self._size:  # cut between two of its elements
            raise _Broken(
                f"truncated: the file meta information ends at byte {declared_end} (its group "
                f"length), the file at byte {pos}"
            )
        return pos, syntax

    def data_set(self, pos: int, *, implicit: bool, big: bool, nested: int = 0, depth: int = 0) -> int:
        """Walk elements from ``pos``: to the end of the file, or (``nested``: the tag of the
        sequence, ``depth`` its nesting) to an Item Delimitation Item; where the walk ended."""
        if depth > MAX_DEPTH:
            raise _Broken(f"malformed: sequences nested more than {MAX_DEPTH} deep")
        while True:
            if pos == self._size and not nested:
                return pos
            if pos == self._size:
                raise _Broken(f"truncated: an item of undefined length in {_name(nested)} has no delimiter")
            tag, vr, length, value_at = self._header(pos, implicit=implicit, big=big)
            if nested and tag == _ITEM_END:
                return value_at
            if length != _UNDEFINED:
                self._need(tag, length, value_at)
                pos = value_at + length
            elif vr == b"UN":  # PS3.5 6.2.2: an undefined-length UN is a sequence in implicit VR LE
                pos = self._items(tag, value_at, implicit=True, big=False, depth=depth)
            else:  # a sequence (SQ, or any in implicit VR) or encapsulated pixel data (PS3.5 A.4)
                pos = self._items(tag, value_at, implicit=implicit, big=big, depth=depth)

    def _items(self, owner: int, pos: int, *, implicit: bool, big: bool, depth: int) -> int:
        """Items up to the Sequence Delimitation Item (PS3.5 7.5.2); the offset after it."""
        while True:
            if pos + 8 > self._size:
                what = "encapsulated pixel data" if owner == _PIXEL_DATA else "sequence"
                raise _Broken(
                    f"truncated: {what} {_name(owner)} of undefined length ends without its delimiter"
                )
            group, element, length = struct.unpack(">HHI" if big else "<HHI", self._read(pos, 8))
            tag = group << 16 | element
            if tag == _SEQUENCE_END:
                return pos + 8
            if tag != _ITEM:
                raise _Broken(
                    f"malformed: {_name(owner)} holds {_name(tag)} where an item or its delimiter belongs"
                )
            if length == _UNDEFINED:
                pos = self.data_set(pos + 8, implicit=implicit, big=big, nested=owner, depth=depth + 1)
            else:
                self._need(tag, length, pos + 8, owner)
                pos += 8 + length

    def _header(self, pos: int, *, implicit: bool, big: bool) -> tuple[int, bytes, int, int]:
        """(tag, VR or b'', value length, offset of the value) of the element at ``pos``."""
        endian = ">" if big else "<"
        raw = self._read(pos, 8)
        group, element = struct.unpack(f"{endian}HH", raw[:4])
        tag = group << 16 | element
        vr = raw[4:6]
        # Items and delimiters have no VR (PS3.5 7.5); nor has an element whose "VR" is no two
        # capital letters: taken as implicit VR there, as pydicom does (assume_implicit_vr_switch).
        if implicit or group == 0xFFFE or not (vr.isalpha() and vr.isupper()):
            return tag, b"", struct.unpack(f"{endian}I", raw[4:])[0], pos + 8
        if vr in _LONG_VRS:
            return tag, vr, struct.unpack(f"{endian}I", self._read(pos + 8, 4))[0], pos + 12
        return tag, vr, struct.unpack(f"{endian}H", raw[6:])[0], pos + 8

    def _need(self, tag: int, length: int, value_at: int, owner: int = 0) -> None:
        """Raise unless ``length`` bytes follow ``value_at`` (``owner``: the sequence of an item)."""
        present = max(0, self._size - value_at)
        if length > present:
            if owner == _PIXEL_DATA:
                what = f"a fragment of encapsulated pixel data {_name(owner)}"
            elif owner:
                what = f"an item of sequence {_name(owner)}"
            else:
                what = f"element {_name(tag)}"
            raise _Broken(f"truncated: {what} declares {length} bytes, {present} present")

    def _peek_group(self, pos: int) -> int:
        return int(struct.unpack("<H", self._read(pos, 2))[0])

    def _read(self, pos: int, count: int) -> bytes:
        self._file.seek(pos)
        data = self._file.read(count)
        if len(data) < count:
            raise _Broken(f"truncated: the file ends inside an element header at byte {pos}")
        return data


def _name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _check_deflated(file: BinaryIO, start: int) -> None:
    """A deflated data set (PS3.5 A.5) is whole when its raw deflate stream reaches its end."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    file.seek(start)
    try:
        while not inflater.eof and (chunk := file.read(_CHUNK)):
            while chunk and not inflater.eof:  # bounded output per call: a bomb costs no memory
                inflater.decompress(chunk, _CHUNK)
                chunk = inflater.unconsumed_tail
    except zlib.error as exc:
        raise _Broken(f"malformed: the deflated data set cannot be inflated ({exc})") from None
    if not inflater.eof:
        raise _Broken("truncated: the deflated data set ends before its deflate stream does")
