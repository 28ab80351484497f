"""The modes and owner that every directory and file of the mount reports.

A copied tree must be easy to work with: ``cp -r`` keeps the source's permission bits (less the
copier's umask), so read-only modes (0555 directories) would give a copy its own user cannot
``rm -rf``. Like rclone and sshfs, dicomfs reports directories 0777 and files 0666 less a ``umask``
(default 022: 0755 and 0644); the mount stays read-only all the same, for the kernel (``ro``) and in
every modifying call (EROFS).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Ownership:
    """``st_mode`` of directories and files, ``st_uid`` and ``st_gid`` of both."""

    dir_mode: int
    file_mode: int
    uid: int
    gid: int

    @classmethod
    def from_options(cls, umask: int = 0o022, uid: int | None = None, gid: int | None = None) -> Ownership:
        """Modes 0777/0666 less ``umask``; owner and group default to the daemon's own."""
        return cls(
            dir_mode=stat.S_IFDIR | (0o777 & ~umask),
            file_mode=stat.S_IFREG | (0o666 & ~umask),
            uid=os.getuid() if uid is None else uid,
            gid=os.getgid() if gid is None else gid,
        )
