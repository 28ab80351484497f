"""The conformance scenarios: written once, run through every front end (see conftest.py).

Each one drives a real SCP (the demo archive's, or the deliberately broken one) and checks what a
user of the front end sees, and what the SCP was asked (its request counts): names, bytes, exact
sizes, one retrieval for many readers, the cached listing when the PACS is gone, a short listing
asked again, and C-GET after a failed C-MOVE.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest

from tests.broken_pacs import SERIES, Behaviour
from tests.conformance.expected import directories_of, path_of, walk
from tests.conformance.frontends import HANG_GUARD_S, Connect, Served
from tests.fault_tools import dataset_bytes

RETRIEVALS = ("C-MOVE", "C-GET")
SERVICE = {"move": "C-MOVE", "get": "C-GET"}


@pytest.fixture(scope="session")
def demo_sources(demo_folder: Path) -> dict[str, Path]:
    """Path below the front end's root -> the archive's file."""
    return {
        path_of(pydicom.dcmread(f, stop_before_pixels=True)): f for f in sorted(demo_folder.rglob("*.dcm"))
    }


def retrievals(served: Served) -> int:
    return sum(served.pacs.requests[service] for service in RETRIEVALS)


def test_the_tree_shows_every_name_and_lists_without_retrieving(
    connect: Connect, demo: Served, demo_sources: dict[str, Path]
) -> None:
    with connect(demo) as front_end:
        directories, files = walk(front_end)
    assert files == set(demo_sources)
    assert directories == directories_of(demo_sources)
    assert demo.pacs.requests["C-FIND"] > 0
    assert retrievals(demo) == 0  # directories cost C-FINDs only


@pytest.mark.parametrize("retrieve", ["move", "get"])
def test_every_file_has_the_archive_bytes_and_its_exact_size(
    connect: Connect, demo: Served, demo_sources: dict[str, Path], retrieve: str
) -> None:
    with connect(demo, retrieve=retrieve) as front_end:
        for path, source in sorted(demo_sources.items()):
            size = front_end.size(path)  # before the first read: retrieves the series
            data = front_end.read(path)
            assert size == len(data), path
            assert dataset_bytes(data) == dataset_bytes(source.read_bytes()), path
    series = {path.rsplit("/", 1)[0] for path in demo_sources}
    assert demo.pacs.requests[SERVICE[retrieve]] == len(series)  # one retrieval per series
    assert retrievals(demo) == len(series)  # and no other kind


def test_concurrent_readers_of_one_series_share_one_retrieval(
    connect: Connect, demo: Served, demo_sources: dict[str, Path]
) -> None:
    by_series: dict[str, list[str]] = {}
    for path in sorted(demo_sources):
        by_series.setdefault(path.rsplit("/", 1)[0], []).append(path)
    files = max(by_series.values(), key=len)
    readers = 2 * len(files)
    start = threading.Barrier(readers, timeout=HANG_GUARD_S)

    with connect(demo) as front_end:
        assert front_end.listdir(files[0].rsplit("/", 1)[0])  # listed first: only reads race

        def read(n: int) -> bytes:
            start.wait()
            return front_end.read(files[n % len(files)])

        with ThreadPoolExecutor(readers) as pool:
            results = [
                future.result(HANG_GUARD_S) for future in [pool.submit(read, n) for n in range(readers)]
            ]
    for n, data in enumerate(results):
        source = demo_sources[files[n % len(files)]]
        assert dataset_bytes(data) == dataset_bytes(source.read_bytes())
    assert retrievals(demo) == 1


# Stopping the demo SCP aborts its associations; pynetdicom's reactor thread of one still being
# set up (state Sta2) then raises InvalidEventError: the SCP's own noise, not dicomfs's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_cached_listing_is_served_when_the_pacs_is_gone(
    connect: Connect, demo: Served, demo_sources: dict[str, Path]
) -> None:
    some_file = min(demo_sources)
    parts = some_file.split("/")
    chain = ["/", *("/".join(parts[:depth]) for depth in range(2, len(parts)))]  # root .. series

    def listings() -> dict[str, list[str]]:
        return {path: front_end.listdir(path) for path in chain}

    with connect(demo, ttl=0) as front_end:  # every listing is stale at once: the PACS is asked
        before = listings()
        asked = demo.pacs.requests["C-FIND"]
        assert listings() == before
        assert demo.pacs.requests["C-FIND"] > asked  # stale listings were asked for again
        demo.pacs.stop()
        assert listings() == before
    assert some_file.rsplit("/", 1)[1] in before[chain[-1]]


def test_a_listing_shorter_than_the_pacs_count_is_asked_again(connect: Connect, broken: Served) -> None:
    """The first IMAGE-level C-FIND of each series lacks a row; NumberOfSeriesRelatedInstances
    says how many there are, so the listing is asked for once more (issue #4)."""
    broken.pacs.behaviour = Behaviour.SHORT_LISTING_ONCE
    with connect(broken) as front_end:
        for series in SERIES:
            paths = sorted(path_of(ds) for ds in series.instances)
            directory = paths[0].rsplit("/", 1)[0]
            assert [f"{directory}/{name}" for name in front_end.listdir(directory)] == paths
            assert broken.pacs.requests[f"C-FIND IMAGE {series.uid}"] == 2


def test_a_failed_c_move_falls_back_to_c_get(connect: Connect, broken: Served) -> None:
    """Every C-MOVE sub-operation fails (a PACS that cannot send the stored transfer syntax):
    the series comes by C-GET instead, and the reader gets its instance."""
    broken.pacs.behaviour = Behaviour.MOVE_FAILS
    wanted = SERIES[0].instances[-1]
    with connect(broken, retrieve="move") as front_end:
        data = front_end.read(path_of(wanted))
    got = pydicom.dcmread(io.BytesIO(data))
    assert got.SOPInstanceUID == wanted.SOPInstanceUID
    assert got.PixelData == wanted.PixelData
    assert broken.pacs.requests["C-MOVE"] >= 1
    assert broken.pacs.requests["C-GET"] >= 1
