"""LOOKUP without waits where libfuse cannot ask for parallel directory operations (dicomfs.fuse.lookups)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dicomfs.fuse.lookups import (
    FUSE_CAP_AUTO_INVAL_DATA,
    FUSE_CAP_PARALLEL_DIROPS,
    SeenPaths,
    ask_parallel_dirops,
    libfuse_version,
)
from dicomfs.fuse.ops import loaded_libfuse_version


def test_a_path_is_new_only_the_first_time() -> None:
    seen = SeenPaths()
    paths = [f"/p/s/series/{n:04d}.dcm" for n in range(2000)] + ["/p/s/ümlaut/\udcff.dcm"]
    assert all(seen.first_sight(path) for path in paths)
    assert not any(seen.first_sight(path) for path in paths)


def test_a_full_filter_errs_towards_waiting() -> None:
    seen = SeenPaths(size_bits=64)  # saturated at once: new paths look seen, i.e. their LOOKUP waits
    for n in range(200):
        seen.first_sight(f"/{n}")
    assert not seen.first_sight("/never-seen")


@pytest.mark.parametrize(
    ("text", "version"), [("3.14.0", (3, 14, 0)), ("3.17.1", (3, 17, 1)), ("3.17", (3, 17)), ("3.x", ())]
)
def test_libfuse_version(text: str, version: tuple[int, ...]) -> None:
    assert libfuse_version(text) == version


@pytest.mark.parametrize(
    ("version", "capable", "parallel"),
    [
        ((3, 14, 0), FUSE_CAP_PARALLEL_DIROPS, False),  # computed, never sent to the kernel
        ((3, 17, 1), FUSE_CAP_PARALLEL_DIROPS, True),
        ((3, 18, 0), 0, False),  # a kernel without it
        ((), FUSE_CAP_PARALLEL_DIROPS, False),
    ],
)
def test_init_asks_for_parallel_dirops_or_stops_caching_attributes(
    version: tuple[int, ...], capable: int, parallel: bool
) -> None:
    conn = SimpleNamespace(capable=capable | FUSE_CAP_AUTO_INVAL_DATA, want=FUSE_CAP_AUTO_INVAL_DATA)
    config = SimpleNamespace(attr_timeout=60.0)
    assert ask_parallel_dirops(conn, config, version) is parallel
    assert bool(conn.want & FUSE_CAP_PARALLEL_DIROPS) == bool(capable)
    assert config.attr_timeout == (60.0 if parallel else 0.0)
    assert bool(conn.want & FUSE_CAP_AUTO_INVAL_DATA) == parallel


def test_the_loaded_libfuse_has_a_version() -> None:
    assert loaded_libfuse_version()[:1] == (3,)


def test_without_a_configuration_to_change_lookups_keep_waiting() -> None:
    conn = SimpleNamespace(capable=0, want=0)
    assert ask_parallel_dirops(conn, None, (2, 9)) is True  # FUSE 2: no fuse_config
