"""Measurement primitives: timed commands, dicomfs mounts and the DCMTK peers, all on 127.0.0.1."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.mounting import Mount, mounted, pacs_options, wait_until
from tests.pacs_servers import HOST, OrthancServer

PEER_AET = "BENCHSCU"
STORESCP_AET = "STORESCP"
COMMAND_TIMEOUT_S = 900.0
_NODELAY = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK reads this to disable Nagle
_counter = itertools.count()


@dataclass(frozen=True)
class TreePaths:
    """Paths inside the mount, found once by a discovery mount (relative to the mount point)."""

    ct_study: str
    ct_series: str
    ct_last_instance: str
    small_patient: str
    small_study: str


@dataclass
class Env:
    """What every measurement needs: the PACS, our ports and a scratch directory."""

    orthanc: OrthancServer
    dicomfs_port: int
    storescp_port: int
    scratch: Path
    paths: TreePaths | None = None
    profile_dir: Path | None = None  # py-spy profiles of the daemon go here when set
    py_spy: str = "py-spy"

    def fresh_dir(self, stem: str) -> Path:
        """A new, empty directory under the scratch area."""
        path = self.scratch / f"{stem}-{next(_counter)}"
        path.mkdir(parents=True)
        return path

    def options(self, cachedir: Path, retrieve: str) -> str:
        # timeout=30: dicomfs's default, as a user's mount has it.
        return pacs_options(
            self.orthanc, cachedir, localport=self.dicomfs_port, timeout=30, retrieve=retrieve
        )

    @contextlib.contextmanager
    def mount(self, cachedir: Path, retrieve: str = "get") -> Iterator[Mount]:
        """Mount dicomfs in the foreground on a new mount point; always unmounted afterwards."""
        mountpoint = self.fresh_dir("mnt")
        with mounted(mountpoint, self.options(cachedir, retrieve)) as handle:
            yield handle

    @contextlib.contextmanager
    def fresh_mount(self, retrieve: str = "get") -> Iterator[Mount]:
        """A new mount on an empty cache directory, removed afterwards."""
        cachedir = self.fresh_dir("cache")
        try:
            with self.mount(cachedir, retrieve) as handle:
                yield handle
        finally:
            shutil.rmtree(cachedir, ignore_errors=True)


@contextlib.contextmanager
def profiled(env: Env, pid: int, name: str) -> Iterator[None]:
    """Sample the daemon with py-spy (collapsed stacks, ``.txt``) while the block runs, if asked to."""
    if env.profile_dir is None:
        yield
        return
    out = env.profile_dir / f"{name}-{next(_counter)}.txt"
    command = [
        env.py_spy,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--threads",
        "--idle",
        "--nonblocking",
    ]
    process = subprocess.Popen(
        [*command, "--rate", "200", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        time.sleep(0.3)  # py-spy needs a moment to attach; a few missed samples do not matter
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(command: Sequence[str | Path], env: dict[str, str] | None = None) -> None:
    """Run a command to completion, output discarded; RuntimeError with its stderr on failure."""
    result = subprocess.run(
        [str(part) for part in command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{command[0]} exited with {result.returncode}: {stderr}")


def timed(command: Sequence[str | Path], env: dict[str, str] | None = None) -> float:
    """Wall-clock seconds of one command, process start-up included (the same for A and B)."""
    started = time.perf_counter()
    run(command, env)
    return time.perf_counter() - started


def count_files(directory: Path) -> int:
    return sum(len(files) for _root, _dirs, files in os.walk(directory))


def expect_files(directory: Path, expected: int, what: str) -> None:
    got = count_files(directory)
    if got != expected:
        raise RuntimeError(f"{what}: {got} files in {directory}, expected {expected}")


def vm_hwm_bytes(pid: int) -> int:
    """Peak resident set size of a running process (VmHWM in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


# --------------------------------------------------------------------------- DCMTK peers


def _scu(tool: str, orthanc: OrthancServer, level: str, keys: dict[str, str]) -> list[str]:
    command = [tool, "-aet", PEER_AET, "-aec", orthanc.ae_title, "-S", "-k", f"QueryRetrieveLevel={level}"]
    for key, value in keys.items():
        command += ["-k", f"{key}={value}" if value else key]
    return command


def getscu_command(orthanc: OrthancServer, level: str, keys: dict[str, str], out: Path) -> list[str]:
    return [*_scu("getscu", orthanc, level, keys), "-od", str(out), HOST, str(orthanc.port)]


def time_getscu(orthanc: OrthancServer, level: str, keys: dict[str, str], out: Path) -> float:
    return timed(getscu_command(orthanc, level, keys, out), _NODELAY)


def getscu_peak_rss(orthanc: OrthancServer, level: str, keys: dict[str, str], out: Path) -> int:
    """Run getscu and return its peak RSS in bytes (ru_maxrss of the reaped child)."""
    process = subprocess.Popen(
        getscu_command(orthanc, level, keys, out),
        env=_NODELAY,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"getscu exited with {process.returncode}")
    return usage.ru_maxrss * 1024


def time_findscu(orthanc: OrthancServer, level: str, keys: dict[str, str]) -> float:
    return timed([*_scu("findscu", orthanc, level, keys), HOST, str(orthanc.port)], _NODELAY)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


@contextlib.contextmanager
def storescp(port: int, out: Path) -> Iterator[subprocess.Popen[bytes]]:
    """DCMTK storescp as the C-MOVE destination of movescu; stopped by PID afterwards."""
    process = subprocess.Popen(
        ["storescp", "-aet", STORESCP_AET, "-od", str(out), str(port)],
        env=_NODELAY,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _port_open(port) or process.poll() is not None, 10.0, "storescp")
        if process.poll() is not None:
            raise RuntimeError(f"storescp exited with {process.returncode}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def time_movescu(orthanc: OrthancServer, keys: dict[str, str], storescp_port: int, out: Path) -> float:
    """movescu of one series to a storescp the bench started; start-up of storescp not timed."""
    with storescp(storescp_port, out):
        command = [*_scu("movescu", orthanc, "SERIES", keys), "-aem", STORESCP_AET, HOST, str(orthanc.port)]
        return timed(command, _NODELAY)
