"""Test objects real archives hold and a PACS may not know how to send: legacy JPEG and private classes.

* CT series stored in retired or rarely offered JPEG transfer syntaxes (PS3.5 Annex A.4: Process 14,
  1.2.840.10008.1.2.4.57; Extended 12-bit, .51). The encapsulated pixel data is synthetic and need
  not decode: dicomfs never decodes, and neither may the PACS (it must send the file as stored).
* A series mixing a CT image with a Siemens CSA Non-Image object (private SOP class
  1.3.12.2.1107.5.9.1), as Siemens scanners archive them next to the images.

Everything is deterministic, written with pydicom.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filereader import read_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from dicomfs.demo.samples import deterministic_uid, make_instance

#: Siemens CSA Non-Image Storage, a private SOP class (Siemens conformance statements).
SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"
#: A private SOP class nobody knows (made up under pydicom's UID root, for these tests only):
#: dicomfs can only learn it from the PACS.
UNKNOWN_PRIVATE_CLASS = "1.2.826.0.1.3680043.8.498.1.7.1"
JPEG_PROCESS_14 = "1.2.840.10008.1.2.4.57"
JPEG_EXTENDED_12BIT = "1.2.840.10008.1.2.4.51"

PATIENT_ID = "ODD-1"
STUDY_UID = deterministic_uid("odd-study")


@dataclass(frozen=True)
class OddSeries:
    """A series written to disk: its UID, description and files (in instance order)."""

    uid: str
    number: int
    description: str
    files: tuple[Path, ...]


def _instance(key: str, number: int, series_number: int, description: str) -> FileDataset:
    return make_instance(
        patient_name="Odd^Objects",
        patient_id=PATIENT_ID,
        study_uid=STUDY_UID,
        series_uid=deterministic_uid("odd-series", key),
        sop_uid=deterministic_uid("odd-instance", key, number),
        study_description="Odd objects",
        series_number=series_number,
        series_description=description,
        instance_number=number,
        rows=16,
        columns=16,
        charset="ISO_IR 100",
        seed=number,
    )


def legacy_jpeg_series(folder: Path, syntax: str, series_number: int, count: int = 3) -> OddSeries:
    """``count`` CT images whose pixel data is encapsulated in ``syntax`` (synthetic JPEG bytes)."""
    key = f"jpeg-{syntax}"
    description = f"CT JPEG {syntax.rsplit('.', 1)[-1]}"
    files = []
    for number in range(1, count + 1):
        ds = _instance(key, number, series_number, description)
        # A JPEG interchange stream in form only (SOI ... EOI); nothing here decodes it.
        frame = b"\xff\xd8\xff\xc3" + bytes([number]) * 61 + b"\xff\xd9"
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = UID(syntax)
        path = folder / f"{key}-{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return OddSeries(str(ds.SeriesInstanceUID), series_number, description, tuple(files))


def csa_series(folder: Path, series_number: int, sop_class: str = SIEMENS_CSA_NON_IMAGE) -> OddSeries:
    """One CT image (instance 1) and one non-image object of a private class (instance 2, a
    Siemens CSA Non-Image object unless ``sop_class`` says otherwise) in one series."""
    key = f"private-{sop_class}"
    description = "CT with CSA" if sop_class == SIEMENS_CSA_NON_IMAGE else "CT with private"
    image = _instance(key, 1, series_number, description)
    image_path = folder / f"{key}-1.dcm"
    image.save_as(image_path, enforce_file_format=True)

    template = _instance(key, 2, series_number, description)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    csa = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    for keyword in (
        "SpecificCharacterSet", "PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime",
        "StudyID", "StudyDescription", "AccessionNumber", "ReferringPhysicianName", "SeriesInstanceUID",
        "SeriesNumber", "SeriesDescription", "Modality", "InstanceNumber", "SOPInstanceUID",
    ):  # fmt: skip
        setattr(csa, keyword, getattr(template, keyword))
    csa.SOPClassUID = UID(sop_class)
    csa.ImageType = ["ORIGINAL", "PRIMARY", "SPECTROSCOPY"]
    # The CSA header lives in Siemens' private group 0029 (creator "SIEMENS CSA NON-IMAGE").
    block = csa.private_block(0x0029, "SIEMENS CSA NON-IMAGE", create=True)
    block.add_new(0x08, "CS", "SPEC NUM 4")
    block.add_new(0x10, "OB", b"SV10\x04\x03\x02\x01" + bytes(range(56)))
    csa_path = folder / f"{key}-2.dcm"
    csa.save_as(csa_path, enforce_file_format=True)
    return OddSeries(str(image.SeriesInstanceUID), series_number, description, (image_path, csa_path))


def dataset_bytes(path: Path) -> bytes:
    """The data set of a DICOM file as stored: everything after the File Meta Information."""
    meta = read_file_meta_info(path)
    # Preamble (128) and "DICM" (4), then the group length element (12 bytes) and the group it counts.
    meta_end = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    return path.read_bytes()[meta_end:]
