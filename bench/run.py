"""dicomfs benchmark (issue #3): one command, its own Orthanc, dicomfs (A) against DCMTK/local peers (B).

Run ``.venv/bin/python bench/run.py [--runs N] [--quick]``; see bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench import data, views  # noqa: E402
from bench import order as order_matrix  # noqa: E402
from bench.measure import (  # noqa: E402
    Env,
    TreePaths,
    expect_files,
    getscu_peak_rss,
    profiled,
    time_findscu,
    time_getscu,
    time_movescu,
    timed,
    vm_hwm_bytes,
)
from bench.report import Figure, Results, document  # noqa: E402
from tests.pacs_servers import HOST, MoveDestination, OrthancServer, free_port  # noqa: E402

LOGGER = logging.getLogger("bench")

FIGURES = [
    Figure("cold_get", "cold copy, 1 series, retrieve=get", "s", "getscu", goal_ratio=0.9),
    Figure("cold_move", "cold copy, 1 series, retrieve=move", "s", "movescu+storescp", goal_ratio=0.9),
    Figure("warm_copy", "warm copy (remount, on-disk cache)", "s", "local cp -r", goal_ratio=3),
    Figure("repeat_read", "repeat read, same mount (2nd cat)", "s", "local cat (page cache)", goal_ratio=2),
    Figure("ls_series", "ls -l cached series", "ms", "ls -l local copy", goal_abs=20),
    Figure("ls_study", "ls study, uncached (parents resolved)", "ms", "findscu SERIES", goal_abs=20),
    Figure("ls_root", "ls root, uncached", "s", "findscu STUDY (all)", goal_abs=1.5),
    Figure("ls_root_cached", "ls root, cached (2nd ls)", "ms", "-", goal_abs=50),
    Figure("first_byte", "first byte, last instance of uncached series", "s", "getscu IMAGE", goal_abs=0.3),
    Figure("rss", "daemon peak RSS, cp -r of the CT study", "MB", "getscu STUDY peak RSS", goal_abs=200),
    *views.FIGURES,
]
_STUDY_KEYS = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyTime", "StudyDescription")


def alternate(run_index: int, a: Callable[[], None], b: Callable[[], None]) -> None:
    """A then B on even runs, B then A on odd ones, so drift hits both sides alike."""
    for step in (a, b) if run_index % 2 == 0 else (b, a):
        step()


def discover(env: Env, shape: data.Shape) -> TreePaths:
    """Find the names dicomfs gives the bench data (one throwaway mount)."""
    with env.fresh_mount() as mount:
        root = mount.mountpoint
        patient = next(p for p in root.iterdir() if f"({data.CT_PATIENT_ID})" in p.name)
        study = next(patient.iterdir())
        series = sorted(study.iterdir())[0]
        instances = sorted(series.iterdir())
        if len(instances) != shape.ct_instances:
            raise RuntimeError(f"{series}: {len(instances)} instances, expected {shape.ct_instances}")
        small = root / next(p for p in sorted(root.iterdir()) if "(P" in p.name)
        small_study = sorted(small.iterdir())[0]
        return TreePaths(
            ct_study=str(study.relative_to(root)),
            ct_series=str(series.relative_to(root)),
            ct_last_instance=str(instances[-1].relative_to(root)),
            small_patient=str(small.relative_to(root)),
            small_study=str(small_study.relative_to(root)),
        )


def bench_copies(env: Env, shape: data.Shape, res: Results, i: int) -> None:
    """Cold copy (get), repeat read and ls -l in that mount, warm copy after a remount; the peers."""
    assert env.paths is not None
    paths, n = env.paths, shape.ct_instances
    keys = {"StudyInstanceUID": data.CT_STUDY_UID, "SeriesInstanceUID": data.ct_series_uid(0)}
    cachedir, cold = env.fresh_dir("cache"), env.fresh_dir("cold")

    def dicomfs_side() -> None:
        with env.mount(cachedir, "get") as mount:
            series = mount.mountpoint / paths.ct_series
            series.stat()  # look the parents up first: the copy is timed, not the root listing
            with profiled(env, mount.process.pid, "cold-get"):
                res.add("cold_get", "a", timed(["cp", "-r", series, cold]))
            expect_files(cold, n, "cold copy")
            files = sorted(series.iterdir())
            timed(["cat", *files])
            with profiled(env, mount.process.pid, "repeat-read"):
                res.add("repeat_read", "a", timed(["cat", *files]))
            res.add("ls_series", "a", timed(["ls", "-l", series]))
        with env.mount(cachedir, "get") as mount:
            warm = env.fresh_dir("warm")
            with profiled(env, mount.process.pid, "warm-copy"):
                res.add("warm_copy", "a", timed(["cp", "-r", mount.mountpoint / paths.ct_series, warm]))
            expect_files(warm, n, "warm copy")
            shutil.rmtree(warm)

    def getscu_side() -> None:
        out = env.fresh_dir("getscu")
        res.add("cold_get", "b", time_getscu(env.orthanc, "SERIES", keys, out))
        expect_files(out, n, "getscu")
        shutil.rmtree(out)

    alternate(i, dicomfs_side, getscu_side)
    local = next(cold.iterdir())
    files = sorted(local.iterdir())
    again = env.fresh_dir("local")
    res.add("warm_copy", "b", timed(["cp", "-r", local, again]))
    timed(["cat", *files])
    res.add("repeat_read", "b", timed(["cat", *files]))
    res.add("ls_series", "b", timed(["ls", "-l", local]))
    for path in (cachedir, cold, again):
        shutil.rmtree(path)


def bench_move(env: Env, shape: data.Shape, res: Results, i: int) -> None:
    """Cold copy with retrieve=move against movescu + storescp."""
    assert env.paths is not None
    paths, n = env.paths, shape.ct_instances
    keys = {"StudyInstanceUID": data.CT_STUDY_UID, "SeriesInstanceUID": data.ct_series_uid(0)}

    def dicomfs_side() -> None:
        out = env.fresh_dir("cold-move")
        with env.fresh_mount("move") as mount:
            series = mount.mountpoint / paths.ct_series
            series.stat()
            with profiled(env, mount.process.pid, "cold-move"):
                res.add("cold_move", "a", timed(["cp", "-r", series, out]))
        expect_files(out, n, "cold copy (move)")
        shutil.rmtree(out)

    def movescu_side() -> None:
        out = env.fresh_dir("storescp")
        res.add("cold_move", "b", time_movescu(env.orthanc, keys, env.storescp_port, out))
        expect_files(out, n, "movescu+storescp")
        shutil.rmtree(out)

    alternate(i, dicomfs_side, movescu_side)


def bench_listings(env: Env, shape: data.Shape, res: Results, i: int) -> None:
    """Root listing (uncached, cached), one study's series, first byte; findscu/getscu peers."""
    assert env.paths is not None
    paths = env.paths
    patient_id = paths.small_patient.rsplit("(", 1)[1].rstrip(")")
    study_uid = data.small_study_uid(int(patient_id[1:]) - 1, 0)

    def dicomfs_side() -> None:
        with env.fresh_mount() as mount:
            with profiled(env, mount.process.pid, "ls-root"):
                res.add("ls_root", "a", timed(["ls", mount.mountpoint]))
            res.add("ls_root_cached", "a", timed(["ls", mount.mountpoint]))
        with env.fresh_mount() as mount:
            (mount.mountpoint / paths.small_patient).stat()
            with profiled(env, mount.process.pid, "ls-study"):
                res.add("ls_study", "a", timed(["ls", mount.mountpoint / paths.small_study]))
        with env.fresh_mount() as mount:
            last = mount.mountpoint / paths.ct_last_instance
            last.parent.stat()
            with profiled(env, mount.process.pid, "first-byte"):
                res.add("first_byte", "a", timed(["head", "-c1", last]))

    def findscu_side() -> None:
        res.add("ls_root", "b", time_findscu(env.orthanc, "STUDY", dict.fromkeys(_STUDY_KEYS, "")))
        series_keys = {
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": "",
            "SeriesNumber": "",
            "Modality": "",
        }
        res.add("ls_study", "b", time_findscu(env.orthanc, "SERIES", series_keys))
        out = env.fresh_dir("getscu-one")
        number = shape.ct_instances
        one = {
            "StudyInstanceUID": data.CT_STUDY_UID,
            "SeriesInstanceUID": data.ct_series_uid(0),
            "SOPInstanceUID": f"{data.ct_series_uid(0)}.{number}",
        }
        res.add("first_byte", "b", time_getscu(env.orthanc, "IMAGE", one, out))
        expect_files(out, 1, "getscu of one instance")
        shutil.rmtree(out)

    alternate(i, dicomfs_side, findscu_side)


def bench_rss(env: Env, shape: data.Shape, res: Results, i: int) -> None:
    """Peak RSS of the daemon while copying the whole CT study, and getscu's for the same study."""
    assert env.paths is not None
    n = shape.ct_series * shape.ct_instances

    def dicomfs_side() -> None:
        out = env.fresh_dir("rss")
        with env.fresh_mount() as mount:
            study = mount.mountpoint / env.paths.ct_study  # type: ignore[union-attr]
            study.stat()
            started = time.perf_counter()
            timed(["cp", "-r", study, out])
            LOGGER.info("cp -r of the study: %.1f s", time.perf_counter() - started)
            res.add("rss", "a", vm_hwm_bytes(mount.process.pid))
        expect_files(out, n, "study copy")
        shutil.rmtree(out)

    def getscu_side() -> None:
        out = env.fresh_dir("rss-getscu")
        res.add(
            "rss", "b", getscu_peak_rss(env.orthanc, "STUDY", {"StudyInstanceUID": data.CT_STUDY_UID}, out)
        )
        expect_files(out, n, "getscu study")
        shutil.rmtree(out)

    alternate(i, dicomfs_side, getscu_side)


def start_orthanc(
    stack: contextlib.ExitStack, shape: data.Shape, dicomfs_port: int, storescp_port: int
) -> OrthancServer:
    """Orthanc on cached storage (generated and loaded on first use), knowing both move destinations."""
    workdir = BENCH / "work" / f"orthanc-{shape.key()}"
    destinations = [
        MoveDestination("DICOMFS", HOST, dicomfs_port),
        MoveDestination("STORESCP", HOST, storescp_port),
    ]
    fresh = not data.is_loaded(workdir, shape)
    if fresh:
        data.reset_storage(workdir)
    orthanc = OrthancServer(workdir, "ORTHANC", destinations)
    orthanc.start()
    stack.callback(orthanc.stop)
    if fresh:
        LOGGER.info("generating and loading the bench data into Orthanc (once; cached in %s)", workdir)
        data.load_all(orthanc.http_port, workdir, shape)
    return orthanc


SECTIONS = {
    "copies": bench_copies,
    "move": bench_move,
    "listings": bench_listings,
    "rss": bench_rss,
    "views": views.bench_views,
}
#: Sections with an Orthanc of their own (one per send order), not the big archive's.
OWN_PACS_SECTIONS = ("order",)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--rss-runs", type=int, help="runs of the 2 GB study copy for RSS (default: --runs)")
    parser.add_argument("--quick", action="store_true", help="small data, for smoke tests")
    parser.add_argument(
        "--only", nargs="+", choices=sorted([*SECTIONS, *OWN_PACS_SECTIONS]), help="run these sections only"
    )
    parser.add_argument(
        "--send-order",
        nargs="+",
        choices=data.SEND_ORDERS,
        default=list(data.SEND_ORDERS),
        help="section 'order': the orders the PACS sends the series in (the load order into its "
        "Orthanc is the reverse); default all three",
    )
    parser.add_argument("--profile", type=Path, help="write py-spy profiles (collapsed stacks) here")
    parser.add_argument("--py-spy", default="py-spy", help="py-spy executable (default: from PATH)")
    parser.add_argument("--output", type=Path, default=None, help="results file (default bench/RESULTS.md)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    shape = data.QUICK if args.quick else data.Shape()
    output = args.output or (BENCH / ("RESULTS-quick.md" if args.quick else "RESULTS.md"))
    res = Results()
    matrix = order_matrix.Matrix()
    load_before = os.getloadavg()[0]
    wanted = [name for name in [*SECTIONS, *OWN_PACS_SECTIONS] if not args.only or name in args.only]
    with contextlib.ExitStack() as stack:
        (BENCH / "work").mkdir(exist_ok=True)  # a fresh clone has none (it is not committed)
        scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=BENCH / "work"))
        stack.callback(shutil.rmtree, scratch, True)
        dicomfs_port, storescp_port = free_port(), free_port()
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        if any(name in SECTIONS for name in wanted):
            orthanc = start_orthanc(stack, shape, dicomfs_port, storescp_port)
            env = Env(
                orthanc, dicomfs_port, storescp_port, scratch, profile_dir=args.profile, py_spy=args.py_spy
            )
            env.paths = discover(env, shape)
            LOGGER.info("paths: %s", env.paths)
        for name, section in SECTIONS.items():
            if name not in wanted:
                continue
            for i in range((args.rss_runs or args.runs) if name == "rss" else args.runs):
                started = time.perf_counter()
                section(env, shape, res, i)
                LOGGER.info("%s run %d: %.1f s", name, i + 1, time.perf_counter() - started)
        if "order" in wanted:
            bench_send_orders(args, shape, matrix, scratch, dicomfs_port, storescp_port)
    command = shlex.join([".venv/bin/python", "bench/run.py", *argv])
    load_after = os.getloadavg()[0]
    load = (
        f"Load average (1 min): {load_before:.1f} at start, {load_after:.1f} at end ({os.cpu_count()} cores)."
    )
    text = document(FIGURES, res, command, f"{notes(shape, args)}\n\n{load}")
    if matrix.samples:
        text += (
            f"\n## Send order x read order ({shape.ct_instances}-instance CT series)\n\n"
            "Seconds, median (min-max) over the runs; fresh mount per cell, the series listed before "
            "the clock starts. worst / best: the slowest read order of the row against the fastest "
            "cell of the same retrieve method in any send order.\n\n"
            f"{order_matrix.table(matrix, args.send_order)}\n"
        )
    output.write_text(text, encoding="utf-8")
    LOGGER.info("wrote %s", output)
    print(output.read_text())
    return 0


def bench_send_orders(
    args: argparse.Namespace,
    shape: data.Shape,
    matrix: order_matrix.Matrix,
    scratch: Path,
    dicomfs_port: int,
    storescp_port: int,
) -> None:
    """The send-order x read-order matrix, one Orthanc per send order (see bench/order.py)."""
    for send in args.send_order:
        with order_matrix.order_orthanc(shape, send, dicomfs_port, storescp_port) as orthanc:
            env = Env(
                orthanc, dicomfs_port, storescp_port, scratch, profile_dir=args.profile, py_spy=args.py_spy
            )
            sent = order_matrix.sent_numbers(orthanc)
            matrix.verified[send] = order_matrix.describe(sent)
            if sent != data.send_order_numbers(shape, send):
                raise RuntimeError(f"Orthanc did not send in {send} order: {matrix.verified[send]}")
            for i in range(args.runs):
                started = time.perf_counter()
                order_matrix.bench_order(env, shape, send, matrix, i)
                LOGGER.info("order (%s) run %d: %.1f s", send, i + 1, time.perf_counter() - started)


def notes(shape: data.Shape, args: argparse.Namespace) -> str:
    ct_mb = shape.ct_instances * (shape.ct_size**2 * 2) / 1e6
    return (
        f"Data: CT study of {shape.ct_series} series x {shape.ct_instances} instances of "
        f"{shape.ct_size}x{shape.ct_size}x16 bit (~{ct_mb:.0f} MB per series); "
        f"{shape.patients} patients x {shape.studies_per_patient} studies x "
        f"{shape.series_per_study} series x "
        f"{shape.instances_per_series} instances of 8x8 images. {args.runs} runs per figure "
        f"({args.rss_runs or args.runs} for RSS), dicomfs and peer alternated. "
        "Every command's time includes its process start-up. See bench/README.md for details."
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
