"""``dicomfs echo [SOURCE] [-o ...] [--json]``: is the PACS set up for us? And the mount's quick check.

``dicomfs echo`` takes a mount's command line without the mount point (a profile name or
``AEC@host:port``, then ``-o`` options; parsed by ``commandline.parse_args``) and
runs :class:`dicomfs.dimse.diagnose.Diagnosis`: one line per step, with the cause and the fix of
the first failure; exit status 0 only when every step worked (1 otherwise, 2 for a bad command
line). ``--json`` prints ``{"ok", "pacs", "aet", "retrieve", "steps": [{"name", "ok", "detail",
"hint"}]}`` instead.

:func:`check_before_mount` runs the same checks without the return path (the mount's storage SCP
needs ``localport``) for a few seconds at most before a mount; the mount comes up whatever they
find (the cache may serve offline), but what failed is said on stderr and in the log.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import warnings
from collections.abc import Sequence

from dicomfs.app.commandline import parse_args
from dicomfs.app.options import OPTIONS_BY_NAME, HelpRequested, MountOptions, OptionError
from dicomfs.dimse.diagnose import Diagnosis, EchoTarget, Step

LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: The mount waits this long at most for its start-up check (or ``timeout``, if shorter): long
#: enough for any PACS that answers at all, short enough that a dead one costs little.
MOUNT_CHECK_S = 5.0
#: Stands in for the mount point, which ``echo`` has none of, when the option table parses argv.
_NO_MOUNTPOINT = "/"

USAGE = """\
usage: dicomfs echo [SOURCE] [-d] [--json] [-o name=value[,name=value...]] [name=value,...]

Check the way to the PACS, step by step, with the options a mount would use: the host name,
the TCP connection, the association (AE titles), C-ECHO, a C-FIND at the root, and for
retrieve=move the return path (a C-MOVE of one instance to our storage SCP on localport).
SOURCE is a profile name (see: dicomfs profiles) or AEC@host:port, as for a mount; options
given here override the profile's. Exit status 0 only when everything works. --json prints the
steps as JSON.
"""


def split_echo_args(argv: Sequence[str]) -> tuple[str | None, list[str], bool]:
    """argv -> (SOURCE or None, the words for the option table, ``--json`` given)."""
    profile: str | None = None
    words: list[str] = []
    as_json = False
    args = iter(argv)
    for arg in args:
        if arg == "--json":
            as_json = True
        elif arg == "-o":
            words += [arg, next(args, "")]
        elif arg.startswith("-") or "=" in arg:
            words.append(arg)
        elif profile is None:
            profile = arg
        else:
            raise OptionError(f"echo takes at most one SOURCE (a profile or AEC@host:port), also got {arg!r}")
    return profile, words, as_json


def parse_echo_args(argv: Sequence[str]) -> tuple[MountOptions, bool]:
    """``dicomfs echo`` argv -> (options, ``--json``); OptionError/HelpRequested as ``parse_args``."""
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(USAGE)
    source, words, as_json = split_echo_args(argv)
    # A mount's command line, SOURCE and all: the profile's values, then SOURCE's, then the
    # options given here (``commandline.parse_args``); only the mount point is a stand-in.
    positionals = [_NO_MOUNTPOINT] if source is None else [source, _NO_MOUNTPOINT]
    return parse_args([*words, "--", *positionals]), as_json


def target_of(opts: MountOptions, timeout: float | None = None) -> EchoTarget:
    """The mount options in the checks' terms (TLS contexts built as the mount builds them)."""
    from dicomfs.app.compose import client_ssl_context, server_ssl_context

    defaults = (OPTIONS_BY_NAME["serveraddress"].default, OPTIONS_BY_NAME["serverport"].default)
    return EchoTarget(
        host=opts.serveraddress,
        port=opts.serverport,
        called_aet=opts.aec,
        calling_aet=opts.aet,
        timeout=opts.timeout if timeout is None else timeout,
        model=opts.model,
        retrieve=opts.retrieve,
        localaddress=opts.localaddress,
        localport=opts.localport,
        ssl_context=client_ssl_context(opts),
        server_ssl_context=server_ssl_context(opts) if opts.retrieve == "move" else None,
        default_address=(opts.serveraddress, opts.serverport) == defaults,
    )


def describe(steps: list[Step]) -> str:
    """The first failed step as one line (cause; fix), or '' when every step passed."""
    for step in steps:
        if not step.ok:
            return f"{step.name}: {step.detail}" + (f"; fix: {step.hint}" if step.hint else "")
    return ""


def format_step(step: Step) -> str:
    """One line per step: ``ok``/``FAIL``, the step, what happened, and the fix."""
    mark = "ok  " if step.ok and not step.hint else ("note" if step.ok else "FAIL")
    line = f"  {mark}  {step.name:<9} {step.detail}"
    return line + (f" -> fix: {step.hint}" if step.hint else "")


def _quiet_libraries(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    # pynetdicom logs every rejection and abort as an ERROR of its own; the steps say it better.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    warnings.filterwarnings("ignore", module="pydicom")


def run_echo(argv: Sequence[str]) -> int:
    """``dicomfs echo ...``: the checks, printed; the exit status."""
    try:
        opts, as_json = parse_echo_args(argv)
        target = target_of(opts)
    except HelpRequested as request:
        print(request.text)
        return EXIT_OK
    except (OptionError, OSError) as exc:
        print(f"dicomfs echo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _quiet_libraries(opts.debug)
    diagnosis = Diagnosis(target)
    if as_json:
        diagnosis.run()
        result = {
            "ok": diagnosis.ok,
            "pacs": target.where,
            "aet": target.calling_aet,
            "retrieve": target.retrieve,
            "steps": [step.as_dict() for step in diagnosis.steps],
        }
        print(json.dumps(result, indent=2))
    else:
        print(f"dicomfs echo: {target.where} as {target.calling_aet} (retrieve={target.retrieve})")
        diagnosis.run(on_step=lambda step: print(format_step(step), flush=True))
        failed = [step.name for step in diagnosis.steps if not step.ok]
        print("all checks passed" if diagnosis.ok else f"FAILED at: {', '.join(failed) or 'stopped'}")
    return EXIT_OK if diagnosis.ok else EXIT_FAILED


def check_before_mount(opts: MountOptions) -> None:
    """The mount's start-up check: name, connection, association, C-ECHO, root C-FIND.

    Runs in a thread for ``min(timeout, MOUNT_CHECK_S)`` seconds at most, then the mount goes on
    whatever happened. A failure is one line on stderr (read before dicomfs detaches) and in the
    log; a PACS that has not answered by then is said to be slow, and the check is ended (its
    socket closed: nothing of it may survive into the detached daemon).
    """
    bound = min(opts.timeout, MOUNT_CHECK_S)
    try:
        diagnosis = Diagnosis(target_of(opts, timeout=bound), return_path=False)
    except OSError as exc:  # TLS files were checked already; anything else is not ours to stop
        LOGGER.debug("no start-up check: %s", exc)
        return
    thread = threading.Thread(target=diagnosis.run, name="pacs-check", daemon=True)
    thread.start()
    thread.join(bound)
    where = diagnosis.target.where
    if thread.is_alive():
        diagnosis.cancel()
        thread.join(1.0)
        message = f"the PACS {where} has not answered within {bound:g} s; mounting anyway"
    elif diagnosis.ok:
        LOGGER.info("the PACS %s answers (association, C-ECHO, C-FIND)", where)
        return
    else:
        message = f"the PACS {where} does not work for us: {describe(diagnosis.steps)}; mounting anyway"
    LOGGER.warning("%s (details: dicomfs echo with the same options)", message)
    if not (opts.foreground or opts.debug):  # the log goes to a file then: say it here too
        print(f"dicomfs: {message}", file=sys.stderr)
