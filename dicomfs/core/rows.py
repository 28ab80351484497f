"""C-FIND matches as text rows, and the screening of rows a PACS should not have sent.

A match is decoded once (``decode.text_of``) into a :data:`Row`, then read many times. Screening
drops, and logs, rows of another level, without their unique key, duplicated, or naming another
parent than the one the listing is of (PS3.4 C.4.1.2.2: the unique keys of the levels above are
returned with every match, so they can be checked).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom.dataset import Dataset

from dicomfs.core.model import name_key
from dicomfs.dimse import decode

LOGGER = logging.getLogger(__name__)

#: A C-FIND match as text, by keyword: decoded once, then read many times.
Row = dict[str, str]


def identifier(level: str, **keys: str) -> Dataset:
    """A C-FIND identifier at ``level`` (PS3.4 C.4.1.1.3.1) with the given keys."""
    found = Dataset()
    found.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(found, keyword, value)
    return found


#: The Patient ID exactly as the PACS sent it (the text drops padding): what to ask for it with.
RAW_PATIENT_ID = "PatientID/raw"


def read_rows(matches: Sequence[Dataset], asked: Dataset) -> list[Row]:
    """The text of every key the query asked for (and the level), of every match.

    A Patient ID also keeps its value as sent (:data:`RAW_PATIENT_ID`): a PACS that stored
    ``" SP"`` matches a query for ``" SP"``, not for the ``"SP"`` the name shows.
    """
    keywords = ["QueryRetrieveLevel", *(elem.keyword for elem in asked if elem.keyword)]
    rows = []
    for match in matches:
        row = {keyword: decode.text_of(match, keyword) for keyword in keywords}
        if "PatientID" in row:
            row[RAW_PATIENT_ID] = _raw_text(match, "PatientID") or row["PatientID"]
        rows.append(row)
    return rows


def _raw_text(match: Dataset, keyword: str) -> str:
    """The value as sent, without its trailing padding only ('' when it is not plain ASCII)."""
    element = match.get_item(keyword)
    value = getattr(element, "value", None)
    if isinstance(value, bytes) and value.isascii() and b"\\" not in value and b"\x1b" not in value:
        return value.decode("ascii").rstrip(" \x00")
    if isinstance(value, str) and "\\" not in value:
        return value.rstrip(" \x00")
    return ""


def count(row: Row, keyword: str) -> int:
    """A NumberOf...Related... value of a C-FIND match; -1 when absent or not a number."""
    text = row.get(keyword, "").strip()
    return int(text) if text.isdigit() else -1


def unique_rows(
    rows: Sequence[Row], uid_keyword: str, level: str, required: bool = True, also: Sequence[str] = ()
) -> list[Row]:
    """Drop malformed C-FIND matches (no UID if ``required``, a duplicate, another level), saying so.

    A duplicate is a row with the same UID *and* the same values of the ``also`` keywords (the
    same Study Instance UID under two patients is two rows, not one).
    """
    seen: set[tuple[str, ...]] = set()
    kept = []
    for row in rows:
        uid = row.get(uid_keyword, "").strip()
        identity = (uid, *(_identity_text(row, keyword) for keyword in also))
        row_level = row.get("QueryRetrieveLevel", "").strip()
        if row_level and row_level != level:
            LOGGER.warning("skipping a C-FIND match at level %r in a %s listing", row_level, level)
        elif not uid and required:
            LOGGER.warning("skipping a C-FIND %s match without %s", level, uid_keyword)
        elif identity in seen:
            LOGGER.warning("skipping a duplicate C-FIND %s match for %s", level, uid)
        else:
            seen.add(identity)
            kept.append(row)
    return kept


def of_level(rows: Sequence[Row], level: str) -> list[Row]:
    """The rows at ``level`` (or that do not say): a row of another level is dropped, saying so."""
    kept = []
    for row in rows:
        row_level = row.get("QueryRetrieveLevel", "").strip()
        if row_level and row_level != level:
            LOGGER.warning("skipping a C-FIND match at level %r in a %s listing", row_level, level)
        else:
            kept.append(row)
    return kept


def _identity_text(row: Row, keyword: str) -> str:
    value = row.get(keyword, "")
    return name_key(value) if keyword == "PatientName" else value.strip()


def patient_of(row: Row) -> tuple[str, str, str]:
    """(Patient ID, Issuer of Patient ID, Patient Name) of a C-FIND row."""
    return (row.get("PatientID", ""), row.get("IssuerOfPatientID", ""), row.get("PatientName", ""))


def names_other_parent(row: Row, keyword: str, parent_uid: str) -> bool:
    """True when a C-FIND row carries ``keyword`` with a value other than its parent's."""
    value = row.get(keyword, "").strip()
    return bool(value) and value != parent_uid.strip()


def of_parent(rows: list[Row], keyword: str, parent_uid: str, where: str) -> list[Row]:
    """The rows that do not name another parent than ``parent_uid`` (one warning when some do)."""
    kept = [row for row in rows if not names_other_parent(row, keyword, parent_uid)]
    if len(kept) < len(rows):
        LOGGER.warning(
            "%s: the PACS answered %d rows of another %s; not listed", where, len(rows) - len(kept), keyword
        )
    return kept
