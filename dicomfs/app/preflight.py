"""Checks before mounting: what would otherwise fail late, obscurely, or hide the user's files.

Each failure is an ``OptionError`` whose message is one line for the user; nothing is mounted yet.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import tempfile

from dicomfs.app.options import MountOptions, OptionError

LOGGER = logging.getLogger(__name__)

#: mount.fuse3's ``drop_privileges`` opens /dev/fuse and mounts itself, then passes the descriptor
#: as the mount point (util/mount.fuse.c; libfuse's fuse_session_mount accepts "/dev/fd/N").
_FD_MOUNTPOINT_RE = re.compile(r"^/dev/fd/\d+$")


def check_mountpoint(opts: MountOptions) -> None:
    """The mount point must be a directory, and (unless ``nonempty``) empty and not a mount point.

    Mounting over files or over another mount hides them until the unmount (rclone refuses the
    same way); a FUSE mount whose daemon died answers ENOTCONN and is named as such.
    """
    path = opts.mountpoint
    if _FD_MOUNTPOINT_RE.match(path):
        return
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise OptionError(f"mountpoint '{path}' does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise OptionError(
                f"mountpoint '{path}' is a FUSE mount whose daemon is gone (fusermount3 -u {path})"
            ) from None
        raise OptionError(f"mountpoint '{path}': {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise OptionError(f"mountpoint '{path}' is not a directory")
    if opts.nonempty:
        return
    if os.path.ismount(path):
        raise OptionError(
            f"mountpoint '{path}' is already a mount point (unmount it, or add -o nonempty to mount over it)"
        )
    try:
        with os.scandir(path) as entries:
            has_entries = next(entries, None) is not None
    except OSError as exc:
        raise OptionError(f"mountpoint '{path}': cannot list it: {exc.strerror or exc}") from None
    if has_entries:
        raise OptionError(
            f"mountpoint '{path}' is not empty (its files would be hidden; "
            "add -o nonempty to mount over it anyway)"
        )


def _check_cachedir(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        # A real write, not os.access(): root passes access() even on a read-only file system.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise OptionError(f"cachedir: cannot use '{path}': {exc.strerror or exc}") from None


def _check_readable(name: str, path: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise OptionError(f"{name}: cannot read '{path}': {exc.strerror or exc}") from None


def check_environment(opts: MountOptions) -> None:
    """Fail early, with one line, on what would otherwise surface as an obscure FUSE or TLS error.

    Checks the mount point (``check_mountpoint``), creates the cache directory (mode 0700, with
    parents) if it is missing, and reads the TLS files. Raises ``OptionError``.
    """
    check_mountpoint(opts)
    _check_cachedir(opts.cachedir)
    tls_files = {"tlscert": opts.tlscert, "tlskey": opts.tlskey, "tlsca": opts.tlsca}
    for name, path in tls_files.items():
        if path:
            _check_readable(name, path)
    if opts.tls and not (opts.tlscert and opts.tlskey):
        raise OptionError("tls: needs tlscert and tlskey")
    if not opts.tls and any(tls_files.values()):
        LOGGER.warning("tlscert/tlskey/tlsca given without tls: they are ignored")
