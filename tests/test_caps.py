"""Result caps through real mounts: a PACS that cuts C-FIND answers and reports plain success.

One in-process capping SCP (tests/capping_pacs.py, cap 3) for the module, and the mount told its
cap (``findlimit=3``). The archive: CAP^ALICE with 7 studies over four days (three on one day, at
three times), CAP^CROWD with 4 studies in one minute (no range can split them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.core.errors import AnswerCapped
from dicomfs.demo.samples import deterministic_uid, make_instance
from dicomfs.dimse import statuses
from dicomfs.dimse.client import PacsAddress, PacsClient
from dicomfs.dimse.queries import DimseQueries, identifier
from tests.capping_pacs import CappingPacs
from tests.mounting import mounted, pacs_options
from tests.pacs_servers import HOST

CAP = 3
ALICE = "CAP^ALICE (CAP-A)"
CROWD = "CAP^CROWD (CAP-C)"
ALICE_STUDIES = [
    ("20240101", "090000"),
    ("20240102", "090000"),
    ("20240103", "090000"),
    ("20240201", "090000"),
    ("20240301", "080000"),
    ("20240301", "120000"),
    ("20240301", "160000"),
]
CROWD_STUDIES = [("20230505", "101010")] * 4


def _write(folder: Path, name: str, patient_id: str, studies: list[tuple[str, str]]) -> set[str]:
    uids = set()
    for number, (date, time_of_day) in enumerate(studies):
        study_uid = deterministic_uid("caps-study", patient_id, number)
        ds = make_instance(
            patient_name=name,
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=deterministic_uid("caps-series", patient_id, number),
            sop_uid=deterministic_uid("caps-sop", patient_id, number),
            study_date=date,
            study_description=f"Study {number}",
            accession=f"ACC{patient_id}{number}",
            rows=8,
            columns=8,
        )
        ds.StudyTime = time_of_day
        ds.save_as(folder / f"{patient_id}-{number}.dcm", enforce_file_format=True)
        uids.add(str(study_uid))
    return uids


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("caps-archive")
    _write(folder, "CAP^ALICE", "CAP-A", ALICE_STUDIES)
    _write(folder, "CAP^CROWD", "CAP-C", CROWD_STUDIES)
    return folder


@pytest.fixture(scope="module")
def pacs(archive: Path) -> Iterator[CappingPacs]:
    with CappingPacs(archive, CAP) as server:
        yield server


def _options(pacs: CappingPacs, tmp_path: Path, **extra: object) -> str:
    return pacs_options(pacs, tmp_path / "cache", retrieve="get", findlimit=CAP, **extra)


#: The views a root that lists no patients shows (views=auto), sorted.
VIEWS = ["by-accession", "by-date", "by-id", "by-uid", "query"]


def _log_lines(text: str, words: str) -> list[str]:
    return [line for line in text.splitlines() if words in line]


def test_root_past_rootlimit_shows_readme_and_cancels_the_query(pacs: CappingPacs, tmp_path: Path) -> None:
    pacs.watch_cancel_after = 2  # rootlimit=1: the root is asked for 2 rows, then cancelled
    try:
        with mounted(tmp_path / "mnt", _options(pacs, tmp_path, rootlimit=1)) as mount:
            cancels = pacs.cancels  # the start-up check's own C-FIND (cancelled at once) is done
            # views=auto: where the root lists no patients, the views are the way in.
            assert sorted(os.listdir(mount.mountpoint)) == ["README.txt", *VIEWS]
            text = (mount.mountpoint / "README.txt").read_text()
            assert "rootlimit=1" in text and "no partial list" in text
            assert all(f"{view}/" in text for view in VIEWS), text
            assert sorted(os.listdir(mount.mountpoint)) == ["README.txt", *VIEWS]  # remembered, logged once
            with pytest.raises(FileNotFoundError):
                os.listdir(mount.mountpoint / ALICE)
            log = mount.log_text()
    finally:
        pacs.watch_cancel_after = 0
    assert pacs.cancels == cancels + 1  # the SCP saw our C-CANCEL
    assert len(_log_lines(log, "the root lists no patients")) == 1


def test_capped_listings_are_split_or_marked_incomplete(pacs: CappingPacs, tmp_path: Path) -> None:
    with mounted(tmp_path / "mnt", _options(pacs, tmp_path)) as mount:
        assert sorted(os.listdir(mount.mountpoint)) == [ALICE, CROWD]  # 2 rows: under the cap
        studies = os.listdir(mount.mountpoint / ALICE)  # 7 studies: split until whole
        crowd = sorted(os.listdir(mount.mountpoint / CROWD))  # 4 in one minute: cannot be split
        assert sorted(os.listdir(mount.mountpoint / CROWD)) == crowd  # cached: no second line
        marker = (mount.mountpoint / CROWD / "_INCOMPLETE_LISTING.txt").read_text()
        log = mount.log_text()
    assert sorted(name[:10] for name in studies) == sorted(
        f"{d[:4]}-{d[4:6]}-{d[6:]}" for d, _t in ALICE_STUDIES
    )
    assert "_INCOMPLETE_LISTING.txt" in crowd
    assert len(crowd) == 1 + CAP  # the marker and what came: never shown as the whole listing
    assert "INCOMPLETE" in marker and "2023-05-05 10:10" in marker
    lines = _log_lines(log, "listed incomplete")
    assert len(lines) == 1, log
    assert "2023-05-05 10:10" in lines[0] and "narrow the query" in lines[0]


def _client(pacs: CappingPacs, find_limit: int = CAP) -> PacsClient:
    address = PacsAddress(HOST, pacs.port, called_aet=pacs.ae_title, calling_aet="CAPTEST", timeout=10)
    return PacsClient(address, find_limit=find_limit)


@pytest.mark.parametrize(
    ("final_status", "find_limit", "came", "words"),
    [
        (statuses.SUCCESS, CAP, CAP, "findlimit"),
        (statuses.FIND_RESPONSE_LIMIT, 0, CAP, "0xB001"),
        (statuses.FIND_OUT_OF_RESOURCES, 0, 0, "0xA700"),
    ],
)
def test_a_capped_answer_is_told_from_a_whole_one(
    pacs: CappingPacs, final_status: int, find_limit: int, came: int, words: str
) -> None:
    client = _client(pacs, find_limit)
    pacs.final_status = final_status
    try:
        whole = client.find(identifier("STUDY", StudyDate="20240101-20240102", StudyInstanceUID=""))
        with pytest.raises(AnswerCapped) as capped:
            client.find(identifier("STUDY", StudyDate="", StudyInstanceUID=""))
    finally:
        pacs.final_status = statuses.SUCCESS
        client.close()
    assert len(whole) == 2  # under the cap: whole (exactly the cap would count as cut)
    assert capped.value.count == came and len(capped.value.partial) == came
    assert words in str(capped.value)


def test_matching_studies_in_process_counts_its_c_finds(pacs: CappingPacs) -> None:
    client = _client(pacs)
    try:
        before = pacs.finds
        complete = DimseQueries(client).matching_studies({"StudyDate": "20240101-20240331"})
        finds = pacs.finds - before
    finally:
        client.close()
    assert complete.complete and len(complete.rows) == len(ALICE_STUDIES)
    assert {row["PatientID"] for row in complete.rows} == {"CAP-A"}
    # The capped range (91 days: 7 halvings to a day, 2 C-FINDs each, fewer where a half is
    # whole), then 2024-03-01 by minutes (11 halvings): bounded, and more than one.
    assert 2 < finds <= 2 * (7 + 11) + 1
