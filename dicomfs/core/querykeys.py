"""What a search may ask: the STUDY- and PATIENT-level keys of a query directory and their values.

A query directory's name (``PatientName=DOE^J*,StudyDate=20240101-20240131``) becomes the matching
keys of one STUDY-level C-FIND in the Study Root model (PS3.4 C.6.2.1.2: the patient's keys are
STUDY-level keys there). Every key must be one of :data:`KEYS`, and every value valid for the
key's VR (PS3.5 6.2) and the matching the VR allows (PS3.4 C.2.2.2): single values, wildcards
(``*`` ``?``, C.2.2.2.4) only for text VRs, ranges (C.2.2.2.5) only for DA and TM, a list of
UIDs (C.2.2.2.2, ``\\``-separated) only for UI. Anything else is :class:`BadQuery`, whose text
says what is wrong and what would be right. Pure: no DIMSE, no file names.
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Callable

#: Keyword -> VR of every key a search may match on (PS3.4 C.6.2.1.2, Table C.6-5: the Study
#: Root STUDY level, with the patient's keys). tests/test_view_units.py checks each VR against
#: pydicom's data dictionary.
KEYS: dict[str, str] = {
    "PatientName": "PN",
    "PatientID": "LO",
    "IssuerOfPatientID": "LO",
    "PatientBirthDate": "DA",
    "PatientSex": "CS",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "AccessionNumber": "SH",
    "StudyID": "SH",
    "StudyInstanceUID": "UI",
    "StudyDescription": "LO",
    "ReferringPhysicianName": "PN",
    "ModalitiesInStudy": "CS",
}

#: Longest value per VR in characters (PS3.5 Table 6.2-1; PN: each component group). Wildcards
#: (PS3.4 C.2.2.2.4) are allowed in these text VRs only: DA, TM and UI values are checked by form.
MAX_CHARS = {"PN": 64, "LO": 64, "SH": 16, "CS": 16, "UI": 64}

# PS3.5 9.1: a component's first digit is not 0 unless the component is "0" itself.
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_CS = re.compile(r"[A-Z0-9 _*?]+")
_DATE = re.compile(r"[0-9]{8}")
_TIME = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.[0-9]{1,6})?)?)?")
_EXAMPLE = "PatientName=DOE^J*,StudyDate=20240101-20240131,ModalitiesInStudy=CT"


class BadQuery(ValueError):
    """A query directory name that is no valid search; the text says why and what would do."""


def is_uid(text: str) -> bool:
    """True for a UID as PS3.5 9.1 writes it: digits in dot-separated parts, at most 64 chars."""
    return len(text) <= 64 and _UID.fullmatch(text) is not None


def parse_query(name: str) -> dict[str, str]:
    """The matching keys of a query directory name ``Key=value,Key=value``.

    Parameters
    ----------
    name : str
        One path component: keys joined by ``,``, each ``Keyword=value`` (the value may hold
        ``=`` and ``^``, as PN does; it cannot hold ``,``: use ``?`` for it).

    Returns
    -------
    dict[str, str]
        Keyword -> value, in the order given.

    Raises
    ------
    BadQuery
        An unknown or repeated key, a key without a value, or a value its VR does not allow.
    """
    keys: dict[str, str] = {}
    for part in name.split(","):
        keyword, equals, value = part.partition("=")
        if not equals:
            raise BadQuery(f"{part!r} is no Key=value pair (e.g. {_EXAMPLE})")
        if keyword not in KEYS:
            raise BadQuery(f"unknown key {keyword!r}{_suggestion(keyword)}; allowed: {', '.join(KEYS)}")
        if keyword in keys:
            raise BadQuery(f"{keyword} given twice")
        check_value(keyword, value)
        keys[keyword] = value
    if all(_matches_anything(value) for value in keys.values()):
        raise BadQuery(f"{name!r} would match every study; give a value to search for")
    return keys


def _matches_anything(value: str) -> bool:
    """A value of wildcards alone (``*``, ``?*``, ``*^*``, spaces: PS3.4 C.2.2.2.3 and 4) matches
    (nearly) every value: as a search of its own, it would list the whole archive."""
    return not value.strip(" *?^=")


def check_value(keyword: str, value: str) -> None:
    """Raise :class:`BadQuery` unless ``value`` is a matching value ``keyword``'s VR allows."""
    vr = KEYS[keyword]
    if not value.strip():
        raise BadQuery(f"{keyword}={value!r} has no value; give a value to search for")
    if _matches_anything(value):
        return  # universal matching of this key (PS3.4 C.2.2.2.3): fine beside another key
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise BadQuery(f"{keyword}: control characters are not allowed")
    if vr in ("DA", "TM"):
        _check_range(keyword, value, _date if vr == "DA" else _time)
        return
    if vr == "UI":
        if not all(is_uid(uid) for uid in value.split("\\")):
            raise BadQuery(f"{keyword}={value!r} is no UID (digits and dots, at most 64 characters)")
        return
    if "\\" in value:
        raise BadQuery(f"{keyword}: one value only ('\\' separates values; use * or ? instead)")
    # A PN holds up to three component groups (alphabetic, ideographic, phonetic), '='-separated.
    longest = max(len(group) for group in value.split("=")) if vr == "PN" else len(value)
    if longest > MAX_CHARS[vr] or (vr == "PN" and value.count("=") > 2):
        raise BadQuery(f"{keyword} ({vr}) holds at most {MAX_CHARS[vr]} characters, not {longest}")
    if vr == "CS" and not _CS.fullmatch(value):
        raise BadQuery(f"{keyword}={value!r}: a code string is upper case letters, digits, space, _")


def _check_range(keyword: str, value: str, parse: Callable[[str], str | None]) -> None:
    """A DA or TM value: one value, or a range ``a-b``, ``-b``, ``a-`` (PS3.4 C.2.2.2.5)."""
    low, dash, high = value.partition("-")
    first = parse(low) if low else None
    last = parse(high) if high else None
    what = "date YYYYMMDD" if parse is _date else "time HHMMSS (or HH, HHMM, HHMMSS.FFFFFF)"
    if (low and first is None) or (high and last is None) or (dash and "-" in high) or value == "-":
        raise BadQuery(f"{keyword}={value!r}: give a {what}, or a range of two (a-b, -b, a-)")
    if first is not None and last is not None and first > last:
        raise BadQuery(f"{keyword}={value!r}: the range ends before it begins")


def _date(text: str) -> str | None:
    """``text`` if it is a calendar date YYYYMMDD, else None."""
    if not _DATE.fullmatch(text):
        return None
    try:
        datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    return text


def _time(text: str) -> str | None:
    """``text`` padded to HHMMSS.FFFFFF (comparable as text) if it is a TM, else None."""
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    hour, minute, second = (int(part or 0) for part in match.groups())
    if hour > 23 or minute > 59 or second > 59:
        return None
    whole, _dot, fraction = text.partition(".")
    return whole.ljust(6, "0") + "." + fraction.ljust(6, "0")


def _suggestion(keyword: str) -> str:
    close = difflib.get_close_matches(keyword, KEYS, n=1, cutoff=0.6)
    folded = [known for known in KEYS if known.lower() == keyword.lower()]
    match = folded or close
    return f" (did you mean {match[0]}?)" if match else ""
