"""Never the wrong patient, never the wrong image (issue #7 items 1-3), through a real mount.

The PACS is the demo Q/R SCP (dicomfs.demo.scp), which like a hierarchical archive keeps apart what
shares a UID under different parents. Every file read is checked by its token (ImageComments):
which object it really is, byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import DICOMFS_AET
from tests.identity_archive import (
    Obj,
    check_tree,
    read_dataset,
    served_and_mounted,
    token_of,
    walk_files,
    write_archive,
)
from tests.mounting import Mount, mounted, pacs_options
from tests.pacs_servers import MoveDestination, OrthancServer, free_port

MountAndSources = tuple[Mount, dict[str, bytes]]

SOP_TWIN = [
    Obj("TWIN", "", "TWIN^SOP", "1.2.826.7.1", "1.2.826.7.1.1", "1.2.826.7.9", series_description="A"),
    Obj("TWIN", "", "TWIN^SOP", "1.2.826.7.1", "1.2.826.7.1.2", "1.2.826.7.9", "B", series_number=2),
]
ISSUERS = [
    Obj("2405055400", "ABCD", "NGUYEN^AN", "1.2.826.7.2", "1.2.826.7.2.1", "1.2.826.7.2.1.1", modality="MR"),
    Obj("2405055400", "HOSP2", "TRAN^BINH", "1.2.826.7.3", "1.2.826.7.3.1", "1.2.826.7.3.1.1"),
]
NO_ISSUER = [
    Obj("NOISS", "", "SMITH^ANN", "1.2.826.7.4", "1.2.826.7.4.1", "1.2.826.7.4.1.1", study_description="Ann"),
    Obj("NOISS", "", "JONES^BOB", "1.2.826.7.5", "1.2.826.7.5.1", "1.2.826.7.5.1.1", study_description="Bob"),
]
SHARED_SERIES = [
    *(
        Obj("SER", "", "SERIES^SHARED", "1.2.826.7.6", "1.2.826.7.66", f"1.2.826.7.6.{n}", "OLD", "Old", n)
        for n in (1, 2)
    ),
    *(
        Obj("SER", "", "SERIES^SHARED", "1.2.826.7.7", "1.2.826.7.66", f"1.2.826.7.7.{n}", "NEW", "New", n)
        for n in (1, 2, 3)
    ),
]
STUDY_OF_TWO = [
    Obj("PA", "", "ALPHA^A", "1.2.826.7.8", "1.2.826.7.8.1", "1.2.826.7.8.1.1", "of A"),
    Obj("PB", "", "BETA^B", "1.2.826.7.8", "1.2.826.7.8.2", "1.2.826.7.8.2.1", "of B", series_number=2),
]
SERIES_OF_TWO = [  # one study and one series filed under two patients, an object each
    Obj("PC", "", "GAMMA^C", "1.2.826.7.10", "1.2.826.7.10.1", "1.2.826.7.10.1.1", "shared"),
    Obj(
        "PD", "", "DELTA^D", "1.2.826.7.10", "1.2.826.7.10.1", "1.2.826.7.10.1.2", "shared", instance_number=2
    ),
]
RESENT = [  # the same object UIDs under two patients (re-sent under the corrected patient)
    Obj("PE", "", "EPSILON^E", "1.2.826.7.11", "1.2.826.7.11.1", "1.2.826.7.11.1.1", "resent"),
    Obj("PF", "", "ZETA^F", "1.2.826.7.11", "1.2.826.7.11.1", "1.2.826.7.11.1.1", "resent"),
]
PADDED_ID = [  # Patient IDs that differ only in padding (not significant in LO, PS3.5 6.2)
    Obj(" SP", "", "SP^ACE", "1.2.826.7.12", "1.2.826.7.12.1", "1.2.826.7.12.1.1", "padded"),
    Obj("SP", "", "SP^ACE2", "1.2.826.7.13", "1.2.826.7.13.1", "1.2.826.7.13.1.1", "plain"),
]
ALL = [*SOP_TWIN, *ISSUERS, *NO_ISSUER, *SHARED_SERIES, *STUDY_OF_TWO, *SERIES_OF_TWO, *RESENT, *PADDED_ID]


@pytest.fixture(scope="module", params=["move", "get"])
def mount_and_sources(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MountAndSources]:
    folder = tmp_path_factory.mktemp("identity-archive")
    sources = write_archive(folder, ALL)
    with served_and_mounted(folder, tmp_path_factory.mktemp("identity-mount"), request.param) as mount:
        yield mount, sources


def patient_dirs(root: Path, patient_id: str) -> list[Path]:
    return sorted(
        p for p in root.iterdir() if p.name.endswith(f"({patient_id})") or f"({patient_id})" in p.name
    )


def tokens_below(directory: Path) -> set[str]:
    return {token_of(data) for data in walk_files(directory).values()}


def check_every_file(directory: Path, sources: dict[str, bytes]) -> set[str]:
    """Every file below ``directory`` is byte-identical to the source object its token names."""
    tokens = set()
    for path, data in walk_files(directory).items():
        token = token_of(data)
        assert data == sources[token], path
        tokens.add(token)
    return tokens


def test_one_sop_instance_uid_in_two_series_serves_each_series_its_own_object(
    mount_and_sources: MountAndSources,
) -> None:
    mount, sources = mount_and_sources
    (patient,) = patient_dirs(mount.mountpoint, "TWIN")
    (study,) = list(patient.iterdir())
    series = sorted(study.iterdir())
    assert [s.name for s in series] == ["001 CT A", "002 CT B"]
    # B first: the object of A must never answer for B (nor A's for B once A is cached).
    for directory, obj in ((series[1], SOP_TWIN[1]), (series[0], SOP_TWIN[0]), (series[1], SOP_TWIN[1])):
        data = read_dataset(directory / "0001.dcm")
        assert data == sources[obj.token]
        ds = pydicom.dcmread(directory / "0001.dcm", stop_before_pixels=True)
        assert (ds.SeriesInstanceUID, ds.SeriesDescription) == (obj.series_uid, obj.series_description)
    for directory in series:
        assert os.stat(directory / "0001.dcm").st_size == len((directory / "0001.dcm").read_bytes())


def test_one_patient_id_from_two_issuers_is_two_patients(mount_and_sources: MountAndSources) -> None:
    mount, sources = mount_and_sources
    names = sorted(p.name for p in patient_dirs(mount.mountpoint, "2405055400"))
    assert names == ["NGUYEN^AN (2405055400)", "TRAN^BINH (2405055400)"]
    assert check_every_file(mount.mountpoint / names[0], sources) == {ISSUERS[0].token}
    assert check_every_file(mount.mountpoint / names[1], sources) == {ISSUERS[1].token}


def test_one_patient_id_with_two_names_and_no_issuer_is_kept_apart_and_logged(
    mount_and_sources: MountAndSources,
) -> None:
    mount, sources = mount_and_sources
    # The PACS answers one PATIENT-level row for the ID (it keys patients by ID and issuer); the
    # studies tell the persons apart: the directory shows only its own, the root then both.
    for directory in patient_dirs(mount.mountpoint, "NOISS"):
        tokens = check_every_file(directory, sources)
        assert len(tokens) == 1, (directory, tokens)
    names = sorted(p.name for p in patient_dirs(mount.mountpoint, "NOISS"))
    assert names == ["JONES^BOB (NOISS)", "SMITH^ANN (NOISS)"]
    assert check_every_file(mount.mountpoint / names[0], sources) == {NO_ISSUER[1].token}
    assert check_every_file(mount.mountpoint / names[1], sources) == {NO_ISSUER[0].token}
    assert mount.log_text().count("Patient ID 'NOISS' stands for 2 persons") == 1


@pytest.mark.parametrize("first", ["Old", "New"])
def test_a_series_uid_under_two_studies_lists_each_study_its_own_instances(
    mount_and_sources, first: str
) -> None:  # type: ignore[no-untyped-def]
    mount, sources = mount_and_sources
    (patient,) = patient_dirs(mount.mountpoint, "SER")
    studies = {s.name.split(" ", 1)[1]: s for s in patient.iterdir()}
    assert sorted(studies) == ["New", "Old"]
    order = [first, *(name for name in ("Old", "New") if name != first)]
    for name in order:
        (series,) = list(studies[name].iterdir())
        expected = {o.token for o in SHARED_SERIES if o.study_description == name}
        assert len(list(series.iterdir())) == len(expected)
        assert check_every_file(series, sources) == expected


@pytest.mark.parametrize("objects", [SERIES_OF_TWO, RESENT], ids=["series-of-two", "resent"])
def test_a_series_filed_under_two_patients_shows_each_only_its_own_objects(
    mount_and_sources: MountAndSources, objects: list[Obj]
) -> None:
    mount, sources = mount_and_sources
    for obj in objects:
        (patient,) = patient_dirs(mount.mountpoint, obj.patient_id)
        assert check_every_file(patient, sources) == {obj.token}


def test_every_object_is_under_its_own_path(mount_and_sources: MountAndSources) -> None:
    mount, sources = mount_and_sources
    check_tree(mount.mountpoint, ALL, sources)


@pytest.fixture(scope="module")
def orthanc_with_collisions(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[OrthancServer, int, dict[str, bytes]]]:
    """Orthanc holding the colliding archive (it keys series and instances under their patient
    and study, but matches a SERIES-level C-MOVE by the Series Instance UID alone)."""
    folder = tmp_path_factory.mktemp("identity-orthanc-files")
    objects = [*SOP_TWIN, *ISSUERS, *NO_ISSUER, *SHARED_SERIES, *STUDY_OF_TWO, *SERIES_OF_TWO, *PADDED_ID]
    sources = write_archive(folder, objects)
    move_port = free_port()
    server = OrthancServer(
        tmp_path_factory.mktemp("identity-orthanc"),
        destinations=[MoveDestination(DICOMFS_AET, "127.0.0.1", move_port)],
    )
    with server:
        server.load(sorted(folder.iterdir()))
        yield server, move_port, sources


@pytest.mark.parametrize("retrieve", ["move", "get"])
def test_orthanc_serves_every_object_under_its_own_path(
    orthanc_with_collisions: tuple[OrthancServer, int, dict[str, bytes]], tmp_path: Path, retrieve: str
) -> None:
    server, move_port, sources = orthanc_with_collisions
    options = pacs_options(server, tmp_path / "cache", localport=move_port, retrieve=retrieve, timeout=20)
    objects = [*SOP_TWIN, *ISSUERS, *NO_ISSUER, *SHARED_SERIES, *STUDY_OF_TWO, *SERIES_OF_TWO, *PADDED_ID]
    with mounted(tmp_path / "mnt", options) as mount:
        check_tree(mount.mountpoint, objects, sources)


def test_a_study_filed_under_two_patients_shows_each_only_its_own_series(
    mount_and_sources: MountAndSources,
) -> None:
    mount, sources = mount_and_sources
    for obj in STUDY_OF_TWO:
        (patient,) = patient_dirs(mount.mountpoint, obj.patient_id)
        (study,) = list(patient.iterdir())
        assert [s.name for s in study.iterdir()] == [f"00{obj.series_number} CT {obj.series_description}"]
        assert check_every_file(patient, sources) == {obj.token}


# -- property: random archives whose identifiers collide across parents -------------------------

PATIENTS = [("P1", "", "ONE^A"), ("P1", "", "TWO^B"), ("P1", "ISS", "ONE^A"), ("P2", "", "ONE^A")]
STUDIES = ["1.2.826.9.1", "1.2.826.9.2"]
SERIES = ["1.2.826.9.10", "1.2.826.9.20"]
SOPS = ["1.2.826.9.100", "1.2.826.9.200", "1.2.826.9.300"]


@st.composite
def colliding_archives(draw: st.DrawFn) -> list[Obj]:
    """Objects drawn from small pools of patients and UIDs, so that UIDs collide across parents:
    one SOP Instance UID in several series, one Series UID in several studies, one study and one
    series under several patients, one Patient ID for several persons.

    One study of one Patient ID and issuer has one Patient Name: a PACS keeps one study there.
    """
    picks = draw(
        st.lists(
            st.tuples(
                st.sampled_from(PATIENTS),
                st.sampled_from(STUDIES),
                st.sampled_from(SERIES),
                st.sampled_from(SOPS),
            ),
            min_size=1,
            max_size=8,
            # A stored object is its Patient ID and three UIDs: two persons sharing a Patient ID
            # *and* all three UIDs of an object are not told apart (no PACS could either).
            unique_by=lambda pick: (pick[0][0], pick[1], pick[2], pick[3]),
        )
    )
    names: dict[tuple[str, str, str], str] = {}
    objects = []
    for (patient_id, issuer, name), study, series, sop in picks:
        patient = (patient_id, issuer, names.setdefault((patient_id, issuer, study), name))
        objects.append(
            Obj(
                *patient,
                study,
                series,
                sop,
                study_description=f"Study {STUDIES.index(study)}",
                instance_number=SOPS.index(sop) + 1,
                series_number=SERIES.index(series) + 1,
            )
        )
    return list({obj.token: obj for obj in objects}.values())


# Each example is a real archive and a real mount (seconds): few examples, the same ones on every
# run (derandomize), and no shrinking (minutes of remounts; the failing example is printed whole).
@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(objects=colliding_archives())
def test_every_file_read_is_the_object_of_its_path(
    objects: list[Obj], tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("random-archive")
    sources = write_archive(folder, objects)
    with served_and_mounted(folder, tmp_path_factory.mktemp("random-mount"), "move") as mount:
        check_tree(mount.mountpoint, objects, sources)


TWO_IN_ONE_STUDY = [  # one Patient ID, no issuer, two persons' series in one study
    Obj("N", "", "ONE^A", "1.2.826.80.1", "1.2.826.80.1.1", "1.2.826.80.1.1.1", "one", "Shared"),
    Obj(
        "N",
        "",
        "TWO^B",
        "1.2.826.80.1",
        "1.2.826.80.1.2",
        "1.2.826.80.1.2.1",
        "two",
        "Shared",
        series_number=2,
    ),
]
TWO_IN_ONE_SERIES = [  # ... and two persons' instances in one series
    Obj("M", "", "ONE^A", "1.2.826.80.2", "1.2.826.80.2.1", "1.2.826.80.2.1.1", "s", "Shared"),
    Obj(
        "M",
        "",
        "TWO^B",
        "1.2.826.80.2",
        "1.2.826.80.2.1",
        "1.2.826.80.2.1.2",
        "s",
        "Shared",
        instance_number=2,
    ),
]


@pytest.mark.parametrize("objects", [TWO_IN_ONE_STUDY, TWO_IN_ONE_SERIES], ids=["study", "series"])
def test_two_persons_in_one_study_are_never_mixed(
    objects: list[Obj], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The PACS answers one patient row and one study row for both persons: only the series and
    instance rows tell them apart. The directory shows its own person only, and says so."""
    folder = tmp_path_factory.mktemp("two-in-one")
    sources = write_archive(folder, objects)
    with served_and_mounted(folder, tmp_path_factory.mktemp("two-in-one-mount"), "move") as mount:
        for _walk in range(2):
            for patient in mount.mountpoint.iterdir():
                tokens = check_every_file(patient, sources)
                persons = {token.split("|")[2] for token in tokens}
                assert len(persons) <= 1, f"{patient.name} mixes {persons}"
        assert "of another person under Patient ID" in mount.log_text(), mount.log_text()


def test_two_pacs_sharing_a_cachedir_never_serve_each_others_objects(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Two archives may hold the same UIDs for different patients (a migrated or re-identified
    copy), and every mount shares the default cachedir."""
    work = tmp_path_factory.mktemp("shared-cachedir")
    alpha = Obj("1", "", "ALPHA^A", "1.2.3.4", "1.2.3.4.1", "1.2.3.4.1.1", "sa", "Astudy")
    beta = Obj("1", "", "BETA^B", "1.2.3.4", "1.2.3.4.1", "1.2.3.4.1.1", "sb", "Bstudy")
    for obj in (alpha, beta):
        folder = tmp_path_factory.mktemp("pacs")
        sources = write_archive(folder, [obj])
        with served_and_mounted(folder, work, "move") as mount:  # the same cachedir each time
            assert check_every_file(mount.mountpoint, sources) == {obj.token}
