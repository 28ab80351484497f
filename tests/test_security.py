"""What a mount lets others do: push to our storage SCP, reach it, read the mount, read the wire."""

from __future__ import annotations

import errno
import os
import ssl
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from tests.broken_pacs import INSTANCES, SERIES, BrokenPacs
from tests.broken_pacs import options_for as broken_options_for
from tests.conftest import DICOMFS_AET
from tests.mounting import Mount, ends_within, mounted

pytestmark = pytest.mark.integration

TIMEOUT_S = 2.0
HANG_GUARD_S = 60.0  # bound on a failing call: only turns a hang into a failure


def options_for(pacs: BrokenPacs, cachedir: Path, retrieve: str, **extra: object) -> str:
    return broken_options_for(pacs, cachedir, retrieve, TIMEOUT_S, **extra)


@pytest.fixture
def broken() -> Iterator[BrokenPacs]:
    with BrokenPacs() as pacs:
        yield pacs


@pytest.fixture
def move_mount(broken: BrokenPacs, tmp_path: Path) -> Iterator[Mount]:
    with mounted(tmp_path / "mnt", options_for(broken, tmp_path / "cache", "move")) as handle:
        yield handle


def instance_files(cachedir: Path) -> list[Path]:
    """Data files of the instance cache (diskcache keeps its index in cache.db*)."""
    return [
        p for p in (cachedir / "instances").rglob("*") if p.is_file() and not p.name.startswith("cache.db")
    ]


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: TCP_LISTEN
                    found.append(address)
    return found


def mount_options_of(mountpoint: Path) -> list[str]:
    target = os.path.realpath(mountpoint)
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[1].encode().decode("unicode_escape") == target:
                return fields[3].split(",")
    raise AssertionError(f"{mountpoint} is not in /proc/mounts")


def test_a_third_party_store_is_refused_and_not_cached(
    move_mount: Mount, broken: BrokenPacs, tmp_path: Path
) -> None:
    """Even an instance the PACS holds is refused when no retrieval of ours asked for it."""
    pushed = tmp_path / "push.dcm"
    INSTANCES[0].save_as(pushed, enforce_file_format=True)
    port = broken.move_port  # our storage SCP's localport (options_for set both)
    result = subprocess.run(
        ["storescu", "-v", "-aet", "INTRUDER", "-aec", DICOMFS_AET, "127.0.0.1", str(port), str(pushed)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    # DCMTK 3.6.7 reports 0x0124 as "Unknown Status: 0x124" and may still exit 0.
    assert result.returncode != 0 or "Status: 0x124" in output, output
    assert "Success" not in output, output
    assert (tmp_path / "cache" / "instances").is_dir()
    assert instance_files(tmp_path / "cache") == []
    assert f"refused C-STORE of {INSTANCES[0].SOPInstanceUID} from INTRUDER" in move_mount.log_text()


def test_localaddress_binds_the_storage_scp_to_loopback_only(move_mount: Mount, broken: BrokenPacs) -> None:
    addresses = listening_addresses(broken.move_port)
    assert addresses == ["0100007F"], addresses  # 127.0.0.1, little-endian hex; no 0.0.0.0, no ::


def test_modes_are_0644_0755_and_the_mount_is_private(broken: BrokenPacs, tmp_path: Path) -> None:
    """umask=022 modes (copies stay deletable, issue #11); writes are EROFS (test_fs), others see nothing."""
    cachedir = tmp_path / "cache"
    with mounted(tmp_path / "mnt", options_for(broken, cachedir, "get")) as handle:
        assert "allow_other" not in mount_options_of(handle.mountpoint)
        files = list(handle.mountpoint.rglob("*.dcm"))
        assert len(files) == len(INSTANCES)
        for path in [handle.mountpoint, *handle.mountpoint.rglob("*")]:
            mode = path.stat().st_mode
            assert stat.S_IMODE(mode) == (0o644 if stat.S_ISREG(mode) else 0o755), path
    assert stat.S_IMODE(cachedir.stat().st_mode) == 0o700


def test_allow_other_reaches_the_kernel(broken: BrokenPacs, tmp_path: Path) -> None:
    options = options_for(broken, tmp_path / "cache", "get") + ",allow_other"
    with mounted(tmp_path / "mnt", options) as handle:
        assert "allow_other" in mount_options_of(handle.mountpoint)


# -- DICOM over TLS ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _issue(folder: Path, name: str, extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (folder / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
    ext.write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", folder / "ca.crt", "-CAkey", folder / "ca.key",
        "-CAcreateserial", "-days", "1", "-out", cert, "-extfile", ext,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", folder / "ca.key", "-out", folder / "ca.crt", "-days", "1", "-subj", "/CN=dicomfs test CA",
    )  # fmt: skip
    # Both ends accept associations (our storage SCP takes C-MOVE's) and open them: both purposes.
    extensions = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    server = _issue(folder, "server", extensions)
    client = _issue(folder, "client", extensions)
    return Pki(folder / "ca.crt", *server, *client)


@pytest.fixture
def tls_pacs(pki: Pki) -> Iterator[BrokenPacs]:
    """The synthetic archive over TLS, requiring a client certificate from our CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED
    # C-MOVE sub-associations to our storage SCP: the PACS is the TLS client there.
    move_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    move_context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    with BrokenPacs(ssl_context=context, move_ssl_context=move_context) as pacs:
        yield pacs


@pytest.mark.parametrize("retrieve", ["get", "move"])
def test_tls_mount_lists_and_reads(tls_pacs: BrokenPacs, pki: Pki, tmp_path: Path, retrieve: str) -> None:
    options = options_for(
        tls_pacs,
        tmp_path / "cache",
        retrieve,
        tls=1,
        tlscert=pki.client_cert,
        tlskey=pki.client_key,
        tlsca=pki.ca,
    )
    with mounted(tmp_path / "mnt", options) as handle:
        series_dirs = sorted(handle.mountpoint.glob("*/*/*"))
        assert len(series_dirs) == len(SERIES)
        want = {str(ds.SOPInstanceUID): ds for ds in INSTANCES}
        copies = [pydicom.dcmread(path) for path in sorted(handle.mountpoint.rglob("*.dcm"))]
        assert sorted(str(ds.SOPInstanceUID) for ds in copies) == sorted(want)
        for ds in copies:
            assert ds.PixelData == want[str(ds.SOPInstanceUID)].PixelData


def test_a_plain_mount_against_a_tls_pacs_fails_with_eio(tls_pacs: BrokenPacs, tmp_path: Path) -> None:
    with mounted(tmp_path / "mnt", options_for(tls_pacs, tmp_path / "cache", "get")) as handle:
        # The deadline only guards against a hang: the call must end, with EIO.
        with pytest.raises(OSError) as caught:
            ends_within(lambda: os.listdir(handle.mountpoint), HANG_GUARD_S, "listing a TLS PACS in plain")
        assert caught.value.errno == errno.EIO
        assert handle.process.poll() is None
