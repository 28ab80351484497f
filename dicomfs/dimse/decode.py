"""C-FIND values -> text: the decoded value of one attribute of a pydicom dataset, never raising.

Every value comes from a PACS and is treated as hostile: bytes invalid for the declared Specific
Character Set (PS3.5 6.1.2), escape sequences under a stand-alone character set, undeclared UTF-8,
values pydicom cannot convert. Text comes out readable whatever came in; making it a safe file
name is :mod:`dicomfs.views.naming`'s job.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from dicomfs.dimse import iso2022

LOGGER = logging.getLogger(__name__)

# Text VRs whose raw bytes may carry characters of the Specific Character Set (PS3.5 6.1.2.3).
_TEXT_VRS = frozenset(
    ["AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"]
)
# Padding around a Specific Character Set term: SPACE and NUL (PS3.5 6.2), and any other whitespace.
_PADDING = " \t\r\n\x0b\x0c\x00"
# Delimiters that return ISO 2022 text to the character sets of value 1 (PS3.5 6.1.2.5.3).
_TEXT_DELIMITERS = b"\r\n\t\x0c"
_PN_DELIMITERS = _TEXT_DELIMITERS + b"^="
# An escape sequence (ECMA-35 13.1) or control sequence (ECMA-48 5.4) left in decoded text.
_ESCAPE_TEXT = re.compile(r"\x1b(?:\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?|[\x20-\x2f]*[\x30-\x7e]?)")
_SINGLE_VALUED_VRS = frozenset(["LT", "ST", "UT", "UR"])


def text_of(ds: pydicom.Dataset, keyword: str) -> str:
    """Return the decoded text of attribute `keyword`, '' when absent or empty; never raises.

    Decoding goes through pydicom's Specific Character Set machinery (ISO 2022 code extensions,
    GB18030, Latin-1, UTF-8 ...), which substitutes U+FFFD for invalid bytes.  If that raises
    anyway (e.g. ``reading_validation_mode`` is RAISE) we decode the raw bytes ourselves.
    Values with escape sequences are decoded by ``dicomfs.dimse.iso2022`` instead: pydicom 3.0.2 leaves
    ISO 2022 IR 58's escapes in the text.  No escape sequence is ever left in the result.
    Non-ASCII bytes with no declared charset are read as UTF-8 when valid (a common PACS habit),
    else Latin-1.  Multiple values are joined with a backslash.

    Parameters
    ----------
    ds : pydicom.Dataset
        A C-FIND response identifier or a received data set, as pydicom read it (raw elements
        included); only read.
    keyword : str
        The attribute's DICOM keyword ("PatientName").

    Returns
    -------
    str
        The value as text (padding removed), '' when the attribute is absent, empty, a sequence,
        or of an unknown keyword.
    """
    try:
        tag = _tag(keyword)
        elem = ds.get_item(tag)
    except Exception:  # unknown keyword, odd dataset: nothing to name by
        return ""
    if elem is None:
        return ""
    if isinstance(elem, RawDataElement):
        plain = _plain_ascii(elem)
        if plain is not None:
            return plain
        escaped = _escaped_text(ds, elem)
        if escaped is not None:
            return escaped
        undeclared = _undeclared_utf8(ds, elem)
        if undeclared is not None:
            return undeclared
    try:
        # Already converted elements (pydicom's result) may still hold escapes: drop them.
        return _ESCAPE_TEXT.sub("", _value_text(ds[tag].value))
    except Exception as exc:
        LOGGER.debug("decoding %s failed, falling back to raw bytes: %s", keyword, exc)
    raw = elem.value if isinstance(elem, RawDataElement) else None
    if isinstance(raw, bytes):
        return _decode_fallback(iso2022.strip_escapes(raw), _declared_charsets(ds)).strip(" \x00")
    return ""


@functools.lru_cache(maxsize=256)
def _tag(keyword: str) -> BaseTag:
    return Tag(keyword)


def _text_vr(elem: RawDataElement) -> str | None:
    """The element's VR if it is a text VR (one the Specific Character Set applies to), else None.

    Implicit VR transfer syntaxes carry no VR: the data dictionary's is taken (PS3.5 7.1.3).
    """
    try:
        vr = elem.VR or dictionary_VR(elem.tag)
    except Exception:  # a private or unknown tag: not text we can name by
        return None
    return vr if vr in _TEXT_VRS else None


def _plain_ascii(elem: RawDataElement) -> str | None:
    """Fast path for the common case: 7-bit text without ISO 2022 escapes reads the same in every
    character set, so it needs none of pydicom's conversion (a listing of 2,000 patients reads
    some 30,000 of these)."""
    value = elem.value
    if not isinstance(value, bytes) or not value.isascii() or b"\x1b" in value:
        return None
    vr = _text_vr(elem)
    if vr is None:
        return None
    text = value.decode("ascii")
    return _split_values(text) if vr not in _SINGLE_VALUED_VRS else text.rstrip(" \x00")


def _escaped_text(ds: pydicom.Dataset, elem: RawDataElement) -> str | None:
    """Text of a raw text element holding escape sequences (ESC, 0x1B), decoded by us.

    pydicom 3.0.2 passes ISO 2022 IR 58 fragments to Python's ``iso_ir_58`` (GB2312), which keeps
    the escape sequence; see ``dicomfs.dimse.iso2022``.  Under a stand-alone or undeclared character
    set, escape sequences have no meaning (PS3.3 Table C.12-5) and are dropped before decoding.
    """
    value = elem.value
    if not isinstance(value, bytes) or b"\x1b" not in value:
        return None
    vr = _text_vr(elem)
    if vr is None:
        return None
    single = vr in _SINGLE_VALUED_VRS
    delimiters = _PN_DELIMITERS if vr == "PN" else _TEXT_DELIMITERS
    terms = _charset_terms(ds)
    # With no Specific Character Set at all, undeclared UTF-8 is as likely as ISO 2022 IR 6:
    # the escapes go and the rest is read like any undeclared text (UTF-8 when valid, else Latin-1).
    text = iso2022.decode(value, terms, delimiters if single else delimiters + b"\\") if terms else None
    if text is None:
        text = _decode_fallback(iso2022.strip_escapes(value), _declared_charsets(ds))
    return text.rstrip(" \x00") if single else _split_values(text)


def _split_values(text: str) -> str:
    """Each backslash-separated value of ``text`` stripped of padding (space, NUL), joined again."""
    return "\\".join(part.strip(" \x00") for part in text.split("\\"))


def _value_text(value: Any) -> str:
    """Flatten a converted element value to text (PersonName -> str, MultiValue -> joined)."""
    if value is None or isinstance(value, (pydicom.Sequence, pydicom.Dataset)):
        return ""  # nested items have no single text (and a Sequence is also a list)
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(_value_text(v) for v in value)
    if isinstance(value, bytes):
        return _decode_fallback(value, []).strip(" \x00")
    return str(value)


def _charset_terms(ds: pydicom.Dataset) -> list[str]:
    """The Specific Character Set values as written ('' for an empty value 1); [] when none."""
    try:
        elem = ds.get_item(Tag("SpecificCharacterSet"))
        if elem is None:
            return []
        value = elem.value
        if isinstance(value, bytes):
            terms = value.decode("ascii", "replace").split("\\")
        elif isinstance(value, str):
            terms = [value]
        else:
            terms = [str(v) for v in value or []]
        terms = [t.strip(_PADDING) for t in terms]
        return terms if any(terms) else []
    except Exception:  # a hostile charset value is the same as none
        return []


def _declared_charsets(ds: pydicom.Dataset) -> list[str]:
    """The Specific Character Set values as Python codec names; [] when none or unreadable."""
    terms = _charset_terms(ds)
    if not terms:
        return []
    try:
        return list(pydicom.charset.convert_encodings(terms))
    except Exception:  # a hostile charset value is the same as none
        return []


def _undeclared_utf8(ds: pydicom.Dataset, elem: RawDataElement) -> str | None:
    """UTF-8 text of a raw text element when no charset is declared and the bytes are UTF-8.

    PS3.5 says such bytes are ISO-IR 6 (ASCII) and pydicom falls back to Latin-1; but archives
    routinely send undeclared UTF-8, and Latin-1 would turn it into mojibake.
    """
    value = elem.value
    if not isinstance(value, bytes) or value.isascii() or _declared_charsets(ds):
        return None
    vr = _text_vr(elem)
    if vr is None:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Single-valued VRs: a backslash is just a character.
    return text.strip(" \x00") if vr in _SINGLE_VALUED_VRS else _split_values(text)


def _decode_fallback(value: bytes, encodings: Sequence[str]) -> str:
    """Best-effort decode: each declared codec strictly, then UTF-8, then Latin-1 (total)."""
    for encoding in [*encodings, "utf-8"]:
        try:
            return value.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return value.decode("latin-1")
