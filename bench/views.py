"""The views on the 2,000-patient archive (issue #12): ``ls by-date/<day>`` and a by-uid lookup,
uncached, against ``findscu`` asking the same C-FINDs of the same Orthanc in the same run.

Section ``views`` of bench/run.py; alone (an Orthanc holding the 2,000-patient archive only, built
once under ``bench/work/``, ~2 min): ``.venv/bin/python bench/views.py [--runs N] [--quick]``.

- ``ls by-date/2023/2023-01/2023-01-01``: one STUDY-level C-FIND with StudyDate=20230101 (2,000
  studies: every patient's first) on a fresh mount; the year and month list without a query and
  are ``stat``-ed first. Peer: ``findscu`` of that query with the same return keys.
- ``ls by-uid/<study>/<series>`` on a fresh mount: the lookup of an instance's name by UIDs, three
  C-FINDs (the study by UID, its series, the series' instances). Peer: the same three C-FINDs by
  ``findscu`` (three processes, one after the other).
- ``stat by-uid/<study>/<series>/<sop>.dcm`` on a fresh mount: the same three C-FINDs, then the
  file's size: the kernel asks GETATTR after LOOKUP (libfuse 3.14 without parallel directory
  operations caches no attributes), and an exact size retrieves the series (an IMAGE-level C-FIND
  of the SOP Class, then a C-GET of its 5 small instances). Peer: the three ``findscu`` and a
  SERIES-level ``getscu`` of that series.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench import data  # noqa: E402
from bench.measure import Env, expect_files, time_findscu, time_getscu, timed  # noqa: E402
from bench.report import Figure, Results, document  # noqa: E402
from dicomfs.dimse.queries import STUDY_RETURN_KEYS  # noqa: E402
from tests.pacs_servers import HOST, MoveDestination, OrthancServer, free_port  # noqa: E402

LOGGER = logging.getLogger("bench.views")

FIGURES = [
    Figure(
        "ls_day",
        "ls by-date/<day>, uncached (a study per patient)",
        "s",
        "findscu STUDY StudyDate",
        goal_ratio=1.2,
    ),
    Figure("uid_ls", "ls by-uid/<study>/<series>, uncached", "ms", "findscu x3", goal_ratio=1.2),
    Figure(
        "uid_stat",
        "stat by-uid/<study>/<series>/<sop>.dcm, uncached",
        "ms",
        "findscu x3 + getscu",
        goal_ratio=1.2,
    ),
]

#: The day every patient's first study is on (bench/data.py: ``2023<study>01``).
DAY = "20230101"
#: A patient whose study the by-uid lookup resolves (0-based, as bench/data.py numbers them).
UID_PATIENT = 1233
#: An Orthanc of the 2,000-patient archive alone (no CT study: the views need none).
VIEWS_SHAPE = data.Shape(ct_series=0)
QUICK_SHAPE = data.Shape(ct_series=0, patients=100)


def day_path(day: str = DAY) -> str:
    return f"by-date/{day[:4]}/{day[:4]}-{day[4:6]}/{day[:4]}-{day[4:6]}-{day[6:]}"


def uid_path(patient: int) -> tuple[str, str, str]:
    """``by-uid/<study>/<series>/<sop>.dcm`` of the first instance of the patient's first study."""
    study = data.small_study_uid(patient, 0)
    return study, f"{study}.1", f"{study}.1.1"


def series_keys(study_uid: str) -> dict[str, str]:
    """What ``DimseQueries.series`` asks (Study Root: PatientID a return key)."""
    keys = dict.fromkeys(
        (
            "SeriesInstanceUID",
            "SeriesNumber",
            "Modality",
            "SeriesDescription",
            "NumberOfSeriesRelatedInstances",
        ),
        "",
    )
    return {
        "StudyInstanceUID": study_uid,
        **keys,
        "PatientID": "",
        "IssuerOfPatientID": "",
        "PatientName": "",
    }


def image_keys(study_uid: str, series_uid: str) -> dict[str, str]:
    """What ``DimseQueries.instances`` asks of a patient not known to be shared."""
    return {
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "SOPInstanceUID": "",
        "InstanceNumber": "",
        "PatientID": "",
        "PatientName": "",
    }


def bench_views(env: Env, shape: data.Shape, res: Results, i: int) -> None:
    """One run of both figures, dicomfs and findscu alternated (A first on even runs)."""
    patient = min(UID_PATIENT, shape.patients - 1)
    study, series, sop = uid_path(patient)

    def dicomfs_side() -> None:
        with env.fresh_mount() as mount:
            day = mount.mountpoint / day_path()
            day.parent.stat()  # year and month: no query
            res.add("ls_day", "a", timed(["ls", day]))
        with env.fresh_mount() as mount:
            res.add("uid_ls", "a", timed(["ls", mount.mountpoint / "by-uid" / study / series]))
        with env.fresh_mount() as mount:
            res.add(
                "uid_stat", "a", timed(["stat", mount.mountpoint / "by-uid" / study / series / f"{sop}.dcm"])
            )

    def findscu_side() -> None:
        study_keys = {**STUDY_RETURN_KEYS, "StudyDate": DAY}
        res.add("ls_day", "b", time_findscu(env.orthanc, "STUDY", study_keys))
        three = time_findscu(env.orthanc, "STUDY", {**STUDY_RETURN_KEYS, "StudyInstanceUID": study})
        three += time_findscu(env.orthanc, "SERIES", series_keys(study))
        three += time_findscu(env.orthanc, "IMAGE", image_keys(study, series))
        res.add("uid_ls", "b", three)
        out = env.fresh_dir("getscu-series")
        keys = {"StudyInstanceUID": study, "SeriesInstanceUID": series}
        res.add("uid_stat", "b", three + time_getscu(env.orthanc, "SERIES", keys, out))
        expect_files(out, shape.instances_per_series, "getscu of the series")
        shutil.rmtree(out)

    for step in (dicomfs_side, findscu_side) if i % 2 == 0 else (findscu_side, dicomfs_side):
        step()


def start_orthanc(stack: contextlib.ExitStack, shape: data.Shape, dicomfs_port: int) -> OrthancServer:
    """Orthanc on the cached storage of ``shape`` (generated and loaded on first use)."""
    workdir = BENCH / "work" / f"orthanc-{shape.key()}"
    fresh = not data.is_loaded(workdir, shape)
    if fresh:
        data.reset_storage(workdir)
    orthanc = OrthancServer(workdir, "ORTHANC", [MoveDestination("DICOMFS", HOST, dicomfs_port)])
    orthanc.start()
    stack.callback(orthanc.stop)
    if fresh:
        LOGGER.info("generating and loading the archive into Orthanc (once; cached in %s)", workdir)
        data.load_all(orthanc.http_port, workdir, shape)
    return orthanc


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--quick", action="store_true", help="100 patients, for smoke tests")
    parser.add_argument("--output", type=Path, help="write the results here (default: print only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    shape = QUICK_SHAPE if args.quick else VIEWS_SHAPE
    res = Results()
    with contextlib.ExitStack() as stack:
        (BENCH / "work").mkdir(exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=BENCH / "work"))
        stack.callback(shutil.rmtree, scratch, True)
        dicomfs_port = free_port()
        orthanc = start_orthanc(stack, shape, dicomfs_port)
        env = Env(orthanc, dicomfs_port, free_port(), scratch)
        for i in range(args.runs):
            bench_views(env, shape, res, i)
            LOGGER.info("views run %d done", i + 1)
    command = shlex.join([".venv/bin/python", "bench/views.py", *argv])
    notes = f"Orthanc holds the {shape.patients}-patient archive only (bench/data.py, no CT study)."
    text = document(FIGURES, res, command, notes)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
