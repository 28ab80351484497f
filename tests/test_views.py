"""The views beside the patient tree (issue #12) through real mounts, with real shell tools.

by-date, by-uid, by-id, by-accession and query directories against Orthanc and dcmqrscp: each
view's listing and content, C-FINDs counted on a verbose dcmqrscp (UIDs and IDs resolve without
a root query), bad query directories (ENOENT and one log line), the today/yesterday links, and
one study reached by two views retrieved once (C-MOVE requests counted).
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.conftest import serving_dcmqrscp
from tests.mounting import Mount, mounted, pacs_options, wait_until
from tests.pacs_servers import DcmqrscpServer, OrthancServer
from tests.synthetic import ARCHIVE, sop_uid

pytestmark = pytest.mark.integration

#: Generous bound on background listings (fetched ahead) to land: a guard against hangs only.
SETTLE_S = 20.0

SMITH_1 = next(patient for patient in ARCHIVE if patient.patient_id == "PAT-SMITH-1")
FOLLOWUP = next(study for patient in ARCHIVE for study in patient.studies if study.key == "ct-followup")
THORAX = next(study for patient in ARCHIVE for study in patient.studies if study.key == "ct-thorax")


@pytest.fixture(scope="module")
def counting_dcmqrscp(
    tmp_path_factory: pytest.TempPathFactory, archive_files: list[Path], move_port: int
) -> Iterator[DcmqrscpServer]:
    """dcmqrscp logging every request, so that C-FINDs and C-MOVEs can be counted."""
    workdir = tmp_path_factory.mktemp("views-dcmqrscp")
    yield from serving_dcmqrscp(workdir, archive_files, move_port, verbose=True)


@pytest.fixture(params=["orthanc", "counting_dcmqrscp"])
def pacs(request: pytest.FixtureRequest) -> OrthancServer | DcmqrscpServer:
    server: OrthancServer | DcmqrscpServer = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def mount(pacs: OrthancServer | DcmqrscpServer, tmp_path: Path, move_port: int) -> Iterator[Mount]:
    options = pacs_options(pacs, tmp_path / "cache", localport=move_port, views="listed")
    with mounted(tmp_path / "mnt", options) as handle:
        yield handle


def run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{command} failed: {result.stderr}"
    return result.stdout


def fails(*command: str) -> str:
    """The stderr of a command that must fail."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0, f"{command} succeeded: {result.stdout}"
    return result.stderr


def finds_settle(pacs: OrthancServer | DcmqrscpServer, before: int, expected: int) -> None:
    """On dcmqrscp: exactly ``expected`` C-FINDs since ``before`` once the background ones landed."""
    if isinstance(pacs, DcmqrscpServer):
        wait_until(lambda: pacs.requests_seen("Find") - before >= expected, SETTLE_S, f"{expected} C-FINDs")
        assert pacs.requests_seen("Find") - before == expected


def finds_so_far(pacs: OrthancServer | DcmqrscpServer) -> int:
    return pacs.requests_seen("Find") if isinstance(pacs, DcmqrscpServer) else 0


#: A line of a C-FIND identifier as dcmqrscp --verbose logs it: tag, VR, value, keyword.
_ELEMENT = re.compile(
    r"^I: \([0-9a-f]{4},[0-9a-f]{4}\) \w\w (?:\[(?P<value>.*?)\]|\(no value available\))"
    r".*# .* (?P<keyword>\w+)$"
)


def identifiers_since(pacs: DcmqrscpServer, before: int) -> list[dict[str, str]]:
    """The C-FIND identifiers dcmqrscp received after its first ``before`` (keyword -> value)."""
    requests = pacs.log_path.read_text(errors="replace").split("Received Find SCP")[before + 1 :]
    found = []
    for request in requests:
        identifier = request.split("Find SCP Request Identifiers:", 1)[1].split("Find SCP Response", 1)[0]
        matches = (_ELEMENT.match(line.strip()) for line in identifier.splitlines())
        found.append({m["keyword"]: m["value"] or "" for m in matches if m})
    return found


def searched(pacs: OrthancServer | DcmqrscpServer, before: int, **keys: str) -> None:
    """On dcmqrscp: the first C-FIND since ``before`` was a STUDY-level search for ``keys`` (and
    no PATIENT-level or universal query was made since)."""
    if isinstance(pacs, DcmqrscpServer):
        identifiers = identifiers_since(pacs, before)
        assert identifiers[0]["QueryRetrieveLevel"] == "STUDY"
        assert {key: identifiers[0].get(key) for key in keys} == keys
        assert all(found["QueryRetrieveLevel"] in ("STUDY", "SERIES", "IMAGE") for found in identifiers)
        studies = [found for found in identifiers if found["QueryRetrieveLevel"] == "STUDY"]
        assert all(any(found[k] for k in found if k != "QueryRetrieveLevel") for found in studies)


def same_dataset(path: Path, archive_by_sop: dict[str, pydicom.Dataset], sop: str) -> None:
    """The file is the stored object ``sop``: every element equal (pixel data byte for byte)."""
    got = pydicom.dcmread(path)
    want = archive_by_sop[sop]
    assert str(got.SOPInstanceUID) == sop
    assert [elem.keyword for elem in want if got.get(elem.tag) != elem] == []
    assert got.PixelData == want.PixelData


def test_by_uid_resolves_each_level_with_one_targeted_query(
    mount: Mount, pacs: OrthancServer | DcmqrscpServer, archive_by_sop: dict[str, pydicom.Dataset]
) -> None:
    root = mount.mountpoint / "by-uid"
    before = finds_so_far(pacs)
    assert os.listdir(root) == []  # lists nothing: it never queries everything
    series = FOLLOWUP.series[0]
    study_dir = root / FOLLOWUP.uid
    assert os.listdir(study_dir) == [series.uid]
    files = sorted(os.listdir(study_dir / series.uid))
    assert files == sorted(f"{sop_uid(series, n)}.dcm" for n in range(1, series.count + 1))
    # One STUDY-level C-FIND for the study, then its series and its instances: no root query.
    finds_settle(pacs, before, 3)
    searched(pacs, before, StudyInstanceUID=FOLLOWUP.uid)
    copy = study_dir / series.uid / files[0]
    same_dataset(copy, archive_by_sop, files[0].removesuffix(".dcm"))
    # Not UIDs: refused without asking.
    before = finds_so_far(pacs)
    for name in ("not-a-uid", "1.2.x", "1." + "2" * 70, "1.2.3.4.5.6.7.8.9"):
        assert "No such file" in fails("ls", str(root / name))
    finds_settle(pacs, before, 1)  # only the well-formed, unknown UID was asked for


def test_by_id_and_by_accession_list_one_patients_studies(
    mount: Mount, pacs: OrthancServer | DcmqrscpServer
) -> None:
    before = finds_so_far(pacs)
    assert os.listdir(mount.mountpoint / "by-id") == []
    assert os.listdir(mount.mountpoint / "by-accession") == []
    studies = os.listdir(mount.mountpoint / "by-id" / SMITH_1.patient_id)
    assert studies == ["Smith^John (PAT-SMITH-1) - 2019-05-05 CT Head (A-smith1)"]
    # The study, and its series fetched ahead (one study, at most a few series).
    finds_settle(pacs, before, 2)
    searched(pacs, before, PatientID=SMITH_1.patient_id)
    thorax = os.listdir(mount.mountpoint / "by-accession" / "A-ct-thorax")
    assert thorax == ["Müller^Hans (PAT-UTF8) - 2024-03-01 CT Thorax (A-ct-thorax)"]
    files = run("find", str(mount.mountpoint / "by-accession" / "A-ct-thorax"), "-type", "f").splitlines()
    assert len(files) == sum(series.count for series in THORAX.series)
    before = finds_so_far(pacs)
    for name in ("PAT-*", "PAT?SMITH-1", "NOSUCH"):
        assert "No such file" in fails("ls", str(mount.mountpoint / "by-id" / name))
    finds_settle(pacs, before, 1)  # wildcards are never sent: only NOSUCH was asked for


def test_by_date_days_list_studies_with_their_patients(
    mount: Mount, pacs: OrthancServer | DcmqrscpServer
) -> None:
    by_date = mount.mountpoint / "by-date"
    before = finds_so_far(pacs)
    # views=listed: the views are listed beside the patients
    assert {"by-accession", "by-date", "by-id", "by-uid", "query"} <= set(os.listdir(mount.mountpoint))
    finds_settle(pacs, before, 1)  # the root's own C-FIND
    before = finds_so_far(pacs)
    years = os.listdir(by_date)
    today = datetime.date.today()
    assert {"1980", str(today.year), "today", "yesterday"} <= set(years) and "1979" not in years
    assert len(os.listdir(by_date / "2024")) == 12
    assert len(os.listdir(by_date / "2024" / "2024-02")) == 29  # a leap year
    assert "No such file" in fails("ls", str(by_date / "2023" / "2023-02" / "2023-02-29"))
    finds_settle(pacs, before, 0)  # the calendar costs no query
    day = by_date / "2019" / "2019-05" / "2019-05-05"
    assert os.listdir(day) == ["Smith^John (PAT-SMITH-1) - 2019-05-05 CT Head (A-smith1)"]
    finds_settle(pacs, before, 2)  # the day, and its one study's series fetched ahead
    searched(pacs, before, StudyDate="20190505")
    assert os.listdir(by_date / "2019" / "2019-05" / "2019-05-07") == []
    files = run("find", str(by_date / "2024" / "2024-03" / "2024-03-01"), "-type", "f").splitlines()
    assert len(files) == sum(series.count for series in THORAX.series)
    assert run("readlink", str(by_date / "today")).strip() == today.strftime("%Y/%Y-%m/%Y-%m-%d")
    yesterday = today - datetime.timedelta(days=1)
    assert run("readlink", str(by_date / "yesterday")).strip() == yesterday.strftime("%Y/%Y-%m/%Y-%m-%d")
    assert run("ls", "-ld", str(by_date / "today")).startswith("l")
    assert os.listdir(by_date / "today") == []  # followed by the kernel: a day with no studies


def test_query_directories_search_and_refuse_bad_keys(
    mount: Mount, pacs: OrthancServer | DcmqrscpServer
) -> None:
    query = mount.mountpoint / "query"
    before = finds_so_far(pacs)
    assert os.listdir(query) == []
    smiths = query / "PatientName=Smith^J*,StudyDate=20190101-20191231"
    assert sorted(os.listdir(smiths)) == [
        "Smith^John (PAT-SMITH-1) - 2019-05-05 CT Head (A-smith1)",
        "Smith^John (PAT-SMITH-2) - 2019-05-06 CT Head (A-smith2)",
    ]
    finds_settle(pacs, before, 3)  # the search, and each study's series fetched ahead
    searched(pacs, before, PatientName="Smith^J*", StudyDate="20190101-20191231")
    before = finds_so_far(pacs)
    müller = sorted(os.listdir(query / "PatientName=Müller*"))  # sent in UTF-8 (ISO_IR 192)
    assert [name.split(" - ")[0] for name in müller] == ["Müller^Hans (PAT-UTF8)"] * 2
    finds_settle(pacs, before, 3)
    if isinstance(pacs, OrthancServer):  # dcmqrscp ignores ModalitiesInStudy (an optional key)
        mr = sorted(os.listdir(query / "ModalitiesInStudy=MR,StudyDate=20210101-"))
        assert mr == [
            "AC_DC^Rock (PAT-SLASH) - 2021-09-09 Head_Neck (A-slash)",
            "山田^太郎 (PAT-CJK) - 2023-01-15 MR Gehirn (A-mr-brain)",
        ]
    before = finds_so_far(pacs)
    bad = query / "PatientNme=Smith*"
    assert "No such file" in fails("ls", str(bad))
    assert "No such file" in fails("stat", str(bad))
    assert "No such file" in fails("ls", str(query / "StudyDate=20190230"))
    finds_settle(pacs, before, 0)
    log = mount.log_text()
    assert log.count("unknown key 'PatientNme' (did you mean PatientName?)") == 1, log
    assert "StudyDate='20190230': give a date YYYYMMDD" in log


def test_one_study_through_two_views_is_retrieved_once(
    mount: Mount,
    pacs: OrthancServer | DcmqrscpServer,
    archive_by_sop: dict[str, pydicom.Dataset],
    tmp_path: Path,
) -> None:
    study = next(s for s in SMITH_1.studies)
    series = study.series[0]
    sop = sop_uid(series, 1)
    by_uid = mount.mountpoint / "by-uid" / study.uid / series.uid / f"{sop}.dcm"
    day = mount.mountpoint / "by-date" / "2019" / "2019-05" / "2019-05-05"
    (study_name,) = os.listdir(day)
    (series_name,) = os.listdir(day / study_name)
    (file_name,) = os.listdir(day / study_name / series_name)
    by_date = day / study_name / series_name / file_name
    retrievals = "Move"
    before = pacs.requests_seen(retrievals) if isinstance(pacs, DcmqrscpServer) else 0
    run("cp", str(by_uid), str(tmp_path / "copy.dcm"))
    if isinstance(pacs, DcmqrscpServer):
        assert pacs.requests_seen(retrievals) - before == 1
    run("cmp", str(by_uid), str(by_date))
    patient_dir = mount.mountpoint / f"Smith^John ({SMITH_1.patient_id})"
    run("cmp", str(by_uid), str(patient_dir / study_name.split(" - ", 1)[1] / series_name / file_name))
    if isinstance(pacs, DcmqrscpServer):
        assert pacs.requests_seen(retrievals) - before == 1  # the same cached file, three paths
    same_dataset(tmp_path / "copy.dcm", archive_by_sop, sop)
    run("cmp", str(tmp_path / "copy.dcm"), str(by_date))
