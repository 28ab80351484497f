"""Where a mount logs: stderr in the foreground; detached, logfile=, else syslog, else the cachedir.

The syslog case uses a datagram socket of the test's own (as journald's /dev/log is one).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.app.commandline import parse_args
from dicomfs.app.logs import ROTATE_BYTES, ROTATE_KEEP, log_handler
from tests.broken_pacs import BrokenPacs, options_for
from tests.mounting import daemon_pids, dicomfs_command, is_mounted, process_gone, wait_until


def emit(handler: logging.Handler, message: str) -> None:
    record = logging.LogRecord("dicomfs.test", logging.WARNING, __file__, 1, message, None, None)
    handler.handle(record)
    handler.close()


@pytest.fixture
def syslog_socket(tmp_path: Path) -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "log"))
    listener.settimeout(30)
    yield listener
    listener.close()


def test_detached_logs_to_syslog_with_the_mount_point(syslog_socket: socket.socket, tmp_path: Path) -> None:
    opts = parse_args([str(tmp_path / "my mount"), "-o", f"cachedir={tmp_path / 'cache'}"])
    emit(log_handler(opts, syslog_socket=syslog_socket.getsockname()), "hello 100%")
    line = syslog_socket.recv(4096).decode()
    # facility daemon (3), severity warning (4): priority 3 * 8 + 4
    assert line.startswith(
        f"<28>dicomfs[{os.getpid()}]: {tmp_path / 'my mount'}: WARNING dicomfs.test: hello 100%"
    )


def test_a_stale_syslog_socket_means_the_cachedir_log(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(tmp_path / "log"))
    stale.close()  # the file stays, nobody listens
    (tmp_path / "cache").mkdir()
    opts = parse_args([str(tmp_path / "mnt"), "-o", f"cachedir={tmp_path / 'cache'}"])
    handler = log_handler(opts, syslog_socket=str(tmp_path / "log"))
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    assert (handler.maxBytes, handler.backupCount) == (ROTATE_BYTES, ROTATE_KEEP)
    emit(handler, "to the file")
    assert (
        f"{tmp_path / 'mnt'} WARNING dicomfs.test: to the file"
        in (tmp_path / "cache" / "dicomfs.log").read_text()
    )


def test_logfile_overrides_syslog(syslog_socket: socket.socket, tmp_path: Path) -> None:
    opts = parse_args([str(tmp_path / "mnt"), "-o", f"logfile={tmp_path / 'mine.log'}"])
    emit(log_handler(opts, syslog_socket=syslog_socket.getsockname()), "mine")
    assert "WARNING dicomfs.test: mine" in (tmp_path / "mine.log").read_text()


def test_foreground_logs_to_stderr(tmp_path: Path) -> None:
    opts = parse_args([str(tmp_path / "mnt"), "-f", "-o", f"logfile={tmp_path / 'mine.log'}"])
    handler = log_handler(opts)
    assert isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


@pytest.mark.integration
def test_detached_mount_writes_its_logfile(tmp_path: Path) -> None:
    mountpoint, logfile = tmp_path / "mnt", tmp_path / "logs" / "pacs.log"
    mountpoint.mkdir()
    logfile.parent.mkdir()
    with BrokenPacs() as pacs:
        options = options_for(pacs, tmp_path / "cache", "get", timeout=10, logfile=logfile)
        try:
            result = subprocess.run(
                dicomfs_command(str(mountpoint), "-o", options),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            assert result.returncode == 0, result.stderr
            [pid] = daemon_pids(mountpoint)
            assert len(list(mountpoint.glob("*/*/*/*.dcm"))) > 0
        finally:
            if is_mounted(mountpoint):
                subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False, capture_output=True)
            for pid in daemon_pids(mountpoint):
                wait_until(lambda pid=pid: process_gone(pid), 15, f"daemon {pid} to exit")
    text = logfile.read_text()
    assert f" {mountpoint} INFO " in text and "unmounted" in text
    assert not (tmp_path / "cache" / "dicomfs.log").exists()


def test_unwritable_logfile_is_one_line_and_nothing_mounted(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    result = subprocess.run(
        dicomfs_command(
            str(tmp_path / "mnt"), "-o", f"logfile={tmp_path / 'no' / 'such.log'},cachedir={tmp_path}"
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("dicomfs: logfile: cannot write") and len(result.stderr.splitlines()) == 1
    assert not is_mounted(tmp_path / "mnt")


def test_a_removed_log_file_is_made_again(tmp_path: Path) -> None:
    """``rm -rf <cachedir>`` while mounted takes the detached log with it: it comes back."""
    logfile = tmp_path / "cache" / "dicomfs.log"
    logfile.parent.mkdir()
    opts = parse_args([str(tmp_path / "mnt"), "-o", f"cachedir={tmp_path / 'cache'}"])
    handler = log_handler(opts, syslog_socket=str(tmp_path / "no-syslog"))
    record = logging.LogRecord("dicomfs.test", logging.WARNING, __file__, 1, "%s", ("first",), None)
    handler.handle(record)
    shutil.rmtree(logfile.parent)
    record.args = ("second",)
    handler.handle(record)
    handler.close()
    assert "second" in logfile.read_text() and "first" not in logfile.read_text()
