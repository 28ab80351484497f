"""C-FIND matches as text rows, and the screening of rows a PACS should not have sent.

A match is decoded once, as it arrives (``dicomfs.dimse.queries.RowReader``), into a :data:`Row`,
then read many times. Screening drops, and logs, rows of another level, without their unique key, duplicated,
or naming another parent than the one the listing is of (PS3.4 C.4.1.2.2: the unique keys of the
levels above are returned with every match, so they can be checked).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from dicomfs.core.model import name_key

LOGGER = logging.getLogger(__name__)

#: A C-FIND match as text, by keyword: decoded once, then read many times.
Row = dict[str, str]

#: The Patient ID exactly as the PACS sent it (the text drops padding): what to ask for it with.
RAW_PATIENT_ID = "PatientID/raw"


@dataclass(frozen=True)
class Matches:
    """The rows of a query that may have been capped by the PACS (``core.splitting``).

    Attributes
    ----------
    rows : list[Row]
        Every row found, in the order the parts were asked.
    missing : str
        ``""`` when the rows are the whole answer; else one line saying what is missing (and how
        to narrow the query), for a marker entry and the log.
    """

    rows: list[Row] = field(default_factory=list)
    missing: str = ""

    @property
    def complete(self) -> bool:
        """Whether :attr:`rows` is the whole answer."""
        return not self.missing


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
