"""The retrieval engine in-process: scheduler + DIMSE strategy + receiver against real SCPs.

No FUSE, no Orthanc: ``RetrievalScheduler`` and ``DimseRetrieval`` retrieve from the deliberately
broken SCP (``tests.broken_pacs``, which counts the C-MOVEs and C-GETs it is sent) or from the
demo archive's Q/R SCP, into a real instance store, through our real storage SCP and receiver.
Each test asserts counts of requests, sizes and error texts, never elapsed time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomfs.core.errors import FailedFast, RetrievalFailed
from dicomfs.core.failures import RecentFailures
from dicomfs.core.model import SeriesRef
from dicomfs.core.retrieval import RetrievalScheduler
from dicomfs.core.store import InstanceStore
from dicomfs.demo.samples import write_demo_archive
from dicomfs.demo.scp import DemoArchive
from dicomfs.dimse import statuses
from dicomfs.dimse.admission import ExpectedOnly
from dicomfs.dimse.client import PacsAddress, PacsClient
from dicomfs.dimse.receiver import InstanceReceiver
from dicomfs.dimse.scp import StorageSCP
from dicomfs.dimse.strategy import MAX_GET_ROUNDS, DimseRetrieval
from tests.broken_pacs import PATIENT_ID, SERIES, STUDY_UID, Behaviour, BrokenPacs, SeriesData
from tests.conftest import DICOMFS_AET
from tests.mounting import ends_within, wait_until
from tests.pacs_servers import free_port

#: Generous bounds that only guard against hangs.
HANG_GUARD_S = 60
TIMEOUT_S = 5.0


@dataclass
class Engine:
    """One mount's retrieval parts, without FUSE."""

    scheduler: RetrievalScheduler
    store: InstanceStore
    client: PacsClient

    def fetch(self, ref: SeriesRef, sop_uid: str, order: list[str]) -> int:
        return ends_within(lambda: self.scheduler.fetch(ref, sop_uid, order), HANG_GUARD_S, "a fetch")


def ref_of(series: SeriesData) -> SeriesRef:
    return SeriesRef(PATIENT_ID, STUDY_UID, series.uid)


def uids_of(series: SeriesData) -> list[str]:
    return [str(ds.SOPInstanceUID) for ds in series.instances]


@contextmanager
def build_engine(
    host: str, port: int, called: str, method: str, cachedir: Path, move_port: int, timeout: float = TIMEOUT_S
) -> Iterator[Engine]:
    """The parts ``app.compose`` builds for a mount, minus the tree; stopped on exit."""
    client = PacsClient(PacsAddress(host, port, called, DICOMFS_AET, timeout, max_associations=3))
    store = InstanceStore(str(cachedir), 10**9, namespace=f"{called}@{host}:{port}")
    expected = ExpectedOnly()
    receiver = InstanceReceiver(store, expected)
    scp = StorageSCP(receiver, DICOMFS_AET, "127.0.0.1", move_port, timeout) if method == "move" else None
    service = DimseRetrieval(client, receiver, method=method, destination_aet=DICOMFS_AET, timeout=timeout)
    scheduler = RetrievalScheduler(service, expected, store, workers=2, timeout=timeout)
    if scp is not None:
        scp.start()
    scheduler.start()
    try:
        yield Engine(scheduler, store, client)
    finally:
        scheduler.stop()
        if scp is not None:
            scp.stop()
        client.close()
        store.close()


class MoveFailsPacs(BrokenPacs):
    """C-MOVE fails the last sub-operation (0xA702, counted as failed); C-GET sends everything."""

    def _handle_move(self, event: Any) -> Iterator[Any]:
        self.behaviour = Behaviour.FAILED
        try:
            yield from super()._handle_move(event)
        finally:
            self.behaviour = Behaviour.NORMAL


def broken_engine(pacs: BrokenPacs, method: str, cachedir: Path, timeout: float = TIMEOUT_S) -> Any:
    """The engine of a mount of ``pacs`` (a context manager); its C-MOVEs reach our SCP."""
    pacs.move_port = free_port()
    return build_engine(pacs.host, pacs.port, pacs.ae_title, method, cachedir, pacs.move_port, timeout)


@pytest.fixture
def broken() -> Iterator[BrokenPacs]:
    with BrokenPacs() as pacs:
        yield pacs


def test_concurrent_readers_of_one_series_share_one_retrieval(broken: BrokenPacs, tmp_path: Path) -> None:
    series = SERIES[0]
    order = uids_of(series)
    with broken_engine(broken, "get", tmp_path) as engine:
        sizes: dict[str, int] = {}
        readers = [
            threading.Thread(
                target=lambda uid=uid: sizes.update({uid: engine.fetch(ref_of(series), uid, order)})
            )
            for uid in order
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(HANG_GUARD_S)
        assert sorted(sizes) == sorted(order)
        for uid in order:
            assert sizes[uid] == engine.store.size_of(ref_of(series).instance(uid)) > 0
    assert broken.requests["C-GET"] == 1  # single flight: one C-GET for three readers


def test_failed_c_move_sub_operations_fall_back_to_c_get(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    series = SERIES[0]
    order = uids_of(series)
    caplog.set_level(logging.INFO, logger="dicomfs")
    with MoveFailsPacs() as pacs, broken_engine(pacs, "move", tmp_path) as engine:
        assert engine.fetch(ref_of(series), order[-1], order) > 0
        assert all(ref_of(series).instance(uid) in engine.store for uid in order)
    assert pacs.requests["C-MOVE"] == 1
    assert pacs.requests["C-GET"] == 1  # the first offer carries the series' class (one C-FIND)
    assert "trying C-GET offering" in caplog.text
    assert "asking for the" not in caplog.text  # failed sub-operations go to C-GET, not a UID list


def test_instances_a_series_level_c_move_missed_are_asked_for_by_uid(
    broken: BrokenPacs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    series = SERIES[0]
    order = uids_of(series)
    broken.behaviour = Behaviour.FEWER  # the last instance is never sent; Success all the same
    caplog.set_level(logging.INFO, logger="dicomfs")
    with broken_engine(broken, "move", tmp_path) as engine:
        with pytest.raises(RetrievalFailed, match="status 0x0000, 0 completed, 0 failed"):
            engine.fetch(ref_of(series), order[-1], order)
        assert [ref_of(series).instance(uid) in engine.store for uid in order] == [True, True, False]
    assert broken.requests["C-MOVE"] == 2  # the series, then the missing instance by its UID
    assert broken.requests["C-GET"] == 0
    assert "asking for the 1 missing instances by SOP Instance UID" in caplog.text


def test_c_get_rounds_after_failed_sub_operations_are_bounded(broken: BrokenPacs, tmp_path: Path) -> None:
    series = SERIES[0]
    order = uids_of(series)
    broken.behaviour = Behaviour.FAILED  # every C-GET fails the last instance, whatever we offer
    with broken_engine(broken, "get", tmp_path) as engine:
        with pytest.raises(RetrievalFailed, match=f"status 0x{statuses.SUBOPERATIONS_REFUSED:04X}"):
            engine.fetch(ref_of(series), order[-1], order)
        assert engine.fetch(ref_of(series), order[0], order) > 0  # what came is served
    assert 2 <= broken.requests["C-GET"] <= MAX_GET_ROUNDS


def test_a_failed_series_fails_fast_for_a_moment_then_is_asked_again(
    broken: BrokenPacs, tmp_path: Path
) -> None:
    series = SERIES[1]
    order = uids_of(series)
    broken.behaviour = Behaviour.FEWER
    with broken_engine(broken, "get", tmp_path) as engine:
        with pytest.raises(RetrievalFailed) as first:
            engine.fetch(ref_of(series), order[-1], order)
        assert not isinstance(first.value, FailedFast)
        asked = broken.requests["C-GET"]
        with pytest.raises(FailedFast, match="failed moments ago"):
            engine.fetch(ref_of(series), order[-1], order)
        assert broken.requests["C-GET"] == asked  # refused without asking the PACS
        broken.behaviour = Behaviour.NORMAL

        def served() -> bool:
            try:
                return engine.fetch(ref_of(series), order[-1], order) > 0
            except FailedFast:
                return False

        wait_until(served, HANG_GUARD_S, "the series to be asked for again")
    assert broken.requests["C-GET"] == asked + 1


def test_an_unknown_move_destination_is_one_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = write_demo_archive(tmp_path / "archive")
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    ref = SeriesRef(str(first.PatientID), str(first.StudyInstanceUID), str(first.SeriesInstanceUID))
    caplog.set_level(logging.INFO, logger="dicomfs")
    uid = str(first.SOPInstanceUID)
    demo = DemoArchive(tmp_path / "archive")  # knows no move destination at all
    # (nested contexts: the archive listens, and has its port, before the engine is built)
    unknown = f"does not know '{DICOMFS_AET}' as a move destination"
    with (
        demo,
        build_engine(demo.host, demo.port, demo.ae_title, "move", tmp_path / "cache", free_port()) as engine,
        pytest.raises(RetrievalFailed, match=unknown),
    ):
        engine.fetch(ref, uid, [uid])
    assert "0xA801" in caplog.text and "retrieve=get" in caplog.text  # the cause and the fix
    assert "asking for the" not in caplog.text and "trying C-GET" not in caplog.text


def test_c_stores_after_the_final_c_move_response_are_awaited(
    broken: BrokenPacs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    series = SERIES[0]
    order = uids_of(series)
    broken.behaviour = Behaviour.LATE_STORES  # Success with 3 completed first, the C-STOREs after
    caplog.set_level(logging.INFO, logger="dicomfs")
    with broken_engine(broken, "move", tmp_path) as engine:
        assert engine.fetch(ref_of(series), order[-1], order) > 0
        assert all(ref_of(series).instance(uid) in engine.store for uid in order)
    assert broken.requests["C-MOVE"] == 1
    assert "instances arrived after the final C-MOVE response" in caplog.text
    assert "refused C-STORE" not in caplog.text


@pytest.mark.parametrize("method", ["move", "get"])
def test_a_retrieval_pending_forever_is_cancelled_then_aborted(
    broken: BrokenPacs, tmp_path: Path, method: str
) -> None:
    series = SERIES[0]
    order = uids_of(series)
    broken.behaviour = Behaviour.PENDING_FOREVER  # Pending with the same counts; C-CANCEL ignored
    with (
        broken_engine(broken, method, tmp_path, timeout=1.0) as engine,
        pytest.raises(RetrievalFailed, match="retrieval cancelled: no progress"),
    ):
        engine.fetch(ref_of(series), order[-1], order)
    assert broken.requests["C-MOVE" if method == "move" else "C-GET"] == 1
    assert broken.cancels == 1  # C-CANCEL first (PS3.7 9.3.2.3), then A-ABORT


def test_an_unreachable_pacs_fails_fast_after_its_first_failure(tmp_path: Path) -> None:
    with build_engine("127.0.0.1", free_port(), "NOBODY", "get", tmp_path, free_port()) as engine:
        ref = SeriesRef("PID", "1.1", "1.1.1")
        with pytest.raises(RetrievalFailed, match="cannot reach PACS") as first:
            engine.fetch(ref, "1.1.1.1", ["1.1.1.1"])
        assert not isinstance(first.value, FailedFast)
        with pytest.raises(FailedFast, match="the PACS is unreachable"):
            engine.fetch(SeriesRef("PID", "1.1", "1.1.2"), "1.1.2.1", ["1.1.2.1"])  # another series too


# -- the parts on their own -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_failed_series_table_is_bounded_and_expires() -> None:
    clock = FakeClock()
    failures = RecentFailures(retry_after_s=1.0, max_entries=4, clock=clock)
    for number in range(10):
        failures.failed(f"series-{number}", epoch=0)
        assert len(failures) <= 4
    assert failures.refuses("series-9", 0)
    assert not failures.refuses("series-0", 0)  # dropped to keep the bound
    assert not failures.refuses("series-9", 1)  # the PACS answered again since: void
    clock.now += 1.0
    assert not failures.refuses("series-9", 0)  # expired
    failures.failed("series-new", epoch=0)
    assert failures.refuses("series-new", 0) and len(failures) <= 4  # expired ones went first
    failures.succeeded("series-new")
    assert not failures.refuses("series-new", 0)


class Sink:
    def landed(self, sop_uid: str, size: int) -> None: ...

    def lost(self, sop_uid: str, reason: str) -> None: ...


def test_only_expected_instances_are_admitted() -> None:
    policy = ExpectedOnly()
    sink, other = Sink(), Sink()
    policy.expect(("PID ", "1.1", "1.1.1"), ["a", "b"], sink)
    policy.expect(("PID", "1.1", "1.1.2"), ["a"], other)
    admitted = policy.admit("a", "ANYONE")
    assert admitted is not None
    assert dict(admitted.sinks) == {("PID", "1.1", "1.1.1"): sink, ("PID", "1.1", "1.1.2"): other}
    assert policy.admit("c", "ANYONE") is None
    policy.forget(("PID", "1.1", "1.1.1"), ["a", "b"])  # padding of the Patient ID is not significant
    assert policy.admit("b", "ANYONE") is None
    admitted = policy.admit("a", "ANYONE")
    assert admitted is not None and list(admitted.sinks.values()) == [other]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("SUCCESS", 0x0000),
        ("PENDING", 0xFF00),
        ("CANCEL", 0xFE00),
        ("MOVE_DESTINATION_UNKNOWN", 0xA801),
        ("REFUSED_NOT_AUTHORISED", 0x0124),
        ("OUT_OF_RESOURCES", 0xA700),
        ("CANNOT_UNDERSTAND", 0xC000),
        ("SUBOPERATIONS_REFUSED", 0xA702),
        ("SUBOPERATIONS_WARNING", 0xB000),
        ("IDENTIFIER_MISMATCH", 0xA900),
    ],
)
def test_statuses_come_from_pynetdicoms_tables(name: str, code: int) -> None:
    assert getattr(statuses, name) == code


def test_a_status_pynetdicom_does_not_list_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="no longer lists"):
        statuses.named({0x0000: ("Success", "")}, "Refused: Out of Resources")
    assert statuses.is_pending(0xFF01) and not statuses.is_pending(0x0000)
