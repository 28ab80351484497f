"""What a Linux user expects on day one, through the real command line and real mounts of Orthanc:
profiles, the source shown by mount and df, modes a copy can be deleted with, refusing to hide a
directory's files, systemd's readiness protocol, versions, and a quiet start and stop."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.app import notify
from dicomfs.app.cli import fuse_kwargs
from dicomfs.app.commandline import parse_args
from tests.conftest import DICOMFS_AET
from tests.mounting import dicomfs_command, is_mounted, mount_options, mounted, wait_until
from tests.pacs_servers import OrthancServer

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534  # nobody and nogroup on Debian
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
DEADLINE_S = 30.0  # guards against hangs only


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dicomfs_command(*args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def mount_entry(mountpoint: Path) -> list[str]:
    """The /proc/mounts fields (source, target, type, options, ...) of ``mountpoint``."""
    target = os.path.realpath(mountpoint)
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[1].encode().decode("unicode_escape") == target:
                return [field.encode().decode("unicode_escape") for field in fields]
    raise AssertionError(f"{mountpoint} is not mounted")


def df_source(mountpoint: Path) -> str:
    result = subprocess.run(["df", "--output=source", str(mountpoint)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[1].strip()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory under /tmp that every user may traverse (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="dicomfs-conv-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pacs_options(orthanc: OrthancServer, tmp_path: Path) -> dict[str, object]:
    """Options of a C-GET mount of the session's Orthanc (no storage SCP port to share)."""
    return {
        "serveraddress": "127.0.0.1",
        "serverport": orthanc.port,
        "aec": orthanc.ae_title,
        "aet": DICOMFS_AET,
        "retrieve": "get",
        "cachedir": tmp_path / "cache",
    }


def write_profile(path: Path, name: str, options: dict[str, object]) -> Path:
    lines = [f"[pacs.{name}]"]
    for key, value in options.items():
        lines.append(f"{key} = {value}" if isinstance(value, int) else f'{key} = "{value}"')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- profiles and the source


def test_profile_mount_shows_the_profile_as_source_and_the_command_line_wins(
    pacs_options: dict[str, object], tmp_path: Path
) -> None:
    config = write_profile(tmp_path / "config.toml", "orthanc", {**pacs_options, "aec": "WRONG-AE"})
    listed = run_cli("profiles", "-o", f"config={config}")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:2] == [
        "orthanc",
        f"WRONG-AE@127.0.0.1:{pacs_options['serverport']}",
    ]
    # Orthanc accepts any called AE; the override is seen in the log's "mounted AEC@..." line.
    options = mount_options(profile="orthanc", config=config, aec=pacs_options["aec"])
    with mounted(tmp_path / "mnt", options) as mount:
        assert mount_entry(mount.mountpoint)[0:3] == ["orthanc", str(mount.mountpoint), "fuse.dicomfs"]
        assert df_source(mount.mountpoint) == "orthanc"
        assert len(os.listdir(mount.mountpoint)) > 0
        assert f"mounted {pacs_options['aec']}@127.0.0.1:" in mount.log_text()


def test_source_word_names_the_pacs_and_mount_shows_it(
    pacs_options: dict[str, object], orthanc: OrthancServer, tmp_path: Path
) -> None:
    """``dicomfs AEC@host:port MOUNTPOINT``, detached like other FUSE file systems."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    source = f"{orthanc.ae_title}@127.0.0.1:{orthanc.port}"
    result = run_cli(source, str(mountpoint), "-o", f"retrieve=get,cachedir={tmp_path / 'cache'}")
    try:
        assert result.returncode == 0, result.stderr
        assert mount_entry(mountpoint)[0] == source and df_source(mountpoint) == source
        assert any(mountpoint.iterdir())
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False, capture_output=True)
    wait_until(lambda: "unmounted" in (tmp_path / "cache" / "dicomfs.log").read_text(), DEADLINE_S, "exit")


def test_a_bad_profile_file_is_one_line_and_mounts_nothing(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    config = xdg / "dicomfs" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[pacs.main]\nserveraddress = "127.0.0.1"\nsevrerport = 104\n', encoding="utf-8")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg)}
    for args in (["main", str(mountpoint)], [str(mountpoint), "-o", "profile=main"], ["profiles"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"dicomfs: {config}: [pacs.main] unknown option 'sevrerport' (did you mean 'serverport'?)"
        ]
        assert not is_mounted(mountpoint)


# --------------------------------------------------------------------------- what the mount hides


def test_refuses_a_non_empty_directory_and_a_mount_point_unless_nonempty(
    pacs_options: dict[str, object], tmp_path: Path
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    (mountpoint / "notes.txt").write_text("mine")
    refused = run_cli(str(mountpoint), "-f", "-o", mount_options(**pacs_options))
    assert refused.returncode == 2 and not is_mounted(mountpoint)
    assert refused.stderr.splitlines() == [
        f"dicomfs: mountpoint '{mountpoint}' is not empty (its files would be hidden; "
        "add -o nonempty to mount over it anyway)"
    ]
    with mounted(mountpoint, mount_options(**pacs_options, nonempty=1)) as mount:
        assert "notes.txt" not in os.listdir(mount.mountpoint)
        again = run_cli(
            str(mountpoint), "-f", "-o", mount_options(**{**pacs_options, "cachedir": tmp_path / "c2"})
        )
        assert again.returncode == 2
        assert again.stderr.splitlines() == [
            f"dicomfs: mountpoint '{mountpoint}' is already a mount point "
            "(unmount it, or add -o nonempty to mount over it)"
        ]
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
        assert sum(1 for line in mounts if f" {mountpoint} " in line) == 1
    assert (mountpoint / "notes.txt").read_text() == "mine"


def test_a_dead_mount_point_is_named_as_such(pacs_options: dict[str, object], tmp_path: Path) -> None:
    with mounted(tmp_path / "mnt", mount_options(**pacs_options)) as mount:
        mount.process.kill()  # SIGKILL: no unmount, the kernel answers ENOTCONN from now on
        mount.process.wait(timeout=DEADLINE_S)
        result = run_cli(str(mount.mountpoint), "-f", "-o", mount_options(**pacs_options))
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"dicomfs: mountpoint '{mount.mountpoint}' is a FUSE mount whose daemon is gone "
            f"(fusermount3 -u {mount.mountpoint})"
        ]


def test_proc_is_a_mount_point_and_refused(tmp_path: Path) -> None:
    result = run_cli("/proc", "-f", "-o", f"retrieve=get,cachedir={tmp_path / 'cache'}")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "dicomfs: mountpoint '/proc' is already a mount point "
        "(unmount it, or add -o nonempty to mount over it)"
    ]
    assert mount_entry(Path("/proc"))[2] == "proc"


def test_help_into_a_closed_pipe_is_no_traceback() -> None:
    """``dicomfs -h | head -1``, deterministically: the reader is gone before dicomfs writes."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            dicomfs_command("-h"), stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60, check=False
        )
    finally:
        os.close(writer)
    assert result.returncode == 0 and result.stderr == "", result.stderr


# --------------------------------------------------------------------------- modes


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_modes_owner_and_a_copy_a_normal_user_can_delete(
    pacs_options: dict[str, object], shared_dir: Path
) -> None:
    options = mount_options(**pacs_options, allow_other=1)
    with mounted(shared_dir / "mnt", options) as mount:
        series = next(path.parent for path in mount.mountpoint.rglob("*.dcm"))
        assert stat.S_IMODE(series.stat().st_mode) == 0o755
        some_file = next(series.iterdir())
        assert stat.S_IMODE(some_file.stat().st_mode) == 0o644
        assert (series.stat().st_uid, some_file.stat().st_gid) == (os.getuid(), os.getgid())
        # Read-only all the same: the bits say writable, every write says EROFS.
        for write in (
            lambda: (series / "new").touch(),
            lambda: os.open(some_file, os.O_RDWR),
            lambda: os.chmod(some_file, 0o600),
            lambda: os.unlink(some_file),
        ):
            with pytest.raises(OSError) as excinfo:
                write()
            assert excinfo.value.errno == errno.EROFS
        home = shared_dir / "home"
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        copy = home / "copy"
        cp = subprocess.run([*AS_NOBODY, "cp", "-r", str(series), str(copy)], capture_output=True, text=True)
        assert cp.returncode == 0, cp.stderr
        assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in series.iterdir())
        assert (copy / some_file.name).read_bytes() == some_file.read_bytes()
        rm = subprocess.run([*AS_NOBODY, "rm", "-rf", str(copy)], capture_output=True, text=True)
        assert rm.returncode == 0 and rm.stderr == ""
        assert not copy.exists()


def test_umask_uid_and_gid_options(pacs_options: dict[str, object], shared_dir: Path) -> None:
    options = mount_options(**pacs_options, umask="027", uid="nobody", gid=NOBODY)
    with mounted(shared_dir / "mnt", options) as mount:
        some_file = next(mount.mountpoint.rglob("*.dcm"))
        directory = some_file.parent
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750
        assert stat.S_IMODE(some_file.stat().st_mode) == 0o640
        assert (some_file.stat().st_uid, directory.stat().st_gid) == (NOBODY, NOBODY)
        assert (mount.mountpoint.stat().st_uid, mount.mountpoint.stat().st_mode & 0o777) == (NOBODY, 0o750)


# --------------------------------------------------------------------------- systemd, versions, quiet


def test_ready_and_stopping_are_sent_to_notify_socket(
    pacs_options: dict[str, object], tmp_path: Path
) -> None:
    """As contrib/systemd/dicomfs@.service runs it: ``dicomfs NAME MOUNTPOINT -f``, Type=notify."""
    write_profile(tmp_path / "xdg" / "dicomfs" / "config.toml", "main", pacs_options)
    socket_dir = Path(tempfile.mkdtemp(prefix="dfs-", dir="/tmp"))  # AF_UNIX paths are short
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(socket_dir / "notify"))
        listener.settimeout(DEADLINE_S)
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(socket_dir / "notify"),
            "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        }
        with open(tmp_path / "log", "wb") as log:
            process = subprocess.Popen(
                dicomfs_command("main", str(mountpoint), "-f"),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            ready = listener.recv(4096).decode()
            assert is_mounted(mountpoint)  # READY=1 comes once the mount is up
            assert ready.splitlines()[0] == "READY=1"
            assert f"STATUS=serving {pacs_options['aec']}@127.0.0.1:" in ready
            assert os.listdir(mountpoint)
            process.send_signal(signal.SIGTERM)
            stopping = listener.recv(4096).decode()
            assert stopping.splitlines()[0] == "STOPPING=1"
            assert process.wait(timeout=DEADLINE_S) == 0, (tmp_path / "log").read_text()
            assert not is_mounted(mountpoint)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=DEADLINE_S)
            if is_mounted(mountpoint):
                subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False)
            shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_systemd_user_unit_verifies(tmp_path: Path) -> None:
    unit = (REPO / "contrib" / "systemd" / "dicomfs@.service").read_text(encoding="utf-8")
    assert "\nType=notify\n" in unit and "ExecStart=/usr/bin/env dicomfs %i %h/pacs/%i -f\n" in unit
    instance = tmp_path / "dicomfs@main.service"
    instance.write_text(unit, encoding="utf-8")
    (tmp_path / "run").mkdir()
    result = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(instance)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run"), "HOME": str(tmp_path)},
    )
    # verify exits 0 even for an unknown Type=; what it says on stderr is the verdict.
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_names_the_libraries(flag: str) -> None:
    result = run_cli(flag)
    assert result.returncode == 0 and result.stderr == ""
    [line] = result.stdout.splitlines()
    for name in ("dicomfs ", "pynetdicom 3.", "pydicom 3.", "mfusepy 3.", "libfuse 3."):
        assert name in line, line


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_foreground_start_and_stop_are_quiet_and_exit_0(
    pacs_options: dict[str, object], tmp_path: Path, signum: int
) -> None:
    with mounted(tmp_path / "mnt", mount_options(**pacs_options)) as mount:
        assert os.listdir(mount.mountpoint)
        mount.process.send_signal(signum)
        assert mount.process.wait(timeout=DEADLINE_S) == 0
    lines = mount.log_text().splitlines()
    # Every line is one of ours (a timestamped log record); libfuse's own said "Ignoring invalid
    # max threads value 4294967295 > max (100000)." on every start with libfuse 3.14.
    assert lines and all(line[:4].isdigit() and " dicomfs." in line for line in lines), lines
    assert not any("ERROR" in line or "WARNING" in line for line in lines), lines


# --------------------------------------------------------------------------- fast unit tests


@pytest.mark.parametrize(
    ("argv", "fsname"),
    [
        (["/m"], "ANY-SCP@localhost:104"),
        (["PACS@[::1]:11112", "/m"], "PACS@[::1]:11112"),
        (["A,B@host", "/m"], "A\\,B@host:104"),  # libfuse's option parser takes "\," as ","
        (["/m", "-o", "fsname=my\\pacs"], "my\\\\pacs"),
    ],
)
def test_fsname_is_the_source_escaped_for_libfuse(argv: list[str], fsname: str) -> None:
    kwargs = fuse_kwargs(parse_args(argv, profiles=lambda name, config: {}))
    assert kwargs["fsname"] == fsname and kwargs["subtype"] == "dicomfs" and kwargs["ro"] is True


def test_profile_name_is_the_fsname() -> None:
    opts = parse_args(["main", "/m"], profiles=lambda name, config: {"aec": "PACS"})
    assert (fuse_kwargs(opts)["fsname"], opts.aec) == ("main", "PACS")


def test_max_idle_threads_is_set_for_the_multithreaded_libfuse3_loop() -> None:
    assert fuse_kwargs(parse_args(["/m"]))["max_idle_threads"] == 10
    assert "max_idle_threads" not in fuse_kwargs(parse_args(["/m", "-s"]))
    assert "max_idle_threads" not in fuse_kwargs(parse_args(["/m"]), libfuse_major=2)


def test_notify_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"dicomfs-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(DEADLINE_S)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.notify(notify.READY, "STATUS=x")
        assert listener.recv(4096) == b"READY=1\nSTATUS=x"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify.notify(notify.READY)  # not under systemd: nothing to tell
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    assert not notify.notify(notify.STOPPING)  # a vanished manager does not stop the mount
