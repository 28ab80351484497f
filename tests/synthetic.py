"""The integration-test archive: small, deterministic, and full of the names that break naive code.

Tests read the written files back with pydicom; the constants below name the objects that tests
target directly (the RLE series, the multi-frame instance, the SR document).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComprehensiveSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
)

from dicomfs.demo.samples import MULTI_FRAME_GRAYSCALE_WORD_SC, deterministic_uid, make_instance

LOGGER = logging.getLogger(__name__)

# 300 characters: four times the LO limit (PS3.5 6.2), as some real archives hold.
LONG_DESCRIPTION = ("Very long study description " * 11)[:300]


@dataclass(frozen=True)
class SeriesSpec:
    """One series of the archive; ``kind`` is "image", "rle", "multiframe" or "sr"."""

    key: str
    description: str
    count: int
    modality: str = "CT"
    kind: str = "image"

    @property
    def uid(self) -> UID:
        return deterministic_uid("test-series", self.key)


@dataclass(frozen=True)
class StudySpec:
    key: str
    description: str
    date: str
    series: tuple[SeriesSpec, ...]

    @property
    def uid(self) -> UID:
        return deterministic_uid("test-study", self.key)


@dataclass(frozen=True)
class PatientSpec:
    name: str
    patient_id: str
    charset: str
    studies: tuple[StudySpec, ...]


RLE_SERIES = SeriesSpec("rle", "RLE lossless", 4, kind="rle")
MULTIFRAME_SERIES = SeriesSpec("multiframe", "Cine", 1, modality="OT", kind="multiframe")
SR_SERIES = SeriesSpec("sr", "Report", 1, modality="SR", kind="sr")
MULTIFRAME_FRAMES = 8

ARCHIVE: tuple[PatientSpec, ...] = (
    PatientSpec(
        "Müller^Hans",
        "PAT-UTF8",
        "ISO_IR 192",
        (
            StudySpec(
                "ct-thorax",
                "CT Thorax",
                "20240301",
                (SeriesSpec("axial", "Axial 3mm", 5), RLE_SERIES, SeriesSpec("nodesc", "", 3)),
            ),
            StudySpec(
                "ct-followup", "CT Thorax follow-up", "20240601", (SeriesSpec("fu-axial", "Axial", 2),)
            ),
        ),
    ),
    PatientSpec(
        "山田^太郎",
        "PAT-CJK",
        "ISO_IR 192",
        (
            StudySpec(
                "mr-brain",
                "MR Gehirn",
                "20230115",
                (SeriesSpec("t2", "T2 axial", 3, modality="MR"), MULTIFRAME_SERIES),
            ),
        ),
    ),
    PatientSpec(
        "Gonçalves^José",
        "PAT-LATIN1",
        "ISO_IR 100",
        (StudySpec("long", LONG_DESCRIPTION, "20220202", (SeriesSpec("long-ct", "Série 1", 2),)),),
    ),
    PatientSpec(
        "AC/DC^Rock",
        "PAT-SLASH",
        "ISO_IR 192",
        (
            StudySpec(
                "slash",
                "Head/Neck",
                "20210909",
                (SeriesSpec("slash-series", "T1/T2 map", 2, modality="MR"), SR_SERIES),
            ),
        ),
    ),
    PatientSpec(
        "",
        "PAT-EMPTY",
        "ISO_IR 192",
        (StudySpec("empty", "Anonymous", "20200101", (SeriesSpec("empty-ct", "Scout", 2),)),),
    ),
    PatientSpec(
        "Smith^John",
        "PAT-SMITH-1",
        "ISO_IR 192",
        (StudySpec("smith1", "CT Head", "20190505", (SeriesSpec("smith1-ct", "Head", 1),)),),
    ),
    PatientSpec(
        "Smith^John",
        "PAT-SMITH-2",
        "ISO_IR 192",
        (StudySpec("smith2", "CT Head", "20190506", (SeriesSpec("smith2-ct", "Head", 1),)),),
    ),
)


def iter_series() -> Iterator[tuple[PatientSpec, StudySpec, SeriesSpec]]:
    """Every series of the archive with its study and patient, in write order."""
    for patient in ARCHIVE:
        for study in patient.studies:
            for series in study.series:
                yield patient, study, series


def sop_uid(series: SeriesSpec, number: int) -> UID:
    """The SOP Instance UID of instance ``number`` (1-based) of ``series``."""
    return deterministic_uid("test-instance", series.key, number)


def _image(patient: PatientSpec, study: StudySpec, series: SeriesSpec, number: int, seed: int) -> FileDataset:
    multiframe = series.kind == "multiframe"
    return make_instance(
        patient_name=patient.name,
        patient_id=patient.patient_id,
        study_uid=study.uid,
        series_uid=series.uid,
        sop_uid=sop_uid(series, number),
        modality=series.modality,
        study_date=study.date,
        study_description=study.description,
        accession=f"A-{study.key}"[:16],
        series_number=[s.key for s in study.series].index(series.key) + 1,
        series_description=series.description,
        instance_number=number,
        rows=32,
        columns=32,
        frames=MULTIFRAME_FRAMES if multiframe else 1,
        charset=patient.charset,
        sop_class_uid=_image_sop_class(series),
        seed=seed,
    )


def _image_sop_class(series: SeriesSpec) -> UID:
    if series.kind == "multiframe":
        return MULTI_FRAME_GRAYSCALE_WORD_SC
    return MRImageStorage if series.modality == "MR" else CTImageStorage


def _text_sr(patient: PatientSpec, study: StudySpec, series: SeriesSpec) -> FileDataset:
    """A Comprehensive SR document with a single TEXT item and no pixel data (PS3.3 A.35.3)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComprehensiveSRStorage
    meta.MediaStorageSOPInstanceUID = sop_uid(series, 1)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = patient.charset
    ds.SOPClassUID = ComprehensiveSRStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.StudyInstanceUID = study.uid
    ds.StudyDate = study.date
    ds.StudyTime = "120000"
    ds.StudyDescription = study.description
    ds.AccessionNumber = f"A-{study.key}"[:16]
    ds.SeriesInstanceUID = series.uid
    ds.SeriesDescription = series.description
    ds.SeriesNumber = len(study.series)
    ds.Modality = "SR"
    ds.InstanceNumber = 1
    ds.ContentDate = study.date
    ds.ContentTime = "120000"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic imaging report")])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    item.TextValue = "No acute findings. Keine Auffälligkeiten."
    ds.ContentSequence = Sequence([item])
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code


def write_test_archive(folder: Path) -> list[Path]:
    """Write the archive under ``folder`` (one directory per series); return the file paths.

    The RLE series is stored RLE Lossless (PS3.5 Annex G); everything else Explicit VR Little Endian.
    """
    paths: list[Path] = []
    seed = 0
    with warnings.catch_warnings():
        # The 300-character LO is deliberately invalid; pydicom warns about it on set and on write.
        warnings.simplefilter("ignore", UserWarning)
        for patient, study, series in iter_series():
            series_dir = folder / series.key
            series_dir.mkdir(parents=True, exist_ok=True)
            for number in range(1, series.count + 1):
                seed += 1
                if series.kind == "sr":
                    ds = _text_sr(patient, study, series)
                else:
                    ds = _image(patient, study, series, number, seed)
                if series.kind == "rle":
                    ds.compress(RLELossless, generate_instance_uid=False)
                path = series_dir / f"{number:04d}.dcm"
                ds.save_as(path, enforce_file_format=True)
                paths.append(path)
    LOGGER.debug("wrote %d test instances under %s", len(paths), folder)
    return paths
