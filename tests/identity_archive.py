"""Archives whose identifiers collide across parents, served by the demo Q/R SCP to a real mount.

Real PACSes hold the same SOP Instance UID in two series, one Series Instance UID under two studies,
one study under two patients, and one Patient ID for two persons (issue #7). Each object written
here carries a unique token (ImageComments) so a test can tell which object a file really is.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from dicomfs.demo.samples import make_instance
from dicomfs.demo.scp import DemoArchive
from tests.conftest import DICOMFS_AET
from tests.fault_tools import dataset_bytes
from tests.mounting import Mount, mounted, pacs_options
from tests.pacs_servers import free_port

AE_TITLE = "IDPACS"


@dataclass(frozen=True)
class Obj:
    """One stored object: where it sits in the hierarchy, and its token."""

    patient_id: str
    issuer: str
    patient_name: str
    study_uid: str
    series_uid: str
    sop_uid: str
    series_description: str = "Series"
    study_description: str = "Study"
    instance_number: int = 1
    series_number: int = 1
    modality: str = "CT"

    @property
    def token(self) -> str:
        return "|".join(
            (self.patient_id, self.issuer, self.patient_name, self.study_uid, self.series_uid, self.sop_uid)
        )


def write_archive(folder: Path, objects: Sequence[Obj]) -> dict[str, bytes]:
    """Write every object as a file; returns token -> its data set's bytes (without File Meta)."""
    sources: dict[str, bytes] = {}
    for number, obj in enumerate(objects):
        ds = make_instance(
            patient_name=obj.patient_name,
            patient_id=obj.patient_id,
            study_uid=obj.study_uid,
            series_uid=obj.series_uid,
            sop_uid=obj.sop_uid,
            modality=obj.modality,
            study_description=obj.study_description,
            series_number=obj.series_number,
            series_description=obj.series_description,
            instance_number=obj.instance_number,
            rows=8,
            columns=8,
            seed=number + 1,
        )
        if obj.issuer:
            ds.IssuerOfPatientID = obj.issuer
        ds.ImageComments = obj.token
        path = folder / f"{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        sources[obj.token] = dataset_bytes(path.read_bytes())
    return sources


def token_of(data: bytes) -> str:
    """The token of a data set read through the mount (Explicit VR Little Endian, no meta)."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    return str(ds.ImageComments)


@contextlib.contextmanager
def served_and_mounted(folder: Path, work: Path, retrieve: str, timeout: float = 20) -> Iterator[Mount]:
    """The demo SCP serving ``folder`` and a real dicomfs mount of it (both stopped on exit)."""
    local_port = free_port()
    archive = DemoArchive(
        folder,
        ae_title=AE_TITLE,
        move_destinations={DICOMFS_AET: ("127.0.0.1", local_port)},
    )
    with archive:
        options = pacs_options(
            archive, work / "cache", localport=local_port, retrieve=retrieve, timeout=timeout
        )
        with mounted(work / "mnt", options) as mount:
            yield mount


def walk_files(root: Path) -> dict[Path, bytes]:
    """The data set of every file below ``root`` (File Meta left out: the sender rebuilds it)."""
    return {path: dataset_bytes(path.read_bytes()) for path in sorted(root.rglob("*.dcm"))}


def read_dataset(path: Path) -> bytes:
    """One file's data set bytes, read through the mount."""
    return dataset_bytes(path.read_bytes())


def check_tree(root: Path, objects: Sequence[Obj], sources: dict[str, bytes]) -> None:
    """Walk the mount twice and check that every file is the object of its path.

    The first walk may find persons that share a Patient ID (the root is then listed anew and
    names may change under it: a directory gone is fine, a mixed one is not). On the second walk
    every object must be shown exactly once, byte for byte, under the patient, study, series and
    file name that its own attributes give, and no patient directory may hold two persons.
    """
    by_token = {obj.token: obj for obj in objects}

    def read_patient(patient: Path) -> list[str]:
        tokens = []
        for study in patient.iterdir():
            for series in study.iterdir():
                for path in series.iterdir():
                    data = read_dataset(path)
                    token = token_of(data)
                    assert data == sources[token], path
                    obj = by_token[token]
                    where = f"{path} holds {obj}"
                    assert f"({obj.patient_id.strip()})" in patient.name, where
                    assert obj.study_description in study.name, where
                    assert series.name.startswith(f"{obj.series_number:03d} {obj.modality}"), where
                    assert path.name.startswith(f"{obj.instance_number:04d}"), where
                    tokens.append(token)
        persons = {(by_token[t].patient_id, by_token[t].issuer, by_token[t].patient_name) for t in tokens}
        assert len(persons) <= 1, f"{patient.name} mixes {persons}"
        return tokens

    for patient in root.iterdir():
        with contextlib.suppress(FileNotFoundError):
            read_patient(patient)
    shown = [token for patient in root.iterdir() for token in read_patient(patient)]
    assert sorted(shown) == sorted(sources), "every object is shown, and only once"
