"""The identifiers of retrievals and their SOP class queries: a series' unique keys, per Q/R model.

PS3.4 C.4.2.2.1 and C.4.3.2.1: a C-MOVE/C-GET identifier holds the unique keys down to its
Query/Retrieve Level; below SERIES, a list of SOP Instance UIDs (list matching, PS3.4 C.2.2.2.2).
The Patient Root model needs the Patient ID as well (PS3.4 C.6.1.1), the Study Root model does
not (C.6.2.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from dicomfs.core.model import SeriesRef
from dicomfs.dimse.qrmodels import QueryModel


def series_identifier(model: str, ref: SeriesRef, sop_uids: Sequence[str] = ()) -> Dataset:
    """The unique keys of ``ref`` (SERIES level), or of some of its instances (IMAGE level).

    Parameters
    ----------
    model : str
        "patient" (Patient Root: the Patient ID is a key) or "study" (Study Root).
    ref : SeriesRef
        The series.
    sop_uids : sequence of str
        SOP Instance UIDs for an IMAGE-level identifier (one value, or a list); () for SERIES.

    Returns
    -------
    pydicom.dataset.Dataset
        QueryRetrieveLevel, [PatientID,] StudyInstanceUID, SeriesInstanceUID[, SOPInstanceUID].
    """
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE" if sop_uids else "SERIES"
    if model == QueryModel.PATIENT_ROOT:
        identifier.PatientID = ref.patient_id
    identifier.StudyInstanceUID = ref.study_uid
    identifier.SeriesInstanceUID = ref.series_uid
    if sop_uids:
        identifier.SOPInstanceUID = list(sop_uids) if len(sop_uids) > 1 else sop_uids[0]
    return identifier


def sop_class_query(model: str, ref: SeriesRef, sop_uid: str = "") -> Dataset:
    """An IMAGE-level C-FIND identifier asking the SOP Class UID of one instance of ``ref``, or of
    all (``sop_uid`` empty: universal matching, PS3.4 C.2.2.2.3)."""
    query = series_identifier(model, ref)
    query.QueryRetrieveLevel = "IMAGE"
    query.SOPInstanceUID = sop_uid
    query.SOPClassUID = ""
    return query
