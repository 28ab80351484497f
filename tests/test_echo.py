"""``dicomfs echo`` and the mount's start-up check, through the real command line, against Orthanc,
dcmqrscp and in-process peers on 127.0.0.1: each misconfiguration gets its own cause and fix."""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, StoragePresentationContexts, evt

from dicomfs.dimse.explain import association_failure
from tests.big_archive import BigArchive, big_options
from tests.big_index import BigIndex
from tests.broken_pacs import BrokenPacs
from tests.broken_pacs import options_for as broken_options
from tests.conftest import DICOMFS_AET
from tests.mounting import (
    daemon_pids,
    dicomfs_command,
    is_mounted,
    mount_options,
    mounted,
    process_gone,
    wait_until,
)
from tests.pacs_servers import HOST, DcmqrscpServer, MoveDestination, OrthancServer, free_port

# The TLS PACS and its certificates (pytest registers these fixtures under their own names).
from tests.test_security import Pki, pki, tls_pacs  # noqa: F401

STEPS_MOVE = ["resolve", "connect", "associate", "echo", "find", "move"]
#: Guards against a hang only; a run takes a second or two.
RUN_TIMEOUT_S = 120
#: Every network wait of the checks (the PACS are local: any answer comes at once).
TIMEOUT = 10


def run_echo(options: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dicomfs_command("echo", "-o", options, *extra),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def options_for(server: OrthancServer | DcmqrscpServer, localport: int, **extra: object) -> str:
    values: dict[str, object] = {
        "serveraddress": HOST,
        "serverport": server.port,
        "aec": server.ae_title,
        "aet": DICOMFS_AET,
        "localaddress": HOST,
        "localport": localport,
        "timeout": TIMEOUT,
    }
    values.update(extra)
    return mount_options(**values)


def step_line(output: str, name: str) -> str:
    """The printed line of step ``name`` (AssertionError if it was not run)."""
    for line in output.splitlines():
        words = line.split()
        if len(words) >= 2 and words[1] == name:
            return line
    raise AssertionError(f"no step {name!r} in:\n{output}")


def assert_fails_at(result: subprocess.CompletedProcess[str], name: str, *parts: str) -> str:
    """Exit 1, every step before ``name`` passed, ``name`` failed saying ``parts``."""
    assert result.returncode == 1, result.stdout + result.stderr
    line = step_line(result.stdout, name)
    assert line.split()[0] == "FAIL", result.stdout
    for part in parts:
        assert part in line, line
    assert "-> fix: " in line, line
    printed = [line.split()[1] for line in result.stdout.splitlines()[1:-1]]
    assert printed == STEPS_MOVE[: STEPS_MOVE.index(name) + 1], result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return line


@pytest.fixture(scope="module")
def dead_port() -> int:
    """A port nobody listens on (move destinations registered there can never be reached)."""
    return free_port()


@pytest.fixture(scope="module")
def strict_orthanc(
    tmp_path_factory: pytest.TempPathFactory, archive_files: list[Path], dead_port: int
) -> Iterator[OrthancServer]:
    """Orthanc that checks the called AE title and lets unknown calling AEs echo, nothing more.

    It knows DICOMFS (at ``strict_port``) and DEADEND (at a port nobody listens on)."""
    server = OrthancServer(
        tmp_path_factory.mktemp("strict-orthanc"),
        destinations=[
            MoveDestination(DICOMFS_AET, HOST, free_port()),
            MoveDestination("DEADEND", HOST, dead_port),
        ],
        extra_config={
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
        },
    )
    with server:
        server.load(archive_files[:2])
        yield server


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[tuple[int, list[str]]]:
    """Another storage SCP (port, SOP Instance UIDs received): where a wrong entry sends objects."""
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="ELSEWHERE")
    ae.supported_contexts = StoragePresentationContexts
    port = free_port()
    server = ae.start_server((HOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield port, received
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def lost_dcmqrscp(
    tmp_path_factory: pytest.TempPathFactory,
    archive_files: list[Path],
    dead_port: int,
    elsewhere: tuple[int, list[str]],
) -> Iterator[DcmqrscpServer]:
    """dcmqrscp whose move destinations DEADEND and LOST point where dicomfs is not listening."""
    server = DcmqrscpServer(
        tmp_path_factory.mktemp("lost-dcmqrscp"),
        destinations=[
            MoveDestination("DEADEND", HOST, dead_port),
            MoveDestination("LOST", HOST, elsewhere[0]),
        ],
    )
    server.load(archive_files[:2])
    with server:
        yield server


# -- success --------------------------------------------------------------------------------------


def test_a_working_pacs_passes_every_step_and_exits_0(
    pacs: OrthancServer | DcmqrscpServer, move_port: int
) -> None:
    result = run_echo(options_for(pacs, move_port))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines[1:-1]] == STEPS_MOVE, result.stdout
    assert all(line.split()[0] == "ok" for line in lines[1:-1]), result.stdout
    assert "stored 1" in step_line(result.stdout, "move")
    assert lines[-1] == "all checks passed"


def test_a_profile_is_checked_as_it_would_be_mounted(
    orthanc: OrthancServer, move_port: int, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[pacs.test]\nserveraddress = "{HOST}"\nserverport = {orthanc.port}\naec = "{orthanc.ae_title}"\n'
        f'localaddress = "{HOST}"\nlocalport = {move_port}\naet = "NOBODY"\n',
        encoding="utf-8",
    )
    # The command line overrides the profile (aet), as for a mount.
    result = run_echo(f"config={config},aet={DICOMFS_AET}", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].startswith(f"dicomfs echo: {orthanc.ae_title}@{HOST}:{orthanc.port}")


def test_json_lists_the_steps_with_name_ok_detail_and_hint(orthanc: OrthancServer, move_port: int) -> None:
    good = run_echo(options_for(orthanc, move_port), "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    result = json.loads(good.stdout)
    assert result["ok"] is True
    assert result["pacs"] == f"{orthanc.ae_title}@{HOST}:{orthanc.port}" and result["aet"] == DICOMFS_AET
    assert [step["name"] for step in result["steps"]] == STEPS_MOVE
    assert all(step["ok"] and step["detail"] and step["hint"] == "" for step in result["steps"])

    bad = run_echo(options_for(orthanc, move_port, serverport=free_port()), "--json")
    assert bad.returncode == 1
    result = json.loads(bad.stdout)
    assert result["ok"] is False
    assert [(step["name"], step["ok"]) for step in result["steps"]] == [("resolve", True), ("connect", False)]
    assert "connection refused" in result["steps"][-1]["detail"] and result["steps"][-1]["hint"]


def test_retrieve_get_checks_c_get_instead_of_the_return_path(orthanc: OrthancServer) -> None:
    result = run_echo(options_for(orthanc, free_port(), retrieve="get"), "--json")
    assert result.returncode == 0, result.stdout
    steps = json.loads(result.stdout)["steps"]
    assert [step["name"] for step in steps] == [*STEPS_MOVE[:-1], "get"]


# -- the way to the PACS ---------------------------------------------------------------------------


def test_an_unresolvable_host_fails_at_resolve() -> None:
    result = run_echo(mount_options(serveraddress="pacs.invalid", timeout=TIMEOUT))
    line = step_line(result.stdout, "resolve")
    assert result.returncode == 1 and line.split()[0] == "FAIL", result.stdout
    assert "cannot resolve 'pacs.invalid'" in line and "serveraddress=" in line
    assert "Traceback" not in result.stderr


def test_a_refused_connection_fails_at_connect() -> None:
    port = free_port()
    result = run_echo(mount_options(serveraddress=HOST, serverport=port, timeout=TIMEOUT))
    assert_fails_at(result, "connect", f"connection refused by {HOST}:{port}", "serverport=")


def test_a_wrong_called_ae_title_is_rejected_with_its_reason(strict_orthanc: OrthancServer) -> None:
    result = run_echo(options_for(strict_orthanc, free_port(), aec="NOTORTHANC"))
    assert_fails_at(
        result, "associate", "permanent, service user: called AE title not recognized", "'NOTORTHANC'", "aec="
    )


def test_an_unknown_calling_ae_title_is_dropped_at_the_c_find(strict_orthanc: OrthancServer) -> None:
    """Orthanc lets an unknown calling AE associate and echo (DicomAlwaysAllowEcho), then drops
    the association at its C-FIND: the mount saw "no response from the PACS" there."""
    result = run_echo(options_for(strict_orthanc, free_port(), aet="STRANGER"))
    assert_fails_at(result, "find", "dropped the association at our C-FIND", "'STRANGER'", "DicomModalities")


def test_an_unknown_calling_ae_title_is_rejected_when_nothing_is_always_allowed(
    tmp_path: Path,
) -> None:
    server = OrthancServer(
        tmp_path / "orthanc",
        destinations=[MoveDestination("ECHOSCU", HOST, free_port())],  # the servers' readiness probe
        extra_config={f"DicomAlwaysAllow{what}": False for what in ("Echo", "Store", "Find", "Get", "Move")},
    )
    with server:
        result = run_echo(options_for(server, free_port(), aet="STRANGER"))
    assert_fails_at(result, "associate", "calling AE title not recognized", "'STRANGER'", "aet=")


# -- the return path (retrieve=move) ---------------------------------------------------------------


def test_our_ae_title_unknown_as_move_destination_dcmqrscp_0xa801(dcmqrscp: DcmqrscpServer) -> None:
    result = run_echo(options_for(dcmqrscp, free_port(), aet="NOBODY"))
    assert_fails_at(result, "move", "does not know 'NOBODY' as a move destination", "0xA801", "retrieve=get")


def test_our_ae_title_unknown_as_move_destination_orthanc_0xc000(orthanc: OrthancServer) -> None:
    """Orthanc answers 0xC000 without a comment and never connects: both possible causes named."""
    result = run_echo(options_for(orthanc, free_port(), aet="NOBODY"))
    line = assert_fails_at(result, "move", "0xC000 (unable to process)", "never connected back")
    assert "'NOBODY' is not in its DicomModalities" in line and "retrieve=get" in line


def test_a_move_destination_at_a_dead_port_never_connects_back(
    lost_dcmqrscp: DcmqrscpServer, strict_orthanc: OrthancServer, dead_port: int
) -> None:
    localport = free_port()
    result = run_echo(options_for(lost_dcmqrscp, localport, aet="DEADEND"))
    assert_fails_at(
        result, "move", f"never connected back to port {localport}", "failed sub-operation", "ssh -R"
    )
    result = run_echo(options_for(strict_orthanc, localport, aet="DEADEND"))
    assert_fails_at(result, "move", "0xC000", "never connected back", "cannot connect")


def test_a_move_destination_at_another_port_is_told_apart(
    lost_dcmqrscp: DcmqrscpServer, elsewhere: tuple[int, list[str]]
) -> None:
    """The PACS reports the sub-operation complete, but it went to another listener, not ours."""
    before = len(elsewhere[1])
    result = run_echo(options_for(lost_dcmqrscp, free_port(), aet="LOST"))
    assert_fails_at(result, "move", "nothing reached our storage SCP", "another host or port")
    assert len(elsewhere[1]) == before + 1


def test_a_connection_back_under_another_called_ae_title_works_and_is_noted(tmp_path: Path) -> None:
    with BrokenPacs() as broken:
        broken.move_called_aet = "SOMEONE"
        result = run_echo(broken_options(broken, tmp_path / "cache", "move", TIMEOUT))
    assert result.returncode == 0, result.stdout + result.stderr
    line = step_line(result.stdout, "move")
    assert line.split()[0] == "note" and "with called AE title 'SOMEONE', not 'DICOMFS'" in line, line


def test_echo_while_localport_is_taken_says_so(orthanc: OrthancServer) -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        result = run_echo(options_for(orthanc, busy.getsockname()[1]))
    assert_fails_at(result, "move", "cannot listen on", "localport=")


# -- at mount time -------------------------------------------------------------------------------


def test_a_mount_with_no_pacs_on_localhost_104_comes_up_and_says_so(tmp_path: Path) -> None:
    options = mount_options(localaddress=HOST, localport=free_port(), cachedir=tmp_path / "cache")
    with mounted(tmp_path / "mnt", options) as mount:
        assert is_mounted(mount.mountpoint)
        log = mount.log_text()
    assert "the PACS ANY-SCP@localhost:104 does not work for us" in log, log
    assert "connection refused by 127.0.0.1:104" in log and "serveraddress= and serverport=" in log
    assert "mounting anyway" in log


def test_a_mount_of_an_unresolvable_host_comes_up_and_says_so(tmp_path: Path) -> None:
    options = mount_options(
        serveraddress="pacs.invalid", localaddress=HOST, localport=free_port(), cachedir=tmp_path / "cache"
    )
    with mounted(tmp_path / "mnt", options) as mount:
        assert is_mounted(mount.mountpoint)
        for _attempt in range(3):  # EIO each time (a resolver error is no errno for FUSE: not EINVAL)
            with pytest.raises(OSError) as failed:
                os.listdir(mount.mountpoint)
            assert failed.value.errno == errno.EIO
        log = mount.log_text()
    assert "resolve: cannot resolve 'pacs.invalid'" in log and "mounting anyway" in log, log
    assert "Traceback" not in log and "EINVAL" not in log
    assert "check serveraddress=" in log


def test_a_detached_mount_prints_the_failure_before_detaching(
    tmp_path: Path, strict_orthanc: OrthancServer
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    logfile = tmp_path / "dicomfs.log"  # not syslog: the test reads what was logged
    options = options_for(
        strict_orthanc, free_port(), aec="NOTORTHANC", cachedir=tmp_path / "cache", logfile=logfile
    )
    try:
        result = subprocess.run(
            dicomfs_command(str(mountpoint), "-o", options),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stderr
        assert is_mounted(mountpoint)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("dicomfs: the PACS NOTORTHANC@127.0.0.1:")
        assert "called AE title not recognized" in lines[0] and "aec=" in lines[0]
        log = logfile.read_text()
        assert "called AE title not recognized" in log
    finally:
        if is_mounted(mountpoint):
            subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False, capture_output=True)
        for pid in daemon_pids(mountpoint):
            wait_until(lambda pid=pid: process_gone(pid), 15, f"daemon {pid} to exit")


def test_a_mount_of_a_working_pacs_logs_no_failure(tmp_path: Path, orthanc: OrthancServer) -> None:
    options = options_for(orthanc, free_port(), cachedir=tmp_path / "cache")
    with mounted(tmp_path / "mnt", options) as mount:
        assert [path.name for path in mount.mountpoint.iterdir()]
        log = mount.log_text()
    assert f"the PACS {orthanc.ae_title}@{HOST}:{orthanc.port} answers" in log, log
    assert "does not work" not in log and "mounting anyway" not in log


# -- the mount's own log lines (dicomfs.dimse.explain, for the PACS client) -------------------------


def _associate(port: int, called: str, calling: str = DICOMFS_AET) -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = TIMEOUT
    return ae.associate(HOST, port, ae_title=called)


def test_association_failure_reads_orthancs_rejection_from_a_real_association(
    strict_orthanc: OrthancServer,
) -> None:
    for _attempt in range(3):  # Orthanc closes right after its A-ASSOCIATE-RJ; it can win the race
        assoc = _associate(strict_orthanc.port, "NOTORTHANC")
        if assoc.is_rejected:
            break
    why = association_failure(assoc, called_aet="NOTORTHANC", calling_aet=DICOMFS_AET, tls=False)
    assert "called AE title not recognized" in why.cause and "aec=" in why.hint


def test_association_failure_without_an_answer_names_both_possibilities() -> None:
    port = free_port()
    assoc = _associate(port, "ANY")
    unknown = association_failure(assoc, called_aet="ANY", calling_aet=DICOMFS_AET, tls=False)
    assert "cannot be reached, or it closed the connection" in unknown.cause
    refused = association_failure(
        assoc, called_aet="ANY", calling_aet=DICOMFS_AET, tls=False, connected=False
    )
    assert refused.cause == "cannot connect to the PACS" and "serverport=" in refused.hint


def test_a_silent_peer_fails_at_associate_after_one_timeout() -> None:
    """A port that accepts TCP and never answers: one timeout (not one per attempt), then the fix."""
    accepted: list[socket.socket] = []
    with socket.create_server((HOST, 0)) as listener:

        def accept() -> None:
            while True:
                try:
                    accepted.append(listener.accept()[0])
                except OSError:
                    return

        threading.Thread(target=accept, daemon=True).start()
        try:
            port = listener.getsockname()[1]
            result = run_echo(mount_options(serveraddress=HOST, serverport=port, timeout=2))
        finally:
            for sock in accepted:
                sock.close()
    assert_fails_at(result, "associate", "no answer to the association request within 2 s", "DICOM port")
    assert len(accepted) == 2  # the connect step's and one association attempt's


# -- TLS ------------------------------------------------------------------------------------------


def test_echo_over_tls_checks_the_return_path_over_tls_too(
    tls_pacs: BrokenPacs,  # noqa: F811 (the fixture imported above)
    pki: Pki,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The PACS connects back over TLS to echo's own storage SCP, as it would to the mount's."""
    options = broken_options(
        tls_pacs,
        tmp_path / "cache",
        "move",
        TIMEOUT,
        tls=1,
        tlscert=pki.client_cert,
        tlskey=pki.client_key,
        tlsca=pki.ca,
    )
    result = run_echo(options)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stored 1" in step_line(result.stdout, "move")
    assert tls_pacs.requests["C-MOVE"] == 1


def test_plain_echo_against_a_tls_pacs_suggests_tls(
    tls_pacs: BrokenPacs,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    result = run_echo(broken_options(tls_pacs, tmp_path / "cache", "move", TIMEOUT))
    assert_fails_at(result, "associate", "without answering", "tls=")


# -- the same causes in a mount's log: one line each, with the fix ----------------------------------


def failed_reads(mountpoint: Path) -> int:
    """Read every file below ``mountpoint``; how many failed (EIO is what a PACS refusal gives)."""
    failures = 0
    for path in mountpoint.rglob("*.dcm"):
        try:
            path.read_bytes()
        except OSError:
            failures += 1
    return failures


def test_a_mount_whose_ae_title_is_unknown_as_move_destination_logs_the_cause_once(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    options = options_for(orthanc, free_port(), aet="NOBODY", cachedir=tmp_path / "cache")
    with mounted(tmp_path / "mnt", options) as mount:
        failed = failed_reads(mount.mountpoint)
        series = len(list(mount.mountpoint.glob("*/*/*")))
        log = mount.log_text()
    causes = [line for line in log.splitlines() if "is not in its DicomModalities" in line]
    # One line per failed retrieval (series) and one for the failed file operations: not per file.
    assert failed > series and 1 <= len(causes) <= series + 1, log
    assert "retrieve=get" in causes[0] and "Traceback" not in log


def test_a_mount_whose_calling_ae_title_is_unknown_says_so(
    strict_orthanc: OrthancServer, tmp_path: Path
) -> None:
    options = options_for(strict_orthanc, free_port(), aet="STRANGER", cachedir=tmp_path / "cache")
    with mounted(tmp_path / "mnt", options) as mount:
        with pytest.raises(OSError):
            list(mount.mountpoint.iterdir())
        log = mount.log_text()
    assert "dropped the association at our C-FIND" in log and "'STRANGER'" in log, log
    assert "Traceback" not in log


# -- a large archive: the root query refused for its size ------------------------------------------


def test_a_root_refused_for_its_size_passes_with_a_recent_study_for_the_move_check(tmp_path: Path) -> None:
    """dcm4chee's QueryMaxNumberOfResults: 0xA700 for a query of everything is no C-FIND failure;
    a STUDY-level query of recent days finds the study the return path is checked with."""
    today = datetime.date.today().strftime("%Y%m%d")
    index = BigIndex(200, crowded_day=today, crowded_studies=1)
    with BigArchive(index) as archive:
        result = run_echo(big_options(archive, tmp_path / "cache", retrieve="move", timeout=TIMEOUT))
        finds = list(archive.finds)
    assert result.returncode == 0, result.stdout + result.stderr
    find = step_line(result.stdout, "find")
    # A passing step with a hint is printed as a note.
    assert find.split()[0] == "note" and "0xA700" in find and "last 7 days" in find, find
    assert "stored 1" in step_line(result.stdout, "move")
    # The root query, refused; everything after it was targeted.
    assert [request.refused for request in finds if request.universal] == [True]
