"""Samples -> figures (median, min-max) -> the Markdown table of bench/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import re
import statistics
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata


@dataclass(frozen=True)
class Figure:
    """One row: dicomfs (A) vs a peer (B), with a goal on the ratio A/B or on A itself."""

    key: str
    title: str
    unit: str  # "s", "ms" or "MB"
    peer: str
    goal_ratio: float | None = None  # A <= goal_ratio x B
    goal_abs: float | None = None  # A <= goal_abs (in ``unit``)


@dataclass
class Results:
    """Samples per figure and side, in base units (seconds or bytes)."""

    samples: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, key: str, side: str, value: float) -> None:
        self.samples[(key, side)].append(value)


_SCALE = {"s": 1.0, "ms": 1e3, "MB": 1 / 1e6}


def _fmt(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    scaled = [v * _SCALE[unit] for v in values]
    digits = 0 if unit in ("ms", "MB") and statistics.median(scaled) >= 100 else 1 if unit != "s" else 2
    med = f"{statistics.median(scaled):.{digits}f}"
    if len(scaled) == 1:
        return f"{med} {unit}"
    return f"{med} {unit} ({min(scaled):.{digits}f}-{max(scaled):.{digits}f})"


def table(figures: list[Figure], results: Results) -> str:
    lines = [
        "| figure | dicomfs | peer | ratio | goal | met? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for fig in figures:
        a = results.samples.get((fig.key, "a"), [])
        b = results.samples.get((fig.key, "b"), [])
        if not a:
            continue
        ratio = statistics.median(a) / statistics.median(b) if b and statistics.median(b) > 0 else None
        if fig.goal_ratio is not None:
            goal = f"<= {fig.goal_ratio:g} x peer"
            met = ratio is not None and ratio <= fig.goal_ratio
        else:
            assert fig.goal_abs is not None
            goal = f"<= {fig.goal_abs:g} {fig.unit}"
            met = statistics.median(a) * _SCALE[fig.unit] <= fig.goal_abs
        peer = f"{_fmt(b, fig.unit)} {fig.peer}" if b else fig.peer
        ratio_text = f"{ratio:.2f}" if ratio is not None else "-"
        verdict = "yes" if met else "**no**"
        lines.append(f"| {fig.title} | {_fmt(a, fig.unit)} | {peer} | {ratio_text} | {goal} | {verdict} |")
    return "\n".join(lines)


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> str:
    """Where the numbers come from: cores, RAM, kernel, Python and the DICOM stack's versions."""
    mem_kb = 0
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    dcmtk = re.sub(r"^\$?dcmtk: ", "", _first_line(["getscu", "--version"])).strip("$ ")
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("pynetdicom", "pydicom", "mfusepy"))
    return (
        f"- {os.cpu_count()} cores ({cpu}), {mem_kb / 1024**2:.1f} GiB RAM, "
        f"Linux {platform.release()}\n"
        f"- Python {platform.python_version()}, {versions}\n"
        f"- {_first_line(['/usr/sbin/Orthanc', '--version'])}, DCMTK {dcmtk}"
    )


def document(figures: list[Figure], results: Results, command: str, notes: str) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        "# dicomfs benchmark results\n\n"
        f"Command: `{command}` ({now})\n\n"
        f"{machine()}\n\n"
        "Cells are the median over the runs, (min-max) in brackets; ratio = dicomfs / peer (medians).\n\n"
        f"{table(figures, results)}\n\n{notes}\n"
    )
