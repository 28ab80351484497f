"""The conventions of mount(8), /etc/fstab and ``mount.fuse3``: the source word and the options they add.

``mount -t fuse.dicomfs SOURCE /mnt/pacs -o OPTS`` and an fstab line
``SOURCE /mnt/pacs fuse.dicomfs defaults,_netdev,allow_other 0 0`` both end in libfuse's
``mount.fuse3`` (util/mount.fuse.c), which runs ``/bin/sh -c "dicomfs SOURCE /mnt/pacs -o OPTS"``.
By then libmount has turned the fstab options into a normalised list (``rw``/``ro`` always, ``exec``,
``suid``, ``dev``, atime words; ``defaults``, ``_netdev``, ``noauto``, ``x-*``, ``comment=`` taken out),
and mount.fuse3 has added ``dev,suid`` unless ``nodev``/``nosuid`` were given and removed ``user``,
``nofail``, ``auto``, ``_netdev`` and friends. Anything may still arrive when dicomfs is run from a
systemd mount unit or by hand, so every one of these words is accepted here:

- ``ro`` and ``rw`` (which mount(8) adds when ``ro`` is not given) are accepted: the tree is
  read-only either way and writes fail with EROFS; only ``upload=on`` makes the kernel mount ``rw``
  (for ``upload/``), and ``ro`` next to ``upload=on`` is refused (``commandline.parse_args``);
- ``dev``/``suid`` are ignored: dicomfs never asks libfuse for them, so a PACS mount stays
  ``nodev,nosuid`` (libfuse's default, also for root);
- ``noexec`` is an option of the table (passed to libfuse); ``exec``, the atime and sync words are
  meaningless on a read-only tree without executables and are ignored;
- the words meant for mount(8) and systemd (``defaults``, ``auto``, ``noauto``, ``user``, ``users``,
  ``nouser``, ``owner``, ``group``, ``_netdev``, ``nofail``, ``x-*``, ``comment=*``) are ignored.

The SOURCE is a profile name (``dicomfs.app.profiles``) or the PACS itself as ``AEC@host:port``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: mount(8), fstab and systemd words that dicomfs accepts and ignores (see the module docstring).
IGNORED_WORDS = frozenset(
    {
        "ro",
        "rw",
        "defaults",
        "auto",
        "noauto",
        "user",
        "users",
        "nouser",
        "owner",
        "group",
        "_netdev",
        "nofail",
        "dev",
        "nodev",
        "suid",
        "nosuid",
        "exec",
        "async",
        "sync",
        "dirsync",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "lazytime",
        "nolazytime",
        "diratime",
        "nodiratime",
        "silent",
        "loud",
    }
)
#: Prefixes of ignored ``name=value`` words: systemd's and other userspace ``x-`` options, fstab
#: comments, and ``user=NAME`` which mount(8) records for a user mount.
IGNORED_PREFIXES = ("x-", "comment=", "user=")

# AEC@host:port, AEC@host, AEC@[v6]:port. An AE title may hold spaces and most punctuation
# (PS3.5 6.2), so everything up to the last "@" is the title; the options parser checks it.
_ADDRESS_RE = re.compile(r"^(?P<aec>.+)@(?P<host>\[[^\]]+\]|[^:@\[\]]+)(?::(?P<port>[^:]*))?$")
PROFILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def is_ignored_word(key: str, value: str | None) -> bool:
    """True for a mount(8)/fstab/systemd option word that dicomfs accepts and ignores."""
    if value is None and key in IGNORED_WORDS:
        return True
    word = key if value is None else f"{key}={value}"
    return word.startswith(IGNORED_PREFIXES)


def is_address(source: str) -> bool:
    """True when the SOURCE word names the PACS (``AEC@host[:port]``) rather than a profile."""
    return "@" in source


def split_address(source: str) -> dict[str, str]:
    """``"PACS@pacs.example.org:104"`` -> raw option values ``aec``, ``serveraddress``, ``serverport``.

    The values are text for the option table's parsers to check. Raises ValueError with a
    message for the user when the word is not of the form ``AEC@host[:port]``.
    """
    match = _ADDRESS_RE.match(source)
    if match is None:
        raise ValueError(f"source '{source}' is not AEC@host:port (e.g. PACS@pacs.example.org:104)")
    values = {"aec": match["aec"], "serveraddress": match["host"]}
    if match["port"] is not None:
        values["serverport"] = match["port"]
    return values


def check_profile_name(name: str) -> str:
    """``name`` if it can be a profile name (letters, digits, ``_.-``); ValueError otherwise."""
    if not PROFILE_NAME_RE.match(name):
        raise ValueError(
            f"'{name}' is neither a profile name (letters, digits, '_', '.', '-') nor a PACS (AEC@host:port)"
        )
    return name


def pacs_name(values: Mapping[str, Any]) -> str:
    """``AEC@host:port`` for option values holding ``aec``, ``serveraddress`` and ``serverport``."""
    host = str(values["serveraddress"])
    if ":" in host:  # an IPv6 literal: brackets keep the port apart
        host = f"[{host}]"
    return f"{values['aec']}@{host}:{values['serverport']}"


def escape_fuse_value(text: str) -> str:
    """Escape ``,`` and ``\\`` for libfuse's option parser (lib/fuse_opt.c takes ``\\x`` as ``x``)."""
    return text.replace("\\", "\\\\").replace(",", "\\,")
