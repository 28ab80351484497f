"""Result caps against Orthanc with ``LimitFindResults: 3`` (the test archive: 7 patients, 8 studies).

Orthanc 1.10 answers a C-FIND past its limit with exactly 3 Pending responses and then 0xFE00
(Cancel) although nobody cancelled (measured; ``dimse.statuses``). Before issue #12 that made
``ls`` of the root fail with EIO; now the root shows README.txt, and a STUDY-level query is split
by StudyDate until every part is under the limit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from dicomfs.dimse.client import PacsAddress, PacsClient
from dicomfs.dimse.queries import DimseQueries, identifier
from tests.mounting import mounted, pacs_options
from tests.pacs_servers import HOST, OrthancServer
from tests.synthetic import ARCHIVE, write_test_archive

LIMIT = 3


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    files = write_test_archive(tmp_path_factory.mktemp("caps-data"))
    server = OrthancServer(tmp_path_factory.mktemp("caps-orthanc"), extra_config={"LimitFindResults": LIMIT})
    with server:
        server.load(files)
        yield server


class CountingClient(PacsClient):
    """The real client, counting its C-FINDs."""

    finds = 0

    def find(self, query: Dataset, model_name: str = "", limit: int | None = None, **keep: Any) -> list[Any]:
        self.finds += 1
        return super().find(query, model_name, limit=limit, **keep)


def _client(orthanc: OrthancServer) -> CountingClient:
    return CountingClient(PacsAddress(HOST, orthanc.port, orthanc.ae_title, "CAPTEST", timeout=10))


def test_a_capped_root_shows_readme_not_eio(orthanc: OrthancServer, tmp_path: Path) -> None:
    options = pacs_options(orthanc, tmp_path / "cache", retrieve="get")
    with mounted(tmp_path / "mnt", options) as mount:
        entries = ["README.txt", "by-accession", "by-date", "by-id", "by-uid", "query"]
        assert sorted(os.listdir(mount.mountpoint)) == entries
        assert sorted(os.listdir(mount.mountpoint)) == entries
        text = (mount.mountpoint / "README.txt").read_text()
        log = mount.log_text()
    assert "0xFE00" in text and "LimitFindResults" in text
    assert not any(patient.name and patient.name in text for patient in ARCHIVE)
    assert len([line for line in log.splitlines() if "the root lists no patients" in line]) == 1


def test_a_capped_study_query_is_split_until_complete(orthanc: OrthancServer) -> None:
    client = _client(orthanc)
    try:
        matches = DimseQueries(client).matching_studies({"StudyDate": "20190101-20241231"})
    finally:
        client.close()
    assert matches.complete, matches.missing
    expected = {str(study.uid) for patient in ARCHIVE for study in patient.studies}
    assert {row["StudyInstanceUID"] for row in matches.rows} == expected
    assert len(matches.rows) == sum(len(patient.studies) for patient in ARCHIVE)
    # 2,192 days: at most 12 halvings, 2 C-FINDs each, plus the first (capped) one.
    assert 1 < client.finds <= 2 * 12 + 1


def test_a_limit_cancels_and_keeps_that_many(orthanc: OrthancServer) -> None:
    client = _client(orthanc)
    try:
        found = client.find(identifier("STUDY", StudyInstanceUID="", StudyDate=""), limit=2)
    finally:
        client.close()
    assert len(found) == 2  # our C-CANCEL ended it: Orthanc's own 0xFE00 is then no cap
