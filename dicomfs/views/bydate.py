"""``by-date/YYYY/YYYY-MM/YYYY-MM-DD/<study>/<series>/<n>.dcm``: the archive by study date.

Years, months and days are the calendar's, listed without any query: years from
:data:`FIRST_LISTED_YEAR` to this year (earlier ones down to :data:`FIRST_YEAR` are reached by
name), months and days up to today (the local date: DICOM dates carry no zone and are the site's,
PS3.5 6.2). A day is one STUDY-level C-FIND with StudyDate=YYYYMMDD (``Catalog.matching``), its
studies named by patient and study (``naming.patient_study_dir_name``: a day holds many
patients). ``today`` and ``yesterday`` are symbolic links to their days
(``today -> 2026/2026-11/2026-11-30``), followed again at every lookup.
"""

from __future__ import annotations

import calendar
import datetime
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dicomfs.core.catalog import Catalog
from dicomfs.core.errors import NotFound
from dicomfs.core.instances import Instances
from dicomfs.views import naming
from dicomfs.views.node import Node
from dicomfs.views.recordtree import FlatView, Search

#: The first year listed: digital archives (and DICOM's predecessor ACR-NEMA, 1985) begin about then.
FIRST_LISTED_YEAR = 1980
#: The first year reached by name (scanned film and migrated archives hold older dates).
FIRST_YEAR = 1900

#: The names of the links to today's and yesterday's directories.
LINKS = ("today", "yesterday")

_YEAR = re.compile(r"[0-9]{4}")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
_DAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


def day_path(day: datetime.date) -> str:
    """A day's directory relative to ``by-date``: ``2026/2026-11/2026-11-30``."""
    return f"{day.year:04d}/{day.year:04d}-{day.month:02d}/{day.isoformat()}"


def _time_of(day: datetime.date) -> float:
    """Midnight of ``day`` as seconds since the epoch, read as UTC (as study times are)."""
    return naming.study_time(day.strftime("%Y%m%d"))


class ByDate(FlatView):
    """The ``by-date`` view: a :class:`~dicomfs.views.node.Namespace` of years, months and days.

    Parameters
    ----------
    catalog, instances
        As for every view.
    mount_time : float
        The time of the view's own directory.
    today : callable
        The local date now (injectable for tests).
    """

    depth = 6

    def __init__(
        self,
        catalog: Catalog,
        instances: Instances,
        *,
        mount_time: float,
        today: Callable[[], datetime.date] = datetime.date.today,
    ) -> None:
        super().__init__(catalog, instances, mount_time=mount_time)
        self._today = today

    def lookup(self, path: str) -> Node:
        """The node at ``path``: the calendar's directories (no query), a day (no query until
        listed), or a study, series or file below a day. Raises ``NotFound``."""
        parts = [part for part in path.split("/") if part]
        if len(parts) <= 1:
            return super().lookup(path)
        if len(parts) > self.depth:
            raise NotFound(path)
        node = self.resolve(parts[0], path)
        for depth, part in enumerate(parts[1:3], start=2):
            node = self._calendar_child(node, part, depth, path)
        return self.walk(node, parts[3:], path)

    def resolve(self, name: str, path: str) -> Node:
        """A year, or a link (``today``, ``yesterday``)."""
        today = self._today()
        if name in LINKS:
            day = today if name == "today" else today - datetime.timedelta(days=1)
            return Node(name, False, _time_of(day), link=day_path(day))
        if _YEAR.fullmatch(name) and FIRST_YEAR <= int(name) <= today.year:
            return self._year(int(name))
        raise NotFound(path)

    def _calendar_child(self, parent: Node, name: str, depth: int, path: str) -> Node:
        """A month (``depth`` 2) of a year, or a day (3) of a month; not after today."""
        match = (_MONTH if depth == 2 else _DAY).fullmatch(name)
        period = parent.ref
        if match is None or not isinstance(period, _Year if depth == 2 else _Month):
            raise NotFound(path)
        year, month, *day = (int(part) for part in match.groups())
        try:
            date = datetime.date(year, month, day[0] if day else 1)
        except ValueError:  # 2026-02-30, 2026-13
            raise NotFound(path) from None
        if date.replace(day=1) < period.first or date > period.last or date > self._today():
            raise NotFound(path)
        if depth == 2:
            return self._month(date)
        return Node(name, True, _time_of(date), None, Search.of({"StudyDate": date.strftime("%Y%m%d")}))

    def _year(self, year: int) -> Node:
        first = datetime.date(year, 1, 1)
        return Node(f"{year:04d}", True, _time_of(first), None, _Year(first, datetime.date(year, 12, 31)))

    def _month(self, first: datetime.date) -> Node:
        last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
        return Node(first.strftime("%Y-%m"), True, _time_of(first), None, _Month(first, last))

    def children(self, node: Node) -> Sequence[Node]:
        """The years and links, a year's months, a month's days (no query), or a listing."""
        today = self._today()
        period = node.ref
        if period is self._root.ref:
            years = [self._year(year) for year in range(FIRST_LISTED_YEAR, today.year + 1)]
            return sorted(
                [*years, *(self.resolve(name, name) for name in LINKS)], key=lambda child: child.name
            )
        if isinstance(period, _Year):
            last = min(period.last, today).month
            return [self._month(period.first.replace(month=month)) for month in range(1, last + 1)]
        if isinstance(period, _Month):
            last = min(period.last, today).day
            days = [period.first.replace(day=day) for day in range(1, last + 1)]
            return [self._calendar_child(node, day.isoformat(), 3, day.isoformat()) for day in days]
        return super().children(node)


@dataclass(frozen=True)
class _Year:
    """The ref of a year's directory: its first and last day."""

    first: datetime.date
    last: datetime.date


@dataclass(frozen=True)
class _Month:
    """The ref of a month's directory: its first and last day (not a :class:`_Year`)."""

    first: datetime.date
    last: datetime.date
