"""The daemon's memory while listing a huge directory (issue #12): a 50,000-study day (or patient).

Serves :mod:`tests.big_archive` with one crowded day of ``--studies`` studies (all filed under one
patient too, so the patient tree shows the same listing), mounts dicomfs on a fresh cachedir, and
lists the directory once with ``ls -f`` (unsorted: it prints entries as readdir returns them).
Reports the daemon's VmRSS before and VmHWM after (bytes), the entries listed, the seconds to the
first entry and to the last. Not part of the test suite.

    .venv/bin/python bench/bigday.py [--studies 50000] [--path date|patient]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.measure import vm_hwm_bytes  # noqa: E402
from tests.big_archive import BigArchive, big_options  # noqa: E402
from tests.big_index import BigIndex, patient_id, patient_name  # noqa: E402
from tests.mounting import mounted  # noqa: E402

LOGGER = logging.getLogger("bench.bigday")
CROWDED_DAY = "20240615"
CROWD_PATIENT = 0
LIST_TIMEOUT_S = 1800.0


def vm_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def listed_path(kind: str) -> str:
    if kind == "date":
        y, m, d = CROWDED_DAY[:4], CROWDED_DAY[4:6], CROWDED_DAY[6:]
        return f"by-date/{y}/{y}-{m}/{y}-{m}-{d}"
    return f"{patient_name(CROWD_PATIENT)} ({patient_id(CROWD_PATIENT)})"


def list_once(directory: Path) -> tuple[int, float, float]:
    """``ls -f`` of ``directory``: entries, seconds to the first line, seconds to the end."""
    started = time.perf_counter()
    process = subprocess.Popen(["ls", "-f", str(directory)], stdout=subprocess.PIPE)
    assert process.stdout is not None
    first = 0.0
    entries = 0
    for _line in process.stdout:
        if entries == 0:
            first = time.perf_counter() - started
        entries += 1
    if process.wait(timeout=LIST_TIMEOUT_S) != 0:
        raise RuntimeError(f"ls -f {directory} failed")
    return entries - 2, first, time.perf_counter() - started  # . and ..


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=50_000, help="studies of the crowded day")
    parser.add_argument(
        "--path", choices=("date", "patient"), default="date", help="which directory lists them"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    index = BigIndex(
        20_000, crowded_day=CROWDED_DAY, crowded_studies=args.studies, crowd_patient=CROWD_PATIENT
    )
    # The patient path needs the root listed once (PATIENT level): allowed here, counted anyway.
    with (
        tempfile.TemporaryDirectory(prefix="bigday-") as scratch,
        BigArchive(index, refuse_universal=args.path == "date") as pacs,
    ):
        base = Path(scratch)
        with mounted(base / "mnt", big_options(pacs, base / "cache", timeout=600)) as mount:
            directory = mount.mountpoint / listed_path(args.path)
            directory.parent.stat()
            pid = mount.process.pid
            before = vm_rss_bytes(pid)
            entries, first, total = list_once(directory)
            peak = vm_hwm_bytes(pid)
            after = vm_rss_bytes(pid)
    print(
        f"path={args.path} studies={args.studies} listed={entries} "
        f"rss_before={before / 1e6:.1f}MB hwm_after={peak / 1e6:.1f}MB rss_after={after / 1e6:.1f}MB "
        f"first_entry={first:.2f}s last_entry={total:.2f}s "
        f"finds={[(f.level, dict(f.keys)) for f in pacs.finds]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
