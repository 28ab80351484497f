"""Synthetic DICOM datasets: the ``dicomfs demo`` archive and building blocks for test data.

Everything here is deterministic (UIDs derive from fixed strings, pixels from a seed) so the demo
tree looks the same on every run and tests can compare against known values. pydicom only: the
pixel data are built as raw bytes, no numpy needed.
"""

from __future__ import annotations

import array
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

LOGGER = logging.getLogger(__name__)

# Multi-frame secondary capture (PS3.3 A.8.3): the simplest multi-frame greyscale IOD.
MULTI_FRAME_GRAYSCALE_WORD_SC = UID("1.2.840.10008.5.1.4.1.1.7.3")

# Birth date and sex are derived from the patient ID so repeated calls agree.
_SEXES = ("F", "M", "O")


def deterministic_uid(*parts: object) -> UID:
    """A stable UID for ``parts`` (hash-derived), so the same inputs give the same tree."""
    # pydicom ignores entropy_srcs when prefix is None, so keep its default (hashed) prefix.
    return generate_uid(entropy_srcs=["|".join(["dicomfs-sample", *(str(p) for p in parts)])])


def synthetic_pixels(rows: int, columns: int, frames: int, seed: int) -> bytes:
    """Little-endian 16-bit gradient pixels; ``seed`` shifts the pattern so instances differ.

    Values stay below 4096 (12 bits stored) so viewers show a sensible window.
    """
    values = array.array(
        "H",
        (
            (row * 16 + col * 8 + frame * 97 + seed * 131) % 4096
            for frame in range(frames)
            for row in range(rows)
            for col in range(columns)
        ),
    )
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def make_instance(
    *,
    patient_name: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    modality: str = "CT",
    study_date: str = "20240301",
    study_description: str = "",
    accession: str = "",
    series_number: int = 1,
    series_description: str = "",
    instance_number: int = 1,
    rows: int = 64,
    columns: int = 64,
    frames: int = 1,
    charset: str = "ISO_IR 192",
    sop_class_uid: str = CTImageStorage,
    seed: int = 0,
) -> FileDataset:
    """A valid greyscale image instance in Explicit VR Little Endian with synthetic pixel data.

    ``charset`` becomes SpecificCharacterSet; pydicom encodes the person name with it on save.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = UID(sop_class_uid)
    ds.SOPInstanceUID = UID(sop_uid)
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = f"19{40 + sum(map(ord, patient_id)) % 60:02d}0101"
    ds.PatientSex = _SEXES[sum(map(ord, patient_id)) % len(_SEXES)]
    ds.StudyInstanceUID = UID(study_uid)
    ds.StudyDate = study_date
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.StudyDescription = study_description
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = UID(series_uid)
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = study_date
    ds.Modality = modality
    ds.InstanceNumber = instance_number
    ds.ContentDate = study_date
    ds.ContentTime = "120000"
    _add_image_module(ds, rows, columns, frames, seed)
    return ds


def _add_image_module(ds: FileDataset, rows: int, columns: int, frames: int, seed: int) -> None:
    """Image pixel module (PS3.3 C.7.6.3) for 16-bit unsigned greyscale."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [1, 1]
    ds.ImagePositionPatient = [0, 0, ds.InstanceNumber]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = 1
    ds.RescaleIntercept = -1024 if ds.Modality == "CT" else 0
    ds.RescaleSlope = 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = synthetic_pixels(rows, columns, frames, seed)
    ds["PixelData"].VR = "OW"


@dataclass(frozen=True)
class _DemoSeries:
    modality: str
    description: str
    count: int
    frames: int = 1
    sop_class_uid: str = CTImageStorage


@dataclass(frozen=True)
class _DemoStudy:
    date: str
    description: str
    series: tuple[_DemoSeries, ...]


@dataclass(frozen=True)
class _DemoPatient:
    name: str
    patient_id: str
    studies: tuple[_DemoStudy, ...]


# ~3 patients, 5 studies, 8 series, 40 instances of 64x64: about 0.4 MB in total.
_DEMO_ARCHIVE = (
    _DemoPatient(
        "Doe^Jane",
        "DEMO001",
        (
            _DemoStudy(
                "20240301",
                "CT Chest",
                (_DemoSeries("CT", "Axial 5mm", 8), _DemoSeries("CT", "Coronal MPR", 4)),
            ),
            _DemoStudy(
                "20240415", "MR Knee", (_DemoSeries("MR", "T1 sag", 5, sop_class_uid=MRImageStorage),)
            ),
        ),
    ),
    _DemoPatient(
        "Müller^Jürgen",
        "DEMO002",
        (
            _DemoStudy(
                "20231105",
                "CT Abdomen",
                (_DemoSeries("CT", "Portal venous", 6), _DemoSeries("CT", "", 3)),
            ),
            _DemoStudy(
                "20240102",
                "Cine loop",
                (
                    _DemoSeries(
                        "OT", "Multi-frame", 1, frames=10, sop_class_uid=MULTI_FRAME_GRAYSCALE_WORD_SC
                    ),
                ),
            ),
        ),
    ),
    _DemoPatient(
        "Smith^John",
        "DEMO003",
        (
            _DemoStudy(
                "20220620",
                "MR Brain",
                (
                    _DemoSeries("MR", "T2 axial", 8, sop_class_uid=MRImageStorage),
                    _DemoSeries("OT", "Screenshot", 5, sop_class_uid=SecondaryCaptureImageStorage),
                ),
            ),
        ),
    ),
)


def write_demo_archive(folder: Path) -> list[Path]:
    """Write the small, fixed demo archive under ``folder``; return the file paths in write order.

    Files are named ``<patient>/<study>/<series>/<n>.dcm`` so the layout is easy to inspect by hand.
    """
    paths: list[Path] = []
    seed = 0
    for patient in _DEMO_ARCHIVE:
        for study_index, study in enumerate(patient.studies, start=1):
            study_uid = deterministic_uid(patient.patient_id, study_index)
            for series_index, series in enumerate(study.series, start=1):
                series_uid = deterministic_uid(patient.patient_id, study_index, series_index)
                series_dir = folder / patient.patient_id / f"study{study_index}" / f"series{series_index}"
                series_dir.mkdir(parents=True, exist_ok=True)
                for number in range(1, series.count + 1):
                    seed += 1
                    ds = make_instance(
                        patient_name=patient.name,
                        patient_id=patient.patient_id,
                        study_uid=study_uid,
                        series_uid=series_uid,
                        sop_uid=deterministic_uid(patient.patient_id, study_index, series_index, number),
                        modality=series.modality,
                        study_date=study.date,
                        study_description=study.description,
                        accession=f"ACC{patient.patient_id[-3:]}{study_index}",
                        series_number=series_index,
                        series_description=series.description,
                        instance_number=number,
                        frames=series.frames,
                        sop_class_uid=series.sop_class_uid,
                        seed=seed,
                    )
                    path = series_dir / f"{number:04d}.dcm"
                    ds.save_as(path, enforce_file_format=True)
                    paths.append(path)
    LOGGER.debug("wrote %d demo instances under %s", len(paths), folder)
    return paths


__all__ = [
    "MULTI_FRAME_GRAYSCALE_WORD_SC",
    "deterministic_uid",
    "make_instance",
    "synthetic_pixels",
    "write_demo_archive",
]
