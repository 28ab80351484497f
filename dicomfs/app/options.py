"""Options of ``dicomfs``: one declarative table drives parsing, profiles, ``-h`` and the README.

Every option lives in ``OPTIONS`` (name, kind, default, help). ``MountOptions`` takes its defaults from
that table, ``format_help`` and ``format_markdown_table`` render it, and ``convert_option`` checks one
value against it for the command line (``dicomfs.app.commandline``) and for profiles
(``dicomfs.app.profiles``), so a new option is one row plus one dataclass field.
"""

from __future__ import annotations

import dataclasses
import difflib
import grp
import logging
import math
import os
import pwd
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dicomfs.app.mounthelper import IGNORED_PREFIXES, IGNORED_WORDS, check_profile_name

LOGGER = logging.getLogger(__name__)

_TRUE_WORDS = frozenset({"1", "yes", "true", "on"})
_FALSE_WORDS = frozenset({"0", "no", "false", "off"})
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$", re.IGNORECASE)
# Host names, IPv4 and IPv6 literals (optionally with a %scope); brackets are stripped first.
_HOST_RE = re.compile(r"^[A-Za-z0-9._:%-]+$")
_HELP_WIDTH = 100


class OptionError(Exception):
    """A bad command line or environment; the message is one clear line for the user."""


class HelpRequested(Exception):
    """``-h``/``--help``/``--version``: the CLI prints ``text`` and exits 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


# --------------------------------------------------------------------------- value kinds


@dataclass(frozen=True)
class ValueKind:
    """How one option's value is written (``metavar``), parsed and shown back."""

    metavar: str
    parse: Callable[[str], Any]
    show: Callable[[Any], str] = str
    flag: bool = False  # a bare ``name`` means ``name=1``


def _parse_host(raw: str) -> str:
    host = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    if not _HOST_RE.match(host):
        raise ValueError(f"{raw!r} is not a host name or IP address")
    return host


def _parse_port(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ValueError(f"{raw!r} is not a port number (1-65535)")
    return int(raw)


def _parse_ae_title(raw: str) -> str:
    # PS3.5 6.2 (AE VR): up to 16 characters of the default repertoire, no backslash, no control
    # characters; leading and trailing spaces are not significant, so an all-space title is empty.
    title = raw.strip(" ")
    if not 1 <= len(title) <= 16 or "\\" in title or not all(" " <= ch <= "~" for ch in title):
        raise ValueError(
            f"AE title must be 1-16 characters of printable ASCII without backslash, not {raw!r}"
        )
    return title


def parse_path(raw: str) -> str:
    """A path option or the mount point: ``~`` and ``$VARS`` expanded, made absolute."""
    return os.path.abspath(os.path.expandvars(os.path.expanduser(raw)))


def _parse_positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a positive number of seconds")
    return value


def _parse_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("must be a number of seconds >= 0")
    return value


def _parse_size(raw: str) -> int:
    match = _SIZE_RE.match(raw.strip())
    size = round(float(match[1]) * _SIZE_UNITS[match[2].lower()]) if match else 0
    if size <= 0:
        raise ValueError(f"{raw!r} is not a size such as 20G, 512M, 100k or a byte count")
    return size


def _show_size(size: int) -> str:
    for unit in "TGMK":
        scale = _SIZE_UNITS[unit.lower()]
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def _parse_bool(raw: str) -> bool:
    word = raw.lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"{raw!r} is not one of 1/0, yes/no, true/false, on/off")


def _parse_text(raw: str) -> str:
    return raw


def _parse_umask(raw: str) -> int:
    # Octal like umask(1) and rclone's --umask: "022", "0022", "77".
    if not re.fullmatch(r"[0-7]{1,4}", raw) or int(raw, 8) > 0o777:
        raise ValueError(f"{raw!r} is not an octal mask such as 022, 027 or 077")
    return int(raw, 8)


def _id_kind(what: str, by_name: Callable[[str], int]) -> ValueKind:
    def parse(raw: str) -> int:
        if raw.isdigit():
            if int(raw) >= 2**32 - 1:  # (uid_t)-1 means "no change" to the kernel
                raise ValueError(f"{raw!r} is not a {what} ID")
            return int(raw)
        try:
            return by_name(raw)
        except KeyError:
            raise ValueError(f"{raw!r} is neither a {what} ID nor a {what} name") from None

    return ValueKind(what.upper(), parse)


def _parse_profile_name(raw: str) -> str:
    return check_profile_name(raw)


def _choice(*choices: str) -> ValueKind:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return raw

    return ValueKind("|".join(choices), parse)


def _int_range(low: int, high: int) -> ValueKind:
    def parse(raw: str) -> int:
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ValueError(f"{raw!r} is not a whole number from {low} to {high}")
        return int(raw)

    return ValueKind("N", parse)


HOST = ValueKind("HOST", _parse_host)
PORT = ValueKind("PORT", _parse_port)
AE_TITLE = ValueKind("AE", _parse_ae_title)
PATH = ValueKind("PATH", parse_path)
SECONDS = ValueKind("SECONDS", _parse_positive_seconds)
SECONDS_OR_ZERO = ValueKind("SECONDS", _parse_seconds)
SIZE = ValueKind("SIZE", _parse_size, _show_size)
BOOL = ValueKind("BOOL", _parse_bool, lambda value: "on" if value else "off", flag=True)
TEXT = ValueKind("TEXT", _parse_text)
UMASK = ValueKind("OCTAL", _parse_umask, lambda value: f"{value:03o}")
UID = _id_kind("user", lambda name: pwd.getpwnam(name).pw_uid)
GID = _id_kind("group", lambda name: grp.getgrnam(name).gr_gid)
PROFILE = ValueKind("NAME", _parse_profile_name)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Option:
    """One row of the option table; ``shown_default`` overrides how the default is displayed."""

    name: str
    kind: ValueKind
    default: Any
    help: str
    shown_default: str = ""
    fuse: bool = False  # passed through to libfuse instead of becoming a MountOptions field

    @property
    def default_text(self) -> str:
        return self.shown_default or self.kind.show(self.default)

    @property
    def syntax(self) -> str:
        return f"{self.name}[={self.kind.metavar}]" if self.kind.flag else f"{self.name}={self.kind.metavar}"


OPTIONS: tuple[Option, ...] = (
    Option(
        "profile",
        PROFILE,
        "",
        "take options from the [pacs.NAME] table of the config file (or: dicomfs NAME MOUNTPOINT)",
        shown_default="none",
    ),
    Option(
        "config",
        PATH,
        "",
        "the profiles file (without it: this one, then /etc/dicomfs/config.toml)",
        shown_default="$XDG_CONFIG_HOME/dicomfs/config.toml",
    ),
    Option("serveraddress", HOST, "localhost", "PACS host name or IP address"),
    Option("serverport", PORT, 104, "PACS port"),
    Option("aec", AE_TITLE, "ANY-SCP", "the PACS's AE title (called AE)"),
    Option(
        "aet",
        AE_TITLE,
        "DICOMFS",
        "our AE title (calling AE), the C-MOVE destination the PACS must know",
    ),
    Option("localport", PORT, 11112, "port our storage SCP listens on for C-MOVE sub-operations"),
    Option(
        "localaddress",
        HOST,
        "",
        "address the storage SCP binds (use 127.0.0.1 behind ssh -R)",
        shown_default="all interfaces",
    ),
    Option(
        "cachedir",
        PATH,
        None,
        "cache for listings and instances; XDG_CACHE_HOME defaults to ~/.cache",
        shown_default="$XDG_CACHE_HOME/dicomfs",
    ),
    Option("retrieve", _choice("move", "get"), "move", "how instances are fetched: C-MOVE or C-GET"),
    Option("timeout", SECONDS, 30.0, "timeout for every network operation, in seconds", "30"),
    Option("ttl", SECONDS_OR_ZERO, 300.0, "how long directory listings are cached, in seconds", "300"),
    Option("cachesize", SIZE, 10 * 1024**3, "instance cache size limit (20G, 512M, 100k, bytes)"),
    Option("model", _choice("study", "patient"), "study", "C-FIND query/retrieve information model"),
    Option("maxassoc", _int_range(1, 64), 4, "maximum simultaneous associations to the PACS"),
    Option(
        "parallel",
        _int_range(1, 16),
        1,
        "associations one large series is split over (helps on slow links; 1 is fastest on a LAN)",
    ),
    Option("tls", BOOL, False, "speak DICOM over TLS (needs tlscert and tlskey)"),
    Option("tlscert", PATH, "", "TLS client certificate (PEM)", shown_default="none"),
    Option("tlskey", PATH, "", "TLS private key (PEM)", shown_default="none"),
    Option("tlsca", PATH, "", "CA certificates to verify the PACS (PEM)", shown_default="none"),
    Option(
        "logfile",
        PATH,
        "",
        "detached: log to this file (rotated) instead of syslog/journald or <cachedir>/dicomfs.log",
        shown_default="syslog if /dev/log, else <cachedir>/dicomfs.log",
    ),
    Option(
        "umask",
        UMASK,
        0o022,
        "mode bits cleared from directories (0777) and files (0666): 022 gives 0755 and 0644",
    ),
    Option("uid", UID, None, "owner of every file and directory (ID or name)", "the mounting user"),
    Option("gid", GID, None, "group of every file and directory (ID or name)", "the mounting group"),
    Option("nonempty", BOOL, False, "mount over a non-empty directory or an existing mount point"),
    Option("allow_other", BOOL, False, "FUSE: let other users access the mount", fuse=True),
    Option("allow_root", BOOL, False, "FUSE: let root access the mount", fuse=True),
    Option("default_permissions", BOOL, False, "FUSE: let the kernel check permissions", fuse=True),
    Option("auto_unmount", BOOL, False, "FUSE: unmount when the process dies", fuse=True),
    Option("noexec", BOOL, False, "FUSE: do not allow running programs from the mount", fuse=True),
    Option(
        "fsname",
        TEXT,
        "",
        "FUSE: the source shown by mount and df",
        "the profile name, else AEC@host:port",
        fuse=True,
    ),
)
OPTIONS_BY_NAME: Mapping[str, Option] = MappingProxyType({option.name: option for option in OPTIONS})

_FLAG_HELP = (
    ("-o OPTIONS", "comma-separated name=value options (repeatable; may also follow the mount point)"),
    ("-f", "stay in the foreground"),
    ("-d", "debug logging (implies -f)"),
    ("-s", "single-threaded FUSE loop"),
    ("-h, --help", "show this help and exit"),
    ("-V, --version", "show the versions of dicomfs and the libraries it uses, and exit"),
)


def default_cachedir() -> str:
    """``$XDG_CACHE_HOME/dicomfs``; the XDG spec says a relative ``XDG_CACHE_HOME`` is ignored."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dicomfs")


def _default(name: str) -> Any:
    return OPTIONS_BY_NAME[name].default


@dataclass(frozen=True)
class MountOptions:
    """Everything the mount needs, validated; defaults come from ``OPTIONS``."""

    mountpoint: str
    serveraddress: str = _default("serveraddress")
    serverport: int = _default("serverport")
    aec: str = _default("aec")
    aet: str = _default("aet")
    localport: int = _default("localport")
    localaddress: str = _default("localaddress")
    cachedir: str = field(default_factory=default_cachedir)
    retrieve: str = _default("retrieve")
    timeout: float = _default("timeout")
    ttl: float = _default("ttl")
    cachesize: int = _default("cachesize")
    model: str = _default("model")
    maxassoc: int = _default("maxassoc")
    parallel: int = _default("parallel")
    tls: bool = _default("tls")
    tlscert: str = _default("tlscert")
    tlskey: str = _default("tlskey")
    tlsca: str = _default("tlsca")
    logfile: str = _default("logfile")
    profile: str = _default("profile")
    config: str = _default("config")
    umask: int = _default("umask")
    uid: int | None = _default("uid")
    gid: int | None = _default("gid")
    nonempty: bool = _default("nonempty")
    foreground: bool = False
    debug: bool = False
    single_threaded: bool = False
    fuse_options: Mapping[str, str | bool] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        # Copy into a read-only view so neither the caller's dict nor ours can change a frozen value.
        object.__setattr__(self, "fuse_options", MappingProxyType(dict(self.fuse_options)))


def with_overrides(opts: MountOptions, **changes: Any) -> MountOptions:
    """A copy of ``opts`` with some fields replaced (no re-validation: callers pass typed values)."""
    return dataclasses.replace(opts, **changes)


# --------------------------------------------------------------------------- one value


def convert_option(key: str, value: str | None) -> tuple[Option, Any]:
    """One ``key[=value]`` -> its table row and typed value; OptionError says what is wrong."""
    option = OPTIONS_BY_NAME.get(key)
    if option is None:
        close = difflib.get_close_matches(key, OPTIONS_BY_NAME, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise OptionError(f"unknown option '{key}'{hint}")
    if value is None:
        if not option.kind.flag:
            raise OptionError(f"{key}: needs a value ({option.syntax})")
        return option, True
    if not value:
        raise OptionError(f"{key}: empty value ({option.syntax})")
    try:
        return option, option.kind.parse(value)
    except ValueError as exc:
        raise OptionError(f"{key}: {exc}") from None


# --------------------------------------------------------------------------- rendering


def format_help(prog: str = "dicomfs") -> str:
    """Usage text for ``-h``: flags, then one line per option with its default."""
    lines = [
        f"usage: {prog} [SOURCE] MOUNTPOINT [-f] [-d] [-s] [-o name=value[,...]] [name=value,...]",
        f"       {prog} profiles [-o config=PATH]   (list the profiles of the config files)",
        f"       {prog} echo [SOURCE] [-o ...] [--json]   (check the way to the PACS, step by step)",
        f"       {prog} demo MOUNTPOINT [-f]   (a bundled sample archive, served on loopback)",
        "",
        "Mount a DICOM archive (PACS) as a read-only directory tree. SOURCE is a profile name (a",
        "[pacs.NAME] table of the config file) or the PACS as AEC@host:port; options given here",
        "override the profile's.",
        "",
        "flags:",
    ]
    lines += [f"  {flag:<14} {meaning}" for flag, meaning in _FLAG_HELP]
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
