"""The command line: historic invocation, detaching, bad options, signals, the demo."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.app.options import OPTIONS
from dicomfs.app.usage import format_markdown_table
from dicomfs.demo.samples import deterministic_uid, make_instance
from tests.conftest import DICOMFS_AET
from tests.mounting import (
    daemon_pids,
    dicomfs_command,
    is_mounted,
    mounted,
    pacs_options,
    process_gone,
    wait_until,
)
from tests.pacs_servers import OrthancServer, free_port

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dicomfs_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def detached_mount(tmp_path: Path) -> Iterator[Path]:
    """A mount point whose detached daemon is always unmounted and stopped afterwards."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    yield mountpoint
    if is_mounted(mountpoint):
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False, capture_output=True)
    for pid in daemon_pids(mountpoint):
        wait_until(lambda pid=pid: process_gone(pid), 15, f"daemon {pid} to exit")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "serverport=70000"], "serverport"),
        (["-o", "serverport=abc"], "serverport"),
        (["-o", "localport=0"], "localport"),
        (["-o", "nosuchoption=1"], "unknown option"),
        (["-o", "retrieve=fetch"], "retrieve"),
        (["-o", "timeout=-1"], "timeout"),
        (["-o", "cachesize=lots"], "cachesize"),
        (["-o", "aet=THIS-AE-TITLE-IS-TOO-LONG"], "aet"),
        (["-o", "aec="], "aec"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_mount_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    result = run_cli(str(mountpoint), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dicomfs: ") and message in lines[0], result.stderr
    assert not is_mounted(mountpoint)


def test_environment_errors_exit_2_before_mounting(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    cases = [
        ([], "missing mountpoint"),
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(afile)], "not a directory"),
        ([str(mountpoint), "-o", f"cachedir={afile}/sub"], "cachedir"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.returncode == 2, args
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not is_mounted(mountpoint)


def test_local_port_in_use_is_refused_before_mounting(tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            str(mountpoint), "-o", f"localaddress=127.0.0.1,localport={port},cachedir={tmp_path / 'c'}"
        )
    assert result.returncode == 2
    assert "already in use" in result.stderr
    assert not is_mounted(mountpoint)


def test_help_lists_every_option_with_its_default() -> None:
    result = run_cli("-h")
    assert result.returncode == 0
    for option in OPTIONS:
        assert option.name in result.stdout
        assert option.default_text in result.stdout


def test_readme_option_table_is_generated_from_the_option_table() -> None:
    assert format_markdown_table() in (REPO / "README.md").read_text(encoding="utf-8")


def test_dicomfs_py_and_console_script_are_on_path() -> None:
    bindir = Path(sys.executable).parent
    for name in ("dicomfs.py", "dicomfs"):
        program = shutil.which(name, path=str(bindir))
        assert program is not None, name
        result = subprocess.run([program, "--version"], capture_output=True, text=True, check=False)
        assert result.returncode == 0 and "dicomfs" in result.stdout, result.stderr


def test_historic_command_line_mounts_detached_and_fusermount_ends_it(
    orthanc: OrthancServer, detached_mount: Path, tmp_path: Path, move_port: int
) -> None:
    """The seed invocation verbatim (note the space before aec=), detaching like other FUSE filesystems."""
    program = shutil.which("dicomfs.py", path=str(Path(sys.executable).parent))
    assert program is not None
    result = subprocess.run(
        [
            program,
            str(detached_mount),
            "-o",
            f"serveraddress=127.0.0.1,serverport={orthanc.port},localport={move_port}",
            f"aec={orthanc.ae_title},aet={DICOMFS_AET},cachedir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert is_mounted(detached_mount)  # the parent returned only once the mount was up
    [pid] = daemon_pids(detached_mount)
    some_file = next(detached_mount.rglob("*.dcm"))
    assert some_file.stat().st_size == len(some_file.read_bytes()) > 0
    assert (tmp_path / "cache" / "dicomfs.log").exists()  # detached: the log goes to the cache dir
    subprocess.run(["fusermount3", "-u", str(detached_mount)], check=True)
    wait_until(lambda: process_gone(pid), 15, "the daemon to exit after fusermount3 -u")
    assert "unmounted" in (tmp_path / "cache" / "dicomfs.log").read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount_cleanly_and_close_the_storage_scp(
    orthanc: OrthancServer, tmp_path: Path, signum: int
) -> None:
    local_port = free_port()
    options = pacs_options(orthanc, tmp_path / "cache", localport=local_port, timeout=30)
    with mounted(tmp_path / "mnt", options) as mount:
        assert os.listdir(mount.mountpoint)
        mount.process.send_signal(signum)
        status = mount.process.wait(timeout=15)
        assert not is_mounted(mount.mountpoint)
        assert "unmounted" in mount.log_text()
        assert status == 0, mount.log_text()  # asked to stop, stopped cleanly: no failure
        assert "failed" not in mount.log_text(), mount.log_text()
    with socket.socket() as probe:  # the storage SCP let go of its port
        probe.bind(("127.0.0.1", local_port))


def test_demo_mounts_the_bundled_archive(detached_mount: Path, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    result = subprocess.run(
        dicomfs_command("demo", str(detached_mount)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    patients = [name for name in os.listdir(detached_mount) if name != "upload"]
    assert len(patients) == 3 and any("Müller" in name for name in patients)
    files = list(detached_mount.rglob("*.dcm"))
    assert len(files) == 40
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(files[0].parent), str(copy)], check=True)
    assert sorted(p.read_bytes() for p in copy.iterdir()) == sorted(
        p.read_bytes() for p in files[0].parent.iterdir()
    )
    # upload=on in the demo: its archive keeps what is copied into upload/ (issue #12).
    study, series, sop = (deterministic_uid("demo-upload", part) for part in ("study", "series", "sop"))
    new = make_instance(
        patient_name="Upload^Demo", patient_id="DEMO-UP", study_uid=study, series_uid=series, sop_uid=sop
    )
    new.save_as(tmp_path / "new.dcm", enforce_file_format=True)
    subprocess.run(["cp", str(tmp_path / "new.dcm"), str(detached_mount / "upload")], check=True)
    assert any("(DEMO-UP)" in name for name in os.listdir(detached_mount))
