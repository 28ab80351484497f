"""In-process parts of ``dicomfs status``: the control view, hidden mounts, probes, the recent
problems table, the scheduler's view of jobs in flight, and the command's own logic."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from dicomfs.app.statuscmd import dicomfs_mounts, mount_of, summary
from dicomfs.core.errors import NotFound
from dicomfs.core.recentlog import MAX_MESSAGE_CHARS, RecentProblems
from dicomfs.fuse.ops import is_probe
from dicomfs.views.control import CONTROL_DIR, STATUS_SIZE, ControlView, render
from dicomfs.views.node import Node
from dicomfs.views.root import Root


class _Flat:
    """A default view with two top-level entries, one of them named like the control directory."""

    mount_time = 0.0

    def lookup(self, path: str) -> Node:
        return Node(path.strip("/"), True, 0.0)

    def children(self, node: Node) -> Sequence[Node]:
        return [Node("PATIENT", True, 0.0), Node(CONTROL_DIR, True, 0.0)]

    def cached_size(self, node: Node) -> int | None:
        return None

    def size(self, node: Node, *, walker: int = 0) -> int:
        raise NotFound(node.name)

    def open(self, node: Node, *, reader: int = 0) -> int:
        raise NotFound(node.name)


def test_the_status_file_is_a_fresh_json_snapshot_of_a_fixed_size() -> None:
    calls = iter(range(100))
    view = ControlView(lambda: {"call": next(calls), "text": "Müller"}, 12.0)
    node = view.lookup("/status.json")
    assert node.volatile and not node.is_dir and view.cached_size(node) == view.size(node) == STATUS_SIZE
    contents = []
    for _ in range(2):
        fd = view.open(node)
        try:
            assert os.fstat(fd).st_size == STATUS_SIZE
            contents.append(os.pread(fd, STATUS_SIZE + 1, 0))
            with pytest.raises(PermissionError):  # sealed
                os.pwrite(fd, b"x", 0)
        finally:
            os.close(fd)
    assert [json.loads(data)["call"] for data in contents] == [0, 1]
    assert json.loads(contents[0])["text"] == "Müller" and contents[0].endswith(b" \n")
    assert [child.name for child in view.children(view.lookup("/"))] == ["status.json"]
    for missing in ("/other", "/status.json/x"):
        with pytest.raises(NotFound):
            view.lookup(missing)


def test_a_report_too_large_keeps_its_scalars_and_stays_json() -> None:
    data = render({"pid": 7, "errors": ["x" * 100] * 100}, size=1024)
    assert len(data) == 1024 and json.loads(data) == {"pid": 7, "truncated": True}


def test_root_reaches_a_hidden_mount_without_listing_it() -> None:
    control = ControlView(dict, 0.0)
    root = Root(_Flat(), hidden={CONTROL_DIR: control})
    assert [child.name for child in root.children(root.lookup("/"))] == ["PATIENT"]
    assert root.lookup("/.dicomfs").is_dir and root.lookup("/.dicomfs").name == CONTROL_DIR
    status = root.lookup("/.dicomfs/status.json")
    assert status.volatile and root.size(status) == STATUS_SIZE
    fd = root.open(status)
    os.close(fd)


@pytest.mark.parametrize(
    ("path", "probe"),
    [
        ("/.dicomfs", False),
        ("/.dicomfs/status.json", False),
        ("/.dicomfs/.hidden", True),
        ("/PATIENT/.dicomfs", True),  # only at the root
        ("/.Trash-1000", True),
        ("/desktop.ini", True),
        ("/PATIENT/STUDY", False),
    ],
)
def test_only_the_control_directory_escapes_the_probe_filter(path: str, probe: bool) -> None:
    assert is_probe(path) is probe


def test_recent_problems_keep_the_last_warnings_bounded() -> None:
    logger = logging.getLogger("dicomfs.tests.recent")
    problems = RecentProblems(max_records=3)
    problems.install("dicomfs.tests")
    try:
        logger.info("not kept")
        for number in range(5):
            logger.warning("problem %d", number)
        logger.error("long %s", "y" * 2 * MAX_MESSAGE_CHARS)
    finally:
        problems.remove("dicomfs.tests")
    logger.warning("after removal")
    kept = problems.recent()
    assert [problem.message for problem in kept[:2]] == ["problem 3", "problem 4"]
    assert kept[2].level == "ERROR" and len(kept[2].message) == MAX_MESSAGE_CHARS


def test_mount_of_finds_the_dicomfs_mount_of_a_path(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "DEMO@127.0.0.1:104 /mnt/with\\040space fuse.dicomfs ro,nosuid 0 0\n"
        "other /mnt/sshfs fuse.sshfs rw 0 0\n"
        "PACS /mnt/pacs fuse.dicomfs ro 0 0\n"
    )
    found = dicomfs_mounts(str(mounts))
    assert found == {"/mnt/with space", "/mnt/pacs"}
    assert mount_of("/mnt/pacs", found) == "/mnt/pacs"
    assert mount_of("/mnt/pacs/DOE^JANE/study", found) == "/mnt/pacs"
    assert mount_of("/mnt/with space/x", found) == "/mnt/with space"
    assert mount_of("/mnt/sshfs/x", found) is None
    assert mount_of("/mnt/pacsother", found) is None


def test_the_summary_names_every_part() -> None:
    report = {
        "dicomfs": "0.1.0",
        "pid": 42,
        "mountpoint": "/mnt/pacs",
        "pacs": "ORTHANC@127.0.0.1:4242",
        "profile": "main",
        "calling_aet": "DICOMFS",
        "retrieve": "move",
        "pacs_unreachable": "connection refused",
        "cachedir": "/var/cache/dicomfs",
        "cache_used_bytes": 2_500_000,
        "cache_limit_bytes": 10_000_000,
        "opens_from_cache": 3,
        "opens_retrieved": 1,
        "hit_ratio": 0.75,
        "retrievals_in_flight": 2,
        "retrievals": [
            {
                "series_uid": "1.2.3",
                "instances_done": 4,
                "instances_expected": 10,
                "bytes_done": 1_500_000,
                "running_s": 3.0,
            }
        ],
        "last_errors": [
            {"time": "2026-11-30T12:00:00+0000", "level": "WARNING", "message": "series 1.2.9: gone"}
        ],
        "uptime_s": 3725.0,
    }
    text = summary(report)
    for part in (
        "(pid 42) at /mnt/pacs, up 1 h 02 min",
        "ORTHANC@127.0.0.1:4242 (profile main), retrieve=move, as DICOMFS",
        "unreachable: connection refused",
        "2.5 MB of 10.0 MB used (/var/cache/dicomfs)",
        "75% (3 opens from the cache, 1 retrieved)",
        "retrievals   2 in flight",
        "series 1.2.3: 4/10 instances, 1.5 MB, 3 s",
        "... and 1 more",
        "last errors  1",
        "2026-11-30T12:00:00+0000 WARNING: series 1.2.9: gone",
    ):
        assert part in text, (part, text)
