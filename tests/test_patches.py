"""pynetdicom's process-wide tuning: installed only by ``patches.install()``, only where it still fits.

Every check runs in a fresh interpreter: the patches are process-wide, and the test process must
keep stock pynetdicom (its in-process SCPs too).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

#: A generous bound that only guards against hangs.
HANG_GUARD_S = 60

_STATE = """
import time
from pynetdicom import _config, dul
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.transport import AssociationSocket
def state():
    return (AssociationSocket.recv.__module__, dul.time is time, _config.STORE_RECV_CHUNKED_DATASET,
            _config.UNRESTRICTED_STORAGE_SERVICE, _config.LOG_RESPONSE_IDENTIFIERS,
            DIMSEServiceProvider.receive_primitive.__module__, _config.LOG_HANDLER_LEVEL)
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (patches are process-wide: never in the test process)."""
    return subprocess.run(
        [sys.executable, "-c", _STATE + code],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
        cwd=Path(__file__).resolve().parents[1],  # this checkout's dicomfs
    )


def test_importing_dicomfs_patches_nothing_and_install_does() -> None:
    result = run_python(
        "before = state()\n"
        "import dicomfs.dimse.client, dicomfs.dimse.receiver, dicomfs.dimse.scp, dicomfs.demo.scp\n"
        "import dicomfs.app.compose, dicomfs.dimse.strategy\n"
        "assert state() == before, state()\n"
        "from dicomfs.dimse import patches\n"
        "patches.install(); patches.install()\n"
        "print(repr(before)); print(repr(state()))\n"
    )
    assert result.returncode == 0, result.stderr
    before, after = (ast.literal_eval(line) for line in result.stdout.splitlines())
    # stock after every import; installed: our reads, reactor clock, C-FIND receive, quiet handlers
    assert before == ("pynetdicom.transport", True, False, False, True, "pynetdicom.dimse", "standard")
    assert after == ("dicomfs.dimse.patches", False, True, True, False, "dicomfs.dimse.findrecv", "none")


def test_a_changed_pynetdicom_keeps_its_stock_receive_path_with_one_warning() -> None:
    result = run_python(
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "def recv(self, count, flags=0): return bytearray()\n"
        "recv.__module__ = 'pynetdicom.transport'\n"
        "AssociationSocket.recv = recv\n"
        "from dicomfs.dimse import patches\n"
        "patches.install()\n"
        "assert AssociationSocket.recv is recv\n"
        "print(repr(state()))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("AssociationSocket.recv changed; reads left unpatched") == 1, result.stderr
    # the reactor still fits and is tuned; the switches the receiver needs are set all the same
    assert ast.literal_eval(result.stdout) == (
        "pynetdicom.transport",
        False,
        True,
        True,
        False,
        "dicomfs.dimse.findrecv",
        "none",
    )


def test_uninstall_restores_stock_receiving_and_logging_handlers() -> None:
    result = run_python(
        "before = state()\n"
        "from dicomfs.dimse import patches\n"
        "ready = lambda: vars(AssociationSocket)['ready'].fget.__module__\n"
        "assert ready() == 'pynetdicom.transport'\n"
        "patches.install(); patches.install(); patches.uninstall()\n"
        "middle = state()\n"
        "assert ready() == 'dicomfs.dimse.patches', ready()\n"
        "patches.uninstall()\n"
        "assert state() == before, state()\n"
        "assert ready() == 'pynetdicom.transport', ready()\n"
        "print(repr(middle))\n"
    )
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout)[5:] == ("dicomfs.dimse.findrecv", "none")


def test_with_pynetdicom_logging_on_its_handlers_stay() -> None:
    result = run_python(
        "import logging; logging.getLogger('pynetdicom').setLevel(logging.DEBUG)\n"
        "from dicomfs.dimse import patches\n"
        "patches.install()\n"
        "print(repr(state()))\n"
    )
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout)[5:] == ("dicomfs.dimse.findrecv", "standard")


def test_a_pynetdicom_without_chunked_receiving_is_refused_clearly() -> None:
    result = run_python(
        "del _config.STORE_RECV_CHUNKED_DATASET\nfrom dicomfs.dimse import patches\npatches.install()\n"
    )
    assert result.returncode != 0
    assert "has no _config.STORE_RECV_CHUNKED_DATASET" in result.stderr, result.stderr
