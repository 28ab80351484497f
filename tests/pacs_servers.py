"""Real PACS processes for the integration tests: Orthanc and DCMTK's dcmqrscp on 127.0.0.1.

Each server runs as a child process in its own session (process group), so ``stop()``/``kill()``
reach dcmqrscp's forked per-association children too. Storage lives in ``workdir`` and survives
``stop()``; ``start()`` again reuses the same ports, which is what the recovery tests need.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from pydicom.uid import UID
from pynetdicom import AE

LOGGER = logging.getLogger(__name__)

HOST = "127.0.0.1"
ORTHANC_BINARY = "/usr/sbin/Orthanc"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.05
VERIFICATION = UID("1.2.840.10008.1.1")  # PS3.4 A.4


@dataclass(frozen=True)
class MoveDestination:
    """A C-MOVE destination the server must know (both servers refuse unknown move AEs)."""

    ae_title: str
    host: str
    port: int


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def echo(host: str, port: int, ae_title: str, timeout_s: float = 2.0) -> bool:
    """True when a C-ECHO to ``ae_title`` at ``host:port`` succeeds."""
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0x0000
    finally:
        assoc.release()


_Server = TypeVar("_Server", bound="_ServerProcess")


class _ServerProcess:
    """Process handling shared by both servers: start, readiness by C-ECHO, stop, kill."""

    name = "server"

    def __init__(self, workdir: Path, ae_title: str, destinations: Sequence[MoveDestination]) -> None:
        self.workdir = workdir
        self.ae_title = ae_title
        self.destinations = tuple(destinations)
        self.host = HOST
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        return echo(self.host, self.port, self.ae_title, timeout_s=1.0)

    def start(self) -> None:
        """Start the process and return once it answers C-ECHO; raise RuntimeError otherwise."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"{self.name} already running (pid {self._process.pid})")
        with self.log_path.open("ab") as log:
            # A new session makes the server a process group leader we can signal as a whole.
            self._process = subprocess.Popen(
                self._command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._process.returncode}: {self._log_tail()}")
            if self._port_open() and self._is_ready():
                LOGGER.info("%s ready on %s:%d (pid %d)", self.name, self.host, self.port, self._process.pid)
                return
            time.sleep(_POLL_INTERVAL_S)  # polling interval, bounded by the deadline above
        self.kill()
        raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT_S} s: {self._log_tail()}")

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((self.host, self.port)) == 0

    def _signal(self, signum: int) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
            os.killpg(self._process.pid, signum)

    def stop(self) -> None:
        """SIGTERM the process group, wait, SIGKILL if it lingers. Storage is kept."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                LOGGER.warning("%s ignored SIGTERM; killing", self.name)
        self._signal(signal.SIGKILL)  # also reaps forked children that outlived the parent
        self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the process group at once (fault-injection tests)."""
        if self._process is None:
            return
        self._signal(signal.SIGKILL)
        self._process.wait()
        self._process = None

    def _log_tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def __enter__(self: _Server) -> _Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class OrthancServer(_ServerProcess):
    """Orthanc 1.10 with a generated configuration; instances are loaded over its loopback REST API."""

    name = "orthanc"

    def __init__(
        self,
        workdir: Path,
        ae_title: str = "ORTHANC",
        destinations: Sequence[MoveDestination] = (),
        *,
        synchronous_move: bool = True,
        extra_config: Mapping[str, object] | None = None,
    ) -> None:
        """``synchronous_move`` False: C-MOVE answered at once, its C-STOREs sent by a job later.
        ``extra_config``: Orthanc settings that replace the generated ones (e.g.
        ``{"DicomCheckCalledAet": True}``)."""
        super().__init__(workdir, ae_title, destinations)
        self.synchronous_move = synchronous_move
        self.extra_config = dict(extra_config or {})
        self.http_port = free_port()
        self.config_path = workdir / "orthanc.json"
        self._write_config()

    def _write_config(self) -> None:
        storage = self.workdir / "storage"
        (self.workdir / "tmp").mkdir(exist_ok=True)
        config = {
            "Name": "dicomfs-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "TemporaryDirectory": str(self.workdir / "tmp"),
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,  # HTTP answers loopback clients only
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "MetricsEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DefaultEncoding": "Utf8",
            "AcceptedTransferSyntaxes": ["1.2.840.10008.1.*"],
            "UnknownSopClassAccepted": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {
                dest.ae_title.lower(): [dest.ae_title, dest.host, dest.port] for dest in self.destinations
            },
            "DicomScuTimeout": 10,
            "SynchronousCMove": self.synchronous_move,
            "SaveJobs": False,
            "StableAge": 1,
            "SyncStorageArea": False,  # test data: no fsync per instance
        }
        config.update(self.extra_config)
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    def _command(self) -> list[str]:
        return [ORTHANC_BINARY, "--no-jobs", str(self.config_path)]

    def load(self, files: Sequence[Path]) -> None:
        """POST each file to ``/instances``; raise RuntimeError if Orthanc rejects one."""
        for path in files:
            request = urllib.request.Request(
                f"http://{HOST}:{self.http_port}/instances",
                data=path.read_bytes(),
                headers={"Content-Type": "application/dicom"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
            if answer.get("Status") not in ("Success", "AlreadyStored"):
                raise RuntimeError(f"Orthanc refused {path}: {answer}")


class DcmqrscpServer(_ServerProcess):
    """DCMTK dcmqrscp with a generated dcmqrscp.cfg; instances are indexed with dcmqridx.

    Answers are converted to UTF-8 (``-Cr +U8``), so C-FIND responses carry ISO_IR 192 whatever
    the stored character set. Incoming associations (our C-GET) accept RLE Lossless (``+xr``);
    outgoing ones (C-MOVE sub-operations) propose uncompressed syntaxes only, so dicomfs falls
    back to C-GET for RLE data. dcmqrscp cannot transcode RLE: it sends every instance of a SOP
    class over the first context accepted for it (C-MOVE: the one it proposed; C-GET: the first
    one we proposed), so dicomfs retries C-GET with compressed syntaxes offered first.
    """

    name = "dcmqrscp"

    def __init__(
        self,
        workdir: Path,
        ae_title: str = "DCMQRSCP",
        destinations: Sequence[MoveDestination] = (),
        incoming_profile: str = "",
        verbose: bool = False,
    ) -> None:
        """``incoming_profile``: a DCMTK association configuration (asconfig.txt format) whose
        profile ``Incoming`` replaces ``--prefer-rle`` for associations we open (C-GET).
        ``verbose``: log every request received ("Received Get SCP", ...) to ``log_path``."""
        super().__init__(workdir, ae_title, destinations)
        self.incoming_profile = incoming_profile
        self.verbose = verbose
        self.storage_dir = workdir / "storage"
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "dcmqrscp.cfg"
        self._write_config()

    def _write_config(self) -> None:
        hosts = "\n".join(
            f"dest{index} = ({dest.ae_title}, {dest.host}, {dest.port})"
            for index, dest in enumerate(self.destinations)
        )
        # AETable: title, storage area, access, quota (max studies, capped at 500; bytes per study), peers.
        self.config_path.write_text(
            f"NetworkTCPPort = {self.port}\n"
            "MaxPDUSize = 16384\n"
            "MaxAssociations = 32\n"
            f"HostTable BEGIN\n{hosts}\nHostTable END\n"
            "VendorTable BEGIN\nVendorTable END\n"
            "AETable BEGIN\n"
            f"{self.ae_title} {self.storage_dir} RW (500, 1024mb) ANY\n"
            "AETable END\n",
            encoding="utf-8",
        )

    def _command(self) -> list[str]:
        if self.incoming_profile:
            profile_path = self.workdir / "association.cfg"
            profile_path.write_text(self.incoming_profile, encoding="utf-8")
            negotiation = ["--assoc-config-file", str(profile_path), "Incoming", "Outgoing"]
        else:
            negotiation = ["--prefer-rle"]  # incoming (our C-GET): accept RLE next to uncompressed
        return [
            "dcmqrscp",
            "--config",
            str(self.config_path),
            "--disable-host-lookup",
            *negotiation,
            *(["--verbose"] if self.verbose else []),
            "--override-charset",
            "--convert-to-utf8",
        ]

    def requests_seen(self, service: str) -> int:
        """How many C-GET/C-MOVE/C-FIND requests (``service`` "Get", "Move", "Find") the log shows
        so far; needs ``verbose``."""
        return self.log_path.read_text(errors="replace").count(f"Received {service} SCP")

    def load(self, files: Sequence[Path]) -> None:
        """Copy the files into the storage area and register them with dcmqridx."""
        targets = []
        first = len(list(self.storage_dir.glob("loaded*.dcm")))  # keep earlier loads intact
        for index, path in enumerate(files, start=first):
            target = self.storage_dir / f"loaded{index:05d}.dcm"
            shutil.copyfile(path, target)
            targets.append(str(target))
        result = subprocess.run(
            ["dcmqridx", str(self.storage_dir), *targets],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"dcmqridx failed ({result.returncode}): {result.stderr[-2000:]}")
