"""``dicomfs`` / ``dicomfs.py`` / ``python -m dicomfs``: check the options, then mount.

    dicomfs MOUNTPOINT -o serveraddress=H,serverport=P,aec=PACS,aet=DICOMFS[,...]
    dicomfs PROFILE MOUNTPOINT [-o ...]          (also how mount(8) and fstab run it)
    dicomfs AEC@host:port MOUNTPOINT [-o ...]
    dicomfs profiles [-o config=PATH]
    dicomfs demo MOUNTPOINT [-f] [-o ...]
    dicomfs cache stats|clear|prune [--older-than 30d] [--cachedir DIR]
    dicomfs prefetch PATH...
    dicomfs status MOUNTPOINT [--json]

Everything that can be wrong with the command line is reported as one line on stderr, with exit
status 2, before anything is mounted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dicomfs import __version__
from dicomfs.app.commandline import parse_args
from dicomfs.app.localport import wait_for_port
from dicomfs.app.logs import configure_logging
from dicomfs.app.mounthelper import escape_fuse_value, pacs_name
from dicomfs.app.options import HelpRequested, MountOptions, OptionError, with_overrides
from dicomfs.app.preflight import check_environment
from dicomfs.app.profiles import all_profiles, config_paths, format_profiles

LOGGER = logging.getLogger("dicomfs")

EXIT_USAGE = 2
EXIT_MOUNT_FAILED = 1
_PROFILES_USAGE = "dicomfs profiles [-o config=PATH]"
_LIBFUSE_MAX_THREADS = 10  # libfuse 3 helper.c: the default of -o max_threads

Hooks = Sequence[tuple[Callable[[], None], Callable[[], None]]]


def check_local_port(opts: MountOptions) -> None:
    """The storage SCP's port must be free, or C-MOVE would fail later with a puzzling error.

    A dicomfs that is still shutting down (``fusermount3 -u`` returned before it closed the
    port) is waited for, a few seconds at most; any other holder is an error at once.
    """
    if opts.retrieve != "move":
        return
    busy = wait_for_port(opts.localaddress, opts.localport)
    if busy is None:
        return
    error, holders = busy
    where = f"{opts.localaddress or '*'}:{opts.localport}"
    if error.errno == errno.EADDRINUSE:
        by = ", ".join(f"pid {holder.pid} ({holder.command[:60]})" for holder in holders)
        raise OptionError(f"localport: {where} is already in use" + (f" by {by}" if by else ""))
    raise OptionError(f"localport: cannot listen on {where}: {error.strerror}")


def mount_source(opts: MountOptions) -> str:
    """What mount(8), df and findmnt show as the source: the profile name, else ``AEC@host:port``.

    The profile name is also the fstab line's first field, so ``mount -a`` sees the line as
    mounted and ``umount NAME`` finds it.
    """
    return opts.profile or pacs_name(
        {"aec": opts.aec, "serveraddress": opts.serveraddress, "serverport": opts.serverport}
    )


def fuse_kwargs(opts: MountOptions, libfuse_major: int = 3) -> dict[str, object]:
    """libfuse options for this mount (``libfuse_major``: of the libfuse mfusepy loaded)."""
    # Listings are cached for `ttl` anyway; let the kernel keep attributes for a while too. Not
    # with sizes=guarded: a file's estimated size must be asked again before it is read past
    # (Linux fuse_cache_read_iter refreshes i_size only once the attributes have timed out).
    attr_timeout = min(opts.ttl, 60.0)
    kwargs: dict[str, object] = {
        "foreground": opts.foreground or opts.debug,
        "debug": opts.debug,
        "nothreads": opts.single_threaded,
        # Read-only for the kernel too, unless upload/ takes writes (every other write: EROFS).
        "ro": not opts.upload,
        # A SOP instance never changes, so the page cache may keep file contents across opens.
        "kernel_cache": True,
        "attr_timeout": 0.0 if opts.sizes == "guarded" else attr_timeout,
        "entry_timeout": attr_timeout,
        "subtype": "dicomfs",  # the type is fuse.dicomfs, as in fstab
    }
    kwargs.update(opts.fuse_options)
    kwargs["fsname"] = escape_fuse_value(str(kwargs.get("fsname") or mount_source(opts)))
    if libfuse_major >= 3 and not opts.single_threaded:
        # libfuse 3.12-3.17.1 default max_idle_threads to -1 and then log "Ignoring invalid max
        # threads value 4294967295" on every start (lib/fuse_loop_mt.c). As many idle threads as
        # threads at most (10, helper.c's default) is what -1 means: no worker is ever ended.
        kwargs.setdefault("max_idle_threads", kwargs.get("max_threads", _LIBFUSE_MAX_THREADS))
    return kwargs


def mount(opts: MountOptions, hooks: Hooks = ()) -> int:
    """Mount and serve until unmounted (detaching first unless foreground)."""
    import mfusepy  # FUSE's library is loaded only when mounting: `-h` works without it

    from dicomfs.app.compose import MountServices
    from dicomfs.fuse.directio import FuseWithDirectIO
    from dicomfs.fuse.modes import Ownership
    from dicomfs.fuse.ops import DicomFS

    operations = DicomFS(MountServices(opts, hooks), Ownership.from_options(opts.umask, opts.uid, opts.gid))
    try:
        FuseWithDirectIO(operations, opts.mountpoint, **fuse_kwargs(opts, mfusepy.fuse_version_major))
    except RuntimeError as exc:
        if operations.served:
            # libfuse's loop reports a non-zero status when a signal (SIGTERM, SIGINT) ended it;
            # the mount was up and has been unmounted cleanly, which is what the user asked for.
            return 0
        print(f"dicomfs: mounting {opts.mountpoint} failed (libfuse status {exc})", file=sys.stderr)
        return EXIT_MOUNT_FAILED
    return 0


def run_demo(argv: Sequence[str]) -> int:
    """``dicomfs demo MOUNTPOINT``: a bundled sample archive, served on loopback, mounted."""
    from dicomfs.demo.samples import write_demo_archive
    from dicomfs.demo.scp import DemoArchive

    opts = parse_args(argv)
    pacs_port, local_port = _free_port(), _free_port()
    cachedir = opts.cachedir if "cachedir=" in " ".join(argv) else f"{opts.cachedir}-demo"
    opts = with_overrides(
        opts,
        serveraddress="127.0.0.1",
        serverport=pacs_port,
        aec="DEMOPACS",
        localaddress="127.0.0.1",
        localport=local_port,
        cachedir=cachedir,
        # The demo archive keeps what is copied into upload/ (demo.scp.handle_store): on unless
        # the command line says upload=off.
        upload=opts.upload or "upload=" not in " ".join(argv),
    )
    check_environment(opts)
    # The same files every time; written aside and renamed into place, never rewritten under a
    # running demo that shares the cachedir (its SCP reads them as it sends).
    archive_dir = Path(opts.cachedir) / "demo-archive"
    marker = archive_dir / ".written-by"
    if not marker.is_file() or marker.read_text() != __version__:
        fresh = Path(opts.cachedir) / f"demo-archive.{os.getpid()}"
        shutil.rmtree(fresh, ignore_errors=True)
        write_demo_archive(fresh)
        (fresh / ".written-by").write_text(__version__)
        stale = Path(opts.cachedir) / f"demo-archive.old.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            archive_dir.rename(stale)  # an archive of another version (or a broken one)
        try:
            fresh.rename(archive_dir)
        except OSError:  # another demo was quicker: use its (identical) archive
            shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    archive = DemoArchive(
        archive_dir,
        ae_title="DEMOPACS",
        port=pacs_port,
        move_destinations={opts.aet: ("127.0.0.1", local_port)},
    )
    configure_logging(opts)
    print(
        f"dicomfs demo: sample archive mounted at {opts.mountpoint}; "
        f"unmount with: fusermount3 -u {opts.mountpoint}",
        file=sys.stderr,
    )
    return mount(opts, hooks=[(archive.start, archive.stop)])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def print_out(text: str) -> None:
    """``text`` to stdout; a reader that has gone (``dicomfs -h | head``) is no error.

    Python's documented recipe (signal module, "Note on SIGPIPE"): stdout goes to /dev/null so
    the flush at exit does not raise again.
    """
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def list_profiles(argv: Sequence[str]) -> int:
    """``dicomfs profiles [-o config=PATH]``: the profiles of the config files, one per line."""
    config = ""
    words = [word for arg in argv for word in arg.removeprefix("-o").split(",") if word]
    for word in words:
        key, _, value = word.partition("=")
        if key != "config" or not value:
            raise OptionError(f"profiles: unknown argument '{word}' (usage: {_PROFILES_USAGE})")
        config = os.path.abspath(os.path.expanduser(value))
    profiles = all_profiles(config)
    if not profiles:
        print(f"dicomfs: no [pacs.NAME] profiles in {' or '.join(config_paths(config))}", file=sys.stderr)
        return 0
    print_out(format_profiles(profiles))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "demo":
            return run_demo(args[1:])
        if args and args[0] == "echo":
            from dicomfs.app.echo import run_echo

            return run_echo(args[1:])
        if args and args[0] == "cache":
            from dicomfs.app import cachecmd

            return cachecmd.main(args[1:])
        if args and args[0] == "prefetch":
            from dicomfs.app import prefetch

            return prefetch.main(args[1:])
        if args and args[0] == "status":
            from dicomfs.app import statuscmd

            return statuscmd.main(args[1:])
        if args and args[0] == "profiles":
            return list_profiles(args[1:])
        opts = parse_args(args)
        check_environment(opts)
        check_local_port(opts)
    except HelpRequested as request:
        print_out(request.text + "\n")
        return 0
    except BrokenPipeError:  # `dicomfs cache stats | head -2`: the reader has gone, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OptionError as exc:
        print(f"dicomfs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        configure_logging(opts)
    except OSError as exc:
        print(f"dicomfs: logfile: cannot write '{exc.filename}': {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    from dicomfs.app.echo import check_before_mount  # the PACS check of `dicomfs echo`, bounded

    check_before_mount(opts)
    with contextlib.suppress(KeyboardInterrupt):
        return mount(opts)
    return 0
