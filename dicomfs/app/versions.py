"""``dicomfs --version``: our version and those of the libraries a bug report needs."""

from __future__ import annotations

import ctypes
import importlib.metadata

from dicomfs import __version__

_PACKAGES = ("pynetdicom", "pydicom", "mfusepy")


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def libfuse_version() -> str:
    """The version of the libfuse that mfusepy loads ("3.14.0"), or why there is none."""
    try:
        import mfusepy
    except (ImportError, OSError) as exc:  # mfusepy raises when it finds no libfuse
        return f"not loaded ({exc})"
    version_of = getattr(mfusepy._libfuse, "fuse_pkgversion", None)  # libfuse 3 exports it
    if version_of is None:
        return f"{mfusepy.fuse_version_major}.{mfusepy.fuse_version_minor}"
    version_of.restype = ctypes.c_char_p
    return str(version_of().decode("ascii", "replace"))


def version_line() -> str:
    """``dicomfs 0.1.0 (pynetdicom 3.0.4, pydicom 3.0.2, mfusepy 3.1.1, libfuse 3.14.0)``."""
    parts = [f"{name} {_package_version(name)}" for name in _PACKAGES]
    parts.append(f"libfuse {libfuse_version()}")
    return f"dicomfs {__version__} ({', '.join(parts)})"
