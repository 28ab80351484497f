"""Benchmark data: a large CT study and a 2,000-patient archive, generated in memory and loaded into Orthanc.

Loading 60,000 small instances takes minutes, so the Orthanc storage directory is kept under
``bench/work/`` and reused while ``DATA_VERSION`` and the data shape are unchanged.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import queue
import random
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

LOGGER = logging.getLogger(__name__)

#: Bump when the generated data changes, so cached Orthanc storage is rebuilt.
DATA_VERSION = 1
_UID_ROOT = "1.2.826.0.1.3680043.8.498.77"  # pydicom's prefix + a bench-specific arc
_LOAD_THREADS = 3  # Orthanc has its own worker pool; a few clients keep it busy on 2 cores
_QUEUE_DEPTH = 64
CT_PATIENT_ID = "BENCHCT"
CT_STUDY_UID = f"{_UID_ROOT}.1"


@dataclass(frozen=True)
class Shape:
    """How much data to generate; the default matches the issue, ``quick`` is for smoke tests."""

    ct_series: int = 8
    ct_instances: int = 500
    ct_size: int = 512
    patients: int = 2000
    studies_per_patient: int = 2
    series_per_study: int = 3
    instances_per_series: int = 5

    def key(self) -> str:
        return f"v{DATA_VERSION}-{self.ct_series}x{self.ct_instances}x{self.ct_size}-{self.patients}p"


QUICK = Shape(ct_series=2, ct_instances=50, patients=100)


def ct_series_uid(index: int) -> str:
    return f"{_UID_ROOT}.1.{index + 1}"


def small_study_uid(patient: int, study: int) -> str:
    return f"{_UID_ROOT}.2.{patient + 1}.{study + 1}"


def small_patient_id(patient: int) -> str:
    return f"P{patient + 1:05d}"


def _base(sop_class: UID, sop_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = UID(sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def _image(ds: Dataset, size: int, pixels: bytes) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _ct_noise(shape: Shape) -> bytes:
    frame_bytes = shape.ct_size * shape.ct_size * 2
    return np.random.default_rng(7).integers(0, 4096, size=frame_bytes, dtype=np.uint16).tobytes()


def _ct_instance(shape: Shape, series: int, number: int, noise: bytes) -> bytes:
    ds = _base(CTImageStorage, f"{ct_series_uid(series)}.{number}")
    ds.PatientName, ds.PatientID = "BENCH^CT", CT_PATIENT_ID
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = CT_STUDY_UID, "20240101", "120000"
    ds.StudyDescription, ds.AccessionNumber, ds.StudyID = "BENCH CT", "ACCCT", "1"
    ds.SeriesInstanceUID, ds.SeriesNumber = ct_series_uid(series), series + 1
    ds.Modality, ds.SeriesDescription = "CT", f"AXIAL {series + 1}"
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [0, 0, number]
    offset = (number * 7919) % len(noise)  # a different slice of noise per instance
    _image(ds, shape.ct_size, noise[offset:] + noise[:offset])
    return _encode(ds)


def iter_ct(shape: Shape) -> Iterator[bytes]:
    """The CT study: ``ct_series`` series of ``ct_instances`` slices of random-ish 16-bit pixels."""
    noise = _ct_noise(shape)
    for series in range(shape.ct_series):
        for number in range(1, shape.ct_instances + 1):
            yield _ct_instance(shape, series, number, noise)


def iter_ct_series(shape: Shape, numbers: Sequence[int]) -> Iterator[bytes]:
    """The first CT series only, its instances in the order of ``numbers`` (instance numbers)."""
    noise = _ct_noise(shape)
    for number in numbers:
        yield _ct_instance(shape, 0, number, noise)


def iter_small(shape: Shape) -> Iterator[bytes]:
    """``patients`` x studies x series x instances of 8x8 secondary-capture images."""
    pixels = bytes(range(128))
    for patient in range(shape.patients):
        for study in range(shape.studies_per_patient):
            study_uid = small_study_uid(patient, study)
            for series in range(shape.series_per_study):
                for number in range(1, shape.instances_per_series + 1):
                    ds = _base(SecondaryCaptureImageStorage, f"{study_uid}.{series + 1}.{number}")
                    ds.PatientName, ds.PatientID = f"PATIENT^{patient + 1:05d}", small_patient_id(patient)
                    ds.StudyInstanceUID, ds.StudyDate = study_uid, f"2023{study + 1:02d}01"
                    ds.StudyTime, ds.StudyDescription = "083000", f"STUDY {study + 1}"
                    ds.AccessionNumber, ds.StudyID = f"A{patient + 1:05d}{study + 1}", str(study + 1)
                    ds.SeriesInstanceUID, ds.SeriesNumber = f"{study_uid}.{series + 1}", series + 1
                    ds.Modality, ds.SeriesDescription = "OT", f"SERIES {series + 1}"
                    ds.InstanceNumber = number
                    _image(ds, 8, pixels)
                    yield _encode(ds)


class _Poster(threading.Thread):
    """POSTs queued instances to Orthanc's REST API over one keep-alive connection."""

    def __init__(self, http_port: int, work: queue.Queue[bytes | None], errors: list[str]) -> None:
        super().__init__(daemon=True)
        self._port = http_port
        self._work = work
        self._errors = errors

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=60)
        try:
            while (body := self._work.get()) is not None:
                connection.request("POST", "/instances", body, {"Content-Type": "application/dicom"})
                answer = json.loads(connection.getresponse().read())
                if answer.get("Status") not in ("Success", "AlreadyStored"):
                    self._errors.append(str(answer))
        except Exception as exc:  # reported by load(), which must not hang
            self._errors.append(repr(exc))
            while self._work.get() is not None:  # keep draining so the producer never blocks
                pass
        finally:
            connection.close()


def load(http_port: int, instances: Iterator[bytes], what: str, threads: int = _LOAD_THREADS) -> int:
    """Send every instance to Orthanc with ``threads`` parallel connections; raise on any refusal.

    One thread keeps the order: Orthanc then stores the instances in exactly that order.
    """
    work: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
    errors: list[str] = []
    posters = [_Poster(http_port, work, errors) for _ in range(threads)]
    for poster in posters:
        poster.start()
    count, started = 0, time.monotonic()
    try:
        for count, body in enumerate(instances, start=1):
            work.put(body)
            if count % 5000 == 0:
                LOGGER.info("%s: %d instances loaded (%.0f s)", what, count, time.monotonic() - started)
    finally:
        for _poster in posters:
            work.put(None)
        for poster in posters:
            poster.join()
    if errors:
        raise RuntimeError(f"loading {what} failed: {errors[:3]}")
    LOGGER.info("%s: %d instances in %.1f s", what, count, time.monotonic() - started)
    return count


def marker_path(workdir: Path) -> Path:
    return workdir / "loaded.json"


def is_loaded(workdir: Path, shape: Shape) -> bool:
    try:
        return bool(json.loads(marker_path(workdir).read_text()) == asdict(shape))
    except (OSError, ValueError):
        return False


def reset_storage(workdir: Path) -> None:
    """Forget a partial or outdated load."""
    marker_path(workdir).unlink(missing_ok=True)
    shutil.rmtree(workdir / "storage", ignore_errors=True)


def load_all(http_port: int, workdir: Path, shape: Shape) -> None:
    load(http_port, iter_ct(shape), "CT study")
    load(http_port, iter_small(shape), f"{shape.patients}-patient archive")
    marker_path(workdir).write_text(json.dumps(asdict(shape)))


# --------------------------------------------------------------------------- send order

SEND_ORDERS = ("ascending", "descending", "shuffled")


def send_order_numbers(shape: Shape, send_order: str) -> list[int]:
    """Instance numbers of the CT series in the order the PACS is meant to send them."""
    numbers = list(range(1, shape.ct_instances + 1))
    if send_order == "descending":
        return numbers[::-1]
    if send_order == "shuffled":
        return random.Random(42).sample(numbers, len(numbers))
    return numbers


def order_loaded(workdir: Path, shape: Shape, send_order: str) -> bool:
    try:
        marker = json.loads(marker_path(workdir).read_text())
    except (OSError, ValueError):
        return False
    return bool(marker == {"shape": asdict(shape), "send_order": send_order})


def load_order_series(http_port: int, workdir: Path, shape: Shape, send_order: str) -> None:
    """Load the CT series so that Orthanc sends it in ``send_order``.

    Orthanc 1.10 sends a series in the reverse of the order it stored the instances (its index
    returns the newest first; tests/test_send_order.py checks this, and ``verify_send_order``
    again on every bench run), so the instances are loaded one by one in the reverse order.
    """
    load_order = send_order_numbers(shape, send_order)[::-1]
    load(http_port, iter_ct_series(shape, load_order), f"CT series ({send_order} send order)", threads=1)
    marker_path(workdir).write_text(json.dumps({"shape": asdict(shape), "send_order": send_order}))
