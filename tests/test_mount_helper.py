"""``mount -t fuse.dicomfs`` and fstab lines, through the real mount(8) and libfuse's mount.fuse3.

mount(8) runs /sbin/mount.fuse (mount.fuse3), which runs ``/bin/sh -c "dicomfs SOURCE MOUNTPOINT -o
OPTS"``; mount(8) clears PATH first, so the shell finds ``dicomfs`` only in its default path
(/usr/local/sbin:/usr/local/bin:/usr/sbin:...). To test without installing anything for the whole
machine, each test runs in a private mount namespace of its own (``unshare --mount``) in which a
temporary directory holding a ``dicomfs`` script (this worktree's ``python -m dicomfs``) is
bind-mounted over /usr/local/sbin. The dicomfs mount lives in that namespace: commands run there
through ``nsenter``, and its files are read through ``/proc/PID/root``. Nothing here touches
/etc/fstab: ``mount -T FILE`` reads a temporary fstab the way ``mount /mnt/pacs`` reads the real one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DICOMFS_AET
from tests.mounting import daemon_pids, process_gone, wait_until
from tests.pacs_servers import OrthancServer

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("unshare", "nsenter", "mount.fuse3")),
    reason="needs root (mount namespaces, mount -t) and unshare, nsenter, mount.fuse3",
)

REPO = Path(__file__).resolve().parent.parent
DEADLINE_S = 30.0  # guards against hangs only
README_FSTAB_OPTIONS = "defaults,_netdev,allow_other"  # the README's fstab line
MORE_FSTAB_OPTIONS = "nofail,noauto,user,users,x-systemd.automount,x-systemd.idle-timeout=60,comment=pacs"


@dataclass
class Namespace:
    """A private mount namespace, held open by a sleeping process of ours."""

    holder: subprocess.Popen[str]

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--target={self.holder.pid}", "--mount", "--", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def inside(self, path: Path) -> Path:
        """``path`` as the namespace sees it, from outside."""
        return Path(f"/proc/{self.holder.pid}/root") / path.relative_to("/")

    def mount_entry(self, mountpoint: Path) -> list[str] | None:
        """The /proc/mounts fields of ``mountpoint`` in the namespace, or None."""
        lines = Path(f"/proc/{self.holder.pid}/mounts").read_text(encoding="utf-8").splitlines()
        for line in lines:
            fields = [field.encode().decode("unicode_escape") for field in line.split()]
            if fields[1] == str(mountpoint):
                return fields
        return None


@pytest.fixture
def namespace(tmp_path: Path) -> Iterator[Namespace]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    program = bindir / "dicomfs"
    program.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m dicomfs "$@"\n')
    program.chmod(0o755)
    holder = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation=private",
            "--",
            "sh",
            "-c",
            f"mount --bind {bindir} /usr/local/sbin && echo ready && exec sleep 3600",
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    space = Namespace(holder)
    try:
        yield space
    finally:
        mountpoint = tmp_path / "mnt"
        if space.mount_entry(mountpoint) is not None:
            space.run("umount", "-l", str(mountpoint))
        for pid in daemon_pids(mountpoint, program=b"dicomfs"):
            try:
                wait_until(lambda pid=pid: process_gone(pid), 15, f"daemon {pid} to exit")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
        holder.kill()
        holder.wait(timeout=DEADLINE_S)


@pytest.fixture
def profile_env(orthanc: OrthancServer, tmp_path: Path) -> dict[str, str]:
    """An environment whose user config holds profile ``orthanc`` (C-GET of the session's Orthanc).

    mount(8) passes XDG_CONFIG_HOME on (it clears PATH and HOME, not that).
    """
    config = tmp_path / "xdg" / "dicomfs" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        "[pacs.orthanc]\n"
        'serveraddress = "127.0.0.1"\n'
        f"serverport = {orthanc.port}\n"
        f'aec = "{orthanc.ae_title}"\n'
        f'aet = "{DICOMFS_AET}"\n'
        'retrieve = "get"\n'
        f'cachedir = "{tmp_path / "cache"}"\n',
        encoding="utf-8",
    )
    return {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def check_mounted_read_only(space: Namespace, mountpoint: Path, source: str) -> None:
    """Mounted with ``source`` shown, fuse.dicomfs, read-only, and files that read."""
    entry = space.mount_entry(mountpoint)
    assert entry is not None and entry[0] == source and entry[2] == "fuse.dicomfs", entry
    assert {"ro", "nosuid", "nodev"} <= set(entry[3].split(",")), entry
    some_file = next(space.inside(mountpoint).rglob("*.dcm"))
    assert some_file.stat().st_size == len(some_file.read_bytes()) > 0
    df = space.run("df", "--output=source", str(mountpoint))
    assert df.returncode == 0 and df.stdout.split()[1] == source, df
    touch = space.run("touch", f"{mountpoint}/new-file")
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr


def unmount_and_wait(space: Namespace, mountpoint: Path, name: str = "") -> None:
    """``umount name`` (the source, as the user of an fstab line may write it), else the mount point."""
    pids = daemon_pids(mountpoint, program=b"dicomfs")
    assert pids, "the detached daemon"
    result = space.run("umount", name or str(mountpoint))
    assert result.returncode == 0, result.stderr
    for pid in pids:
        wait_until(lambda pid=pid: process_gone(pid), DEADLINE_S, f"daemon {pid} to exit after umount")
    assert space.mount_entry(mountpoint) is None


def test_mount_t_fuse_dicomfs_with_a_profile_and_the_words_mount_adds(
    namespace: Namespace, profile_env: dict[str, str], tmp_path: Path
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    options = f"ro,noexec,nodev,nosuid,{README_FSTAB_OPTIONS},{MORE_FSTAB_OPTIONS},relatime,rw"
    result = namespace.run(
        "mount", "-t", "fuse.dicomfs", "orthanc", str(mountpoint), "-o", options, env=profile_env
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    check_mounted_read_only(namespace, mountpoint, "orthanc")  # rw was ignored: still read-only
    entry = namespace.mount_entry(mountpoint)
    assert entry is not None and "noexec" in entry[3].split(",")
    assert "allow_other" in entry[3].split(",")  # libfuse shows it in the kernel's options
    unmount_and_wait(namespace, mountpoint)


def test_an_fstab_line_mounts_with_mount_mountpoint(
    namespace: Namespace, profile_env: dict[str, str], tmp_path: Path
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    fstab = tmp_path / "fstab"
    line = f"orthanc {mountpoint} fuse.dicomfs {README_FSTAB_OPTIONS},nofail,x-systemd.automount 0 0"
    fstab.write_text(f"# the README's line\n{line}\n")
    result = namespace.run("mount", "-T", str(fstab), str(mountpoint), env=profile_env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    check_mounted_read_only(namespace, mountpoint, "orthanc")
    # The source equals the fstab's first field, so `mount -a` knows the line is mounted (else
    # it would run dicomfs again, which refuses a mount point: exit status 2).
    again = namespace.run("mount", "-T", str(fstab), "-a", "-v", env=profile_env)
    assert again.returncode == 0 and "already mounted" in again.stdout, again
    assert len(daemon_pids(mountpoint, program=b"dicomfs")) == 1
    unmount_and_wait(namespace, mountpoint, name="orthanc")


def test_mount_with_the_pacs_as_source(namespace: Namespace, orthanc: OrthancServer, tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    source = f"{orthanc.ae_title}@127.0.0.1:{orthanc.port}"
    options = f"rw,retrieve=get,aet={DICOMFS_AET},cachedir={tmp_path / 'cache'}"
    result = namespace.run("mount", "-t", "fuse.dicomfs", source, str(mountpoint), "-o", options)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    check_mounted_read_only(namespace, mountpoint, source)
    unmount_and_wait(namespace, mountpoint)


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        ("orthanc", "ro,bogus=1", "dicomfs: unknown option 'bogus'"),
        ("orthanc", "ro,serverport=0", "dicomfs: serverport: '0' is not a port number (1-65535)"),
        ("nosuch", "ro", "dicomfs: no profile 'nosuch' in "),
    ],
)
def test_a_bad_option_through_mount_is_one_line_and_mounts_nothing(
    namespace: Namespace, profile_env: dict[str, str], tmp_path: Path, source: str, options: str, message: str
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    result = namespace.run(
        "mount", "-t", "fuse.dicomfs", source, str(mountpoint), "-o", options, env=profile_env
    )
    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith(message), line
    assert namespace.mount_entry(mountpoint) is None
