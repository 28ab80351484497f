"""Helpers for the fault and load tests: bulk test data, a throttling TCP relay, socket counting.

The relay slows one leg of a transfer (e.g. the PACS's C-STORE sub-operations to our storage SCP)
so a test can reliably act *during* a retrieval instead of racing a loopback transfer that ends in
a fraction of a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import diskcache
import numpy as np

from dicomfs.demo.samples import deterministic_uid, make_instance
from dicomfs.views.naming import instance_file_name
from tests.pacs_servers import HOST, OrthancServer, free_port

LOGGER = logging.getLogger(__name__)

#: Bytes of the DICOM preamble and "DICM" magic (PS3.10 7.1), before the File Meta group.
_PREAMBLE = 132


@dataclass(frozen=True)
class SeriesData:
    """A written test series: its UIDs and files, and the source bytes by SOP Instance UID."""

    patient_id: str
    study_uid: str
    series_uid: str
    files: tuple[Path, ...]
    sop_uids: tuple[str, ...]

    def sources(self) -> dict[str, bytes]:
        """The data set bytes of each instance, by the file name dicomfs gives it."""
        return {
            instance_file_name(str(number), sop_uid): dataset_bytes(path.read_bytes())
            for number, (path, sop_uid) in enumerate(zip(self.files, self.sop_uids, strict=True), start=1)
        }


def write_series(
    folder: Path,
    key: str,
    count: int,
    *,
    size: int = 8,
    patient_id: str = "",
    patient_name: str = "Load^Test",
) -> SeriesData:
    """Write ``count`` greyscale instances of ``size`` x ``size`` pixels as one series under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    patient_id = patient_id or f"PAT-{key}"
    study_uid = deterministic_uid("fault-study", key)
    series_uid = deterministic_uid("fault-series", key)
    files: list[Path] = []
    sop_uids: list[str] = []
    for number in range(1, count + 1):
        sop_uid = deterministic_uid("fault-instance", key, number)
        ds = make_instance(
            patient_name=patient_name,
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            study_description=f"Study {key}",
            series_description=f"Series {key}",
            instance_number=number,
            rows=1,
            columns=1,
        )
        # Pixels made by numpy: pure-Python generation of 256x256 frames takes seconds per series.
        ds.Rows = ds.Columns = size
        pixels = (np.arange(size * size, dtype=np.uint32) * 7 + number * 131) & 0x0FFF
        ds.PixelData = pixels.astype("<u2").tobytes()
        path = folder / f"{key}-{number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        sop_uids.append(str(sop_uid))
    return SeriesData(patient_id, str(study_uid), str(series_uid), tuple(files), tuple(sop_uids))


def write_patients(folder: Path, count: int) -> list[Path]:
    """``count`` patients of one study, one series and one 2x2 instance each (a big root listing)."""
    folder.mkdir(parents=True, exist_ok=True)
    template = make_instance(
        patient_name="Many^Patient",
        patient_id="X",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_uid="1.2.3.4.5",
        rows=2,
        columns=2,
    )
    paths = []
    for number in range(count):
        template.PatientID = f"MANY-{number:05d}"
        template.PatientName = f"Many^Patient{number:05d}"
        template.StudyInstanceUID = deterministic_uid("many-study", number)
        template.SeriesInstanceUID = deterministic_uid("many-series", number)
        sop_uid = deterministic_uid("many-instance", number)
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = sop_uid
        path = folder / f"many-{number:05d}.dcm"
        template.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def post_files(server: OrthancServer, files: Sequence[Path], threads: int = 4) -> None:
    """Load ``files`` over Orthanc's REST API in a few threads (~2 ms each; storescu: 90 ms)."""
    chunks = [files[start::threads] for start in range(threads)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(server.load, chunks))


def dataset_bytes(data: bytes) -> bytes:
    """The data set of a DICOM file without preamble and File Meta group (senders rebuild the meta)."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a DICOM file with a File Meta group length")
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL, PS3.10 7.1
    return data[_PREAMBLE + 12 + group_length :]


def series_dir(mountpoint: Path, series: SeriesData) -> Path:
    """The series directory of ``series`` (its patient has one study with one series)."""
    patient = next(p for p in mountpoint.iterdir() if p.name.endswith(f"({series.patient_id})"))
    (study,) = list(patient.iterdir())
    (found,) = list(study.iterdir())
    return found


def read_or_errno(path: Path) -> bytes | int:
    """The file's bytes, or the errno its open/read failed with."""
    try:
        return path.read_bytes()
    except OSError as exc:
        return exc.errno or -1


def cached_instances(cachedir: Path) -> dict[str, bytes]:
    """Every instance in a (not mounted) cache directory, by SOP Instance UID, read through diskcache
    as dicomfs does (its keys are (format, Study UID, Series UID, SOP Instance UID))."""
    found: dict[str, bytes] = {}
    with diskcache.Cache(str(cachedir / "instances")) as cache:
        for key in list(cache):
            handle = cache.get(key, read=True)
            if handle is not None:
                with handle:
                    found[str(key[-1] if isinstance(key, tuple) else key)] = handle.read()
    return found


def pacs_connections(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to a remote ``port`` on loopback.

    The process's socket inodes come from /proc/<pid>/fd; /proc/<pid>/net/tcp lists the whole
    network namespace, so only connections whose inode the process holds are counted.
    """
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/net/{table}") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                    count += 1
    return count


class ConnectionSampler:
    """Samples ``pacs_connections`` every few ms in a thread; ``peak`` is the largest count seen."""

    def __init__(self, pid: int, port: int, interval_s: float = 0.003) -> None:
        self._pid = pid
        self._port = port
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-sampler", daemon=True)
        self.peak = 0
        self.samples = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak = max(self.peak, pacs_connections(self._pid, self._port))
            self.samples += 1

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class ThrottledRelay:
    """A TCP relay from a free loopback port to ``target_port``, at most ``rate`` bytes/s each way.

    ``rate`` of 0 relays at full speed. Closing one side of a connection closes the other, so a
    killed peer looks killed to the far end too. ``connections`` counts the connections accepted
    (one per DICOM association): how many associations a client opened, whatever their lifetime.
    """

    _CHUNK = 8192

    def __init__(self, target_port: int, rate: int = 0) -> None:
        self.target_port = target_port
        self.rate = rate
        self.port = free_port()
        self._listener = socket.create_server((HOST, self.port))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.connections = 0
        self._threads = [threading.Thread(target=self._accept, name="relay-accept", daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return  # listener closed
            with self._lock:
                self.connections += 1
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(self._CHUNK):
                sink.sendall(data)
                if self.rate:
                    time.sleep(len(data) / self.rate)  # throttling, not synchronisation
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (we run as root), unmounted on exit."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def partial_files(cachedir: Path) -> list[Path]:
    """Half-received objects under ``cachedir/partial`` (each mount's folder; its lock file aside)."""
    return sorted(
        path for path in (cachedir / "partial").rglob("*") if path.is_file() and path.suffix != ".lock"
    )
