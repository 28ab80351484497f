"""``/README.txt``: what the root shows instead of a patient list too large to give whole.

When the root's query is past ``rootlimit`` rows, or the PACS capped or refused it for its size
(``core.errors.AnswerCapped``), :class:`~dicomfs.views.root.Root` lists the mounted views and
this read-only text file, never a partial patient list: a cut list would look complete. The text
names the views mounted and how to reach a study without listing everything.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The file's name at the root (no patient directory is named like it: those end in "(ID)").
GUIDE_FILE = "README.txt"

#: What each view is for, by its top-level name (views not named here are listed plainly).
_VIEW_HELP = {
    "by-date": "by-date/YYYY/YYYY-MM/YYYY-MM-DD/   the studies of one day (one C-FIND per day)",
    "by-id": "by-id/<PatientID>/                 one patient's studies, by Patient ID",
    "by-accession": "by-accession/<AccessionNumber>/   a study by its accession number",
    "by-uid": "by-uid/<StudyInstanceUID>/         a study by its UID; below it series and\n"
    "      instances by theirs: by-uid/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm",
    "query": "query/<Key=value,...>/             any STUDY-level query, e.g.\n"
    "      cd 'query/PatientName=DOE^J*,StudyDate=20240101-20240131,ModalitiesInStudy=CT'",
}


def guide_text(reason: str, views: Sequence[str]) -> bytes:
    """The README's text: why no patients are listed, and where to look instead.

    Parameters
    ----------
    reason : str
        Why the root is not listed (one line: the cap or ``rootlimit``).
    views : Sequence[str]
        The top-level names of the mounted views, listed or hidden (those this module can
        describe are shown: the search views).
    """
    lines = [
        "This archive is too large to list every patient here, so no partial list is shown",
        "(a cut list would look complete).",
        "",
        f"Why: {reason}",
        "",
        "Look a study up instead:",
    ]
    searches = [name for name in views if name in _VIEW_HELP]
    for name in searches:
        lines.append("  " + _VIEW_HELP[name])
    if not searches:
        lines.append("  (no other view is mounted: narrow the archive, or raise rootlimit=)")
    lines += [
        "",
        "rootlimit=N sets how many patients the root may list (0: no limit); findlimit=N tells",
        "dicomfs the PACS's own cap on C-FIND answers, so that a cut answer is recognised.",
        "",
    ]
    return "\n".join(lines).encode()


#: The marker entry of a listing the PACS's cap kept incomplete (no study, series or instance
#: name says this: theirs start with a date, a number or the instance number).
MARKER_FILE = "_INCOMPLETE_LISTING.txt"


def marker_text(missing: str) -> bytes:
    """The marker file's text: what is missing from the listing it lies in, and how to narrow.

    Parameters
    ----------
    missing : str
        The one line that says what is missing (``core.rows.Matches.missing``, ``Found.missing``).
    """
    return (
        "This listing is INCOMPLETE: the PACS caps the answers of its queries, and dicomfs could\n"
        "not split this one into parts under the cap.\n\n"
        f"Missing: {missing}\n\n"
        "The entries beside this file are real, but not all there are. Narrow the query to see\n"
        "the rest: a single day (by-date), a Patient ID (by-id), an accession number, or a query\n"
        "directory with more keys (query/StudyDate=...,ModalitiesInStudy=...).\n"
    ).encode()
