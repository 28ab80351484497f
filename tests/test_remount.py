"""Unmount and mount again at once: the new mount waits for the old dicomfs to free localport,
but a port held by any other program is refused at once, in one line, before mounting."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.broken_pacs import SERIES, BrokenPacs
from tests.mounting import dicomfs_command, is_mounted, mounted, pacs_options
from tests.pacs_servers import free_port

pytestmark = pytest.mark.integration

REMOUNTS = 3


@pytest.fixture
def broken() -> Iterator[BrokenPacs]:
    with BrokenPacs() as pacs:
        yield pacs


def move_options(pacs: BrokenPacs, cachedir: Path, localport: int) -> str:
    pacs.move_port = localport
    return pacs_options(pacs, cachedir, localport=localport, timeout=5, retrieve="move")


def read_one_by_move(mountpoint: Path, number: int) -> None:
    """Read instance ``number`` of the first series: a C-MOVE into this mount's storage SCP."""
    (series_dir,) = [d for d in mountpoint.glob("*/*/*") if d.name.startswith("001 ")]
    want = SERIES[0].instances[number]
    got = pydicom.dcmread(series_dir / f"{int(want.InstanceNumber):04d}.dcm")
    assert got.SOPInstanceUID == want.SOPInstanceUID and got.PixelData == want.PixelData


def test_unmount_and_mount_again_at_once(broken: BrokenPacs, tmp_path: Path) -> None:
    """``fusermount3 -u`` returns before the daemon has closed its storage SCP; the next mount,
    started at once on the same localport, must come up and receive C-STOREs."""
    localport = free_port()
    mountpoint = tmp_path / "mnt"
    for attempt in range(REMOUNTS):
        # A fresh cache each time, so every read below is a real C-MOVE to the new storage SCP.
        options = move_options(broken, tmp_path / f"cache{attempt}", localport)
        with mounted(mountpoint, options) as first:
            read_one_by_move(mountpoint, 0)
            subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True, capture_output=True)
            with mounted(mountpoint, move_options(broken, tmp_path / f"again{attempt}", localport)) as second:
                read_one_by_move(mountpoint, 1)
                assert second.process.pid != first.process.pid
            assert "Traceback" not in first.log_text()  # both mounts log to the same file


def test_a_port_held_by_another_program_is_refused_at_once(tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        options = f"localaddress=127.0.0.1,localport={port},cachedir={tmp_path / 'c'}"
        result = subprocess.run(
            dicomfs_command(str(mountpoint), "-f", "-o", options),
            capture_output=True,
            text=True,
            timeout=120,  # guards against a hang only
        )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    # Named, so it was not mistaken for a dicomfs shutting down (which would be waited for).
    assert f"127.0.0.1:{port} is already in use by pid {os.getpid()}" in lines[0], lines
    assert not is_mounted(mountpoint)
