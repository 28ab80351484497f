"""The man page, dicomfs(1), rendered from the same option table as ``-h`` and the README.

python -m dicomfs.app.manpage > docs/dicomfs.1     # tests check the committed page is current
man -l docs/dicomfs.1
"""

from __future__ import annotations

import datetime

from dicomfs import __version__
from dicomfs.app.options import FLAG_HELP, OPTIONS

#: The subcommands: (synopsis, what it does).
COMMANDS: tuple[tuple[str, str], ...] = (
    (
        "PROFILE MOUNTPOINT [-o ...]",
        "mount the PACS of a [pacs.PROFILE] table of config.toml (as mount(8) does)",
    ),
    ("AEC@host:port MOUNTPOINT [-o ...]", "mount the PACS named by its AE title, host and port"),
    ("profiles [-o config=PATH]", "list the profiles of the config files"),
    (
        "echo [SOURCE] [-o ...] [--json]",
        "check the way to the PACS step by step (name, connection, association, C-ECHO, C-FIND, "
        "the C-MOVE return path); exit 0 only when all works",
    ),
    ("demo MOUNTPOINT [-f] [-o ...]", "mount a bundled sample archive, served on loopback"),
    (
        "cache stats|clear|prune [--older-than AGE] [--cachedir DIR] [--json]",
        "look into, prune or empty a cache directory; safe while mounted",
    ),
    ("prefetch PATH...", "retrieve every file below PATH (in a dicomfs mount) now, with progress"),
    (
        "status MOUNTPOINT [--json]",
        "what a mount is doing: PACS, cache used of cachesize, hit ratio, retrievals in flight, "
        "last errors (from MOUNTPOINT/.dicomfs/status.json); exit 2 off a dicomfs mount",
    ),
)


def _escape(text: str) -> str:
    """Text for roff: backslashes doubled, hyphens as minus signs, no leading control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def format_manpage(date: datetime.date | None = None) -> str:
    """dicomfs(1) in man(7) roff.

    Parameters
    ----------
    date : datetime.date, optional
        The page's date; None uses a fixed one, so the output changes only with its content.
    """
    when = (date or datetime.date(2026, 1, 1)).isoformat()
    lines = [
        f'.TH DICOMFS 1 "{when}" "dicomfs {__version__}" "User Commands"',
        ".SH NAME",
        "dicomfs \\- mount a DICOM archive (PACS) as a read\\-only directory tree",
        ".SH SYNOPSIS",
        ".B dicomfs",
        "MOUNTPOINT [\\-f] [\\-d] [\\-s] [\\-o name=value[,name=value...]]",
    ]
    for synopsis, _ in COMMANDS:
        lines += [".br", ".B dicomfs", _escape(synopsis)]
    lines += [
        ".SH DESCRIPTION",
        "Directories are C\\-FIND queries (patients, studies, series, instances); file contents "
        "arrive by C\\-MOVE into dicomfs's own storage SCP, or by C\\-GET, and land in an on\\-disk "
        "cache. File sizes are exact; reading an uncached file retrieves its series.",
        ".SH COMMANDS",
    ]
    for synopsis, meaning in COMMANDS:
        lines += [".TP", f".B {_escape(synopsis)}", _escape(meaning)]
    lines += [".SH FLAGS"]
    for flag, meaning in FLAG_HELP:
        lines += [".TP", f".B {_escape(flag)}", _escape(meaning)]
    for title, fuse in (("OPTIONS", False), ("FUSE OPTIONS", True)):
        lines += [f".SH {title}"]
        for option in (option for option in OPTIONS if option.fuse is fuse):
            lines += [
                ".TP",
                f".B {_escape(option.syntax)}",
                f"{_escape(option.help)} (default: {_escape(option.default_text)})",
            ]
    lines += [
        ".SH FILES",
        ".TP",
        ".I $XDG_CACHE_HOME/dicomfs",
        "the default cachedir: listings/, instances/, partial/ and, detached, dicomfs.log",
        ".TP",
        ".I $XDG_CONFIG_HOME/dicomfs/config.toml, /etc/dicomfs/config.toml",
        "profiles: one [pacs.NAME] table of mount options each",
        ".TP",
        ".I MOUNTPOINT/.dicomfs/status.json",
        "hidden, read\\-only: the mount's status as JSON, a new snapshot at each open (dicomfs status)",
        ".SH EXAMPLES",
        ".nf",
        "dicomfs /mnt/pacs \\-o serveraddress=pacs.example.org,serverport=11112,"
        "aec=PACS,aet=DICOMFS,localport=11112",
        "fusermount3 \\-u /mnt/pacs",
        ".fi",
        ".SH SEE ALSO",
        ".BR fusermount3 (1),",
        ".BR mount.fuse3 (8),",
        ".BR findscu (1),",
        ".BR movescu (1),",
        ".BR getscu (1)",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - the documented way to refresh docs/dicomfs.1
    import sys

    sys.stdout.write(format_manpage())
