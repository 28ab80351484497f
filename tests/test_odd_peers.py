"""Series a PACS cannot convert: legacy JPEG syntaxes and private SOP classes, through a real mount.

dcmqrscp sends an instance only as stored, over the first context accepted for its class, and its
C-FIND never returns SOPClassUID. Here it holds CT series in JPEG Lossless Process 14 (.4.57),
JPEG Extended 12-bit (.4.51) and JPEG Lossless SV1 (.4.70), and a series mixing a CT image with a
Siemens CSA Non-Image object (private class). Its association profile accepts those syntaxes and
classes for our C-GET (with our SCP role); its C-MOVE proposes uncompressed syntaxes only, so with
``retrieve=move`` the JPEG series need the C-GET fallback. Orthanc holds the CT + CSA series too:
it does return SOPClassUID, so dicomfs learns the classes. Every copy must equal the source byte
for byte (data set and transfer syntax): dicomfs never transcodes.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.conftest import DICOMFS_AET
from tests.mounting import Mount, mounted, pacs_options
from tests.odd_objects import (
    JPEG_EXTENDED_12BIT,
    JPEG_PROCESS_14,
    SIEMENS_CSA_NON_IMAGE,
    UNKNOWN_PRIVATE_CLASS,
    OddSeries,
    csa_series,
    dataset_bytes,
    legacy_jpeg_series,
)
from tests.pacs_servers import DcmqrscpServer, MoveDestination, OrthancServer, free_port

pytestmark = pytest.mark.integration

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"

# DCMTK association profile (dcmnet/docs/asconfig.txt): what dcmqrscp accepts when we C-GET.
DCMQRSCP_PROFILE = rf"""
[[TransferSyntaxes]]
[Stored]
TransferSyntax1 = {JPEG_PROCESS_14}
TransferSyntax2 = {JPEG_EXTENDED_12BIT}
TransferSyntax3 = {JPEG_LOSSLESS_SV1}
TransferSyntax4 = 1.2.840.10008.1.2.1
TransferSyntax5 = 1.2.840.10008.1.2
[Uncompressed]
TransferSyntax1 = 1.2.840.10008.1.2.1
TransferSyntax2 = 1.2.840.10008.1.2

[[PresentationContexts]]
[Incoming]
PresentationContext1 = CTImageStorage\Stored
PresentationContext2 = {SIEMENS_CSA_NON_IMAGE}\Uncompressed
[Outgoing]
PresentationContext1 = CTImageStorage\Uncompressed

[[SCPSCURoleSelection]]
[GetRoles]
Role1 = CTImageStorage\BOTH
Role2 = {SIEMENS_CSA_NON_IMAGE}\BOTH

[[Profiles]]
[Incoming]
PresentationContexts = Incoming
SCPSCURoleSelection = GetRoles
[Outgoing]
PresentationContexts = Outgoing
"""


@pytest.fixture(scope="module")
def odd_series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, OddSeries]:
    folder = tmp_path_factory.mktemp("odd")
    return {
        "4.57": legacy_jpeg_series(folder, JPEG_PROCESS_14, 1),
        "4.51": legacy_jpeg_series(folder, JPEG_EXTENDED_12BIT, 2),
        "4.70": legacy_jpeg_series(folder, JPEG_LOSSLESS_SV1, 3),
        "csa": csa_series(folder, 4),
        "unknown": csa_series(folder, 5, UNKNOWN_PRIVATE_CLASS),
    }


@pytest.fixture(scope="module")
def storage_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def odd_dcmqrscp(
    tmp_path_factory: pytest.TempPathFactory, odd_series: dict[str, OddSeries], storage_port: int
) -> Iterator[DcmqrscpServer]:
    server = DcmqrscpServer(
        tmp_path_factory.mktemp("odd-dcmqrscp"),
        destinations=[MoveDestination(DICOMFS_AET, "127.0.0.1", storage_port)],
        incoming_profile=DCMQRSCP_PROFILE,
        verbose=True,
    )
    server.load([path for series in odd_series.values() for path in series.files])
    with server:
        yield server


@pytest.fixture(scope="module")
def odd_orthanc(
    tmp_path_factory: pytest.TempPathFactory, odd_series: dict[str, OddSeries], storage_port: int
) -> Iterator[OrthancServer]:
    server = OrthancServer(
        tmp_path_factory.mktemp("odd-orthanc"),
        destinations=[MoveDestination(DICOMFS_AET, "127.0.0.1", storage_port)],
    )
    with server:
        # UnknownSopClassAccepted: Orthanc stores any class (load raises on anything but Success).
        server.load([*odd_series["csa"].files, *odd_series["unknown"].files])
        yield server


@contextlib.contextmanager
def mount_of(
    pacs: DcmqrscpServer | OrthancServer, tmp_path: Path, port: int, retrieve: str
) -> Iterator[Mount]:
    options = pacs_options(pacs, tmp_path / "cache", localport=port, retrieve=retrieve)
    with mounted(tmp_path / "mnt", options) as handle:
        yield handle


def series_dir(mount: Mount, series: OddSeries) -> Path:
    # dcmqrscp returns no SeriesDescription: the directory is "<number> CT" there.
    prefix = f"{series.number:03d} "
    matches = [path for path in mount.mountpoint.glob("*/*/*") if path.name.startswith(prefix)]
    assert len(matches) == 1, f"{series.description}: {matches}"
    return matches[0]


def assert_copied_exactly(mount: Mount, series: OddSeries, tmp_path: Path) -> None:
    """``cp -r`` of the series: every file has the source's transfer syntax and data set bytes."""
    target = tmp_path / f"copy-{series.uid}"
    result = subprocess.run(
        ["cp", "-r", str(series_dir(mount, series)), str(target)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"cp failed: {result.stderr}\n{mount.log_text()[-3000:]}"
    copies = sorted(target.glob("*.dcm"))
    assert len(copies) == len(series.files)
    sources = {str(pydicom.dcmread(path).SOPInstanceUID): path for path in series.files}
    for copy in copies:
        got = pydicom.dcmread(copy, stop_before_pixels=True)
        source = sources.pop(str(got.SOPInstanceUID))
        want = pydicom.dcmread(source, stop_before_pixels=True)
        assert got.file_meta.TransferSyntaxUID == want.file_meta.TransferSyntaxUID, copy
        assert got.SOPClassUID == want.SOPClassUID
        assert dataset_bytes(copy) == dataset_bytes(source), copy
    assert not sources


#: C-GETs dcmqrscp sees per series: the first offer puts uncompressed syntaxes first (its
#: first accepted CT context), then each accepted compressed syntax leads once, in the order
#: negotiation.COMMON_COMPRESSED gives (.51, .57, .70); the CSA object's class is among the
#: known private ones of the first offer.
GETS_NEEDED = {"4.51": 2, "4.57": 3, "4.70": 4, "csa": 1}


@pytest.mark.parametrize("retrieve", ["move", "get"])
@pytest.mark.parametrize("key", ["4.57", "4.51", "4.70", "csa"])
def test_series_dcmqrscp_cannot_convert_arrive_as_stored(
    odd_dcmqrscp: DcmqrscpServer,
    odd_series: dict[str, OddSeries],
    storage_port: int,
    tmp_path: Path,
    retrieve: str,
    key: str,
) -> None:
    """Legacy JPEG series, and a CT image with a private-class object, from a PACS that cannot
    convert and does not return SOPClassUID; with C-MOVE its sub-operations fail first."""
    gets, moves = odd_dcmqrscp.requests_seen("Get"), odd_dcmqrscp.requests_seen("Move")
    with mount_of(odd_dcmqrscp, tmp_path, storage_port, retrieve) as mount:
        assert_copied_exactly(mount, odd_series[key], tmp_path)
    assert odd_dcmqrscp.requests_seen("Move") - moves == (1 if retrieve == "move" else 0)
    assert odd_dcmqrscp.requests_seen("Get") - gets == GETS_NEEDED[key]


@pytest.mark.parametrize("retrieve", ["move", "get"])
@pytest.mark.parametrize("key", ["csa", "unknown"])
def test_private_class_beside_an_image_arrives_from_orthanc(
    odd_orthanc: OrthancServer,
    odd_series: dict[str, OddSeries],
    storage_port: int,
    tmp_path: Path,
    retrieve: str,
    key: str,
) -> None:
    """Orthanc says which classes a series holds: a class we cannot name is learned from C-FIND."""
    with mount_of(odd_orthanc, tmp_path, storage_port, retrieve) as mount:
        assert_copied_exactly(mount, odd_series[key], tmp_path)
        log = mount.log_text()
    if retrieve == "get" and key == "unknown":
        # The first C-GET could not offer it; one more, offering exactly the learned classes.
        classes = ", ".join(sorted(["1.2.840.10008.5.1.4.1.1.2", UNKNOWN_PRIVATE_CLASS]))
        assert f"holds SOP classes {classes}" in log
        assert log.count("trying C-GET offering") == 1
        assert "trying C-GET offering exactly the series' SOP classes" in log
    else:  # C-MOVE lets Orthanc propose the class; the CSA class is in our first C-GET offer
        assert "trying C-GET" not in log
