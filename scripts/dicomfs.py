#!/usr/bin/env python3
"""The historic ``dicomfs.py`` command: the same program as ``dicomfs``.

pip installs this file next to the other scripts of the environment, where Python, running any of
them, would also find it under the name ``dicomfs`` (a script's own directory comes first on
``sys.path``). So when it is imported rather than run, it steps aside for the real package.
"""

import importlib
import os
import sys


def _leave_sys_path() -> None:
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]


_leave_sys_path()
if __name__ == "__main__":
    from dicomfs.app.cli import main

    sys.exit(main())
else:
    del sys.modules[__name__]
    sys.modules[__name__] = importlib.import_module(__name__)
