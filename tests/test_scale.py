"""A 20,000-study archive browsed by date through a real mount, with real shell tools (issue #12).

The archive (:mod:`tests.big_archive`) refuses every universal query, as hospital PACSes do, and
counts every C-FIND: years and months must list without a query, a day with exactly one STUDY-level
C-FIND with that date, and nothing may ever ask for the whole archive (a PATIENT-level or
key-less STUDY-level query).
"""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.big_archive import BigArchive, big_options
from tests.big_index import BigIndex, Entity, accession
from tests.mounting import Mount, ends_within, mounted

#: Generous: a guard against hangs only.
SHELL_TIMEOUT_S = 60.0
ACCESSION_IN_NAME = re.compile(r"\((ACC\d{7})\)")


@dataclass
class Scale:
    index: BigIndex
    pacs: BigArchive
    mount: Mount


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scale]:
    index = BigIndex(20_000)
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
    date = scale.index.busiest_day()
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
