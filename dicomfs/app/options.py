"""Options of ``dicomfs``: one declarative table drives parsing, profiles, ``-h`` and the README.

Every option lives in ``OPTIONS`` (name, kind, default, help). ``MountOptions`` takes its defaults
from that table; ``dicomfs.app.usage`` renders it (``-h``, the README table), ``dicomfs.app.manpage``
the man page; ``convert_option`` checks one value against it for the command line
(``dicomfs.app.commandline``) and for profiles (``dicomfs.app.profiles``), so a new option is one
row plus one dataclass field.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dicomfs.app.valuekinds import (
    AE_TITLE,
    BOOL,
    GID,
    HOST,
    PATH,
    PORT,
    PROFILE,
    SECONDS,
    SECONDS_OR_ZERO,
    SIZE,
    TEXT,
    UID,
    UMASK,
    ValueKind,
    choice,
    int_range,
)

LOGGER = logging.getLogger(__name__)


class OptionError(Exception):
    """A bad command line or environment; the message is one clear line for the user."""


class HelpRequested(Exception):
    """``-h``/``--help``/``--version``: the CLI prints ``text`` and exits 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


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
    Option("retrieve", choice("move", "get"), "move", "how instances are fetched: C-MOVE or C-GET"),
    Option("timeout", SECONDS, 30.0, "timeout for every network operation, in seconds", "30"),
    Option("ttl", SECONDS_OR_ZERO, 300.0, "how long directory listings are cached, in seconds", "300"),
    Option("cachesize", SIZE, 10 * 1024**3, "instance cache size limit (20G, 512M, 100k, bytes)"),
    Option("model", choice("study", "patient"), "study", "C-FIND query/retrieve information model"),
    Option(
        "views",
        choice("hidden", "listed"),
        "hidden",
        "by-date, by-uid, by-id, by-accession and query/ at the root: reached by name (hidden), or "
        "also listed, so that du, find, cp -r and indexers walk by-date's calendar too (listed)",
    ),
    Option("maxassoc", int_range(1, 64), 4, "maximum simultaneous associations to the PACS"),
    Option(
        "parallel",
        int_range(1, 16),
        1,
        "associations one large series is split over (helps on slow links; 1 is fastest on a LAN)",
    ),
    Option(
        "sizes",
        choice("guarded", "exact"),
        "guarded",
        "guarded: a program that stats files without reading them (du, tree, an indexer) retrieves at "
        "most statseries series, then sees estimated sizes; exact: every stat retrieves",
    ),
    Option(
        "statseries",
        int_range(0, 100_000),
        3,
        "sizes=guarded: series one program may retrieve by stat alone, until it opens a file",
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

FLAG_HELP = (
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
    views: str = _default("views")
    maxassoc: int = _default("maxassoc")
    parallel: int = _default("parallel")
    sizes: str = _default("sizes")
    statseries: int = _default("statseries")
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
