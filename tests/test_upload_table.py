"""The upload table (``dicomfs.core.uploads``) in-process: sends, names, failures, bounds."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

from dicomfs.app.cli import fuse_kwargs
from dicomfs.app.commandline import parse_args
from dicomfs.app.options import OptionError
from dicomfs.core.errors import MediaDirectory, NotDicom, PacsError, StoreRejected
from dicomfs.core.ports import StoredObject
from dicomfs.core.store import ListingCache
from dicomfs.core.uploadfailures import MAX_FAILED
from dicomfs.core.uploads import Uploads
from dicomfs.core.uploadtree import DONE_GRACE_S


class FakeSender:
    """Records what it is asked to send; raises ``error`` when set."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.error: Exception | None = None

    def store(self, path: str) -> StoredObject:
        self.sent.append(Path(path).read_bytes())
        if self.error is not None:
            raise self.error
        return StoredObject("PID", "", "1.2", "1.2.3", f"1.2.3.{len(self.sent)}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(tmp_path: Path) -> tuple[Uploads, FakeSender, list[StoredObject], Clock]:
    sender, stored, clock = FakeSender(), [], Clock()

    def new_spool() -> tuple[int, str]:
        return tempfile.mkstemp(dir=tmp_path)

    return Uploads(sender, new_spool, stored.append, clock), sender, stored, clock


def write_file(uploads: Uploads, path: str, data: bytes) -> int:
    fd = uploads.create(path)
    uploads.write(fd, data, 0)
    return fd


def test_one_send_per_close_then_listed_for_the_grace(table: tuple, tmp_path: Path) -> None:
    uploads, sender, stored, clock = table
    uploads.mkdir("study")
    fd = write_file(uploads, "study/.a.dcm.XyZ123", b"DICM data")
    uploads.flush(fd)
    uploads.flush(fd)  # a second close of the same unchanged file (dup): no second C-STORE
    uploads.release(fd)
    assert sender.sent == [b"DICM data"]
    assert [s.sop_uid for s in stored] == ["1.2.3.1"]
    assert list(tmp_path.iterdir()) == []  # the spool file went with the last close
    uploads.rename("study/.a.dcm.XyZ123", "study/a.dcm")  # rsync, after the close
    uploads.set_mtime("study/a.dcm", 12345.0)
    assert uploads.children("study") == [("a.dcm", False)]
    assert uploads.mtime("study/a.dcm") == 12345.0 and uploads.size("study/a.dcm") == 9
    clock.now += DONE_GRACE_S + 1
    assert uploads.children("") == [("failed", True)]  # the file, then its empty directory, went


def test_a_failed_send_fails_every_close_and_is_reported(table: tuple) -> None:
    uploads, sender, stored, _clock = table
    sender.error = StoreRejected("the PACS refused the C-STORE: status 0xA700 (Refused: Out of Resources)")
    fd = write_file(uploads, "x.dcm", b"DICM")
    second = uploads.reopen("x.dcm", truncate=False)  # another handle on the same file
    with pytest.raises(StoreRejected):
        uploads.flush(fd)
    with pytest.raises(StoreRejected):
        uploads.flush(second)  # the same failure, without another C-STORE
    assert len(sender.sent) == 1 and stored == []
    assert uploads.children("failed") == [("x.dcm.txt", False)]
    assert b"0xA700" in uploads.report("failed/x.dcm.txt")
    uploads.release(fd)
    assert uploads.kind("x.dcm") == "file"  # while a handle is open (fstat of it works)
    uploads.release(second)
    assert uploads.children("") == [("failed", True)]  # then it goes
    uploads.unlink("failed/x.dcm.txt")
    assert uploads.children("failed") == []


def test_failure_reports_are_bounded(table: tuple) -> None:
    uploads, sender, _stored, _clock = table
    sender.error = NotDicom("not a DICOM Part 10 file")
    for number in range(MAX_FAILED + 5):
        fd = write_file(uploads, f"f{number}", b"text")
        with pytest.raises(NotDicom):
            uploads.flush(fd)
        uploads.release(fd)
    names = [name for name, _ in uploads.children("failed")]
    assert len(names) == MAX_FAILED and names[0] == "f5.txt"


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda u: u.mkdir("study"), errno.EEXIST),
        (lambda u: u.mkdir("failed"), errno.EEXIST),
        (lambda u: u.mkdir("failed/x"), errno.EPERM),
        (lambda u: u.mkdir("none/x"), errno.ENOENT),
        (lambda u: u.create("study"), errno.EISDIR),
        (lambda u: u.create("failed/x.dcm"), errno.EPERM),
        (lambda u: u.rmdir("study"), errno.ENOTEMPTY),
        (lambda u: u.rename("study/a.dcm", "failed/a.dcm"), errno.EPERM),
        (lambda u: u.unlink("nothing"), errno.ENOENT),
        (lambda u: u.truncate("study/a.dcm", 3), errno.EPERM),
    ],
)
def test_namespace_errors_carry_their_errno(table: tuple, call: object, code: int) -> None:
    uploads, _sender, _stored, _clock = table
    uploads.mkdir("study")
    fd = write_file(uploads, "study/a.dcm", b"DICM")
    uploads.flush(fd)
    uploads.release(fd)
    with pytest.raises(OSError) as caught:
        call(uploads)  # type: ignore[operator]
    assert caught.value.errno == code


def test_in_flight_size_and_rewrite(table: tuple) -> None:
    uploads, sender, _stored, _clock = table
    fd = write_file(uploads, "a.dcm", b"12345")
    assert uploads.size("a.dcm") == 5  # in flight: what has been written so far
    uploads.flush(fd)
    uploads.write(fd, b"678", 5)  # written again after a close of another handle: sent again
    uploads.flush(fd)
    uploads.release(fd)
    assert sender.sent == [b"12345", b"12345678"]
    assert not os.path.exists(f"/proc/self/fd/{fd}")


@pytest.mark.parametrize("argv", [["-o", "ro,upload=on"], ["-o", "upload", "-o", "rw,ro"]])
def test_ro_with_upload_is_refused_in_one_line(argv: list[str]) -> None:
    with pytest.raises(OptionError, match="upload=on needs a writable mount, but 'ro' was given"):
        parse_args(["/mnt/pacs", *argv])


@pytest.mark.parametrize(("argv", "read_only"), [([], True), (["-o", "rw,upload=on"], False)])
def test_the_kernel_mount_is_rw_only_with_upload(argv: list[str], read_only: bool) -> None:
    opts = parse_args(["/mnt/pacs", *argv])
    assert opts.upload is not read_only
    assert fuse_kwargs(opts)["ro"] is read_only


def test_expired_listings_are_stale_but_kept_for_outages(tmp_path: Path) -> None:
    listings = ListingCache(str(tmp_path), ttl_s=300)
    try:
        listings.put("patients", ("a",))
        listings.expire("patients")
        listings.expire("nothing")  # nothing cached: nothing to do
        assert listings.get("patients") == (("a",), False)
        assert listings.get("nothing") is None
    finally:
        listings.close()


def test_a_flush_before_any_write_sends_nothing(table: tuple) -> None:
    """bash's ``cat x > upload/a.dcm``: open, dup2 onto stdout, close (a flush of the one FUSE
    handle both fds share) before cat writes; cat's close of stdout is the second flush."""
    uploads, sender, stored, _clock = table
    fh = uploads.create("a.dcm")
    uploads.flush(fh)  # the shell's close of the first fd: nothing written, nothing sent, no error
    assert sender.sent == [] and uploads.children("failed") == []
    assert uploads.kind("a.dcm") == "file"  # cat's fstat of its stdout
    uploads.write(fh, b"DICM data", 0)
    uploads.flush(fh)
    uploads.release(fh)
    assert sender.sent == [b"DICM data"] and len(stored) == 1
    assert sorted(uploads.children("")) == [("a.dcm", False), ("failed", True)]


def test_an_empty_file_goes_at_its_last_close_without_a_report(table: tuple, tmp_path: Path) -> None:
    uploads, sender, _stored, _clock = table
    fd = uploads.create("touched")  # touch upload/touched, or ': > upload/touched'
    uploads.flush(fd)
    assert uploads.kind("touched") == "file"  # while open
    uploads.release(fd)
    assert sender.sent == [] and list(tmp_path.iterdir()) == []
    assert uploads.children("") == [("failed", True)] and uploads.children("failed") == []


def test_a_write_after_a_failure_starts_over(table: tuple) -> None:
    """A failed check is not sticky: writing again sends again, and the report goes on success."""
    uploads, sender, stored, _clock = table
    sender.error = NotDicom("truncated: element (7FE0,0010) declares 2048 bytes, 1000 present")
    fd = write_file(uploads, "k.dcm", b"DICM part")
    with pytest.raises(NotDicom):
        uploads.flush(fd)  # a writer's child closing its copy of the fd early
    assert uploads.children("failed") == [("k.dcm.txt", False)]
    sender.error = None
    uploads.write(fd, b" rest", 9)
    uploads.flush(fd)
    uploads.release(fd)
    assert sender.sent == [b"DICM part", b"DICM part rest"] and len(stored) == 1
    assert sorted(uploads.children("")) == [("failed", True), ("k.dcm", False)]  # listed as sent
    assert uploads.children("failed") == []


@pytest.mark.parametrize(
    ("path", "report", "named"),
    [
        ("mixed/.notdicom.txt.X0PfWg", "mixed_notdicom.txt.txt", "mixed/notdicom.txt (rsync's temporary"),
        (".a.dcm.abc123", "a.dcm.txt", "a.dcm (rsync's temporary .a.dcm.abc123)"),
        (".a.dcm.abc12", ".a.dcm.abc12.txt", ".a.dcm.abc12:"),  # five characters: no rsync name
        (".a.dcm.abc-12", ".a.dcm.abc-12.txt", ".a.dcm.abc-12:"),
        ("plain.dcm", "plain.dcm.txt", "plain.dcm:"),
    ],
)
def test_rsync_temporary_names_are_reported_under_their_own(
    table: tuple, path: str, report: str, named: str
) -> None:
    uploads, sender, _stored, _clock = table
    sender.error = NotDicom("not a DICOM Part 10 file")
    if "/" in path:
        uploads.mkdir(path.rpartition("/")[0])
    fd = write_file(uploads, path, b"text")
    with pytest.raises(NotDicom):
        uploads.flush(fd)
    uploads.release(fd)
    assert uploads.children("failed") == [(report, False)]
    assert uploads.report(f"failed/{report}").decode().startswith(named)


def test_an_unexpected_error_of_a_send_is_a_reported_failure(
    table: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    uploads, sender, stored, _clock = table
    sender.error = RuntimeError("Unable to decode:\n  pydicom: bad segments")
    fd = write_file(uploads, "x.dcm", b"DICM data")
    one_line = "not sent: RuntimeError: Unable to decode: pydicom: bad segments; fix: "
    with pytest.raises(PacsError, match=one_line):
        uploads.flush(fd)
    uploads.release(fd)
    assert uploads.children("failed") == [("x.dcm.txt", False)]
    assert b"RuntimeError" in uploads.report("failed/x.dcm.txt") and stored == []
    assert not [record for record in caplog.records if record.levelno >= 30 and record.exc_info]


def test_a_dicomdir_is_accepted_unsent_and_said_once(table: tuple, caplog: pytest.LogCaptureFixture) -> None:
    uploads, sender, stored, _clock = table
    sender.error = MediaDirectory("a DICOMDIR is a media directory, not an object to store: not sent")
    caplog.set_level("INFO", logger="dicomfs.core.uploads")
    for path in ("cd/.DICOMDIR.AbC123", "cd2/DICOMDIR"):
        uploads.mkdir(path.split("/")[0])
        fd = write_file(uploads, path, b"DICM dir")
        uploads.flush(fd)  # no error: cp -r and rsync go on
        uploads.release(fd)
    uploads.rename("cd/.DICOMDIR.AbC123", "cd/DICOMDIR")  # rsync's rename finds it
    assert uploads.children("failed") == [] and stored == []
    said = [r.getMessage() for r in caplog.records if "media directory" in r.getMessage()]
    assert said == ["upload cd/DICOMDIR (rsync's temporary cd/.DICOMDIR.AbC123): " + sender.error.args[0]]
