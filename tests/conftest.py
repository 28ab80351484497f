"""Shared fixtures: the synthetic archive, real PACS servers on loopback, and real mounts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.mounting import DICOMFS_AET
from tests.pacs_servers import DcmqrscpServer, MoveDestination, OrthancServer, free_port
from tests.synthetic import write_test_archive

# DICOMFS_AET is still imported from here by many tests; it is defined in tests.mounting.


@pytest.fixture(scope="session")
def archive_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_test_archive(tmp_path_factory.mktemp("archive"))


@pytest.fixture(scope="session")
def archive_by_sop(archive_files: list[Path]) -> dict[str, pydicom.Dataset]:
    """The source datasets, by SOP Instance UID, to compare copies with."""
    datasets = [pydicom.dcmread(path) for path in archive_files]
    return {str(ds.SOPInstanceUID): ds for ds in datasets}


@pytest.fixture(scope="session")
def move_port() -> int:
    """The port of the storage SCP of every C-MOVE test mount (the servers must know it)."""
    return free_port()


@pytest.fixture(scope="session")
def orthanc(
    tmp_path_factory: pytest.TempPathFactory, archive_files: list[Path], move_port: int
) -> Iterator[OrthancServer]:
    server = OrthancServer(
        tmp_path_factory.mktemp("orthanc"),
        destinations=[MoveDestination(DICOMFS_AET, "127.0.0.1", move_port)],
    )
    with server:
        server.load(archive_files)
        yield server


def serving_dcmqrscp(
    workdir: Path, files: list[Path], move_port: int, *, verbose: bool = False
) -> Iterator[DcmqrscpServer]:
    """dcmqrscp holding ``files``, knowing our storage SCP at ``move_port``; stopped at the end."""
    server = DcmqrscpServer(
        workdir, destinations=[MoveDestination(DICOMFS_AET, "127.0.0.1", move_port)], verbose=verbose
    )
    server.load(files)
    with server:
        yield server


@pytest.fixture(scope="session")
def dcmqrscp(
    tmp_path_factory: pytest.TempPathFactory, archive_files: list[Path], move_port: int
) -> Iterator[DcmqrscpServer]:
    yield from serving_dcmqrscp(tmp_path_factory.mktemp("dcmqrscp"), archive_files, move_port)


@pytest.fixture(params=["orthanc", "dcmqrscp"])
def pacs(request: pytest.FixtureRequest) -> OrthancServer | DcmqrscpServer:
    """Each real PACS in turn."""
    server: OrthancServer | DcmqrscpServer = request.getfixturevalue(request.param)
    return server
