"""The send-order x read-order matrix (issue #8): is reading as fast whatever order the PACS sends in?

One CT series on an Orthanc of its own, loaded so that Orthanc sends it in ascending, descending or
shuffled instance order (``data.load_order_series``; checked with a C-GET on every run). From a fresh
mount, with ``retrieve=move`` and ``retrieve=get``, it is read in name order (``cp -r``), in the order
the PACS sends it (``cat``), in a random order (``cat``) and by 4 parallel readers (``xargs -P4 cat``,
name order). The peers run in the same run on the same Orthanc: ``getscu`` and ``movescu`` +
``storescp``. The series is listed (one IMAGE-level C-FIND) before each timed read: the file names
must be known to ``cat`` them, and so every cell times the retrieval alone.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import shutil
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt

from bench import data
from bench.measure import COMMAND_TIMEOUT_S, Env, expect_files, time_getscu, time_movescu, timed
from tests.pacs_servers import HOST, MoveDestination, OrthancServer

LOGGER = logging.getLogger(__name__)

READS = {
    "name": "name order (`cp -r`)",
    "send": "send order (`cat`)",
    "random": "random order (`cat`)",
    "parallel": "4 readers (`xargs -P4 cat`)",
}
METHODS = {"move": "movescu+storescp", "get": "getscu"}
PARALLEL_READERS = 4
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"


@dataclass
class Matrix:
    """Seconds per (send order, method, read order); the peers under read order "peer"."""

    samples: dict[tuple[str, str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    cpu: dict[tuple[str, str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    hurried: dict[tuple[str, str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    verified: dict[str, str] = field(default_factory=dict)  # send order -> what Orthanc did

    def add(self, send: str, method: str, read: str, seconds: float) -> None:
        self.samples[(send, method, read)].append(seconds)

    def median(self, send: str, method: str, read: str) -> float | None:
        values = self.samples.get((send, method, read))
        return statistics.median(values) if values else None


@contextlib.contextmanager
def order_orthanc(
    shape: data.Shape, send: str, dicomfs_port: int, storescp_port: int
) -> Iterator[OrthancServer]:
    """An Orthanc holding only the CT series, sending it in ``send`` order (built once, kept)."""
    workdir = Path(__file__).resolve().parent / "work" / f"orthanc-order-{send}-{shape.key()}"
    destinations = [
        MoveDestination("DICOMFS", HOST, dicomfs_port),
        MoveDestination("STORESCP", HOST, storescp_port),
    ]
    fresh = not data.order_loaded(workdir, shape, send)
    if fresh:
        data.reset_storage(workdir)
    orthanc = OrthancServer(workdir, "ORTHANC", destinations)
    orthanc.start()
    try:
        if fresh:
            data.load_order_series(orthanc.http_port, workdir, shape, send)
        yield orthanc
    finally:
        orthanc.stop()


def sent_numbers(orthanc: OrthancServer) -> list[int]:
    """Instance numbers in the order Orthanc sends the series over C-GET (pynetdicom, untimed)."""
    numbers: list[int] = []

    def on_store(event: evt.Event) -> int:
        numbers.append(int(event.dataset.InstanceNumber))
        return 0x0000

    ae = AE("BENCHORDER")
    ae.add_requested_context(STUDY_ROOT_GET)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assoc = ae.associate(
        HOST,
        orthanc.port,
        ae_title=orthanc.ae_title,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    if not assoc.is_established:
        raise RuntimeError("cannot associate with the bench's Orthanc")
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = data.CT_STUDY_UID
        identifier.SeriesInstanceUID = data.ct_series_uid(0)
        for _status, _identifier in assoc.send_c_get(identifier, STUDY_ROOT_GET):
            pass
    finally:
        assoc.release()
    return numbers


def describe(numbers: list[int]) -> str:
    steps = list(itertools.pairwise(numbers))
    ups = sum(1 for a, b in steps if b > a)
    if ups == len(steps):
        return "ascending"
    if ups == 0:
        return "descending"
    return f"mixed ({ups} of {len(steps)} steps up)"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def file_name(number: int) -> str:
    return f"{number:04d}.dcm"  # naming.instance_file_name for numbered instances


def timed_read(series: Path, out: Path, read: str, send_numbers: list[int], run_index: int) -> float:
    """The timed read of one cell; raises RuntimeError if a command fails (EIO included)."""
    names = sorted(os.listdir(series))  # the listing: known before the clock starts
    if names != sorted(file_name(n) for n in send_numbers):
        raise RuntimeError(f"{series}: unexpected listing ({len(names)} files)")
    if read == "name":
        seconds = timed(["cp", "-r", series, out])
        expect_files(out, len(names), "cp -r")
        return seconds
    if read == "send":
        return timed(["cat", *(series / file_name(n) for n in send_numbers)])
    if read == "random":
        return timed(["cat", *(series / name for name in random.Random(run_index).sample(names, len(names)))])
    per_call = max(1, len(names) // (4 * PARALLEL_READERS))
    command = ["xargs", "-0", f"-P{PARALLEL_READERS}", "-n", str(per_call), "cat"]
    paths = b"\0".join(os.fsencode(series / name) for name in names)
    started = time.perf_counter()
    result = subprocess.run(
        command, input=paths, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=COMMAND_TIMEOUT_S
    )
    if result.returncode != 0:
        raise RuntimeError(f"xargs cat exited with {result.returncode}: {result.stderr[-2000:]!r}")
    return time.perf_counter() - started


def bench_order(env: Env, shape: data.Shape, send: str, matrix: Matrix, run_index: int) -> None:
    """One run of every cell for one send order; the peers first on even runs, last on odd ones."""
    send_numbers = data.send_order_numbers(shape, send)
    keys = {"StudyInstanceUID": data.CT_STUDY_UID, "SeriesInstanceUID": data.ct_series_uid(0)}

    def peers() -> None:
        out = env.fresh_dir("order-getscu")
        matrix.add(send, "get", "peer", time_getscu(env.orthanc, "SERIES", keys, out))
        expect_files(out, shape.ct_instances, "getscu")
        shutil.rmtree(out)
        out = env.fresh_dir("order-storescp")
        matrix.add(send, "move", "peer", time_movescu(env.orthanc, keys, env.storescp_port, out))
        expect_files(out, shape.ct_instances, "movescu+storescp")
        shutil.rmtree(out)

    cells = [(method, read) for method in METHODS for read in READS]
    random.Random(run_index).shuffle(cells)  # drift spreads over the cells, not onto one of them
    if run_index % 2 == 0:
        peers()
    for method, read in cells:
        with env.fresh_mount(method) as mount:
            patient = next(mount.mountpoint.iterdir())
            study = next(patient.iterdir())
            series = next(study.iterdir())
            out = env.fresh_dir("order-out")
            cpu_before = cpu_seconds(mount.process.pid)
            seconds = timed_read(series, out, read, send_numbers, run_index)
            cpu = cpu_seconds(mount.process.pid) - cpu_before
            hurried = mount.log_text().count("ahead of the stream")
        shutil.rmtree(out)
        matrix.add(send, method, read, seconds)
        matrix.cpu[(send, method, read)].append(cpu)
        matrix.hurried[(send, method, read)].append(hurried)
        LOGGER.info(
            "%s send order, %s, %s: %.2f s, daemon CPU %.2f s, %d hurried",
            send,
            method,
            read,
            seconds,
            cpu,
            hurried,
        )
    if run_index % 2 == 1:
        peers()


def _cell(values: list[float] | None) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.2f} ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else f"{med:.2f}"


def table(matrix: Matrix, sends: list[str]) -> str:
    """The matrix in Markdown, with the goals of issue #8 judged on the medians."""
    header = (
        "| send order | retrieve | " + " | ".join(READS.values()) + " | peer | worst / best | cp -r / peer |"
    )
    lines = [header, "|" + " --- |" * (len(READS) + 5)]
    worst_ratio: dict[str, float] = {}
    best = {
        method: min(
            (m for send in sends for read in READS if (m := matrix.median(send, method, read)) is not None),
            default=None,
        )
        for method in METHODS
    }
    copy_ratios: list[float] = []
    for send in sends:
        for method, peer_name in METHODS.items():
            cells = [_cell(matrix.samples.get((send, method, read))) for read in READS]
            medians = [m for read in READS if (m := matrix.median(send, method, read)) is not None]
            peer = matrix.median(send, method, "peer")
            best_method = best[method]
            worst = max(medians) / best_method if medians and best_method else None
            if worst is not None:
                worst_ratio[method] = max(worst_ratio.get(method, 0.0), worst)
            copy = matrix.median(send, method, "name")
            ratio = copy / peer if copy is not None and peer else None
            if ratio is not None:
                copy_ratios.append(ratio)
            lines.append(
                f"| {send} | {method} | "
                + " | ".join(cells)
                + f" | {_cell(matrix.samples.get((send, method, 'peer')))} {peer_name}"
                + f" | {worst:.2f}" * (worst is not None)
                + " | -" * (worst is None)
                + (f" | {ratio:.2f} |" if ratio is not None else " | - |")
            )
    goals = [
        "- every combination within 1.1x of the best of its retrieve method: "
        + ", ".join(f"{method} worst {value:.2f}x" for method, value in worst_ratio.items())
        + (" (met)" if worst_ratio and max(worst_ratio.values()) <= 1.1 else " (**not met**)"),
        "- `cp -r` at most 0.9x its peer in every send order: worst "
        + (f"{max(copy_ratios):.2f}x" if copy_ratios else "-")
        + (" (met)" if copy_ratios and max(copy_ratios) <= 0.9 else " (**not met**)"),
    ]
    verified = "; ".join(f"{send}: Orthanc sent {what}" for send, what in matrix.verified.items())
    checked = f"\n\nSend order checked by C-GET: {verified}." if verified else ""
    return "\n".join(lines) + "\n\n" + "\n".join(goals) + checked + "\n\n" + work_table(matrix, sends)


def work_table(matrix: Matrix, sends: list[str]) -> str:
    """The daemon's CPU seconds and hurried retrievals per cell: the work, whatever the load."""
    lines = [
        "Work per cell, less sensitive to the load than the wall time: the daemon's CPU seconds (user "
        "+ system) during the read, median (min-max), and hurried single-instance retrievals (most "
        "in one run).",
        "",
        f"| send order | retrieve | {' | '.join(READS.values())} |",
        "|" + " --- |" * (len(READS) + 2),
    ]
    for send in sends:
        for method in METHODS:
            cells = []
            for read in READS:
                cpu = matrix.cpu.get((send, method, read))
                hurried = matrix.hurried.get((send, method, read))
                hurry = f", {max(hurried):.0f} hurried" if hurried else ""
                cells.append(f"{_cell(cpu)} s{hurry}" if cpu else "-")
            lines.append(f"| {send} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
