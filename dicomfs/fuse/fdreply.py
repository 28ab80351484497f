"""Zero-copy reads: answer FUSE ``read_buf`` with a file descriptor instead of bytes.

libfuse's high-level ``read_buf`` lets the filesystem return a ``struct fuse_bufvec`` naming an fd
and an offset; libfuse then reads (or splices) the data itself, in C, and frees the vector
(``fuse_free_buf`` in fuse.c). Every cached instance is a plain file, so no byte of a read has to
pass through Python. mfusepy declares ``fuse_bufvec.buf`` as a pointer, while libfuse's header
(fuse_common.h) has an inline one-element array, so the structure is declared here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

# fuse_common.h: enum fuse_buf_flags
FUSE_BUF_IS_FD = 1 << 1
FUSE_BUF_FD_SEEK = 1 << 2
FUSE_BUF_FD_RETRY = 1 << 3


class FuseBuf(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("flags", ctypes.c_int),
        ("mem", ctypes.c_void_p),
        ("fd", ctypes.c_int),
        ("pos", ctypes.c_longlong),
    ]


class FuseBufvec(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_size_t),
        ("idx", ctypes.c_size_t),
        ("off", ctypes.c_size_t),
        ("buf", FuseBuf * 1),
    ]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]


def reply_with_fd(bufpp: Any, fd: int, size: int, offset: int) -> bool:
    """Point ``*bufpp`` at a malloc'd vector reading ``size`` bytes of ``fd`` at ``offset``.

    False when memory is short (the caller answers ENOMEM). libfuse frees the vector.
    """
    address = _libc.malloc(ctypes.sizeof(FuseBufvec))
    if not address:
        return False
    vector = FuseBufvec.from_address(address)
    vector.count, vector.idx, vector.off = 1, 0, 0
    buf = vector.buf[0]
    buf.size, buf.flags, buf.mem = size, FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY, None
    buf.fd, buf.pos = fd, offset
    ctypes.cast(bufpp, ctypes.POINTER(ctypes.c_void_p))[0] = address
    return True
