"""Load against a real mount: many concurrent readers, and listings of thousands of entries."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import DICOMFS_AET
from tests.fault_tools import (
    ConnectionSampler,
    SeriesData,
    dataset_bytes,
    post_files,
    series_dir,
    write_patients,
    write_series,
)
from tests.mounting import mounted, pacs_options, wait_until
from tests.pacs_servers import HOST, MoveDestination, OrthancServer, free_port

pytestmark = pytest.mark.integration

SERIES_COUNT = 6
READERS = 16
MANY_PATIENTS = 5000
BIG_SERIES = 2000


@pytest.fixture(scope="module")
def load_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def load_series(tmp_path_factory: pytest.TempPathFactory) -> list[SeriesData]:
    folder = tmp_path_factory.mktemp("load-data")
    return [write_series(folder, f"load{n}", 20, size=64) for n in range(SERIES_COUNT)]


@pytest.fixture(scope="module")
def parts_series(tmp_path_factory: pytest.TempPathFactory) -> SeriesData:
    """Large enough to be split into parts (retrieval.MIN_PART_SIZE)."""
    return write_series(tmp_path_factory.mktemp("parts-data"), "parts", 60, size=64, patient_id="PARTS")


@pytest.fixture(scope="module")
def load_server(
    tmp_path_factory: pytest.TempPathFactory,
    load_series: list[SeriesData],
    parts_series: SeriesData,
    load_port: int,
) -> Iterator[OrthancServer]:
    server = OrthancServer(
        tmp_path_factory.mktemp("load-orthanc"), destinations=[MoveDestination(DICOMFS_AET, HOST, load_port)]
    )
    with server:
        post_files(server, [path for series in [*load_series, parts_series] for path in series.files])
        yield server


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], SeriesData]:
    folder = tmp_path_factory.mktemp("big-data")
    return write_patients(folder / "patients", MANY_PATIENTS), write_series(
        folder / "series", "huge", BIG_SERIES
    )


@pytest.fixture(scope="module")
def big_server(
    tmp_path_factory: pytest.TempPathFactory, big_archive: tuple[list[Path], SeriesData]
) -> Iterator[OrthancServer]:
    patients, series = big_archive
    with OrthancServer(tmp_path_factory.mktemp("big-orthanc")) as server:
        post_files(server, [*patients, *series.files])
        yield server


def options(server: OrthancServer, cachedir: Path, localport: int, **extra: object) -> str:
    return pacs_options(server, cachedir, localport=localport, timeout=30, **extra)


def digest(data: bytes) -> str:
    return hashlib.sha256(dataset_bytes(data)).hexdigest()


def test_sixteen_readers_and_ls_lr(
    load_server: OrthancServer, load_series: list[SeriesData], load_port: int, tmp_path: Path
) -> None:
    """Every byte correct, each series retrieved once, never more than maxassoc associations."""
    options_text = options(load_server, tmp_path / "cache", load_port, maxassoc=2)
    with mounted(tmp_path / "mnt", options_text) as mount:
        expected: dict[Path, str] = {}
        for series in load_series:
            directory = series_dir(mount.mountpoint, series)
            expected |= {
                directory / name: hashlib.sha256(source).hexdigest()
                for name, source in series.sources().items()
            }
        paths = sorted(expected)
        random.Random(4).shuffle(paths)  # readers start on different series at once
        with ConnectionSampler(mount.process.pid, load_server.port) as sampler:
            ls = subprocess.Popen(
                ["ls", "-lR", str(mount.mountpoint)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            with ThreadPoolExecutor(max_workers=READERS) as pool:
                got = dict(zip(paths, pool.map(lambda path: digest(path.read_bytes()), paths), strict=True))
            out, err = ls.communicate(timeout=120)
        assert ls.returncode == 0, err
        assert got == expected
        listed = out.decode()
        assert all(path.name in listed for path in paths)
        # A job logs once its last part is done, which may be just after its readers were released.
        lines = [f"series {series.series_uid}: 20 instances" for series in load_series]
        wait_until(lambda: all(line in mount.log_text() for line in lines), 10, "every retrieval's log line")
        log = mount.log_text()
        for line in lines:
            assert log.count(line) == 1, log[-3000:]
        assert sampler.samples > 20
        assert 1 <= sampler.peak <= 2, sampler.peak


def test_thousands_of_entries_are_listed_completely(
    big_server: OrthancServer, big_archive: tuple[list[Path], SeriesData], tmp_path: Path
) -> None:
    patients, series = big_archive
    # 5,001 patients: past the default rootlimit (5000), which would show README.txt instead.
    with mounted(
        tmp_path / "mnt", options(big_server, tmp_path / "cache", free_port(), retrieve="get", rootlimit=0)
    ) as mount:
        root = subprocess.run(
            ["ls", str(mount.mountpoint)], capture_output=True, text=True, timeout=120, check=True
        )
        assert len(root.stdout.splitlines()) == len(patients) + 1
        directory = series_dir(mount.mountpoint, series)
        listing = subprocess.run(
            ["ls", str(directory)], capture_output=True, text=True, timeout=120, check=True
        )
        assert sorted(listing.stdout.splitlines()) == sorted(series.sources())
        assert len(os.listdir(directory)) == BIG_SERIES


@pytest.mark.parametrize("retrieve", ["move", "get"])
def test_a_series_split_over_parallel_associations_arrives_whole(
    load_server: OrthancServer, parts_series: SeriesData, load_port: int, tmp_path: Path, retrieve: str
) -> None:
    """parallel=3: IMAGE-level retrievals of UID lists; the last file is read first (hurried)."""
    opts = options(load_server, tmp_path / "cache", load_port, retrieve=retrieve, parallel=3, maxassoc=4)
    with mounted(tmp_path / "mnt", opts) as mount:
        folder = series_dir(mount.mountpoint, parts_series)
        expected = parts_series.sources()
        last = sorted(expected)[-1]
        with open(folder / last, "rb") as first_reader:
            assert first_reader.read(1) == b"\0"  # the 128-byte preamble
        got = {name: dataset_bytes((folder / name).read_bytes()) for name in expected}
        assert got == expected
        wait_until(
            lambda: f"series {parts_series.series_uid}: 60 instances" in mount.log_text(), 10, "the log"
        )
        assert "Traceback" not in mount.log_text()
