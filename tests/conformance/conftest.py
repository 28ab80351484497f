"""Fixtures of the conformance suite: each scenario runs once per front end, against a real SCP.

``connect(peer, **options)`` opens the front end of the test's parametrization on ``peer`` with
the mount options of ``tests.mounting.pacs_options``: a real FUSE mount ("fuse"), or the views'
``Namespace`` in this process ("in-process", skipped until ``build_namespace`` exists).
The SCPs are the demo archive's Q/R SCP (``dicomfs.demo.scp``) and the deliberately broken one
(``tests.broken_pacs``); both count the requests they receive (``requests``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from dicomfs.demo.samples import write_demo_archive
from dicomfs.demo.scp import DemoArchive
from tests.broken_pacs import BrokenPacs
from tests.conformance.frontends import (
    Connect,
    FrontEnd,
    Served,
    fuse_front_end,
    in_process_front_end,
    namespace_factory,
)
from tests.mounting import DICOMFS_AET, pacs_options
from tests.pacs_servers import HOST, free_port


@pytest.fixture(params=[pytest.param("fuse", marks=pytest.mark.integration), "in-process"])
def connect(request: pytest.FixtureRequest, tmp_path: Path) -> Connect:
    """``connect(served, **options)``: a context manager giving the front end on ``served``."""
    if request.param == "in-process":
        namespace_factory()  # skips now, before any SCP starts, while the factory is missing

    def open_front_end(served: Served, **options: object) -> AbstractContextManager[FrontEnd]:
        text = pacs_options(served.pacs, tmp_path / "cache", localport=served.localport, **options)
        if request.param == "fuse":
            return fuse_front_end(tmp_path / "mnt", text)
        return in_process_front_end(tmp_path, text)

    return open_front_end


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled demo archive (3 patients, 5 studies, 8 series, 40 instances) as files."""
    folder = tmp_path_factory.mktemp("conformance-archive")
    write_demo_archive(folder)
    return folder


@pytest.fixture
def demo(demo_folder: Path) -> Iterator[Served]:
    """The demo archive's Q/R SCP serving ``demo_folder``, knowing our storage SCP."""
    localport = free_port()
    archive = DemoArchive(
        demo_folder, ae_title="CONFORMPACS", move_destinations={DICOMFS_AET: (HOST, localport)}
    )
    with archive:
        yield Served(archive, localport)


@pytest.fixture
def broken() -> Iterator[Served]:
    """The deliberately broken SCP (``tests.broken_pacs``), behaving normally until told."""
    localport = free_port()
    with BrokenPacs() as pacs:
        pacs.move_port = localport
        yield Served(pacs, localport)
