"""A capped STUDY-level answer made whole: the query split by StudyDate, then StudyTime ranges.

Many PACSes cap a C-FIND answer (Orthanc's ``LimitFindResults``, dcm4chee's
``QueryMaxNumberOfResults``, others at 500 or 1,000 rows); ``dimse.client.PacsClient.find`` tells a
capped answer from a whole one and raises :class:`~dicomfs.core.errors.AnswerCapped`. Here the
query is asked again in parts that each stay under the cap: the StudyDate range halved until every
part answers whole, and a single day split by StudyTime ranges (halves of the day, down to one
minute). The parts are disjoint, so their rows add up to the answer.

What this relies on: range matching of DA and TM (PS3.4 C.2.2.2.5): ``A-B`` matches the values
from A to B inclusive, ``A-`` and ``-B`` are open. Its limits, said in the marker where they strike:

- a study without StudyDate matches no date range, and one without StudyTime no time range. A
  date range has no way to ask for "no date" (a zero-length key is universal matching, PS3.4
  C.2.2.2.3), so such studies are found only where the first, capped answer happened to hold
  them (those rows are kept) and may otherwise be missing: when the query had no date of its
  own, :attr:`Matches.missing` never promises them;
- a single minute holding more studies than the cap cannot be split further (by these keys):
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

#: The lower bound of an open date range: no study is dated before 1900. The upper bound is a
#: year after today (:data:`FUTURE_DAYS`); later dates are asked in one open part of their own.
FIRST_DAY = datetime.date(1900, 1, 1)
FUTURE_DAYS = 366

#: The smallest StudyTime range asked: one minute (a day halves into it in 11 steps; seconds
#: would take 17, and a minute holding more studies than a cap is as unsplittable).
MINUTE = 60

#: Answer sizes PACSes are known to cut at while reporting plain success (vendor defaults of 500
#: and 1,000 rows, and their round neighbours). An answer of exactly one of these sizes is asked
#: again in parts, as a capped one is: a whole answer of that size costs a few more C-FINDs, a cut
#: one is never shown as whole (``findlimit=`` names a PACS's own cap for every other listing).
SUSPECT_CAPS = frozenset({500, 1000, 2000, 5000, 10_000})

#: The parts named in the one-line ``missing`` text at most.
MAX_NAMED_PARTS = 3

_MINUTES = 24 * 60


def _day(text: str) -> datetime.date | None:
    try:
        return datetime.datetime.strptime(text.strip(), "%Y%m%d").date()
    except ValueError:
        return None


def date_bounds(value: str, last_day: datetime.date) -> tuple[datetime.date, datetime.date, bool] | None:
    """The inclusive days a StudyDate matching value covers, and whether it is open above.

    ``""`` (universal) and open ends cover :data:`FIRST_DAY` to ``last_day`` (open above: the
    days after ``last_day`` are a part of their own); a single date covers one day; lists,
    wildcards and DT-style values give None (not split).
    """
    value = value.strip()
    if not value:
        return FIRST_DAY, last_day, True
    low, dash, high = value.partition("-")
    if not dash:
        day = _day(value)
        return (day, day, False) if day else None
    first = _day(low) if low.strip() else FIRST_DAY
    last = _day(high) if high.strip() else last_day
    if first is None or last is None or first > last:
        return None
    return first, last, not high.strip()


def date_text(first: datetime.date, last: datetime.date) -> str:
    """A StudyDate matching value for ``first`` to ``last`` inclusive (one date when equal)."""
    if first == last:
        return first.strftime("%Y%m%d")
    return f"{first:%Y%m%d}-{last:%Y%m%d}"


def time_text(first: int, last: int) -> str:
    """A StudyTime range for minutes ``first`` to ``last`` of the day, inclusive: from the first
    minute's second 0 to the last one's ``59.999999``, so that every second and fraction of it
    matches (PS3.5 TM)."""
    return f"{first // 60:02d}{first % 60:02d}00-{last // 60:02d}{last % 60:02d}59.999999"


def _minute(text: str) -> int | None:
    """The minute of the day of a TM value (``HHMM...``), or None."""
    digits = text.strip()[:4]
    if len(digits) < 4 or not digits.isdigit() or int(digits[:2]) > 23 or int(digits[2:]) > 59:
        return None
    return int(digits[:2]) * 60 + int(digits[2:])


def _parts(low: int, high: int, seen: set[int | None]) -> list[tuple[int, int]]:
    """How to split ``low..high`` (inclusive: day ordinals or minutes of a day): around the one
    value every row of the capped answer had (a crowded day or minute is asked alone, the rest in
    at most two parts: a few C-FINDs instead of halving down to it), else in halves."""
    if len(seen) == 1:
        (value,) = seen
        if value is not None and low <= value <= high:
            parts = [(low, value - 1), (value, value), (value + 1, high)]
            return [(first, last) for first, last in parts if first <= last]
    middle = (low + high) // 2
    return [(low, middle), (middle + 1, high)]


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
            return _suspected(self.find({**self.keys, **keys}))
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
            seen = {
                day.toordinal() if day else None
                for day in (_day(r.get("StudyDate", "")) for r in exc.partial)
            }
            halves = [
                (datetime.date.fromordinal(first), datetime.date.fromordinal(last))
                for first, last in _parts(low.toordinal(), high.toordinal(), seen)
            ]
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

    def later(self, last: datetime.date, capped: AnswerCapped) -> None:
        """The studies dated after ``last`` (an open range's far end): one part, never split."""
        after = last + datetime.timedelta(days=1)
        got = self.ask({"StudyDate": f"{after:%Y%m%d}-"})
        if got is None:
            self.keep(capped.partial)
        elif isinstance(got, AnswerCapped):
            self._stays_capped(f"dated after {last:%Y-%m-%d}", got)
        else:
            self.keep(got)

    def day(self, day: datetime.date, capped: AnswerCapped) -> None:
        """Every study of one ``day`` (its own answer ``capped``), by StudyTime ranges."""
        if "StudyTime" in self.keys and self.keys["StudyTime"].strip():
            self._stays_capped(f"{day:%Y-%m-%d} ({self.keys['StudyTime']})", capped)
            return
        found: set[tuple[str, str]] = set()
        stack = [(0, _MINUTES - 1, capped)]
        while stack:
            low, high, exc = stack.pop()
            if low == high:
                self._stays_capped(f"{day:%Y-%m-%d} {low // 60:02d}:{low % 60:02d}", exc)
                found.update(_identity(row) for row in exc.partial)
                continue
            seen = {_minute(row.get("StudyTime", "")) for row in exc.partial}
            answers = []
            for part in _parts(low, high, seen):
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
        elif capped.proven and len(found) <= capped.count:
            # The PACS said the day holds more than its capped answer, yet the time ranges found
            # no more: the rest have no StudyTime, which no range matches.
            self.capped.append(f"{day:%Y-%m-%d} (studies without StudyTime may be missing)")

    def _stays_capped(self, part: str, exc: AnswerCapped) -> None:
        self.keep(exc.partial)
        # A suspect size that cannot be split may be whole: said so, never shown as whole.
        self.capped.append(f"{part}: exactly {exc.count}" if isinstance(exc, SuspectedCap) else part)

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


class SuspectedCap(AnswerCapped):
    """An answer whose size alone (:data:`SUSPECT_CAPS`) makes it suspect: split where it can be;
    where it cannot, reported as possibly incomplete (a cut answer must never look whole; a whole
    one of exactly that size in one minute is rare)."""


def _suspected(rows: list[Row]) -> list[Row]:
    """``rows``, unless their number is one PACSes cut answers at (:data:`SUSPECT_CAPS`): then
    raises :class:`SuspectedCap` with them, so that the query is asked again in parts."""
    if len(rows) in SUSPECT_CAPS:
        raise SuspectedCap(
            f"{len(rows)} matches, a number PACSes cut answers at", len(rows), rows, proven=False
        )
    return rows


def complete_studies(
    find: FindStudies,
    keys: Mapping[str, str],
    *,
    max_queries: int = MAX_SPLIT_QUERIES,
    where: str = "",
    today: datetime.date | None = None,
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
    today : datetime.date or None
        The date an open range's upper part starts a year after (None: today's, local time).
    where : str
        Names the listing in the INFO line saying how many C-FINDs the answer took. An
        incomplete answer is not logged as a warning here: the caller that shows it does, once.

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
        return Matches(_suspected(find(keys)))
    except AnswerCapped as exc:
        capped = exc
    split = _Split(find, keys, max_queries, queries=1)
    last_day = (today or datetime.date.today()) + datetime.timedelta(days=FUTURE_DAYS)
    bounds = date_bounds(keys.get("StudyDate", ""), last_day)
    if bounds is None:
        split._stays_capped(f"StudyDate {keys.get('StudyDate', '')!r}", capped)
    else:
        first, last, open_above = bounds
        if open_above:
            split.later(last, capped)
        split.dates(first, last, capped)
        # Undated studies match no date range: those the capped answer held are kept.
        split.keep([row for row in capped.partial if not row.get("StudyDate", "").strip()])
        undated_possible = not keys.get("StudyDate", "").strip()
        if undated_possible and capped.proven and not split.gave_up and len(split.rows) <= capped.count:
            # The PACS said more match than its capped answer, yet the date ranges found no more:
            # the rest have no StudyDate, which no range matches.
            split.capped.append("studies without StudyDate may be missing")
    matches = Matches(list(split.rows.values()), split.missing())
    if matches.missing:
        return matches  # logged once, as a warning, by whoever shows it (with its marker)
    LOGGER.info(
        "%s: the PACS capped the answer; %d studies in %d C-FINDs%s",
        where or "a study query",
        len(matches.rows),
        split.queries,
        "; incomplete" if matches.missing else "",
    )
    return matches
