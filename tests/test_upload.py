"""``upload=on``: cp, cp -r and rsync into ``upload/`` send C-STOREs, through real mounts.

Against Orthanc and dcmqrscp (each started empty for this module, so uploads change no other
module's archive), a pynetdicom SCP that refuses every C-STORE, and a port nobody listens on.
The data are the synthetic archive's files (``tests.synthetic``).
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomfs.demo.samples import make_instance
from dicomfs.dimse import statuses
from tests.mounting import DICOMFS_AET, PeerAddress, ends_within, mounted, pacs_options, wait_until
from tests.pacs_servers import HOST, DcmqrscpServer, MoveDestination, OrthancServer, free_port

pytestmark = pytest.mark.integration

#: Bounds a shell tool's run: a guard against hangs only.
TOOL_TIMEOUT_S = 60.0
#: ``python3 -c`` copying argv[1] to argv[2] with open().write().
PYTHON_COPY = "import sys; open(sys.argv[2], 'wb').write(open(sys.argv[1], 'rb').read())"


# -- servers: one of each per module, empty at the start -------------------------------------------


@pytest.fixture(scope="module")
def upload_port() -> int:
    """Our storage SCP's port for this module's mounts (the servers know it as DICOMFS)."""
    return free_port()


@pytest.fixture(scope="module")
def orthanc_rw(tmp_path_factory: pytest.TempPathFactory, upload_port: int) -> Iterator[OrthancServer]:
    destinations = [MoveDestination(DICOMFS_AET, HOST, upload_port)]
    with OrthancServer(tmp_path_factory.mktemp("orthanc-upload"), destinations=destinations) as server:
        yield server


@pytest.fixture(scope="module")
def dcmqrscp_rw(tmp_path_factory: pytest.TempPathFactory, upload_port: int) -> Iterator[DcmqrscpServer]:
    destinations = [MoveDestination(DICOMFS_AET, HOST, upload_port)]
    workdir = tmp_path_factory.mktemp("dcmqrscp-upload")
    with DcmqrscpServer(workdir, destinations=destinations, verbose=True) as server:
        yield server


@pytest.fixture(scope="module", params=["orthanc", "dcmqrscp"])
def server(request: pytest.FixtureRequest) -> OrthancServer | DcmqrscpServer:
    found: OrthancServer | DcmqrscpServer = request.getfixturevalue(f"{request.param}_rw")
    return found


def stores_seen(pacs: OrthancServer | DcmqrscpServer) -> int:
    """C-STOREs the PACS took: dcmqrscp's requests (its verbose log); Orthanc's distinct instances."""
    if isinstance(pacs, DcmqrscpServer):
        return pacs.requests_seen("Store")
    with urllib.request.urlopen(f"http://{HOST}:{pacs.http_port}/statistics", timeout=30) as response:
        return int(json.loads(response.read())["CountInstances"])


class StoreScp:
    """A storage SCP answering every C-STORE with ``status``, accepting ``syntaxes`` only; it counts
    the C-STOREs and records the transfer syntax of each. C-ECHO too."""

    def __init__(
        self, status: int, syntaxes: Sequence[str] = ALL_TRANSFER_SYNTAXES, sop_classes: Sequence[str] = ()
    ) -> None:
        self.status = status
        self.syntaxes: list[str] = []  # one per C-STORE received
        self._lock = threading.Lock()
        self.port = free_port()
        self.host = HOST
        self.ae_title = "STORESCP"
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            if not sop_classes or context.abstract_syntax in sop_classes:
                ae.add_supported_context(context.abstract_syntax, list(syntaxes))
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            (HOST, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )

    @property
    def stores(self) -> int:
        with self._lock:
            return len(self.syntaxes)

    def _on_store(self, event: evt.Event) -> int:
        with self._lock:
            self.syntaxes.append(str(event.context.transfer_syntax))
        return self.status

    def stop(self) -> None:
        self._server.shutdown()


# -- helpers ---------------------------------------------------------------------------------------


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)


def series_files(archive_files: list[Path], *keys: str) -> list[Path]:
    """The archive's files of the series ``keys`` (one folder per series, ``tests.synthetic``)."""
    return sorted(path for path in archive_files if path.parent.name in keys)


def entry_with(folder: Path, text: str) -> Path:
    """The one entry of ``folder`` whose name contains ``text`` (a fresh listing: os.listdir)."""
    found = [name for name in os.listdir(folder) if text in name]
    assert len(found) == 1, f"{text!r} in {sorted(os.listdir(folder))}"
    return folder / found[0]


def with_sop_class(source: Path, sop_class: str, folder: Path) -> Path:
    """A copy of ``source`` with another SOP class (and so another SOP Instance UID)."""
    ds = pydicom.dcmread(source)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    path = folder / f"private-{source.name}"
    ds.save_as(path, enforce_file_format=True)
    return path


def assert_same_dataset(copy: Path, source: Path) -> None:
    """The data set read back from the tree equals the uploaded one (the PACS writes its own meta)."""
    got, want = pydicom.dcmread(copy), pydicom.dcmread(source)
    assert got.SOPInstanceUID == want.SOPInstanceUID
    assert got.file_meta.TransferSyntaxUID == want.file_meta.TransferSyntaxUID
    differing = [elem.keyword or str(elem.tag) for elem in want if got.get(elem.tag) != elem]
    assert not differing, f"{copy}: elements differ: {differing}"


# -- accepted uploads --------------------------------------------------------------------------------


def test_cp_file_and_cp_r_study_are_stored_and_listed_at_once(
    server: OrthancServer | DcmqrscpServer, archive_files: list[Path], upload_port: int, tmp_path: Path
) -> None:
    study = tmp_path / "ct-thorax"
    for key in ("rle", "nodesc"):
        shutil.copytree(series_files(archive_files, key)[0].parent, study / key)
    axial = series_files(archive_files, "axial")
    options = pacs_options(server, tmp_path / "cache", localport=upload_port, upload="on")
    with mounted(tmp_path / "mnt", options) as mount:
        root = mount.mountpoint
        assert sorted(os.listdir(root)) == ["upload"]  # the empty PACS; listed, so cached
        source = pydicom.dcmread(axial[0], stop_before_pixels=True)
        date = str(source.StudyDate)
        day = root / "by-date" / date[:4] / f"{date[:4]}-{date[4:6]}" / f"{date[:4]}-{date[4:6]}-{date[6:]}"
        by_id = root / "by-id" / str(source.PatientID)
        assert os.listdir(day) == []  # listed empty, so cached
        assert not by_id.exists()  # an ID without studies is no directory (cached so)
        before = stores_seen(server)
        done = run("cp", str(axial[0]), str(root / "upload"))
        assert done.returncode == 0, done.stderr
        assert stores_seen(server) == before + 1
        assert len(os.listdir(day)) == len(os.listdir(by_id)) == 1  # the views' searches too
        patient = entry_with(root, "(PAT-UTF8)")  # at once: the root listing was discarded
        thorax = entry_with(patient, "CT Thorax")
        assert len(os.listdir(thorax)) == 1  # one series listed (and cached)
        copy = next(path for path in (thorax / os.listdir(thorax)[0]).iterdir())
        assert_same_dataset(copy, axial[0])

        done = run("cp", "-r", str(study), str(root / "upload"))
        assert done.returncode == 0, done.stderr
        files = list(study.rglob("*.dcm"))
        assert stores_seen(server) == before + 1 + len(files)  # one C-STORE per file
        assert len(os.listdir(thorax)) == 3  # the new series, at once
        assert sorted(os.listdir(root / "upload")) == sorted(["ct-thorax", "failed", axial[0].name])
        assert sorted(os.listdir(root / "upload" / "ct-thorax")) == ["nodesc", "rle"]
        assert os.listdir(root / "upload" / "failed") == []


def test_rsync_r_is_stored(
    server: OrthancServer | DcmqrscpServer, archive_files: list[Path], upload_port: int, tmp_path: Path
) -> None:
    source = series_files(archive_files, "t2")[0].parent
    options = pacs_options(server, tmp_path / "cache", localport=upload_port, upload="on")
    with mounted(tmp_path / "mnt", options) as mount:
        root = mount.mountpoint
        before = stores_seen(server)
        done = run("rsync", "-r", f"{source}/", str(root / "upload" / "t2"))
        assert done.returncode == 0, done.stderr
        names = sorted(path.name for path in source.iterdir())
        assert stores_seen(server) == before + len(names)
        # rsync wrote ".0001.dcm.XXXXXX", closed it (the C-STORE) and renamed it.
        assert sorted(os.listdir(root / "upload" / "t2")) == names
        study = entry_with(entry_with(root, "(PAT-CJK)"), "MR Gehirn")
        series = study / os.listdir(study)[0]
        assert len(os.listdir(series)) == len(names)


# -- refused uploads -----------------------------------------------------------------------------------


def test_non_dicom_file_fails_with_einval_and_sends_nothing(
    server: OrthancServer | DcmqrscpServer, upload_port: int, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM\n" * 100)
    options = pacs_options(server, tmp_path / "cache", localport=upload_port, upload="on")
    with mounted(tmp_path / "mnt", options) as mount:
        before = stores_seen(server)
        done = run("cp", str(text), str(mount.mountpoint / "upload"))
        assert done.returncode != 0
        assert "Invalid argument" in done.stderr
        assert stores_seen(server) == before
        report = (mount.mountpoint / "upload" / "failed" / "notes.txt.txt").read_text()
        assert "not a DICOM Part 10 file: no 'DICM'" in report
        assert "fix: " in report and "force=True" not in report  # our words, not pydicom's advice
        assert "notes.txt" not in os.listdir(mount.mountpoint / "upload")


def test_refused_c_store_fails_with_eio_and_a_report(archive_files: list[Path], tmp_path: Path) -> None:
    pacs = StoreScp(statuses.OUT_OF_RESOURCES)
    try:
        options = pacs_options(pacs, tmp_path / "cache", upload="on", timeout=5)
        with mounted(tmp_path / "mnt", options) as mount:
            source = series_files(archive_files, "smith1-ct")[0]
            done = run("cp", str(source), str(mount.mountpoint / "upload"))
            assert done.returncode != 0
            assert "Input/output error" in done.stderr
            assert pacs.stores == 1  # one C-STORE, refused: nothing was retried or half-sent
            report = (mount.mountpoint / "upload" / "failed" / f"{source.name}.txt").read_text()
            assert "0xA700" in report and "Out of Resources" in report and "fix:" in report
            lines = [line for line in mount.log_text().splitlines() if "0xA700" in line]
            assert len(lines) == 1, lines
    finally:
        pacs.stop()


@pytest.mark.parametrize(
    ("key", "accepted", "sent"),
    [
        ("axial", [ImplicitVRLittleEndian], ImplicitVRLittleEndian),  # explicit -> implicit
        ("rle", [ExplicitVRLittleEndian], ExplicitVRLittleEndian),  # decompressed by pydicom
        ("rle", [RLELossless, ExplicitVRLittleEndian], RLELossless),  # as it is
    ],
)
def test_converted_only_when_the_pacs_needs_it(
    archive_files: list[Path], tmp_path: Path, key: str, accepted: list[str], sent: str
) -> None:
    pacs = StoreScp(statuses.SUCCESS, accepted)
    try:
        options = pacs_options(pacs, tmp_path / "cache", upload="on", timeout=5)
        with mounted(tmp_path / "mnt", options) as mount:
            done = run("cp", str(series_files(archive_files, key)[0]), str(mount.mountpoint / "upload"))
            assert done.returncode == 0, done.stderr
            assert pacs.syntaxes == [sent]  # one C-STORE, in the syntax the PACS takes
            converted = [line for line in mount.log_text().splitlines() if "converted to" in line]
            assert len(converted) == (0 if sent == RLELossless else 1), converted
    finally:
        pacs.stop()


def test_sop_class_not_accepted_is_eio_and_the_pacs_stays_up(
    archive_files: list[Path], tmp_path: Path
) -> None:
    pacs = StoreScp(statuses.SUCCESS, sop_classes=[CTImageStorage])
    try:
        options = pacs_options(pacs, tmp_path / "cache", upload="on", timeout=5)
        with mounted(tmp_path / "mnt", options) as mount:
            mr = series_files(archive_files, "t2")[0]
            done = run("cp", str(mr), str(mount.mountpoint / "upload"))
            assert done.returncode != 0 and "Input/output error" in done.stderr
            report = (mount.mountpoint / "upload" / "failed" / f"{mr.name}.txt").read_text()
            assert "accepts no presentation context for MR Image Storage" in report
            private = with_sop_class(series_files(archive_files, "axial")[1], "1.2.3.4.5.6.7", tmp_path)
            done = run("cp", str(private), str(mount.mountpoint / "upload"))
            assert done.returncode != 0 and "Input/output error" in done.stderr
            report = (mount.mountpoint / "upload" / "failed" / f"{private.name}.txt").read_text()
            assert "for 1.2.3.4.5.6.7; fix:" in report  # no name: the UID once
            done = run("cp", str(series_files(archive_files, "axial")[0]), str(mount.mountpoint / "upload"))
            assert done.returncode == 0, done.stderr  # a refusal is an answer: not taken for an outage
            assert pacs.stores == 1
            assert "unreachable" not in mount.log_text()
    finally:
        pacs.stop()


def test_in_flight_files_are_listed_and_sent_once_at_close(archive_files: list[Path], tmp_path: Path) -> None:
    pacs = StoreScp(statuses.SUCCESS)
    try:
        options = pacs_options(pacs, tmp_path / "cache", upload="on", timeout=5)
        with mounted(tmp_path / "mnt", options) as mount:
            data = series_files(archive_files, "axial")[0].read_bytes()
            target = mount.mountpoint / "upload" / "a.dcm"
            with open(target, "wb", buffering=0) as out:
                out.write(data[:1000])
                assert os.listdir(mount.mountpoint / "upload") == ["a.dcm", "failed"]
                assert os.stat(target).st_size == 1000  # in flight: what has been written
                out.write(data[1000:])
                assert pacs.stores == 0  # nothing is sent before the close
            assert pacs.stores == 1
            with pytest.raises(PermissionError):
                target.read_bytes()  # write-only: the stored object is read from the tree
    finally:
        pacs.stop()


def shell(command: str, **paths: Path) -> subprocess.CompletedProcess[str]:
    """``command`` run by bash, with ``{name}`` replaced by the quoted paths."""
    quoted = {name: shlex.quote(str(path)) for name, path in paths.items()}
    return run("bash", "-c", command.format(**quoted))


def test_shell_redirection_dd_tee_and_python_are_stored(archive_files: list[Path], tmp_path: Path) -> None:
    """bash opens ``> file``, dup2()s it onto stdout and closes it before the command writes: that
    close is a flush of an empty file, which sends nothing and fails nothing."""
    pacs = StoreScp(statuses.SUCCESS)
    try:
        options = pacs_options(pacs, tmp_path / "cache", upload="on", timeout=5)
        with mounted(tmp_path / "mnt", options) as mount:
            up = mount.mountpoint / "upload"
            src = series_files(archive_files, "axial")[0]
            commands = {
                "r1.dcm": "cat {src} > {up}/r1.dcm",
                "h1.dcm": f"head -c {src.stat().st_size} {{src}} > {{up}}/h1.dcm",
                "d1.dcm": "dd if={src} of={up}/d1.dcm status=none",
                "t1.dcm": "tee {up}/t1.dcm < {src} > /dev/null",
                "p1.dcm": f"python3 -c {shlex.quote(PYTHON_COPY)} {{src}} {{up}}/p1.dcm",
            }
            for name, command in commands.items():
                done = shell(command, src=src, up=up)
                assert done.returncode == 0, (name, done.stderr)
            assert pacs.stores == len(commands)  # one C-STORE each
            for command in ("touch {up}/touched", ": > {up}/emptied"):
                done = shell(command, up=up)
                assert done.returncode == 0, done.stderr
            assert pacs.stores == len(commands)  # an empty file is no upload: nothing sent
            assert sorted(os.listdir(up)) == sorted([*commands, "failed"])  # the empty ones went
            notes = tmp_path / "notdicom.txt"
            notes.write_text("not DICOM\n")
            done = run("rsync", str(notes), str(up))
            assert done.returncode != 0 and "Invalid argument" in done.stderr
            # rsync wrote ".notdicom.txt.XXXXXX": its report has the name rsync would have given it
            assert os.listdir(up / "failed") == ["notdicom.txt.txt"]
            assert pacs.stores == len(commands)
    finally:
        pacs.stop()


def test_a_file_cut_short_is_not_sent(orthanc_rw: OrthancServer, upload_port: int, tmp_path: Path) -> None:
    """``head -c`` of a big CT, and a writer killed mid-write (the kernel's close is a flush too):
    EINVAL, a report saying what is missing, nothing at the PACS (it would wait for the rest)."""
    big = tmp_path / "big.dcm"
    make_instance(
        patient_name="Cut^Short",
        patient_id="PAT-CUT",
        study_uid=pydicom.uid.generate_uid(),
        series_uid=pydicom.uid.generate_uid(),
        sop_uid=pydicom.uid.generate_uid(),
        rows=1024,
        columns=1024,
    ).save_as(big, enforce_file_format=True)
    pixels = 1024 * 1024 * 2
    header = big.stat().st_size - pixels
    options = pacs_options(orthanc_rw, tmp_path / "cache", localport=upload_port, upload="on", timeout=5)
    with mounted(tmp_path / "mnt", options) as mount:
        up = mount.mountpoint / "upload"
        before = stores_seen(orthanc_rw)
        done = shell("head -c 1000000 {big} > {up}/trunc.dcm", big=big, up=up)
        assert done.returncode != 0 and "Invalid argument" in done.stderr
        report = (up / "failed" / "trunc.dcm.txt").read_text()
        said = f"truncated: element (7FE0,0010) declares {pixels} bytes, {1000000 - header} present"
        assert said in report and "fix:" in report
        killed = (
            "import os, signal, sys; out = open(sys.argv[2], 'wb', buffering=0); "
            "out.write(open(sys.argv[1], 'rb').read()[:1500000]); os.kill(os.getpid(), signal.SIGKILL)"
        )
        done = run("python3", "-c", killed, str(big), str(up / "killed.dcm"))
        assert done.returncode == -signal.SIGKILL
        wait_until(lambda: "killed.dcm.txt" in os.listdir(up / "failed"), 30, "the killed writer's report")
        assert f"{1500000 - header} present" in (up / "failed" / "killed.dcm.txt").read_text()
        assert stores_seen(orthanc_rw) == before
        assert sorted(os.listdir(up)) == ["failed"]
        lines = [line for line in mount.log_text().splitlines() if "truncated:" in line]
        assert len(lines) == 2, lines  # one line per file


def test_pacs_gone_fails_with_eio_without_a_hang(archive_files: list[Path], tmp_path: Path) -> None:
    nobody = PeerAddress(HOST, free_port(), "GONE")
    options = pacs_options(nobody, tmp_path / "cache", upload="on", timeout=3)
    with mounted(tmp_path / "mnt", options) as mount:
        source = series_files(archive_files, "smith2-ct")[0]
        done = ends_within(lambda: run("cp", str(source), str(mount.mountpoint / "upload")), 60, "cp")
        assert done.returncode != 0
        assert "Input/output error" in done.stderr
        report = (mount.mountpoint / "upload" / "failed" / f"{source.name}.txt").read_text()
        assert "cannot reach PACS" in report and "fix: is the PACS running" in report


# -- read-only elsewhere ---------------------------------------------------------------------------------


@pytest.mark.parametrize("upload", ["on", "off"])
def test_writes_outside_upload_are_erofs(
    orthanc_rw: OrthancServer, upload_port: int, tmp_path: Path, upload: str
) -> None:
    options = pacs_options(orthanc_rw, tmp_path / "cache", localport=upload_port, upload=upload)
    with mounted(tmp_path / "mnt", options) as mount:
        root = mount.mountpoint
        assert ("upload" in os.listdir(root)) == (upload == "on")
        for command in (["touch", str(root / "x.dcm")], ["mkdir", str(root / "d")]):
            done = run(*command)
            assert done.returncode != 0 and "Read-only file system" in done.stderr, done.stderr
        if upload == "off":
            done = run("mkdir", str(root / "upload"))
            assert "Read-only file system" in done.stderr
        patients = [name for name in os.listdir(root) if name != "upload"]
        if patients:  # uploaded by the tests above: the tree itself stays read-only
            done = run("rm", "-rf", str(root / patients[0]))
            assert done.returncode != 0 and "Read-only file system" in done.stderr
            some_file = next((root / patients[0]).rglob("*.dcm"))
            for write in (lambda: os.open(some_file, os.O_RDWR), lambda: os.chmod(some_file, 0o600)):
                with pytest.raises(OSError) as caught:
                    write()
                assert caught.value.errno == errno.EROFS
    wait_until(lambda: not (tmp_path / "mnt").is_mount(), 10, "the unmount")
