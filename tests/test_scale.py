"""A 20,000-study archive browsed by date through a real mount, with real shell tools (issue #12).

The archive (:mod:`tests.big_archive`) refuses every universal query, as hospital PACSes do, and
counts every C-FIND: years and months must list without a query, a day with exactly one STUDY-level
C-FIND with that date, a study by UID with targeted queries, and nothing may ever ask for the whole
archive (a PATIENT-level or key-less STUDY-level query). One day holds 5,000 studies: listing it
must cost the daemon little memory per study (bytes, from /proc, never time).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.big_archive import BigArchive, big_options
from tests.big_index import BigIndex, Entity, accession, series_count, series_uid, study_uid
from tests.mounting import Mount, ends_within, mounted

#: Generous: a guard against hangs only.
SHELL_TIMEOUT_S = 60.0
ACCESSION_IN_NAME = re.compile(r"\((ACC\d{7})\)")
#: A day after the two spread years that holds CROWDED_STUDIES studies.
CROWDED_DAY = "20250301"
CROWDED_STUDIES = 4_990  # not a size PACSes cut at (core.splitting.SUSPECT_CAPS): no marker
#: What listing one study may cost the daemon at its peak (VmHWM), in bytes. Measured: 2.7 kB here
#: (1.7 kB for 50,027 studies, bench/bigday.py); 6.2 kB before C-FIND matches became rows as they
#: arrived and directories were paged (issue #12).
MAX_BYTES_PER_STUDY = 4_000


@dataclass
class Scale:
    index: BigIndex
    pacs: BigArchive
    mount: Mount


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scale]:
    index = BigIndex(20_000, crowded_day=CROWDED_DAY, crowded_studies=CROWDED_STUDIES)
    base = tmp_path_factory.mktemp("scale")
    with BigArchive(index) as pacs, mounted(base / "mnt", big_options(pacs, base / "cache")) as mount:
        yield Scale(index, pacs, mount)
        # No test of this module may have made the archive list itself whole.
        assert not pacs.listed_whole, pacs.listed_whole
        assert not pacs.finds_at("PATIENT"), pacs.finds_at("PATIENT")


def shell(script: str, cwd: Path) -> str:
    """``sh -c script`` in ``cwd``: its standard output; AssertionError with stderr if it fails."""

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", script], cwd=cwd, capture_output=True, text=True, check=False)

    done = ends_within(run, SHELL_TIMEOUT_S, script)
    assert done.returncode == 0, f"{script}: {done.stderr}"
    return done.stdout


def day_path(date: str) -> str:
    """``by-date/YYYY/YYYY-MM/YYYY-MM-DD`` of a DA value."""
    year, month, day = date[:4], date[4:6], date[6:]
    return f"by-date/{year}/{year}-{month}/{year}-{month}-{day}"


def test_years_and_months_list_without_a_query(scale: Scale) -> None:
    scale.pacs.reset_counts()
    root = scale.mount.mountpoint
    years = shell("ls by-date", root).split()
    months = shell("ls by-date/2023", root).split()
    days = shell("ls by-date/2024/2024-02", root).split()
    assert {"2023", "2024"} <= set(years)
    assert months == [f"2023-{m:02d}" for m in range(1, 13)]
    assert days == [f"2024-02-{d:02d}" for d in range(1, 30)]  # 2024 is a leap year
    assert scale.pacs.finds == []


def test_a_day_is_one_study_level_query(scale: Scale) -> None:
    date = max(
        (day for day in scale.index.dates if day != CROWDED_DAY), key=lambda d: len(scale.index.by_date[d])
    )
    expected = {accession(study.number) for study in scale.index.studies_on(date)}
    scale.pacs.reset_counts()
    names = shell(f"ls '{day_path(date)}'", scale.mount.mountpoint).splitlines()
    shown = [match.group(1) for name in names for match in [ACCESSION_IN_NAME.search(name)] if match]
    assert len(names) == len(expected)
    assert sorted(shown) == sorted(expected)
    finds = scale.pacs.finds
    assert [(find.level, find.keys.get("StudyDate")) for find in finds] == [("STUDY", date)]
    assert set(finds[0].keys) <= {"StudyDate", "QueryRetrieveLevel"}, finds[0].keys


def test_a_study_opens_and_a_file_is_the_archive_s(scale: Scale) -> None:
    date = scale.index.dates[100]
    study = scale.index.studies_on(date)[0]
    root = scale.mount.mountpoint
    names = shell(f"ls '{day_path(date)}'", root).splitlines()
    study_dir = next(name for name in names if f"({accession(study.number)})" in name)
    listing = shell(f"cd '{day_path(date)}/{study_dir}' && ls && ls \"$(ls | head -n1)\"", root).splitlines()
    series_dir, first_file = listing[0], listing[-1]
    assert first_file.endswith(".dcm")
    data = subprocess.run(
        ["cat", f"{day_path(date)}/{study_dir}/{series_dir}/{first_file}"],
        cwd=root,
        capture_output=True,
        check=True,
        timeout=SHELL_TIMEOUT_S,
    ).stdout
    got = dcmread(io.BytesIO(data))
    expected = scale.pacs.instance(Entity("IMAGE", study, got.SeriesNumber, got.InstanceNumber))
    assert got.SOPInstanceUID == expected.SOPInstanceUID
    assert got.PixelData == expected.PixelData
    assert got == expected  # every element (file meta aside: ours, written by the receiving side)
    assert str(expected.SOPInstanceUID) in scale.pacs.retrieved


def test_a_study_is_found_by_uid_with_targeted_queries(scale: Scale) -> None:
    number = 12_345
    uid = study_uid(number)
    scale.pacs.reset_counts()
    listed = shell(f"ls by-uid/{uid}", scale.mount.mountpoint).split()
    assert listed == [series_uid(number, s) for s in range(1, series_count(number) + 1)]
    assert [(find.level, dict(find.keys)) for find in scale.pacs.finds] == [
        ("STUDY", {"StudyInstanceUID": uid}),
        ("SERIES", {"StudyInstanceUID": uid}),
    ]


def memory_bytes(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of a process, in bytes (/proc/<pid>/status gives kB)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1]) * 1024


def test_a_huge_day_costs_little_memory_per_study(scale: Scale) -> None:
    pid = scale.mount.process.pid
    before = memory_bytes(pid, "VmRSS")
    day = scale.mount.mountpoint / day_path(CROWDED_DAY)
    names = ends_within(lambda: os.listdir(day), SHELL_TIMEOUT_S, f"listing {day}")
    # The peak since the mount started bounds the listing's cost from above (earlier tests of the
    # module list a few dozen studies).
    grown = memory_bytes(pid, "VmHWM") - before
    assert len(names) == CROWDED_STUDIES
    assert grown < CROWDED_STUDIES * MAX_BYTES_PER_STUDY, f"{grown / CROWDED_STUDIES:.0f} bytes per study"


@pytest.mark.parametrize("findlimit", [0, 100_000])
def test_a_root_of_exactly_500_patients_is_not_shown_as_whole_unless_findlimit_says(
    findlimit: int, tmp_path: Path
) -> None:
    """500 rows at the root is a size PACSes cut at silently: without ``findlimit`` the root shows
    README.txt and the views, never a list that may be cut; a findlimit above it lists them."""
    index = BigIndex(2_500)  # 500 patients
    with (
        BigArchive(index, refuse_universal=False) as pacs,
        mounted(tmp_path / "mnt", big_options(pacs, tmp_path / "cache", findlimit=findlimit)) as mount,
    ):
        listed = shell("ls", mount.mountpoint).split("\n")
        log = mount.log_text()
    if findlimit:
        assert len([name for name in listed if name]) == index.patients == 500
    else:
        assert "README.txt" in listed and "by-date" in listed and len(listed) < 10, listed
        assert "exactly 500 matches" in log
