"""``dicomfs prefetch PATH...``: warm the cache for patients, studies or series of a mount.

Works through the mount, as any reader would: each file under PATH is opened (an open of an
uncached instance retrieves its series and waits for that instance; see dicomfs.core.retrieval),
so whatever retrieval mode and fallbacks the mount uses apply. Series are fetched a few at a time,
each in listing order (one retrieval per series: single flight). Progress goes to stderr through
tqdm (instances, MB, rate, ETA); failures are summarised at the end, one line per cause.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

EXIT_FAILED = 1
EXIT_USAGE = 2

#: Series fetched at once: enough to overlap one series' listing with another's transfer, few
#: enough not to take every association the PACS allows.
PARALLEL_SERIES = 3

#: mountinfo writes space, tab, newline and backslash as ``\\ooo`` (octal).
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def dicomfs_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[Path]:
    """Mount points of dicomfs file systems (type ``fuse.dicomfs``), per /proc/self/mountinfo.

    Source: proc(5), /proc/pid/mountinfo: field 5 is the mount point (octal escapes), the type
    follows the ``-`` separator.
    """
    found = []
    with open(mountinfo, encoding="utf-8", errors="replace") as table:
        for line in table:
            before, _, after = line.partition(" - ")
            fields, fstype = before.split(), after.split()[:1]
            if fstype == ["fuse.dicomfs"] and len(fields) >= 5:
                found.append(Path(_OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])))
    return found


def _in_mount(path: Path, mounts: Sequence[Path]) -> bool:
    return any(path == mount or mount in path.parents for mount in mounts)


def _series_files(root: Path) -> Iterator[list[Path]]:
    """The files under ``root``, one list per directory (a series), in listing order."""
    if root.is_file():
        yield [root]
        return
    for folder, _dirs, files in os.walk(root):
        if files:
            yield [Path(folder) / name for name in sorted(files)]


def _warm(path: Path) -> int:
    """Open ``path`` (retrieving it if needed): its exact size in bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


class Prefetch:
    """One run: the progress bar and what failed, shared by the series workers."""

    def __init__(self, total: int) -> None:
        self.bar = tqdm(total=total, unit="instances", file=sys.stderr, dynamic_ncols=True)
        self.bytes = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self.example: dict[str, Path] = {}  # a failed file per cause
        self._lock = threading.Lock()

    def series(self, files: Sequence[Path]) -> None:
        for path in files:
            try:
                size = _warm(path)
            except OSError as exc:
                with self._lock:
                    cause = exc.strerror or str(exc)
                    self.failures[cause] += 1
                    self.example.setdefault(cause, path)
                    self.bar.update(1)
                continue
            with self._lock:
                self.bytes += size
                self.bar.update(1)
                self.bar.set_postfix_str(f"{self.bytes / 1e6:,.1f} MB", refresh=False)


def main(argv: Sequence[str]) -> int:
    """Run ``dicomfs prefetch PATH...``: 0 when every file is cached, 1 when some failed, 2 for usage."""
    parser = argparse.ArgumentParser(
        prog="dicomfs prefetch",
        description="Retrieve every file under PATH (a patient, study or series folder of a dicomfs "
        "mount) into the cache, with progress.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    mounts = dicomfs_mounts()
    for path in args.paths:
        if not path.exists():
            print(f"dicomfs prefetch: {path}: no such file or directory", file=sys.stderr)
            return EXIT_USAGE
        if not _in_mount(path.absolute(), mounts):
            print(f"dicomfs prefetch: {path} is not inside a dicomfs mount", file=sys.stderr)
            return EXIT_USAGE
    series = [files for path in args.paths for files in _series_files(path.absolute())]
    run = Prefetch(sum(len(files) for files in series))
    with run.bar, ThreadPoolExecutor(PARALLEL_SERIES) as pool:
        for _ in pool.map(run.series, series):
            pass
    done = run.bar.n - sum(run.failures.values())
    print(f"dicomfs prefetch: {done} instances cached ({run.bytes / 1e6:,.1f} MB)", file=sys.stderr)
    if run.failures:
        for cause, count in run.failures.most_common():
            print(f"dicomfs prefetch: {count} failed: {cause} (e.g. {run.example[cause]})", file=sys.stderr)
        print("dicomfs prefetch: the mount's log says why and what to do", file=sys.stderr)
        return EXIT_FAILED
    return 0
