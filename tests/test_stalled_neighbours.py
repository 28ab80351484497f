"""A cached file never waits for someone else's retrieval (issue 9.2), through a real mount.

The peer sends the first instance of a series by C-GET, then goes silent. While ``cat 0002.dcm``
waits for it, lookups and reads in the *same* directory must be answered: the kernel serialises
LOOKUP per directory without FUSE_PARALLEL_DIROPS (see ``dicomfs.fuse.lookups``). No clock is read:
the stalled reader must still be running when each of the other commands has returned, and the
peer stays silent until the test wakes it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.broken_pacs import SERIES, Behaviour, BrokenPacs, options_for
from tests.mounting import Mount, mounted

pytestmark = pytest.mark.integration

#: Long enough that the stalled reader outlives every other command here; only a hang guard.
TIMEOUT_S = 30.0


@pytest.fixture
def broken() -> Iterator[BrokenPacs]:
    with BrokenPacs() as pacs:
        yield pacs


@pytest.fixture
def mount(broken: BrokenPacs, tmp_path: Path) -> Iterator[Mount]:
    with mounted(tmp_path / "mnt", options_for(broken, tmp_path / "cache", "get", TIMEOUT_S)) as handle:
        yield handle


def run(*command: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(command, capture_output=True, timeout=2 * TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    return result


def test_cached_neighbours_answer_while_a_reader_waits_for_a_silent_pacs(
    mount: Mount, broken: BrokenPacs
) -> None:
    study = next(mount.mountpoint.glob("*/*"))
    series = sorted(study.iterdir())[0]
    first, second = sorted(os.listdir(series))[:2]  # names only: readdir, no LOOKUP
    want = SERIES[0].instances[0]

    broken.behaviour = Behaviour.FIRST_THEN_SILENT
    stalled = subprocess.Popen(["cat", str(series / second)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert broken.first_sent.wait(TIMEOUT_S), mount.log_text()
        assert stalled.poll() is None, "the reader of the second instance should be waiting"

        # The first instance arrived with the stalled retrieval: cat, stat, ls -l in its directory.
        copy = run("cat", str(series / first)).stdout
        assert stalled.poll() is None, "cat of a cached file waited for the stalled retrieval"
        got = pydicom.dcmread(pydicom.filebase.DicomBytesIO(copy))
        assert got.SOPInstanceUID == want.SOPInstanceUID and got.PixelData == want.PixelData
        size = run("stat", "-c", "%s", str(series / first)).stdout
        assert int(size) == len(copy)
        names = run("ls", str(series)).stdout.decode().split()
        assert [first, second] == names[:2]
        listing = run("ls", "-l", str(study)).stdout.decode()
        assert series.name in listing
        run("stat", str(series))
        assert stalled.poll() is None, "the stalled reader ended early: nothing above was tested"
    finally:
        broken.behaviour = Behaviour.NORMAL  # wake the peer: the stalled reader ends either way
        stalled.wait(timeout=2 * TIMEOUT_S)
        stalled.stdout.close()  # type: ignore[union-attr]
        stalled.stderr.close()  # type: ignore[union-attr]


def test_stat_of_an_uncached_file_still_gives_its_exact_size(mount: Mount) -> None:
    """LOOKUP answers uncached instances at once, but ``stat`` must still wait for the real size."""
    study = next(mount.mountpoint.glob("*/*"))
    series = sorted(study.iterdir())[1]
    for name in sorted(os.listdir(series)):  # each name's first LOOKUP is inside this stat
        size = int(run("stat", "-c", "%s", str(series / name)).stdout)
        assert size == len((series / name).read_bytes()) > 0, name
    sizes = {
        line.split()[-1]: int(line.split()[4])
        for line in run("ls", "-l", str(series)).stdout.decode().splitlines()[1:]
    }
    assert sizes == {name: (series / name).stat().st_size for name in os.listdir(series)}
