"""A PACS that limits associations per calling AE: dicomfs backs off, learns the limit, copies all."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DICOMFS_AET
from tests.fault_tools import SeriesData, ThrottledRelay, dataset_bytes, series_dir, write_series
from tests.limited_pacs import LimitedPacs
from tests.mounting import mounted, pacs_options
from tests.pacs_servers import HOST, free_port

pytestmark = pytest.mark.integration

PEER_LIMIT = 2
SERIES = 4
INSTANCES = 4
#: Slows the C-STOREs (about 0.3 s per series) so that the copies' retrievals overlap.
RELAY_RATE = 100_000


@pytest.fixture
def series(tmp_path: Path) -> list[SeriesData]:
    return [write_series(tmp_path / "data", f"limit{n}", INSTANCES, size=64) for n in range(SERIES)]


@pytest.fixture
def localport() -> int:
    return free_port()


@pytest.fixture
def relay(localport: int) -> Iterator[ThrottledRelay]:
    relay = ThrottledRelay(localport, rate=RELAY_RATE)
    yield relay
    relay.close()


def test_parallel_copies_from_a_pacs_that_allows_two_associations(
    series: list[SeriesData], relay: ThrottledRelay, localport: int, tmp_path: Path
) -> None:
    """Default maxassoc=4, four parallel `cp -r`: all 16 files, never more than 2 associations."""
    destinations = {DICOMFS_AET: (HOST, relay.port)}
    pacs = LimitedPacs(tmp_path / "data", PEER_LIMIT, ae_title="LIMITED", move_destinations=destinations)
    with pacs:
        options = pacs_options(pacs, tmp_path / "cache", localport=localport)
        with mounted(tmp_path / "mnt", options) as mount:
            directories = [series_dir(mount.mountpoint, one) for one in series]
            copies = [
                subprocess.Popen(
                    ["cp", "-r", str(directory), str(tmp_path / f"copy{n}")],
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for n, directory in enumerate(directories)
            ]
            errors = [copy.communicate(timeout=300)[1] for copy in copies]  # guards against a hang
            assert [copy.returncode for copy in copies] == [0] * SERIES, errors
            log = mount.log_text()
        copied = 0
        for n, one in enumerate(series):
            files = sorted((tmp_path / f"copy{n}").iterdir())
            assert {path.name: dataset_bytes(path.read_bytes()) for path in files} == one.sources()
            copied += len(files)
        assert copied == SERIES * INSTANCES
        # The limit was met (a third association was asked for and rejected), and learned once.
        assert pacs.rejected >= 1, (pacs.rejected, pacs.established)
        assert pacs.peak <= PEER_LIMIT, pacs.peak
        assert log.count("lowered to at most") == 1, log[-3000:]
        assert "rejected-transient" in log and "Traceback" not in log
