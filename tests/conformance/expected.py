"""What a front end must show of an archive, worked out from the archive's own datasets."""

from __future__ import annotations

from collections.abc import Iterable

import pydicom

from dicomfs.dimse.decode import text_of
from dicomfs.views.naming import instance_file_name, patient_dir_name, series_dir_name, study_dir_name
from tests.conformance.frontends import FrontEnd


def path_of(ds: pydicom.Dataset) -> str:
    """/patient/study/series/file of one instance, named as README's "Names" section says.

    Valid for archives without name collisions (no uid suffixes), as the demo and broken ones are.
    """
    return "/" + "/".join(
        (
            patient_dir_name(text_of(ds, "PatientName"), text_of(ds, "PatientID")),
            study_dir_name(
                text_of(ds, "StudyDate"), text_of(ds, "StudyDescription"), text_of(ds, "AccessionNumber")
            ),
            series_dir_name(
                text_of(ds, "SeriesNumber"), text_of(ds, "Modality"), text_of(ds, "SeriesDescription")
            ),
            instance_file_name(text_of(ds, "InstanceNumber"), text_of(ds, "SOPInstanceUID")),
        )
    )


def directories_of(files: Iterable[str]) -> set[str]:
    """Every directory above ``files`` (the root excluded)."""
    return {
        "/" + "/".join(path.split("/")[1:depth]) for path in files for depth in range(2, path.count("/") + 1)
    }


def walk(front_end: FrontEnd, path: str = "/") -> tuple[set[str], set[str]]:
    """(directories, files) below ``path``, by listing and telling entries apart; reads nothing."""
    directories: set[str] = set()
    files: set[str] = set()
    for name in front_end.listdir(path):
        child = path.rstrip("/") + "/" + name
        if front_end.is_dir(child):
            directories.add(child)
            below_dirs, below_files = walk(front_end, child)
            directories |= below_dirs
            files |= below_files
        else:
            files.add(child)
    return directories, files
