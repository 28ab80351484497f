"""Which process a FUSE request comes from.

The kernel puts the calling *thread's* ID in every request (``fuse_in_header.pid``; libfuse's
``fuse_get_context()``); a budget per program needs its process (thread group) ID, read from
``/proc/<tid>/status`` (proc(5): ``Tgid``), which exists for threads too.
"""

from __future__ import annotations

import functools

import mfusepy


@functools.lru_cache(maxsize=1024)
def _thread_group(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return tid


def caller_process() -> int:
    """The process ID of the caller of the FUSE request being served; 0 when unknown (a kernel
    request, or another PID namespace), which callers treat as a reader."""
    _uid, _gid, tid = mfusepy.fuse_get_context()
    return _thread_group(tid) if tid > 0 else 0
