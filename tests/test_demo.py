"""The demo archive behaves like a small PACS to a pynetdicom client (C-ECHO, C-FIND, C-GET, C-MOVE)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicomfs.demo.archive import element_matches
from dicomfs.demo.scp import DemoArchive

STORE_AE = "TESTSTORE"
NON_ASCII_NAME = "Müller^Jürgen=山田^太郎"


@dataclass(frozen=True)
class SeriesPlan:
    patient_id: str
    patient_name: str
    charset: str
    study: str
    study_date: str
    modality: str
    count: int
    syntax: str


# Two patients, three studies, four series, ten instances; one series RLE-compressed, one implicit VR.
PLAN = (
    SeriesPlan("P1", "Doe^Jane", "ISO_IR 100", "S1", "20200115", "CT", 3, ExplicitVRLittleEndian),
    SeriesPlan("P1", "Doe^Jane", "ISO_IR 100", "S1", "20200115", "MR", 2, RLELossless),
    SeriesPlan("P2", NON_ASCII_NAME, "ISO_IR 192", "S2", "20210320", "CT", 3, ImplicitVRLittleEndian),
    SeriesPlan("P2", NON_ASCII_NAME, "ISO_IR 192", "S3", "20190701", "CT", 2, ExplicitVRLittleEndian),
)


@dataclass(frozen=True)
class Archive:
    archive: DemoArchive
    files: dict[str, Path]  # SOP Instance UID -> file
    study_uids: dict[str, str]  # plan study key -> UID
    series_uids: list[str]  # in PLAN order
    received: list[Dataset]  # by the C-MOVE destination


def _instance(plan: SeriesPlan, study_uid: str, series_uid: str, number: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = plan.charset
    ds.SOPClassUID = CTImageStorage if plan.modality == "CT" else MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName = plan.patient_name
    ds.PatientID = plan.patient_id
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = plan.study_date
    ds.StudyDescription = f"Study {plan.study}"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = plan.modality
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((number * 7 + i) % 256 for i in range(32))
    if plan.syntax == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    elif plan.syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def _write_archive(folder: Path) -> tuple[dict[str, Path], dict[str, str], list[str]]:
    files: dict[str, Path] = {}
    study_uids: dict[str, str] = {}
    series_uids: list[str] = []
    for plan in PLAN:
        study_uid = study_uids.setdefault(plan.study, generate_uid())
        series_uid = generate_uid()
        series_uids.append(series_uid)
        for number in range(1, plan.count + 1):
            ds = _instance(plan, study_uid, series_uid, number)
            path = folder / plan.patient_id / f"{series_uid}-{number}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            files[ds.SOPInstanceUID] = path
    (folder / "README.txt").write_text("not DICOM: must be skipped\n")
    return files, study_uids, series_uids


def _start_store_scp(received: list[Dataset]) -> Any:
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with lock:
            received.append(ds)
        return 0x0000

    ae = AE(ae_title=STORE_AE)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    return ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    folder = tmp_path_factory.mktemp("archive")
    files, study_uids, series_uids = _write_archive(folder)
    received: list[Dataset] = []
    store_server = _start_store_scp(received)
    try:
        archive = DemoArchive(
            folder, move_destinations={STORE_AE: ("127.0.0.1", store_server.server_address[1])}
        )
        archive.start()
        try:
            yield Archive(archive, files, study_uids, series_uids, received)
        finally:
            archive.stop()
    finally:
        store_server.shutdown()


def _associate(demo: Archive, *contexts: str, **kwargs: Any) -> Any:
    ae = AE(ae_title="TESTSCU")
    for context in contexts:
        ae.add_requested_context(context)
    assoc = ae.associate("127.0.0.1", demo.archive.port, ae_title="DEMOPACS", **kwargs)
    assert assoc.is_established
    return assoc


def _find(demo: Archive, model: str, **keys: Any) -> list[Dataset]:
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    assoc = _associate(demo, model)
    try:
        results = []
        for status, response in assoc.send_c_find(identifier, model):
            assert status.Status in (0x0000, 0xFF00, 0xFF01), hex(status.Status)
            if status.Status != 0x0000:
                results.append(response)
        return results
    finally:
        assoc.release()


def _find_status(demo: Archive, model: str, identifier: Dataset) -> int:
    assoc = _associate(demo, model)
    try:
        return int([status.Status for status, _ in assoc.send_c_find(identifier, model)][-1])
    finally:
        assoc.release()


def _keywords(ds: Dataset) -> set[str]:
    return {elem.keyword for elem in ds}


def test_echo(demo: Archive) -> None:
    assoc = _associate(demo, Verification)
    try:
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_port_is_bound(demo: Archive) -> None:
    assert demo.archive.port > 0


def test_find_studies_universal_returns_requested_keys_only(demo: Archive) -> None:
    results = _find(
        demo,
        StudyRootQueryRetrieveInformationModelFind,
        QueryRetrieveLevel="STUDY",
        StudyInstanceUID="",
        PatientName="",
        StudyDate="",
        ModalitiesInStudy="",
        NumberOfStudyRelatedSeries="",
        NumberOfStudyRelatedInstances="",
    )
    assert len(results) == 3
    requested = {
        "QueryRetrieveLevel",
        "StudyInstanceUID",
        "PatientName",
        "StudyDate",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    }
    by_uid = {r.StudyInstanceUID: r for r in results}
    for result in results:
        assert _keywords(result) - {"SpecificCharacterSet"} == requested
    s1 = by_uid[demo.study_uids["S1"]]
    assert (s1.PatientName, s1.StudyDate, list(s1.ModalitiesInStudy)) == (
        "Doe^Jane",
        "20200115",
        ["CT", "MR"],
    )
    assert (s1.NumberOfStudyRelatedSeries, s1.NumberOfStudyRelatedInstances) == (2, 5)
    s2 = by_uid[demo.study_uids["S2"]]
    assert s2.SpecificCharacterSet == "ISO_IR 192"
    assert str(s2.PatientName) == NON_ASCII_NAME
    assert (s2.ModalitiesInStudy, s2.NumberOfStudyRelatedInstances) == ("CT", 3)


def test_find_series_of_study(demo: Archive) -> None:
    results = _find(
        demo,
        StudyRootQueryRetrieveInformationModelFind,
        QueryRetrieveLevel="SERIES",
        StudyInstanceUID=demo.study_uids["S1"],
        SeriesInstanceUID="",
        Modality="",
        NumberOfSeriesRelatedInstances="",
    )
    got = {(r.SeriesInstanceUID, r.Modality, r.NumberOfSeriesRelatedInstances) for r in results}
    assert got == {(demo.series_uids[0], "CT", 3), (demo.series_uids[1], "MR", 2)}
    assert all(r.StudyInstanceUID == demo.study_uids["S1"] for r in results)


def test_find_images_of_series(demo: Archive) -> None:
    results = _find(
        demo,
        StudyRootQueryRetrieveInformationModelFind,
        QueryRetrieveLevel="IMAGE",
        StudyInstanceUID=demo.study_uids["S2"],
        SeriesInstanceUID=demo.series_uids[2],
        SOPInstanceUID="",
        InstanceNumber="",
    )
    assert sorted(r.InstanceNumber for r in results) == [1, 2, 3]
    for result in results:
        assert dcmread(demo.files[result.SOPInstanceUID]).InstanceNumber == result.InstanceNumber
        assert "PatientName" not in result


def test_find_patients_patient_root(demo: Archive) -> None:
    results = _find(
        demo,
        PatientRootQueryRetrieveInformationModelFind,
        QueryRetrieveLevel="PATIENT",
        PatientID="",
        PatientName="",
        NumberOfPatientRelatedStudies="",
    )
    got = {(r.PatientID, str(r.PatientName), r.NumberOfPatientRelatedStudies) for r in results}
    assert got == {("P1", "Doe^Jane", 1), ("P2", NON_ASCII_NAME, 2)}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", {"P1", "P2"}),
        ("Doe^*", {"P1"}),
        ("doe^jane", {"P1"}),  # PN matching ignores case
        ("?oe^Jan?", {"P1"}),
        ("Mü*", {"P2"}),
        ("山田*", {"P2"}),  # any component group of the name
        ("Nobody*", set()),
    ],
)
def test_find_wildcard_patient_name(demo: Archive, pattern: str, expected: set[str]) -> None:
    results = _find(
        demo,
        PatientRootQueryRetrieveInformationModelFind,
        SpecificCharacterSet="ISO_IR 192",
        QueryRetrieveLevel="PATIENT",
        PatientID="",
        PatientName=pattern,
    )
    assert {r.PatientID for r in results} == expected


def test_find_uid_list_and_date_range(demo: Archive) -> None:
    uids = [demo.study_uids["S1"], demo.study_uids["S3"]]
    by_list = _find(
        demo,
        StudyRootQueryRetrieveInformationModelFind,
        QueryRetrieveLevel="STUDY",
        StudyInstanceUID=uids,
    )
    assert sorted(r.StudyInstanceUID for r in by_list) == sorted(uids)
    by_range = _find(
        demo,
        StudyRootQueryRetrieveInformationModelFind,
        QueryRetrieveLevel="STUDY",
        StudyInstanceUID="",
        StudyDate="20200101-20211231",
    )
    assert {r.StudyInstanceUID for r in by_range} == {demo.study_uids["S1"], demo.study_uids["S2"]}


def test_find_bad_level_is_refused(demo: Archive) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"  # not part of the Study Root model
    identifier.PatientID = ""
    assert _find_status(demo, StudyRootQueryRetrieveInformationModelFind, identifier) == 0xA900


def _series_identifier(demo: Archive, index: int) -> Dataset:
    study = PLAN[index].study
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = demo.study_uids[study]
    identifier.SeriesInstanceUID = demo.series_uids[index]
    return identifier


def _assert_same_as_files(demo: Archive, received: list[Dataset], index: int) -> None:
    expected = {
        uid: path
        for uid, path in demo.files.items()
        if dcmread(path).SeriesInstanceUID == demo.series_uids[index]
    }
    assert sorted(ds.SOPInstanceUID for ds in received) == sorted(expected)
    for ds in received:
        stored = dcmread(expected[ds.SOPInstanceUID])
        assert ds == stored  # every element, PixelData included
        assert ds.PixelData == stored.PixelData


@pytest.mark.parametrize("index", [0, 1, 2])
def test_get_series_delivers_stored_instances(demo: Archive, index: int) -> None:
    received: list[Dataset] = []
    syntaxes: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset)
        syntaxes.append(event.context.transfer_syntax)
        return 0x0000

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage, [RLELossless, ExplicitVRLittleEndian])
    roles: list[Any] = [build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)]
    assoc = ae.associate(
        "127.0.0.1", demo.archive.port, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert assoc.is_established
    try:
        responses = list(
            assoc.send_c_get(_series_identifier(demo, index), StudyRootQueryRetrieveInformationModelGet)
        )
    finally:
        assoc.release()
    final = responses[-1][0]
    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == PLAN[index].count
    _assert_same_as_files(demo, received, index)
    if PLAN[index].syntax == RLELossless:  # sent as stored, never decompressed
        assert set(syntaxes) == {RLELossless}


def test_move_series_to_known_destination(demo: Archive) -> None:
    demo.received.clear()
    assoc = _associate(demo, StudyRootQueryRetrieveInformationModelMove)
    try:
        responses = list(
            assoc.send_c_move(
                _series_identifier(demo, 1), STORE_AE, StudyRootQueryRetrieveInformationModelMove
            )
        )
    finally:
        assoc.release()
    final = responses[-1][0]
    assert final.Status == 0x0000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 0)
    # The destination answered each C-STORE before the final C-MOVE response was sent.
    _assert_same_as_files(demo, list(demo.received), 1)
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in demo.received} == {RLELossless}


def test_move_to_unknown_destination_is_refused(demo: Archive) -> None:
    assoc = _associate(demo, StudyRootQueryRetrieveInformationModelMove)
    try:
        responses = list(
            assoc.send_c_move(
                _series_identifier(demo, 0), "NOBODY", StudyRootQueryRetrieveInformationModelMove
            )
        )
    finally:
        assoc.release()
    assert responses[-1][0].Status == 0xA801


def test_add_move_destination_later(demo: Archive, tmp_path: Path) -> None:
    received: list[Dataset] = []
    server = _start_store_scp(received)
    try:
        demo.archive.add_move_destination("LATESTORE", "127.0.0.1", server.server_address[1])
        assoc = _associate(demo, StudyRootQueryRetrieveInformationModelMove)
        try:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = demo.study_uids["S3"]
            responses = list(
                assoc.send_c_move(identifier, "LATESTORE", StudyRootQueryRetrieveInformationModelMove)
            )
        finally:
            assoc.release()
    finally:
        server.shutdown()
    assert responses[-1][0].Status == 0x0000
    _assert_same_as_files(demo, received, 3)


@pytest.mark.parametrize(
    ("vr", "key", "value", "expected"),
    [
        ("PN", "", "Doe^John", True),  # universal
        ("PN", "*", "", True),
        ("PN", "DOE^J*", "Doe^John", True),
        ("PN", "Doe", "Doe^John", False),
        ("LO", "ab?d", "abcd", True),
        ("LO", "ABCD", "abcd", False),  # only PN ignores case
        ("LO", "a.c", "abc", False),  # regex characters are literal
        ("CS", "MR", ["CT", "MR"], True),  # any value of a multi-valued attribute
        ("UI", ["1.2", "1.3"], "1.3", True),  # list of UIDs
        ("UI", "1.2", "1.2.3", False),
        ("DA", "20200101-", "20200102", True),
        ("DA", "-20200101", "20200102", False),
        ("DA", "20200101-20200101", "20200101", True),
        ("TM", "0900-1000", "093015.5", True),
        ("IS", "7", "07", True),
        ("LO", "x", None, False),  # absent attribute
    ],
)
def test_element_matches(vr: str, key: Any, value: Any, expected: bool) -> None:
    tags = {"PN": 0x00100010, "LO": 0x00100020, "CS": 0x00080061, "UI": 0x0020000D, "DA": 0x00080020}
    tags |= {"TM": 0x00080030, "IS": 0x00200013}
    dataset = Dataset()
    if value is not None:
        dataset.add(DataElement(tags[vr], vr, value))
    assert element_matches(DataElement(tags[vr], vr, key), dataset) is expected


def test_stop_aborts_open_associations(tmp_path: Path) -> None:
    archive = DemoArchive(tmp_path, ae_title="EMPTY")
    archive.start()
    try:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", archive.port, ae_title="EMPTY")
        assert assoc.is_established
    finally:
        archive.stop()
    archive.stop()  # idempotent
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not assoc.is_established
