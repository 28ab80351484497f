"""The identity of an entry as extended attributes: ``user.dicom.<Keyword>`` from its listing.

``getfattr -d`` on any directory or file of a view shows who and what it is (PatientID,
StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, Modality, StudyDate, ...) without opening a
file: the values come from the C-FIND rows the entry was listed from (its record and the records
of its parents), so reading them costs no query and no retrieval. Names follow the ``user.``
namespace of xattr(7); the part after ``user.dicom.`` is the DICOM keyword (PS3.6 6).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from dicomfs.core.records import InstanceRecord, PatientRecord, SeriesRecord, StudyRecord

#: The namespace and prefix of every attribute we show (xattr(7): ``user.`` is for applications).
PREFIX = "user.dicom."

#: Keys of each level's C-FIND row that are shown (when not empty), in this order.
STUDY_KEYS = ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription")
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription")
INSTANCE_KEYS = ("SOPInstanceUID", "InstanceNumber")

_NONE: Mapping[str, str] = MappingProxyType({})


def record_attributes(record: object) -> Mapping[str, str]:
    """The ``user.dicom.*`` attributes of an entry whose node carries ``record`` in its ``ref``.

    Parameters
    ----------
    record : object
        A :mod:`dicomfs.core.records` record (patient, study, series or instance); anything else
        (the root, a view's own directories, the status file) has no attributes.

    Returns
    -------
    Mapping[str, str]
        Attribute name (``user.dicom.PatientID``) -> text value, parents' first; empty values
        are left out. Patient ID and SOP/Series/Study Instance UIDs are the record's identity
        (never a row's wildcard echo).
    """
    if isinstance(record, InstanceRecord):
        found = dict(record_attributes(record.series))
        found.update(_row_values(record.row, INSTANCE_KEYS, SOPInstanceUID=record.sop_uid))
        return found
    if isinstance(record, SeriesRecord):
        found = dict(record_attributes(record.study))
        found.update(_row_values(record.row, SERIES_KEYS, SeriesInstanceUID=record.series_uid))
        return found
    if isinstance(record, StudyRecord):
        found = dict(record_attributes(record.patient))
        found.update(_row_values(record.row, STUDY_KEYS, StudyInstanceUID=record.study_uid))
        return found
    if isinstance(record, PatientRecord):
        return _row_values(
            {},
            (),
            PatientID=record.patient_id,
            IssuerOfPatientID=record.key.issuer,
            PatientName=record.shown_name,
        )
    return _NONE


def _row_values(row: Mapping[str, str], keys: tuple[str, ...], **identity: str) -> dict[str, str]:
    values = {keyword: row.get(keyword, "") for keyword in keys}
    values.update(identity)
    return {PREFIX + keyword: value for keyword, value in values.items() if value}
