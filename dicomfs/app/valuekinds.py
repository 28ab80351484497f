"""Kinds of option values: how each is written (metavar), parsed and shown back.

Parsers raise ``ValueError`` with a message fit for one line (the caller prefixes the option name).
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dicomfs.app.mounthelper import check_profile_name

_TRUE_WORDS = frozenset({"1", "yes", "true", "on"})
_FALSE_WORDS = frozenset({"0", "no", "false", "off"})
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$", re.IGNORECASE)
# Host names, IPv4 and IPv6 literals (optionally with a %scope); brackets are stripped first.
_HOST_RE = re.compile(r"^[A-Za-z0-9._:%-]+$")


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


def choice(*choices: str) -> ValueKind:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return raw

    return ValueKind("|".join(choices), parse)


def int_range(low: int, high: int) -> ValueKind:
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
