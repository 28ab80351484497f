"""``upload/failed/``: why the last uploads failed, one short text file each, bounded.

Each report is named after the upload's path (``/`` as ``_``, plus ``.txt``) and holds the path
and the reason (the PACS's status, cause and fix, or why the file is no DICOM). rsync writes each
file as a temporary ``.NAME.XXXXXX`` beside it and renames it after the close (its receiver's
``get_tmpname``: mkstemp's six characters from [A-Za-z0-9]), so a failure of such a name is filed
under ``NAME``, the name the user knows. A newer failure of the same name replaces its report, a
success removes it; beyond ``MAX_FAILED`` the oldest goes. Not thread-safe: the upload table
guards it with its own lock.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass

#: The directory of failure reports inside ``upload/`` (a name no upload may take at its top).
FAILED_DIR = "failed"
#: Failure reports kept (oldest out): enough for a failed ``cp -r`` of a series to be read back.
MAX_FAILED = 100
#: rsync's temporary file: "." + the name + "." + six characters (mkstemp's XXXXXX).
_RSYNC_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9]{6}")


@dataclass(frozen=True)
class Failure:
    """One failed upload, as ``failed/<name>`` shows it (``mtime``: seconds since the epoch)."""

    name: str
    path: str
    reason: str
    mtime: float

    @property
    def text(self) -> bytes:
        """The report's contents: ``path: reason`` and a newline, UTF-8 (rsync's temporary name
        is said after the name it stands for)."""
        return f"{shown_path(self.path)}: {self.reason}\n".encode("utf-8", "replace")


def shown_path(path: str) -> str:
    """``a/b.dcm``, or ``a/b.dcm (rsync's temporary a/.b.dcm.X0PfWg)``: in reports and the log."""
    known = known_path(path)
    return path if known == path else f"{known} (rsync's temporary {path})"


def known_path(path: str) -> str:
    """The path the user knows: rsync's temporary ``dir/.NAME.XXXXXX`` is ``dir/NAME``."""
    parent, slash, name = path.rpartition("/")
    temporary = _RSYNC_TEMPORARY.fullmatch(name)
    return parent + slash + temporary.group("name") if temporary else path


def failure_name(path: str) -> str:
    """The report's file name in ``failed/``: the known path with ``/`` as ``_``, plus ``.txt``."""
    return known_path(path).replace("/", "_") + ".txt"


class FailureReports:
    """The last ``max_reports`` failures, by report name, oldest first."""

    def __init__(self, max_reports: int = MAX_FAILED) -> None:
        self._reports: OrderedDict[str, Failure] = OrderedDict()
        self._max_reports = max_reports

    def add(self, path: str, reason: str) -> Failure:
        """Report that the upload of ``path`` failed because of ``reason``."""
        failure = Failure(failure_name(path), path, reason, time.time())
        self._reports.pop(failure.name, None)
        self._reports[failure.name] = failure
        while len(self._reports) > self._max_reports:
            self._reports.popitem(last=False)
        return failure

    def discard(self, path: str) -> None:
        """Forget the report of the upload of ``path``, if any (it has been sent since)."""
        self._reports.pop(failure_name(path), None)

    def get(self, path: str) -> Failure | None:
        """The report at ``failed/<name>`` (a path relative to ``upload/``), or None."""
        parent, _, name = path.rpartition("/")
        return self._reports.get(name) if parent == FAILED_DIR else None

    def remove(self, path: str) -> bool:
        """Forget the report at ``path`` (``rm upload/failed/x.txt``); False if there is none."""
        failure = self.get(path)
        if failure is not None:
            del self._reports[failure.name]
        return failure is not None

    def names(self) -> list[str]:
        """The reports' names, oldest first."""
        return list(self._reports)
