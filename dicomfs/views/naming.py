"""Pure naming layer: decoded DICOM attribute text -> safe, unique, stable path components.

Every value here comes from a PACS and is treated as hostile: it may contain '/', NUL, control
characters, bidi overrides, or be kilobytes long. Nothing in this module raises on bad data; it
degrades to something readable instead. Decoding the values from the PACS's datasets (character
sets, escape sequences) happens before, in :mod:`dicomfs.dimse.decode`; this module never sees
pydicom.
"""

from __future__ import annotations

import calendar
import datetime
import decimal
import hashlib
import logging
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence

LOGGER = logging.getLogger(__name__)

#: NAME_MAX of Linux file systems (ext4, xfs, btrfs): a component is at most 255 bytes.
MAX_NAME_BYTES = 255

# Room reserved for the identifying suffix of composite names ("(PID)", "(ACC)"), so a 1,000-byte
# description cannot push the identifier out of the name. DICOM LO is 64 characters anyway.
_ID_PART_BYTES = 96
# The patient's half of a patient-and-study name (patient_study_dir_name); the study gets the rest.
_HALF = 126
_DCM = ".dcm"
_NO_NAME = "(no name)"
_NO_DATE = "no date"
_NO_SERIES = "(unnamed series)"
_NO_UID = "(no uid)"
_WHITESPACE_RUN = re.compile(r"\s+")
# Printable ASCII without '/', single spaces only between other characters: what every pass of
# `sanitize` leaves as it is (NFC changes no ASCII). Checked whole before the per-character passes.
_SAFE_ASCII = re.compile(r"[!-.0-~]+(?: [!-.0-~]+)*")
# A decimal number as DS writes it (PS3.5 Table 6.2-1); IS values like "3.0" come from real
# modalities. Longer text is not a sort key but garbage (and Decimal of it is slow).
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_DECIMAL_MAX_CHARS = 32
# Padding around numbers, dates and times: SPACE and NUL (PS3.5 6.2), and any other whitespace.
_PADDING = " \t\r\n\x0b\x0c\x00"
# Integers of more digits are not sort keys but garbage.
_INTEGER_LIMIT = 10**12
# DA 'YYYYMMDD' (PS3.5 Table 6.2-1), and the 'YYYY.MM.DD' of ACR-NEMA and 'YYYY-MM-DD' of ISO 8601
# that some archives send instead.
_DICOM_DATE = re.compile(r"([0-9]{4})([.-]?)([0-9]{2})\2([0-9]{2})")
# TM 'HHMMSS.FFFFFF', any leading part of it, or ACR-NEMA's 'HH:MM:SS'.
_DICOM_TIME = re.compile(r"([0-9]{2})(?::?([0-9]{2})(?::?([0-9]{2}))?)?(?:\.[0-9]*)?")
# What a study without a usable date is dated: the epoch, 1970-01-01 00:00:00 UTC.
UNKNOWN_TIME = 0.0
# Suffix lengths (hex digits of SHA-256 of the uid) tried in turn while names still collide.
_HASH_LENGTHS = (6, 8, 12, 16, 24, 32, 64)

# --------------------------------------------------------------------------- sanitizing


def sanitize(text: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Make `text` one legal, harmless path component of at most `max_bytes` UTF-8 bytes.

    Removes '/', NUL, C0/C1/DEL controls, and format characters (bidi overrides, isolates, zero
    width joiners: category Cf) that could make a name display as something it is not; collapses
    whitespace; NFC-normalizes; never returns '', '.', '..' or a hidden (dot-leading) name.
    The result is a fixed point: sanitize(sanitize(x)) == sanitize(x).
    """
    if max_bytes < 1:  # '_' must fit
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    if len(text) <= max_bytes and _SAFE_ASCII.fullmatch(text) and not text.startswith("."):
        return text  # already a fixed point: nothing below would change it (most names)
    result = text
    # Each pass can expose work for the next (dropping a Cf mark can make a composable pair);
    # three passes reach the fixed point for all input seen in property tests.
    for _ in range(4):
        cleaned = _clean_once(result, max_bytes)
        if cleaned == result:
            break
        result = cleaned
    return result or "_"


def _clean_once(text: str, max_bytes: int) -> str:
    """One pass of `sanitize`; may return '' (the caller substitutes '_')."""
    text = unicodedata.normalize("NFC", "".join(_clean_char(c) for c in text))
    text = _WHITESPACE_RUN.sub(" ", text).strip()
    if text.startswith("."):  # hidden files, '.', '..', and desktop probes like .Trash
        text = "_" + text[1:]
    return _truncate_utf8(text, max_bytes).rstrip()


def _clean_char(char: str) -> str:
    """Map one character to its safe replacement ('' drops it)."""
    if char == "/":
        return "_"
    category = unicodedata.category(char)
    if category == "Cc":  # C0, DEL, C1 (incl. NUL): become whitespace, then collapse
        return " "
    if category == "Cf":  # bidi overrides/isolates, ZWJ, soft hyphen, BOM: invisible
        return ""
    if category == "Cs":  # lone surrogates cannot be encoded as UTF-8
        return "\ufffd"
    return char


def _truncate_utf8(text: str, max_bytes: int) -> str:
    """Longest prefix of `text` within `max_bytes` bytes of UTF-8, cut between characters.

    Also keeps the prefix NFC: cutting before a combining mark can leave a decomposed tail.
    """
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    prefix = encoded[:max_bytes].decode("utf-8", "ignore")  # drops a split trailing character
    while prefix and not unicodedata.is_normalized("NFC", prefix):
        prefix = prefix[:-1]
    return prefix


# --------------------------------------------------------------------------- names


def patient_dir_name(patient_name: str, patient_id: str) -> str:
    """'DOE^JANE (PID0001)': the ID disambiguates namesakes and survives truncation."""
    name = _part(patient_name.rstrip("^= "), MAX_NAME_BYTES)
    return _with_id(name or _NO_NAME, patient_id)


def study_dir_name(study_date: str, description: str, accession: str) -> str:
    """'2024-03-01 CT CHEST (ACC123)': the date first so that `ls` lists studies in order."""
    date = _format_date(study_date) or _NO_DATE
    head = " ".join(p for p in (date, _part(description, MAX_NAME_BYTES)) if p)
    return _with_id(head, accession)


def patient_study_dir_name(
    patient_name: str, patient_id: str, study_date: str, description: str, accession: str
) -> str:
    """'DOE^JANE (PID0001) - 2024-03-01 CT CHEST (ACC123)': whose study, then its usual name.

    For directories that hold many patients' studies (a day, a search): the patient first, so
    ``ls`` groups a patient's studies; each half keeps its identifier if it must be shortened.
    """
    patient = _with_id(_part(patient_name.rstrip("^= "), MAX_NAME_BYTES) or _NO_NAME, patient_id, _HALF)
    date = _format_date(study_date) or _NO_DATE
    head = " ".join(p for p in (date, _part(description, MAX_NAME_BYTES)) if p)
    return sanitize(f"{patient} - {_with_id(head, accession, MAX_NAME_BYTES - _HALF - 3)}")


def series_dir_name(series_number: str, modality: str, description: str) -> str:
    """'003 CT Lung 1.0mm': the number zero-padded so `ls` sorts series numerically."""
    number = _padded_int(series_number, 3) or _part(series_number, 32)
    parts = [number, _part(modality, 32), _part(description, MAX_NAME_BYTES)]
    name = " ".join(p for p in parts if p)
    return sanitize(name) if name else _NO_SERIES


def instance_file_name(instance_number: str, sop_instance_uid: str) -> str:
    """'0001.dcm' for integer instance numbers (sorted like the acquisition), else '<uid>.dcm'."""
    stem = _padded_int(instance_number, 4) or _part(sop_instance_uid, MAX_NAME_BYTES - len(_DCM))
    return sanitize((stem or _NO_UID) + _DCM)


def _part(text: str, max_bytes: int) -> str:
    """Sanitized piece of a composite name; '' (not '_') when there is nothing to show."""
    cleaned = sanitize(text, max_bytes)
    return "" if cleaned == "_" and text.strip() != "_" else cleaned


def _with_id(head: str, identifier: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """'<head> (<identifier>)' within ``max_bytes``, truncating the head before the identifier."""
    ident = _part(identifier, _ID_PART_BYTES)
    if not ident:
        return sanitize(head, max_bytes)
    tail = f" ({ident})"
    room = max_bytes - len(tail.encode("utf-8"))
    return sanitize(_truncate_utf8(head, room).rstrip() + tail, max_bytes)


def _padded_int(text: str, width: int) -> str:
    """Zero-padded integer ('3' -> '003'), or '' when `text` is not a (sane) integer."""
    number = integer_value(text)
    return "" if number is None else f"{number:0{width}d}"


def integer_value(text: str) -> int | None:
    """The integer an IS (or DS) value denotes, or None when it is not an integral number.

    IS is an optionally signed integer (PS3.5 Table 6.2-1), but modalities also write "3.0",
    " +2.0 " or "1e1": any decimal number of an integral value is accepted, padding and sign
    included.  "1.5", "abc", "1e400" and integers of more than 12 digits are not sort keys
    but garbage: None.
    """
    stripped = text.strip(_PADDING)
    if len(stripped) > _DECIMAL_MAX_CHARS or not _DECIMAL.fullmatch(stripped):
        return None
    number = decimal.Decimal(stripped)  # the regex admits only what Decimal reads exactly
    if abs(number) >= _INTEGER_LIMIT or number != number.to_integral_value():
        return None
    return int(number)


def _parse_date(text: str) -> datetime.date | None:
    """The date of DA 'YYYYMMDD', 'YYYY.MM.DD' or 'YYYY-MM-DD' (padding ignored); None if none."""
    match = _DICOM_DATE.fullmatch(text.strip(_PADDING))
    if not match:
        return None
    year, _separator, month, day = match.groups()
    try:
        return datetime.date(int(year), int(month), int(day))
    except ValueError:  # '20190229', '20150001'
        return None


def _parse_clock(text: str) -> datetime.time:
    """The time of day of TM 'HHMMSS.FFFFFF' (or a leading part, or 'HH:MM:SS'); midnight if none.

    Fractions of a second are dropped: file times in whole seconds compare equal everywhere.
    """
    match = _DICOM_TIME.fullmatch(text.strip(_PADDING))
    if not match:
        return datetime.time()
    hour, minute, second = (int(part or 0) for part in match.groups())
    try:
        return datetime.time(hour, minute, second)
    except ValueError:  # '2561', or the leap second '235960'
        return datetime.time()


def study_time(date: str, clock: str = "") -> float:
    """A study's DA (+ TM) as seconds since the epoch, read as UTC; ``UNKNOWN_TIME`` if no date.

    The value is what dicomfs shows as the modification time of the study's directory and of
    everything below it.  DICOM times carry no zone (PS3.5 6.2); reading them as UTC makes the
    same study show the same time on every machine.  An unusable date ('20190229', '201500AA',
    '') gives the epoch, 1970-01-01 00:00:00 UTC: fixed, so a remount shows the same times and
    ``rsync -a`` sees nothing changed, and plainly not a real study date.  An unusable time with
    a good date gives midnight of that date.  Never raises.

    Parameters
    ----------
    date : str
        StudyDate (DA), also accepted as 'YYYY.MM.DD' or 'YYYY-MM-DD'.
    clock : str
        StudyTime (TM), possibly empty.

    Returns
    -------
    float
        Seconds since 1970-01-01 00:00:00 UTC (negative before it).
    """
    day = _parse_date(date)
    if day is None:
        return UNKNOWN_TIME
    moment = datetime.datetime.combine(day, _parse_clock(clock))
    return float(calendar.timegm(moment.timetuple()))


def _format_date(text: str) -> str:
    """DICOM DA '20240301' (or '2024.03.01', '2024-03-01') -> '2024-03-01'; other text sanitized."""
    day = _parse_date(text)
    if day is not None:
        return day.isoformat()
    return _part(text.strip(), 64)  # '20241399': keep it visible rather than invent a date


# --------------------------------------------------------------------------- uniqueness


def make_unique(candidates: Sequence[tuple[str, str]]) -> list[str]:
    """Return the names of `candidates` ((name, uid) pairs), made unique, in the same order.

    Every member of a colliding group gets a suffix derived from its uid (' [1a2b3c]', before
    '.dcm'), so the result depends only on the set of pairs, never on the order a PACS returns
    them: names stay stable across listings and remounts.  Names equal after case folding collide
    too, so a copy onto a case-insensitive disk does not lose files.
    """
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i], i))
    pairs = [candidates[i] for i in order]
    levels = [0] * len(pairs)  # 0: bare name; n: suffix of _HASH_LENGTHS[n - 1] hex digits
    names = [name for name, _ in pairs]
    for _ in range(len(_HASH_LENGTHS) + 1):
        names = [_suffixed(name, uid, level) for (name, uid), level in zip(pairs, levels, strict=True)]
        clashing = _clashing(names)
        if not clashing:
            break
        for i in clashing:
            levels[i] = min(levels[i] + 1, len(_HASH_LENGTHS))
    else:
        names = _number_remaining(names)
    result = [""] * len(candidates)
    for sorted_pos, original in enumerate(order):
        result[original] = names[sorted_pos]
    return result


def _collision_key(name: str) -> str:
    """Key under which two names are the same file on a case-insensitive disk (Unicode D145)."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def _clashing(names: Sequence[str]) -> list[int]:
    """Indexes of names whose collision key is shared with another name."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        groups[_collision_key(name)].append(i)
    return [i for members in groups.values() if len(members) > 1 for i in members]


def _suffixed(name: str, uid: str, level: int) -> str:
    """`name` with the uid-derived suffix of `level`, kept within MAX_NAME_BYTES."""
    if level == 0:
        return name
    digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()
    tag = f"[{digest[: _HASH_LENGTHS[level - 1]]}]"
    stem, ext = (name[: -len(_DCM)], _DCM) if name.endswith(_DCM) else (name, "")
    room = MAX_NAME_BYTES - len(tag.encode("utf-8")) - len(ext) - 1
    stem = _truncate_utf8(stem, room).rstrip()
    return f"{stem} {tag}{ext}" if stem else f"{tag}{ext}"


def _number_remaining(names: Sequence[str]) -> list[str]:
    """Last resort (same uid twice): number the clashing names in sorted order."""
    result = list(names)
    clashing = set(_clashing(names))
    used = {_collision_key(n) for i, n in enumerate(names) if i not in clashing}
    for i in sorted(clashing):
        counter = 1
        candidate = names[i]
        while _collision_key(candidate) in used:
            counter += 1
            candidate = _numbered(names[i], counter)
        used.add(_collision_key(candidate))
        result[i] = candidate
    return result


def _numbered(name: str, counter: int) -> str:
    """`name` with ' (n)' before any '.dcm', kept within MAX_NAME_BYTES."""
    stem, ext = (name[: -len(_DCM)], _DCM) if name.endswith(_DCM) else (name, "")
    tag = f" ({counter})"
    return _truncate_utf8(stem, MAX_NAME_BYTES - len(tag) - len(ext)).rstrip() + tag + ext
