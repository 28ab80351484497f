"""The C-FIND checks of ``dicomfs echo``: a root query, and one instance found level by level.

The root of a production PACS may hold a million entries; one match proves the query works, so
each C-FIND here is cancelled after its first match (C-CANCEL, PS3.4 C.4.1.2.3). The instance
found walking down from that match is what the return path check asks a C-MOVE of.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from pydicom.dataset import Dataset

from dicomfs.dimse import statuses
from dicomfs.dimse.checkstep import EchoTarget, Step, accepts, failed, no_response
from dicomfs.dimse.explain import Explanation
from dicomfs.dimse.progress import MESSAGE_ID
from dicomfs.dimse.qrmodels import LEVELS, MODELS, ROOT_NAME, UNIQUE_KEY, QueryModel
from dicomfs.dimse.queries import identifier

#: Final C-FIND statuses that refuse or cut an answer for its size: 0xA700 (Refused: Out of
#: Resources, dcm4chee's QueryMaxNumberOfResults) and 0xB001 (response limit reached, PS3.4
#: C.4.1.1.4). A root query refused so says the archive is large, not that C-FIND fails.
SIZE_REFUSALS = (statuses.FIND_OUT_OF_RESOURCES, statuses.FIND_RESPONSE_LIMIT)

#: Days back from today a large archive's probe asks studies of, in turn, once its root query
#: was refused for its size.
RECENT_DAYS = (7, 365)


def find_root(assoc: Any, target: EchoTarget) -> tuple[Dataset | None, Step]:
    """The "find" step: a C-FIND at the root level of ``target.model``, cancelled after one match.

    Parameters
    ----------
    assoc : pynetdicom Association
        Established with the PACS (Q/R C-FIND contexts of both models proposed).
    target : EchoTarget
        ``model``, ``timeout`` and ``calling_aet`` (for the explanations).

    Returns
    -------
    tuple
        (the first match, or None when there is none or the step failed; the step). A PACS that
        accepts only the other model's C-FIND is told apart: the hint names ``model=``.
    """
    model = target.model
    uid = MODELS[model]["find"]
    level = LEVELS[model][0]
    other = QueryModel(model).other().value
    if not accepts(assoc, uid):
        hint = f"set model={other}" if accepts(assoc, MODELS[other]["find"]) else "ask for Q/R C-FIND"
        return None, Step(
            "find", False, f"the PACS does not accept C-FIND in the {ROOT_NAME[model]} model", hint
        )
    query = find_query(level, {})
    started = time.monotonic()
    try:
        match, error = first_match(assoc, uid, query, target)
    except RuntimeError:  # pynetdicom: the association is gone
        return None, failed("find", no_response("C-FIND", assoc, started, target))
    what = f"{ROOT_NAME[model]} {level}-level C-FIND"
    if error is not None and not error.fatal:
        return recent_study(assoc, target, f"{what}: {error.cause}")
    if error is not None:
        return None, failed("find", error)
    if match is None:
        return None, Step("find", True, f"{what}: no matches (the PACS holds nothing we may see)")
    return match, Step("find", True, f"{what}: answered ({_first(match)})")


def _first(match: Dataset) -> str:
    """How the "find" step shows its first match: ``first match: <name or ID>``."""
    name = str(match.get("PatientName", "") or "") or str(match.get("PatientID", "") or "")
    return f"first match: {name or 'unnamed'}"


def first_match(
    assoc: Any, uid: str, query: Dataset, target: EchoTarget
) -> tuple[Dataset | None, Explanation | None]:
    """The first match of a C-FIND, then C-CANCEL (PS3.4 C.4.1.2.3).

    Parameters
    ----------
    assoc : pynetdicom Association
        With an accepted presentation context for ``uid``.
    uid : str
        The C-FIND SOP Class UID (the model).
    query : Dataset
        The identifier.
    target : EchoTarget
        ``timeout`` and ``calling_aet`` (for the explanation of a missing response).

    Returns
    -------
    tuple
        (the first match or None, None) when the PACS answered; (None, cause and fix) when it
        gave no response or a failure status.

    Raises
    ------
    RuntimeError
        From pynetdicom, when the association is gone.
    """
    context_id = next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == uid)
    first: Dataset | None = None
    started = time.monotonic()
    for status, found in assoc.send_c_find(query, uid, msg_id=MESSAGE_ID):
        code = getattr(status, "Status", None)
        if code is None:
            return None, no_response("C-FIND", assoc, started, target)
        if statuses.is_pending(int(code)):
            if first is None and found is not None:
                first = found
                assoc.send_c_cancel(MESSAGE_ID, context_id)
            continue
        if int(code) in (statuses.SUCCESS, statuses.CANCEL) or first is not None:
            return first, None
        if int(code) in SIZE_REFUSALS:
            return None, Explanation(
                f"refused for the size of its answer (status 0x{int(code):04X}: a large archive)",
                "browse it by date, ID, accession or UID (the root shows README.txt)",
                fatal=False,
            )
        return None, Explanation(
            f"C-FIND answered with status 0x{int(code):04X}",
            "the PACS refuses this query: check its log, or try model=patient / model=study",
        )
    return first, None


def recent_study(assoc: Any, target: EchoTarget, refused: str) -> tuple[Dataset | None, Step]:
    """The "find" step of an archive whose root query was refused for its size: a STUDY-level
    C-FIND of recent days (:data:`RECENT_DAYS`, StudyDate range matching, PS3.4 C.2.2.2.5),
    cancelled after one match, so that the move check still has a study to walk down from.

    Only in the Study Root model (Patient Root needs a patient's key below its root level).
    """
    note = "browse it by date, ID, accession or UID: the root shows README.txt and the views"
    if target.model != QueryModel.STUDY_ROOT:
        return None, Step("find", True, f"{refused}; no study to check C-MOVE with", note)
    uid = MODELS[target.model]["find"]
    today = datetime.date.today()
    for days in RECENT_DAYS:
        since = today - datetime.timedelta(days=days)
        query = find_query("STUDY", {"StudyDate": f"{since:%Y%m%d}-{today:%Y%m%d}"})
        match, error = first_match(assoc, uid, query, target)
        if error is None and match is not None:
            name = str(match.get("PatientName", "") or "") or str(match.get("PatientID", "") or "")
            found = (
                f"a STUDY-level C-FIND of the last {days} days answered (first match: {name or 'unnamed'})"
            )
            return match, Step("find", True, f"{refused}; {found}", note)
    return None, Step("find", True, f"{refused}; no study of the last {RECENT_DAYS[-1]} days", note)


def one_instance(assoc: Any, match: Dataset | None, target: EchoTarget) -> dict[str, str] | None:
    """Unique keys of one instance, walking down from the root match (first match per level).

    Parameters
    ----------
    assoc : pynetdicom Association
        Where :func:`find_root` found ``match``.
    match : Dataset or None
        The root-level match; None gives None.
    target : EchoTarget
        ``model`` (its levels), ``timeout`` and ``calling_aet``.

    Returns
    -------
    dict of str to str, or None
        Keyword -> value of each level's unique key, root to IMAGE; None when a level has no
        match or its C-FIND failed.
    """
    model = target.model
    uid = MODELS[model]["find"]
    levels = LEVELS[model]
    if match is None:
        return None
    keys = {UNIQUE_KEY[levels[0]]: str(match.get(UNIQUE_KEY[levels[0]], "") or "")}
    for level in levels[1:]:
        found, error = first_match(assoc, uid, find_query(level, keys), target)
        if error is not None or found is None:
            return None
        keys[UNIQUE_KEY[level]] = str(found.get(UNIQUE_KEY[level], "") or "")
    return keys


def find_query(level: str, keys: dict[str, str]) -> Dataset:
    """A C-FIND identifier at ``level`` below ``keys`` (the unique keys of the levels above).

    It asks for the level's unique key, and at PATIENT and STUDY level for the Patient's Name
    and ID (what the "find" step shows of its first match).
    """
    query = identifier(level, **keys)
    setattr(query, UNIQUE_KEY[level], "")
    if level in ("PATIENT", "STUDY"):
        query.PatientName = ""
        if "PatientID" not in query:
            query.PatientID = ""
    return query
