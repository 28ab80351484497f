"""The catalog in-process, against the demo Q/R SCP on 127.0.0.1: no FUSE, no Orthanc.

Single flight, the bounded lock table, stale listings while the PACS is down, and the
completeness retry; then the whole namespace (``build_namespace``) with C-GET.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import evt

from dicomfs.app.compose import build_namespace
from dicomfs.app.options import MountOptions
from dicomfs.core.catalog import Catalog
from dicomfs.core.errors import FailedFast, NotFound, PacsError
from dicomfs.core.flight import LocksWhileInUse
from dicomfs.core.records import SeriesRecord, StudyRecord
from dicomfs.core.store import ListingCache
from dicomfs.demo.samples import write_demo_archive
from dicomfs.demo.scp import DemoArchive, handle_find
from dicomfs.dimse.client import PacsAddress, PacsClient
from dicomfs.dimse.queries import DimseQueries
from dicomfs.views import naming
from dicomfs.views.root import Root
from tests.identity_archive import Obj, write_archive
from tests.mounting import wait_until

#: Deadline of every wait here: only a guard against hangs.
DEADLINE_S = 30.0
TIMEOUT_S = 10.0


class CountingArchive(DemoArchive):
    """The demo archive, counting C-FINDs by level; SERIES-level C-FINDs wait at ``series_gate``,
    and the first ``short_image_answers`` IMAGE-level answers leave out their last match."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, ae_title="CATALOGPACS")
        self.finds: collections.Counter[str] = collections.Counter()
        self.series_gate = threading.Event()
        self.series_gate.set()
        self.short_image_answers = 0
        self._counting = threading.Lock()

    def start(self) -> None:
        super().start()
        server: Any = self._server
        server.bind(evt.EVT_C_FIND, self._find)  # replaces the demo's handler (one per event)

    def _find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        level = str(event.identifier.QueryRetrieveLevel)
        with self._counting:
            self.finds[level] += 1
            short = level == "IMAGE" and self.short_image_answers > 0
            if short:
                self.short_image_answers -= 1
        if level == "SERIES":
            self.series_gate.wait(DEADLINE_S)
        assert self.index is not None
        responses = list(handle_find(event, self.index))
        yield from responses[:-1] if short else responses


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    write_demo_archive(folder)
    return folder


@pytest.fixture
def archive(demo_folder: Path) -> Iterator[CountingArchive]:
    with CountingArchive(demo_folder) as served:
        yield served


@contextlib.contextmanager
def catalog_of(archive: DemoArchive, cachedir: Path, ttl: float = 60.0) -> Iterator[Catalog]:
    address = PacsAddress("127.0.0.1", archive.port, archive.ae_title, "CATALOGTEST", TIMEOUT_S)
    client = PacsClient(address)
    listings = ListingCache(str(cachedir), ttl)
    try:
        yield Catalog(
            DimseQueries(client),
            listings,
            cache_prefix="test",
            study_time=naming.study_time,
            wait_s=DEADLINE_S,
        )
    finally:
        client.close()
        listings.close()


def first_study(catalog: Catalog) -> StudyRecord:
    patient = next(p for p in catalog.patients() if p.patient_id == "DEMO001")
    return next(s for s in catalog.studies(patient) if s.row["StudyDescription"] == "CT Chest")


def test_the_catalog_lists_every_level_with_the_pacs_counts(archive: CountingArchive, tmp_path: Path) -> None:
    with catalog_of(archive, tmp_path) as catalog:
        patients = catalog.patients()
        assert sorted(p.patient_id for p in patients) == ["DEMO001", "DEMO002", "DEMO003"]
        study = first_study(catalog)
        series = catalog.series(study)
        assert sorted(s.row["SeriesDescription"] for s in series) == ["Axial 5mm", "Coronal MPR"]
        assert study.count == len(series) == 2
        for one in series:
            instances = catalog.instances(one)
            assert len(instances) == one.count > 0
            assert {i.key.series_uid for i in instances} == {one.series_uid}
        assert catalog.cached_instances(series[0]) == catalog.instances(series[0])
        # Every listing came from the PACS once: the second walk is answered from the cache.
        before = sum(archive.finds.values())
        assert catalog.series(first_study(catalog)) == series
        assert sum(archive.finds.values()) == before


def test_concurrent_callers_of_one_listing_cost_one_c_find(archive: CountingArchive, tmp_path: Path) -> None:
    with catalog_of(archive, tmp_path) as catalog:
        study = first_study(catalog)
        archive.series_gate.clear()
        results: list[tuple[SeriesRecord, ...]] = []
        threads = [threading.Thread(target=lambda: results.append(catalog.series(study))) for _ in range(8)]
        for thread in threads:
            thread.start()
        try:
            # One caller's C-FIND waits at the gate; the other seven wait for its answer.
            wait_until(lambda: archive.finds["SERIES"] == 1, DEADLINE_S, "the first C-FIND")
            wait_until(lambda: catalog.in_flight(study) == 8, DEADLINE_S, "eight callers in flight")
        finally:
            archive.series_gate.set()
            for thread in threads:
                thread.join(DEADLINE_S)
        assert len(results) == 8
        assert all(result == results[0] for result in results)
        assert archive.finds["SERIES"] == 1
        assert catalog.in_flight(study) == 0  # the lock table keeps no key nobody uses


def test_the_lock_table_holds_only_keys_in_use() -> None:
    locks = LocksWhileInUse(wait_s=DEADLINE_S)
    for n in range(1000):
        with locks.hold(f"listing {n}") as alone:
            assert alone
            assert len(locks) == 1
    assert len(locks) == 0


def test_a_caller_stops_waiting_at_the_deadline_and_goes_ahead() -> None:
    locks = LocksWhileInUse(wait_s=0.05)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.hold("key"):
            held.set()
            release.wait(DEADLINE_S)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(DEADLINE_S)
        with locks.hold("key") as alone:
            assert not alone  # gave up waiting: runs beside the holder
            assert locks.users("key") == 2
    finally:
        release.set()
        thread.join(DEADLINE_S)
    assert len(locks) == 0


def test_a_stale_listing_is_served_while_the_pacs_is_down(
    archive: CountingArchive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dicomfs.core.catalog")
    with catalog_of(archive, tmp_path, ttl=0.0) as catalog:  # every listing is stale at once
        patients = catalog.patients()
        assert catalog.patients() == patients
        assert archive.finds["PATIENT"] == 2  # stale: asked again while the PACS answers
        study = first_study(catalog)
        archive.stop()
        assert catalog.patients() == patients
        assert "serving the cached listing" in caplog.text
        assert catalog.studies(study.patient)  # known down now: served without asking
        with pytest.raises((PacsError, FailedFast)):  # never listed: nothing to fall back on
            catalog.series(study)


def test_a_listing_shorter_than_the_pacs_count_is_asked_again(
    archive: CountingArchive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with catalog_of(archive, tmp_path) as catalog:
        series = catalog.series(first_study(catalog))
        archive.short_image_answers = 1
        instances = catalog.instances(series[0])
        assert len(instances) == series[0].count
        assert archive.finds["IMAGE"] == 2
        assert f"listed {series[0].count - 1} of the {series[0].count}" in caplog.text
        archive.short_image_answers = 2
        instances = catalog.instances(series[1])
        assert len(instances) == series[1].count - 1  # what the PACS gives, after asking twice
        assert archive.finds["IMAGE"] == 4
        assert f"still {series[1].count - 1} of {series[1].count} listed" in caplog.text


def test_children_of_a_short_fresh_listing_come_ahead(archive: CountingArchive, tmp_path: Path) -> None:
    with catalog_of(archive, tmp_path) as catalog:
        catalog.start_prefetching()
        try:
            patient = next(p for p in catalog.patients() if p.patient_id == "DEMO001")
            studies = catalog.studies(patient)  # fresh, 2 studies: their series come ahead
            wait_until(lambda: archive.finds["SERIES"] == len(studies), DEADLINE_S, "the prefetch")
            wait_until(lambda: all(catalog.in_flight(s) == 0 for s in studies), DEADLINE_S, "its end")
            series = [catalog.series(study) for study in studies]
            assert archive.finds["SERIES"] == len(studies)  # answered from the cache
            assert all(series)
            assert archive.finds["IMAGE"] == 0  # one level ahead only: instances cost the archive more
        finally:
            catalog.stop_prefetching()


def options(archive: DemoArchive, cachedir: Path) -> MountOptions:
    return MountOptions(
        mountpoint=str(cachedir / "unmounted"),
        serveraddress="127.0.0.1",
        serverport=archive.port,
        aec=archive.ae_title,
        aet="CATALOGTEST",
        cachedir=str(cachedir),
        retrieve="get",
        timeout=TIMEOUT_S,
    )


def test_the_namespace_names_lists_and_opens_without_fuse(archive: CountingArchive, tmp_path: Path) -> None:
    with build_namespace(options(archive, tmp_path)) as namespace:
        root = namespace.lookup("/")
        assert root.is_dir and root.mtime == namespace.mount_time
        names = [node.name for node in namespace.children(root)]
        assert names == sorted(names) and len(names) == 3
        patient = namespace.lookup(f"/{names[0]}")
        study = namespace.children(patient)[0]
        assert study.is_dir and study.mtime > 0  # the study date, not the mount time
        series = namespace.children(study)[0]
        files = namespace.children(series)
        assert files and all(not node.is_dir and node.instance is not None for node in files)
        path = f"/{patient.name}/{study.name}/{series.name}/{files[0].name}"
        node = namespace.lookup(path)
        assert node == files[0] and node.mtime == study.mtime
        assert namespace.cached_size(node) is None
        size = namespace.size(node)
        assert namespace.cached_size(node) == size
        fd = namespace.open(node)
        try:
            data = os.read(fd, size + 1)
        finally:
            os.close(fd)
        assert len(data) == size
        # The rest of the series arrives by the same C-GET: let it land before stopping.
        assert all(namespace.size(sibling) > 0 for sibling in files)
        assert node.instance is not None
        dataset = pydicom.dcmread(io.BytesIO(data))
        assert dataset.SOPInstanceUID == node.instance.sop_uid
        with pytest.raises(NotFound):
            namespace.lookup(f"/{patient.name}/no such study")
        with pytest.raises(NotFound):
            namespace.children(node)
        with pytest.raises(NotFound):
            namespace.lookup(f"{path}/deeper")


def test_the_root_composes_views_by_top_level_name(archive: CountingArchive, tmp_path: Path) -> None:
    with build_namespace(options(archive, tmp_path)) as patients:
        root = Root(patients, {"again": patients})
        top = root.lookup("/")
        shown = [node.name for node in patients.children(patients.lookup("/"))]
        assert [node.name for node in root.children(top)] == sorted([*shown, "again"])
        again = root.lookup("/again")
        assert again.is_dir and again.name == "again"
        assert [node.name for node in root.children(again)] == shown
        first = root.children(again)[0]
        study = root.children(first)[0]
        series = root.children(study)[0]
        file = root.children(series)[0]
        inner = patients.lookup(f"/{first.name}/{study.name}/{series.name}/{file.name}")
        assert root.lookup(f"/again/{first.name}/{study.name}/{series.name}/{file.name}") == file == inner
        assert root.size(file) == patients.size(inner) > 0
        assert all(root.size(sibling) > 0 for sibling in root.children(series))  # all landed


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("dicomfs.core.catalog", ("pynetdicom", "pydicom", "mfusepy", "dicomfs.dimse", "dicomfs.views")),
        ("dicomfs.core.instances", ("pynetdicom", "pydicom", "mfusepy", "dicomfs.dimse", "dicomfs.views")),
        ("dicomfs.views.root", ("pynetdicom", "mfusepy", "dicomfs.dimse", "dicomfs.fuse")),
        ("dicomfs.views.hierarchy", ("pynetdicom", "mfusepy", "dicomfs.dimse.client", "dicomfs.fuse")),
        ("dicomfs.fuse.ops", ("pynetdicom", "pydicom", "dicomfs.dimse", "dicomfs.core.catalog")),
    ],
)
def test_layers_import_only_what_they_may(module: str, forbidden: tuple[str, ...]) -> None:
    """The engine imports no DIMSE, DICOM codec, FUSE or view; FUSE sees nodes only (a fresh
    interpreter: this process has imported everything already)."""
    probe = f"import sys, {module}; print('\\n'.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    names = loaded.stdout.split()
    assert [name for name in names if name.startswith(forbidden)] == []


def test_a_patient_id_found_to_stand_for_two_persons_splits_the_root(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The PACS answers one PATIENT-level row (counting 2 studies) for two persons without an
    issuer; their studies tell them apart. The patient lists only its own person's study (asked
    twice: 1 of 2), and the root, listed again, shows both persons."""
    objects = [
        Obj("NOISS", "", "SMITH^ANN", "1.2.826.7.4", "1.2.826.7.4.1", "1.2.826.7.4.1.1"),
        Obj("NOISS", "", "JONES^BOB", "1.2.826.7.5", "1.2.826.7.5.1", "1.2.826.7.5.1.1"),
    ]
    (tmp_path / "archive").mkdir()
    write_archive(tmp_path / "archive", objects)
    with DemoArchive(tmp_path / "archive") as archive, catalog_of(archive, tmp_path / "cache") as catalog:
        (patient,) = catalog.patients()
        assert (patient.patient_id, patient.count) == ("NOISS", 2)
        (study,) = catalog.studies(patient)
        assert study.study_uid == "1.2.826.7.4" and study.patient.key.split
        persons = sorted((p.key.name, p.key.split) for p in catalog.patients())
        assert persons == [("jones^bob", True), ("smith^ann", True)]
    assert caplog.text.count("Patient ID 'NOISS' stands for 2 persons") == 1
