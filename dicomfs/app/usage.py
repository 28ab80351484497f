"""``dicomfs -h`` and the README's option table, rendered from the option table."""

from __future__ import annotations

import textwrap

from dicomfs.app.mounthelper import IGNORED_PREFIXES, IGNORED_WORDS
from dicomfs.app.options import FLAG_HELP, OPTIONS

_HELP_WIDTH = 100


def format_help(prog: str = "dicomfs") -> str:
    """Usage text for ``-h``: flags, then one line per option with its default."""
    lines = [
        f"usage: {prog} [SOURCE] MOUNTPOINT [-f] [-d] [-s] [-o name=value[,...]] [name=value,...]",
        f"       {prog} profiles [-o config=PATH]   (list the profiles of the config files)",
        f"       {prog} echo [SOURCE] [-o ...] [--json]   (check the way to the PACS, step by step)",
        f"       {prog} demo MOUNTPOINT [-f]   (a bundled sample archive, served on loopback)",
        f"       {prog} status MOUNTPOINT [--json]   (what a mount is doing: retrievals, cache, errors)",
        f"       {prog} prefetch PATH...   (retrieve a patient, study or series of a mount now)",
        f"       {prog} cache stats|clear|prune [--older-than AGE] [--cachedir DIR]   (safe while mounted)",
        "",
        "Mount a DICOM archive (PACS) as a read-only directory tree. SOURCE is a profile name (a",
        "[pacs.NAME] table of the config file) or the PACS as AEC@host:port; options given here",
        "override the profile's.",
        "",
        "flags:",
    ]
    lines += [f"  {flag:<14} {meaning}" for flag, meaning in FLAG_HELP]
    width = max(len(option.syntax) for option in OPTIONS)
    for title, fuse in (("options", False), ("FUSE options (passed to libfuse)", True)):
        lines += ["", f"{title}:"]
        for option in (option for option in OPTIONS if option.fuse is fuse):
            # NUL stands in for the spaces of "(default: X)" so the default is never split.
            default = f"(default: {option.default_text})".replace(" ", "\0")
            wrapped = textwrap.wrap(
                f"{option.help} {default}",
                width=_HELP_WIDTH,
                initial_indent=f"  {option.syntax:<{width}}  ",
                subsequent_indent=" " * (width + 4),
                break_on_hyphens=False,
            )
            lines += [line.replace("\0", " ") for line in wrapped]
    lines += [
        "",
        *textwrap.wrap(
            "mount(8) and fstab words are accepted and ignored (the mount is always read-only, nodev, "
            f"nosuid): {', '.join(sorted(IGNORED_WORDS))}, {', '.join(p + '*' for p in IGNORED_PREFIXES)}",
            width=_HELP_WIDTH,
        ),
        "",
        "example:",
        f"  {prog} /mnt/pacs -o serveraddress=localhost,serverport=1040,localport=11112 aec=aec,aet=aet",
    ]
    return "\n".join(lines) + "\n"


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def format_markdown_table() -> str:
    """The README's option table, one row per option, rendered from ``OPTIONS``."""
    lines = ["| option | default | meaning |", "| --- | --- | --- |"]
    lines += [
        f"| `{_markdown_cell(option.syntax)}` | `{_markdown_cell(option.default_text)}` "
        f"| {_markdown_cell(option.help)} |"
        for option in OPTIONS
    ]
    return "\n".join(lines) + "\n"
