"""``dicomfs cache stats|clear|prune``: look into and empty a cachedir, safe while mounted.

dicomfs cache stats [--cachedir DIR] [--json]
dicomfs cache clear [--cachedir DIR]
dicomfs cache prune --older-than 30d [--cachedir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from dicomfs.app.options import default_cachedir
from dicomfs.core.cacheadmin import (
    INSTANCES,
    LISTINGS,
    PARTIAL,
    CacheStats,
    cache_stats,
    parse_age,
    prune_cache,
)

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomfs cache",
        description="Look into, prune or empty a dicomfs cache directory (safe while mounted: "
        "a mount retrieves what it no longer finds).",
    )
    parser.add_argument("action", choices=("stats", "clear", "prune"))
    parser.add_argument(
        "--cachedir",
        default=default_cachedir(),
        help="the mount's cachedir= (default: %(default)s)",
    )
    parser.add_argument(
        "--older-than", metavar="AGE", help="prune: what arrived before AGE ago (30d, 12h, 90m)"
    )
    parser.add_argument("--json", action="store_true", help="stats: machine-readable output")
    return parser


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _stats_text(cachedir: str, stats: CacheStats) -> str:
    lines = [
        f"cachedir   {cachedir}",
        f"instances  {stats.instances:,} ({_megabytes(stats.instance_bytes)})",
        f"listings   {stats.listings:,}",
        f"arrived    {_when(stats.oldest)} .. {_when(stats.newest)}",
        f"mounts     {stats.mounts} running on it",
    ]
    lines += [
        f"  from {pacs}: {count:,} ({_megabytes(size)})" for pacs, (count, size) in stats.by_pacs.items()
    ]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """Run ``dicomfs cache ...``; returns the exit status (2 for a bad command line)."""
    parser = _parser()
    args = parser.parse_args(argv)  # argparse exits 2 with one usage line on errors
    cachedir = str(Path(args.cachedir).expanduser())
    if not Path(cachedir).is_dir():
        print(f"dicomfs cache: no cache directory at {cachedir} (see --cachedir)", file=sys.stderr)
        return EXIT_USAGE
    if not any((Path(cachedir) / folder).is_dir() for folder in (INSTANCES, LISTINGS, PARTIAL)):
        print(f"dicomfs cache: {cachedir} is not a dicomfs cache directory (see --cachedir)", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "stats":
        stats = cache_stats(cachedir)
        print(
            json.dumps({"cachedir": cachedir, **asdict(stats)}) if args.json else _stats_text(cachedir, stats)
        )
        return 0
    older_than = None
    if args.action == "prune":
        if args.older_than is None:
            print(
                "dicomfs cache: prune needs --older-than AGE (e.g. 30d); `clear` removes everything",
                file=sys.stderr,
            )
            return EXIT_USAGE
        try:
            older_than = parse_age(args.older_than)
        except ValueError as exc:
            print(f"dicomfs cache: --older-than: {exc}", file=sys.stderr)
            return EXIT_USAGE
    removed, size, listings = prune_cache(cachedir, older_than)
    print(f"removed {removed:,} instances ({_megabytes(size)}) and {listings:,} listings from {cachedir}")
    return 0
