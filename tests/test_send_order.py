"""Reading speed must not depend on the PACS's send order (issue #8), checked by counts, not times.

Orthanc sends a series in the reverse of the order it stored it (``test_orthanc_sends_in_reverse_
load_order`` checks that precondition), so a series loaded in ascending instance order is sent in
descending order: 0120.dcm first. A real mount reads it in that send order, in reverse and in a
random order; every file must be right, and the associations dicomfs opened while reading (counted
by a relay in front of Orthanc) must stay a handful: one retrieval of the series, at most the
series' hurried budget, and for C-GET one SOP-class query. One single-instance retrieval per read
(the storm issue #8 measured) would be over a hundred.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt

from dicomfs.core.sendorder import MAX_HURRIED
from tests.conftest import DICOMFS_AET
from tests.fault_tools import SeriesData, ThrottledRelay, dataset_bytes, series_dir, write_series
from tests.mounting import mounted, pacs_options
from tests.pacs_servers import HOST, MoveDestination, OrthancServer, free_port

LOGGER = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

SERIES_SIZE = 120
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> SeriesData:
    return write_series(
        tmp_path_factory.mktemp("order-data"), "order", SERIES_SIZE, size=64, patient_id="ORDER"
    )


@pytest.fixture(scope="module")
def storage_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, series: SeriesData, storage_port: int
) -> Iterator[OrthancServer]:
    orthanc = OrthancServer(
        tmp_path_factory.mktemp("order-orthanc"),
        destinations=[MoveDestination(DICOMFS_AET, HOST, storage_port)],
    )
    with orthanc:
        orthanc.load(list(series.files))  # one at a time, in ascending instance order
        yield orthanc


@pytest.fixture(scope="module")
def relay(server: OrthancServer) -> Iterator[ThrottledRelay]:
    relay = ThrottledRelay(server.port)
    try:
        yield relay
    finally:
        relay.close()


def sent_instance_numbers(server: OrthancServer, series: SeriesData) -> list[int]:
    """Instance numbers in the order Orthanc sends them for a SERIES-level C-GET."""
    numbers: list[int] = []

    def on_store(event: evt.Event) -> int:
        numbers.append(int(event.dataset.InstanceNumber))
        return 0x0000

    sop_class = str(pydicom.dcmread(series.files[0], stop_before_pixels=True).SOPClassUID)
    ae = AE("ORDERCHECK")
    ae.add_requested_context(STUDY_ROOT_GET)
    ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(
        HOST,
        server.port,
        ae_title=server.ae_title,
        ext_neg=[build_role(sop_class, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = series.study_uid
        identifier.SeriesInstanceUID = series.series_uid
        for _status, _identifier in assoc.send_c_get(identifier, STUDY_ROOT_GET):
            pass
    finally:
        assoc.release()
    return numbers


def test_orthanc_sends_in_reverse_load_order(server: OrthancServer, series: SeriesData) -> None:
    assert sent_instance_numbers(server, series) == list(range(SERIES_SIZE, 0, -1))


@pytest.mark.parametrize("retrieve", ["move", "get"])
@pytest.mark.parametrize("read", ["send", "reverse", "random"])
def test_any_read_order_reads_every_file_with_few_associations(
    server: OrthancServer,
    relay: ThrottledRelay,
    series: SeriesData,
    storage_port: int,
    tmp_path: Path,
    retrieve: str,
    read: str,
) -> None:
    options = pacs_options(
        server, tmp_path / "cache", localport=storage_port, retrieve=retrieve, serverport=relay.port
    )
    sources = series.sources()
    with mounted(tmp_path / "mnt", options) as mount:
        directory = series_dir(mount.mountpoint, series)
        names = sorted(os.listdir(directory))  # the listings are done: what follows is retrieval
        assert names == sorted(sources)
        order = {"send": names[::-1], "reverse": names, "random": random.Random(7).sample(names, len(names))}
        before = relay.connections
        for name in order[read]:
            assert dataset_bytes((directory / name).read_bytes()) == sources[name], name
        opened = relay.connections - before
        log = mount.log_text()
    LOGGER.info("%s order, retrieve=%s: %d associations for %d reads", read, retrieve, opened, len(names))
    # one SERIES-level retrieval (+ the SOP-class query of C-GET), hurried ones within budget
    base = 2 if retrieve == "get" else 1
    limit = base if read == "send" else base + MAX_HURRIED
    assert base <= opened <= limit, f"{opened} associations for {SERIES_SIZE} reads\n{log}"
