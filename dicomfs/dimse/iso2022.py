"""Text with ISO 2022 code extensions (escape sequences) -> str, with no escape left in it.

DICOM lets a value switch character sets inside the text with ISO 2022 escape sequences
(PS3.5 6.1.2.5, the terms and sequences of PS3.3 Tables C.12-3 and C.12-4). pydicom 3.0.2
(``charset.handled_encodings``) hands the fragments of three of them, escape sequence included,
to Python's codecs, assuming that they strip it. ``iso2022_jp`` and ``iso2022_jp_2`` do; but
``iso_ir_58`` is plain GB2312 (EUC-CN) and keeps ``ESC $ ) A`` in the text, so a GB2312 name
showed as ``Zhang^San= $)A张^ $)A三``. An escape sequence pydicom does not know (or one not
declared in Specific Character Set) is left in the text as well.

This module decodes such values itself, as ISO 2022 describes: a G0 set for the bytes 0x21-0x7E
and a G1 set for the bytes 0xA0-0xFF, each designated by an escape sequence and both reset to
those of value 1 of Specific Character Set at every delimiter (PS3.5 6.1.2.5.3). Every escape
sequence is consumed, known or not, so none of it reaches a name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

ESC = 0x1B


@dataclass(frozen=True)
class CharacterSet:
    """A graphic character set, decoded through a Python codec.

    ``width`` bytes make one character. A two-byte G0 set (JIS X 0208, JIS X 0212) is decoded as
    its EUC-JP form: the bytes with their high bit set, after ``prefix`` (SS3 for JIS X 0212).
    """

    codec: str
    width: int = 1
    prefix: bytes = b""


ASCII = CharacterSet("ascii")
# ISO-IR 14 (JIS X 0201 Romaji) and ISO-IR 13 (JIS X 0201 Katakana): pydicom reads both through
# shift_jis, which holds both halves of JIS X 0201, and so do we.
JIS_X_0201 = CharacterSet("shift_jis")
JIS_X_0208 = CharacterSet("euc_jp", 2)
JIS_X_0212 = CharacterSet("euc_jp", 2, b"\x8f")
KS_X_1001 = CharacterSet("euc_kr", 2)
GB_2312 = CharacterSet("gb2312", 2)
LATIN_1 = CharacterSet("latin_1")

#: Escape sequence (after ESC) -> the G0 set it designates (PS3.3 Tables C.12-3 and C.12-4).
G0_SEQUENCES = {
    b"(B": ASCII,  # ISO-IR 6
    b"(J": JIS_X_0201,  # ISO-IR 14
    b"$B": JIS_X_0208,  # ISO-IR 87
    b"$(D": JIS_X_0212,  # ISO-IR 159
}

#: Escape sequence (after ESC) -> the G1 set it designates (PS3.3 Tables C.12-3 and C.12-4).
G1_SEQUENCES = {
    b"-A": LATIN_1,  # ISO-IR 100
    b"-B": CharacterSet("iso8859_2"),  # ISO-IR 101
    b"-C": CharacterSet("iso8859_3"),  # ISO-IR 109
    b"-D": CharacterSet("iso8859_4"),  # ISO-IR 110
    b"-F": CharacterSet("iso8859_7"),  # ISO-IR 126, Greek
    b"-G": CharacterSet("iso8859_6"),  # ISO-IR 127, Arabic
    b"-H": CharacterSet("iso8859_8"),  # ISO-IR 138, Hebrew
    b"-L": CharacterSet("iso8859_5"),  # ISO-IR 144, Cyrillic
    b"-M": CharacterSet("iso8859_9"),  # ISO-IR 148, Latin-5
    b"-T": CharacterSet("tis_620"),  # ISO-IR 166, Thai
    b")I": JIS_X_0201,  # ISO-IR 13, Katakana
    b"$)C": KS_X_1001,  # ISO-IR 149
    b"$)A": GB_2312,  # ISO-IR 58
}

_SEQUENCE_OF_IR = {
    "6": b"(B",
    "100": b"-A",
    "101": b"-B",
    "109": b"-C",
    "110": b"-D",
    "126": b"-F",
    "127": b"-G",
    "138": b"-H",
    "144": b"-L",
    "148": b"-M",
    "166": b"-T",
    "13": b")I",
    "87": b"$B",
    "159": b"$(D",
    "149": b"$)C",
    "58": b"$)A",
}
# 'ISO 2022 IR 100', and the misspellings pydicom also accepts ('ISO_2022-IR 100'); the
# non-extension form 'ISO_IR 100' as value 1 of a multi-valued set names the same G0/G1 sets.
_TERM = re.compile(r"ISO[ _-]?(?:2022[ _-]?)?IR[ _-]?([0-9]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Sets:
    """The G0 and G1 sets in force (G1 None: none designated)."""

    g0: CharacterSet
    g1: CharacterSet | None


def initial_sets(term: str) -> Sets | None:
    """The sets that value 1 of Specific Character Set puts in force, None if it is not ISO 2022.

    '' means ISO-IR 6 (PS3.3 C.12.1.1.2). ISO 2022 IR 13 puts JIS X 0201 in both G0 and G1; a
    G0 multi-byte set (IR 87, 159) cannot be value 1, so ASCII stands in. Stand-alone sets
    (ISO_IR 192, GB18030, GBK) and unknown terms return None: they have no code extensions.
    """
    term = term.strip()
    if not term:
        return Sets(ASCII, None)
    match = _TERM.fullmatch(term)
    sequence = _SEQUENCE_OF_IR.get(match.group(1)) if match else None
    if sequence is None:
        return None
    if sequence == b")I":
        return Sets(JIS_X_0201, JIS_X_0201)
    return Sets(ASCII, G1_SEQUENCES.get(sequence))


def escape_length(value: bytes, start: int) -> int:
    """Length of the escape sequence at ``value[start]`` (an ESC), at least 1.

    ISO 2022 (ECMA-35 13.1): ESC, intermediate bytes 0x20-0x2F, one final byte 0x30-0x7E. A control
    sequence (ESC [ ..., ECMA-48 5.4: parameters 0x30-0x3F, intermediates, final 0x40-0x7E) is
    consumed whole too: terminal colour codes are escape remains as well.
    """
    end = start + 1
    if value[end : end + 1] == b"[":
        end += 1
        while end < len(value) and 0x30 <= value[end] <= 0x3F:
            end += 1
        while end < len(value) and 0x20 <= value[end] <= 0x2F:
            end += 1
        return end - start + (1 if end < len(value) and 0x40 <= value[end] <= 0x7E else 0)
    while end < len(value) and 0x20 <= value[end] <= 0x2F:
        end += 1
    return end - start + (1 if end < len(value) and 0x30 <= value[end] <= 0x7E else 0)


def strip_escapes(value: bytes) -> bytes:
    """``value`` without its escape sequences (for character sets without code extensions)."""
    parts = []
    position = 0
    while (found := value.find(b"\x1b", position)) >= 0:
        parts.append(value[position:found])
        position = found + escape_length(value, found)
    parts.append(value[position:])
    return b"".join(parts)


def decode(value: bytes, terms: Sequence[str], delimiters: bytes) -> str | None:
    """Decode ``value`` under the Specific Character Set ``terms``; None if they allow no ISO 2022.

    Parameters
    ----------
    value : bytes
        The raw value, possibly several values separated by backslashes.
    terms : sequence of str
        The values of (0008,0005) Specific Character Set, as written ('' for an empty value 1).
    delimiters : bytes
        The bytes at which both sets return to those of value 1 (PS3.5 6.1.2.5.3): CR, LF, TAB,
        FF, and for PN also '^' and '='; a backslash for multi-valued VRs.

    Returns
    -------
    str or None
        The text, every escape sequence consumed and bytes no set can decode as U+FFFD. None when
        value 1 is a stand-alone or unknown set (the caller strips escapes and decodes as usual).

    Notes
    -----
    Every escape sequence of PS3.3 Tables C.12-3/C.12-4 is honoured, declared or not: the sequence
    itself says what follows. Writers that designate a G1 set once and forget to repeat it after a
    '^' or '=' are common; a byte 0x80-0xFF with no G1 set in force is read with the first G1 set
    Specific Character Set declares (else as Latin-1, pydicom's default), never as mojibake of
    a set that was not declared.
    """
    first = initial_sets(terms[0] if terms else "")
    if first is None:
        return None
    fallback_g1 = _declared_g1(terms) or first.g1 or LATIN_1
    sets = first
    out: list[str] = []
    position = 0
    while position < len(value):
        byte = value[position]
        if byte == ESC:
            length = escape_length(value, position)
            sets = _designate(sets, value[position + 1 : position + length])
            position += length
        elif byte >= 0x80:
            position = _decode_char(value, position, sets.g1 or fallback_g1, out)
        elif sets.g0.width == 2 and 0x21 <= byte <= 0x7E:
            # In a two-byte G0 set '^', '=' and '\\' are halves of characters, not delimiters.
            position = _decode_char(value, position, sets.g0, out)
        else:
            if byte in delimiters:
                sets = first
            out.append(_decode_bytes(bytes([byte]), sets.g0 if sets.g0.width == 1 else ASCII))
            position += 1
    return "".join(out)


def _declared_g1(terms: Sequence[str]) -> CharacterSet | None:
    """The first G1 set that a code extension term (value 2 onwards) declares."""
    for term in terms[1:]:
        sets = initial_sets(term)
        if sets is not None and sets.g1 is not None:
            return sets.g1
    return None


def _designate(sets: Sets, sequence: bytes) -> Sets:
    """The sets after escape sequence ``sequence`` (without its ESC); unknown ones change nothing."""
    if sequence in G0_SEQUENCES:
        return Sets(G0_SEQUENCES[sequence], sets.g1)
    if sequence in G1_SEQUENCES:
        return Sets(sets.g0, G1_SEQUENCES[sequence])
    return sets


def _decode_char(value: bytes, position: int, charset: CharacterSet, out: list[str]) -> int:
    """Append the character at ``position`` in ``charset``; return the position after it.

    A character cut short (by the end, a control byte or a byte of the other half) is U+FFFD and
    only its first byte is consumed.
    """
    high = value[position] >= 0x80
    chunk = value[position : position + charset.width]
    whole = len(chunk) == charset.width and all((b >= 0xA0 if high else 0x21 <= b <= 0x7E) for b in chunk)
    if charset.width > 1 and not whole:
        out.append("\ufffd")
        return position + 1
    if not high and charset.width > 1:  # a G0 two-byte set, read in its EUC form
        chunk = bytes(b | 0x80 for b in chunk)
    out.append(_decode_bytes(charset.prefix + chunk, charset))
    return position + len(chunk)


def _decode_bytes(chunk: bytes, charset: CharacterSet) -> str:
    return chunk.decode(charset.codec, "replace")
