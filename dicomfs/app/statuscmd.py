"""``dicomfs status MOUNTPOINT [--json]``: what a running mount is doing, from its status file.

Reads ``MOUNTPOINT/.dicomfs/status.json`` (``views.control``; written by ``app.statusreport``
at each open) and prints a short summary, or the JSON itself. MOUNTPOINT may be any path inside
the mount. A path in no dicomfs mount is one line on stderr and exit status 2; a mount that
cannot answer (a dead daemon: "Transport endpoint is not connected") is one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from dicomfs.views.control import CONTROL_DIR, STATUS_FILE

EXIT_FAILED, EXIT_USAGE = 1, 2

#: /proc/mounts escapes space, tab, newline and backslash in paths as octal (\040).
_OCTAL = re.compile(r"\\([0-7]{3})")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomfs status",
        description="Show what a dicomfs mount is doing: its PACS, cache use, hit ratio, "
        "retrievals in flight and last errors.",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="a dicomfs mount (or a path in one)")
    parser.add_argument("--json", action="store_true", help="print the status file's JSON")
    return parser


def dicomfs_mounts(mounts_file: str = "/proc/self/mounts") -> set[str]:
    """The mount points of type ``fuse.dicomfs`` (the subtype every dicomfs mount has)."""
    found = set()
    with open(mounts_file, encoding="utf-8", errors="surrogateescape") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "fuse.dicomfs":
                found.add(_OCTAL.sub(lambda match: chr(int(match.group(1), 8)), fields[1]))
    return found


def mount_of(path: str, mounts: set[str]) -> str | None:
    """The dicomfs mount point ``path`` lies in (``path`` itself or a parent), else None.

    Only the path's text is looked at (absolute, symbolic links of the parents resolved), so a
    stalled mount is never stat'ed.
    """
    here = os.path.abspath(path)
    parent = os.path.realpath(os.path.dirname(here)) if here != "/" else "/"
    candidate = os.path.join(parent, os.path.basename(here)) if here != "/" else "/"
    while True:
        if candidate in mounts:
            return candidate
        if candidate == "/":
            return None
        candidate = os.path.dirname(candidate)


def _megabytes(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


def summary(status: dict[str, Any]) -> str:
    """The human summary of a status report (see ``app.statusreport``)."""
    pacs = status["pacs"] + (f" (profile {status['profile']})" if status.get("profile") else "")
    lines = [
        f"dicomfs {status['dicomfs']} (pid {status['pid']}) at {status['mountpoint']}, "
        f"up {_duration(status['uptime_s'])}",
        f"PACS         {pacs}, retrieve={status['retrieve']}, as {status['calling_aet']}",
    ]
    if status.get("pacs_unreachable"):
        lines.append(f"             unreachable: {status['pacs_unreachable']}")
    lines.append(
        f"cache        {_megabytes(status['cache_used_bytes'])} of "
        f"{_megabytes(status['cache_limit_bytes'])} used ({status['cachedir']})"
    )
    hits, misses = status["opens_from_cache"], status["opens_retrieved"]
    ratio = status["hit_ratio"]
    lines.append(
        "hit ratio    "
        + ("- (no file opened yet)" if ratio is None else f"{ratio:.0%}")
        + f" ({hits} opens from the cache, {misses} retrieved)"
    )
    retrievals = status["retrievals"]
    lines.append(f"retrievals   {status['retrievals_in_flight']} in flight")
    lines += [
        f"  series {flight['series_uid']}: {flight['instances_done']}/{flight['instances_expected']} "
        f"instances, {_megabytes(flight['bytes_done'])}, {flight['running_s']:.0f} s"
        for flight in retrievals
    ]
    if len(retrievals) < status["retrievals_in_flight"]:
        lines.append(f"  ... and {status['retrievals_in_flight'] - len(retrievals)} more")
    errors = status["last_errors"]
    lines.append(f"last errors  {len(errors) or 'none'}")
    lines += [f"  {error['time']} {error['level']}: {error['message']}" for error in errors]
    return "\n".join(lines)


def read_status(mountpoint: str) -> dict[str, Any]:
    """The parsed status file of the mount at ``mountpoint``.

    Raises
    ------
    OSError
        The file cannot be read (a dead mount: ENOTCONN; an older dicomfs: ENOENT).
    ValueError
        It is not JSON.
    """
    with open(os.path.join(mountpoint, CONTROL_DIR, STATUS_FILE), "rb") as file:
        data: dict[str, Any] = json.loads(file.read())
    return data


def main(argv: Sequence[str]) -> int:
    """Run ``dicomfs status ...``; returns the exit status."""
    args = _parser().parse_args(argv)  # argparse exits 2 with one usage line on errors
    mountpoint = mount_of(args.mountpoint, dicomfs_mounts())
    if mountpoint is None:
        print(f"dicomfs status: {args.mountpoint} is not in a dicomfs mount", file=sys.stderr)
        return EXIT_USAGE
    try:
        status = read_status(mountpoint)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"dicomfs status: {mountpoint}: cannot read its status: {reason}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(status, indent=1, ensure_ascii=False) if args.json else summary(status))
    return 0
