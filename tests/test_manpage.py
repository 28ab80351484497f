"""dicomfs(1) is rendered from the option table, committed, and formats without warnings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dicomfs.app.manpage import format_manpage
from dicomfs.app.options import OPTIONS

PAGE = Path(__file__).resolve().parent.parent / "docs" / "dicomfs.1"


def test_committed_man_page_is_current() -> None:
    """Refresh with: python -m dicomfs.app.manpage > docs/dicomfs.1"""
    assert PAGE.read_text(encoding="utf-8") == format_manpage()


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_formats_cleanly_and_names_every_option() -> None:
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-P", "-cbou", str(PAGE)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr == ""
    text = result.stdout.replace("\u2010", "-").replace("\u2212", "-")
    for option in OPTIONS:
        assert option.syntax in text
