"""A capped STUDY-level answer made whole: the query split by StudyDate, then StudyTime ranges.

Many PACSes cap a C-FIND answer (Orthanc's ``LimitFindResults``, dcm4chee's
``QueryMaxNumberOfResults``, others at 500 or 1,000 rows); ``dimse.client.PacsClient.find`` tells a
capped answer from a whole one and raises :class:`~dicomfs.core.errors.AnswerCapped`. Here the
query is asked again in parts that each stay under the cap: the StudyDate range halved until every
part answers whole, and a single day split by StudyTime ranges (halves of the day, down to one
second). The parts are disjoint, so their rows add up to the answer.

What this relies on: range matching of DA and TM (PS3.4 C.2.2.2.5): ``A-B`` matches the values
from A to B inclusive, ``A-`` and ``-B`` are open. Its limits, said in the marker where they strike:

- a study without StudyDate matches no date range, and one without StudyTime no time range. A
  date range has no way to ask for "no date" (a zero-length key is universal matching, PS3.4
  C.2.2.2.3), so such studies are found only where the first, capped answer happened to hold
  them (those rows are kept) and may otherwise be missing: when the query had no date of its
  own, :attr:`Matches.missing` never promises them;
- a single second holding more studies than the cap cannot be split further (by these keys):
  its part keeps the rows that came and :attr:`Matches.missing` says so;
- at most ``max_queries`` C-FINDs per answer (:data:`MAX_SPLIT_QUERIES`), so a huge archive
  behind a small cap costs a bounded load; past it the rest is reported missing.

Pure: the C-FIND is a callable (``dimse.queries`` passes its STUDY-level query).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dicomfs.core.errors import AnswerCapped
from dicomfs.core.rows import Matches, Row

LOGGER = logging.getLogger(__name__)

#: A STUDY-level C-FIND with these matching keys (keyword -> value, PS3.4 C.2.2.2), as text rows;
#: raises ``AnswerCapped`` (its ``partial``: the rows that came) when the PACS caps the answer.
FindStudies = Callable[[Mapping[str, str]], list[Row]]

#: C-FINDs one answer may cost at most (the first, capped one included). A cap of 500 over 20,000
#: studies spread over years takes about 2 x 40 parts; 256 leaves room for uneven archives
#: while bounding what one `ls` can ask of a shared PACS.
MAX_SPLIT_QUERIES = 256

#: Bounds of an open date range: no study is dated before 1900; DA's largest value above.
FIRST_DAY = datetime.date(1900, 1, 1)
LAST_DAY = datetime.date(9999, 12, 31)

#: The parts named in the one-line ``missing`` text at most.
MAX_NAMED_PARTS = 3

_LAST_SECOND = 24 * 3600 - 1


def _day(text: str) -> datetime.date | None:
    try:
        return datetime.datetime.strptime(text.strip(), "%Y%m%d").date()
    except ValueError:
        return None


def date_bounds(value: str) -> tuple[datetime.date, datetime.date] | None:
    """The inclusive days a StudyDate matching value covers, or None when it is no plain range.

    ``""`` (universal) and open ends cover :data:`FIRST_DAY` to :data:`LAST_DAY`; a single
    date covers one day; lists, wildcards and DT-style values give None (not split).
    """
    value = value.strip()
    if not value:
        return FIRST_DAY, LAST_DAY
    low, dash, high = value.partition("-")
    if not dash:
        day = _day(value)
        return (day, day) if day else None
    first = _day(low) if low.strip() else FIRST_DAY
    last = _day(high) if high.strip() else LAST_DAY
    if first is None or last is None or first > last:
        return None
    return first, last


def date_text(first: datetime.date, last: datetime.date) -> str:
    """A StudyDate matching value for ``first`` to ``last`` inclusive (one date when equal)."""
    if first == last:
        return first.strftime("%Y%m%d")
    return f"{first:%Y%m%d}-{last:%Y%m%d}"


def time_text(first: int, last: int) -> str:
    """A StudyTime range for seconds ``first`` to ``last`` of the day, inclusive: the upper
    bound carries ``.999999`` so that fractions of its last second match (PS3.5 TM)."""

    def hhmmss(second: int) -> str:
        return f"{second // 3600:02d}{second // 60 % 60:02d}{second % 60:02d}"

    return f"{hhmmss(first)}-{hhmmss(last)}.999999"


def _identity(row: Row) -> tuple[str, str]:
    return row.get("StudyInstanceUID", "").strip(), row.get("PatientID", "").strip()


@dataclass
class _Split:
    """One answer being made whole: the rows so far and the parts that stayed capped."""

    find: FindStudies
    keys: Mapping[str, str]
    max_queries: int
    queries: int = 0
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    capped: list[str] = field(default_factory=list)
    gave_up: bool = False

    def ask(self, keys: Mapping[str, str]) -> list[Row] | AnswerCapped | None:
        """One part: its rows, its AnswerCapped, or None when the query budget is spent."""
        if self.queries >= self.max_queries:
            self.gave_up = True
            return None
        self.queries += 1
        try:
            return self.find({**self.keys, **keys})
        except AnswerCapped as exc:
            return exc

    def keep(self, rows: list[Row]) -> None:
        for row in rows:
            self.rows.setdefault(_identity(row), row)

    def dates(self, first: datetime.date, last: datetime.date, capped: AnswerCapped) -> None:
        """Every study of ``first``..``last`` (whose own answer was ``capped``), depth first."""
        stack = [(first, last, capped)]
        while stack:
            low, high, exc = stack.pop()
            if low == high:
                self.day(low, exc)
                continue
            middle = low + (high - low) // 2
            halves = [(low, middle), (middle + datetime.timedelta(days=1), high)]
            answers = []
            for part_low, part_high in halves:
                got = self.ask({"StudyDate": date_text(part_low, part_high)})
                if got is None:
                    for *_bounds, waiting in [*stack, (low, high, exc)]:
                        self.keep(waiting.partial)
                    return
                answers.append((part_low, part_high, got))
            for part_low, part_high, got in reversed(answers):  # the earlier half is popped first
                if isinstance(got, AnswerCapped):
                    stack.append((part_low, part_high, got))
                else:
                    self.keep(got)

    def day(self, day: datetime.date, capped: AnswerCapped) -> None:
        """Every study of one ``day`` (its own answer ``capped``), by StudyTime ranges."""
        if "StudyTime" in self.keys and self.keys["StudyTime"].strip():
            self._stays_capped(f"{day:%Y-%m-%d} ({self.keys['StudyTime']})", capped)
            return
        found: set[tuple[str, str]] = set()
        stack = [(0, _LAST_SECOND, capped)]
        while stack:
            low, high, exc = stack.pop()
            if low == high:
                self._stays_capped(f"{day:%Y-%m-%d} {time_text(low, low)[:6]}", exc)
                found.update(_identity(row) for row in exc.partial)
                continue
            middle = (low + high) // 2
            answers = []
            for part in ((low, middle), (middle + 1, high)):
                got = self.ask({"StudyDate": date_text(day, day), "StudyTime": time_text(*part)})
                if got is None:
                    for *_bounds, waiting in [*stack, (low, high, exc), (0, 0, capped)]:
                        self.keep(waiting.partial)
                    return
                answers.append((part, got))
            for (part_low, part_high), got in reversed(answers):
                if isinstance(got, AnswerCapped):
                    stack.append((part_low, part_high, got))
                else:
                    self.keep(got)
                    found.update(_identity(row) for row in got)
        # Rows of the day's capped answer that no time range found have no (usable) StudyTime:
        # kept, and the day is reported, since more like them may exist.
        timeless = [row for row in capped.partial if _identity(row) not in found]
        if timeless:
            self.keep(timeless)
            self.capped.append(f"{day:%Y-%m-%d} (studies without StudyTime)")

    def _stays_capped(self, part: str, exc: AnswerCapped) -> None:
        self.keep(exc.partial)
        self.capped.append(part)

    def missing(self) -> str:
        """The one line for :attr:`Matches.missing` ('' when the answer is whole)."""
        if not self.capped and not self.gave_up:
            return ""
        named = ", ".join(self.capped[:MAX_NAMED_PARTS])
        more = len(self.capped) - MAX_NAMED_PARTS
        parts = f"{named} and {more} more" if more > 0 else named
        words = []
        if self.capped:
            words.append(f"the PACS capped {len(self.capped)} part(s) that cannot be split further ({parts})")
        if self.gave_up:
            words.append(f"splitting stopped after {self.queries} C-FINDs")
        return (
            "; ".join(words)
            + f": {len(self.rows)} studies listed, more exist; narrow the query (a day, a Patient ID,"
            " a modality)"
        )


def complete_studies(
    find: FindStudies, keys: Mapping[str, str], *, max_queries: int = MAX_SPLIT_QUERIES, where: str = ""
) -> Matches:
    """Every study matching ``keys``, asking in parts below the PACS's cap where it caps.

    Parameters
    ----------
    find : FindStudies
        One STUDY-level C-FIND; raises ``AnswerCapped`` (with the rows that came) when capped.
    keys : Mapping[str, str]
        The matching keys (keyword -> value, PS3.4 C.2.2.2); StudyDate, when given, must be a
        single date or a range to be split (lists and wildcards are not split).
    max_queries : int
        The most C-FINDs this answer may cost (the first included).
    where : str
        Names the listing in the one WARNING logged when the answer stays incomplete.

    Returns
    -------
    Matches
        The rows; ``missing`` says what could not be listed (``""`` when nothing).

    Raises
    ------
    PacsError
        Any failure other than a cap (the PACS unreachable, a refusal of another kind).
    """
    try:
        return Matches(find(keys))
    except AnswerCapped as exc:
        capped = exc
    split = _Split(find, keys, max_queries, queries=1)
    bounds = date_bounds(keys.get("StudyDate", ""))
    if bounds is None:
        split._stays_capped(f"StudyDate {keys.get('StudyDate', '')!r}", capped)
    else:
        split.dates(bounds[0], bounds[1], capped)
        # Undated studies match no date range: those the capped answer held are kept.
        split.keep([row for row in capped.partial if not row.get("StudyDate", "").strip()])
    matches = Matches(list(split.rows.values()), split.missing())
    if matches.missing:
        LOGGER.warning("%s: %s", where or "a study query", matches.missing)
    else:
        LOGGER.info(
            "%s: the PACS capped the answer; %d studies listed in %d C-FINDs",
            where or "a study query",
            len(matches.rows),
            split.queries,
        )
    return matches
