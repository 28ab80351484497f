"""Where a mount's log goes, and what the libraries may say there.

- Foreground (``-f``) or ``-d``: stderr.
- Detached, ``logfile=PATH``: that file, rotated (:data:`ROTATE_BYTES`, :data:`ROTATE_KEEP`).
- Detached, a syslog socket at ``/dev/log`` (journald provides one, as does rsyslog): syslog,
  facility daemon, tagged ``dicomfs[pid]`` (RFC 3164 style, which journald files under
  SYSLOG_IDENTIFIER=dicomfs).
- Detached otherwise: ``<cachedir>/dicomfs.log``, rotated.

Detached lines carry the mount point, so the lines of several mounts sharing a cachedir or a
journal can be told apart.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys
import warnings

from dicomfs.app.options import MountOptions

#: The syslog socket of journald and of classic syslog daemons (syslog(3)).
SYSLOG_SOCKET = "/dev/log"
#: A log file is rotated at this size; this many old files are kept (dicomfs.log.1, ...).
ROTATE_BYTES = 10 * 1024**2
ROTATE_KEEP = 3


class ReopeningFileHandler(logging.handlers.RotatingFileHandler):
    """A rotated log file that is made again when it is removed (``rm -rf <cachedir>`` while
    mounted): otherwise the lines would go on into a file nobody can read (as
    ``logging.handlers.WatchedFileHandler`` does, for a rotated handler)."""

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is not None and not os.path.exists(self.baseFilename):
            os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
            self.stream.close()
            self.stream = self._open()
        super().emit(record)


def _syslog_reachable(address: str) -> bool:
    """A datagram socket at ``address`` accepts our connection (a stale socket file does not)."""
    if not os.path.exists(address):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


def log_handler(opts: MountOptions, syslog_socket: str = SYSLOG_SOCKET) -> logging.Handler:
    """The handler for this mount's log (see the module docstring for the choice).

    Parameters
    ----------
    opts : MountOptions
        ``foreground``, ``debug``, ``logfile``, ``cachedir`` and ``mountpoint`` are used.
    syslog_socket : str
        The syslog socket to use when it is reachable (tests give their own).

    Raises
    ------
    OSError
        When the log file cannot be opened (the caller reports it in one line).
    """
    if opts.foreground or opts.debug:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        return handler
    where = opts.mountpoint.replace("%", "%%")
    if not opts.logfile and _syslog_reachable(syslog_socket):
        handler = logging.handlers.SysLogHandler(
            address=syslog_socket, facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        # The tag is formatted per record: libfuse forks when it detaches, changing the pid.
        handler.setFormatter(
            logging.Formatter(f"dicomfs[%(process)d]: {where}: %(levelname)s %(name)s: %(message)s")
        )
        return handler
    path = opts.logfile or os.path.join(opts.cachedir, "dicomfs.log")
    handler = ReopeningFileHandler(path, maxBytes=ROTATE_BYTES, backupCount=ROTATE_KEEP)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {where} %(levelname)s %(name)s: %(message)s"))
    return handler


def configure_logging(opts: MountOptions, handler: logging.Handler | None = None) -> None:
    """Send every log record of this process to ``handler`` (default: :func:`log_handler`)."""
    root = logging.getLogger()
    root.handlers[:] = [handler or log_handler(opts)]
    root.setLevel(logging.DEBUG if opts.debug else logging.INFO)
    # pynetdicom says a lot at INFO about every association (its DIMSE traffic): keep it for -d.
    # Without -d only its critical lines: a refused connection or a rejected association is
    # an ERROR line of pynetdicom's on every retry and every reachability check (thousands an
    # hour while the PACS is down); dicomfs logs each cause once, in its own words.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if opts.debug else logging.CRITICAL)
    # pydicom warns (through `warnings` and its logger) on every badly encoded or over-long value
    # of a C-FIND answer; naming repairs them, so that is noise but for -d.
    warnings.filterwarnings("ignore", module="pydicom")
    logging.getLogger("pydicom").setLevel(logging.DEBUG if opts.debug else logging.ERROR)
    # A pixel decoder that fails logs its traceback at ERROR before pydicom raises
    # (pixels/decoders/base.py `_decode_frame`); dicomfs says the raised error once, in its own
    # words (an upload's report). A child's own level: importing pydicom resets "pydicom"'s
    # (config.py calls debug(False)).
    logging.getLogger("pydicom.pixels").setLevel(logging.DEBUG if opts.debug else logging.CRITICAL)
