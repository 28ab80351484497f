"""The rules of the house (issue #10), checked on the source text: no module of dicomfs is imported.

Each package's modules are parsed with :mod:`ast` and every ``import`` they contain (at the top, in
functions, under ``TYPE_CHECKING``) is held against their package's rules:

- ``dicomfs/fuse`` (the FUSE front end) never imports pynetdicom, pydicom or ``dicomfs.dimse``;
- ``dicomfs/core`` (the engine) imports neither mfusepy nor pynetdicom, nor ``dicomfs.views``,
  ``dicomfs.fuse``, ``dicomfs.app`` or ``dicomfs.dimse``;
- ``dicomfs/views`` never imports pynetdicom, ``dicomfs.dimse``, ``dicomfs.fuse`` or mfusepy;
- ``dicomfs/dimse`` never imports ``dicomfs.fuse``, mfusepy, ``dicomfs.views`` or ``dicomfs.app``;
- no module is over 400 lines.

Only a module's own imports are checked: the rules compose (fuse may import views and core, which
import no DIMSE), so what a package reaches through another is checked there.

``duplicates`` (a tool of the development machine, not part of the project: the test is skipped
where it is missing) must find no repeated code in dicomfs/ but runs of constructor assignments.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dicomfs"
MAX_LINES = 400


@dataclass(frozen=True)
class Rule:
    """Modules under ``package`` (a dotted name) import none of ``forbidden`` (dotted prefixes)."""

    package: str
    forbidden: tuple[str, ...]


RULES = {
    "fuse-no-dimse": Rule("dicomfs.fuse", ("pynetdicom", "pydicom", "dicomfs.dimse")),
    "core-no-frontend-no-dimse": Rule(
        "dicomfs.core",
        ("mfusepy", "pynetdicom", "pydicom", "dicomfs.views", "dicomfs.fuse", "dicomfs.app", "dicomfs.dimse"),
    ),
    "views-no-dimse": Rule(
        "dicomfs.views", ("pynetdicom", "pydicom", "dicomfs.dimse", "dicomfs.fuse", "mfusepy")
    ),
    "dimse-no-frontend": Rule("dicomfs.dimse", ("dicomfs.fuse", "mfusepy", "dicomfs.views", "dicomfs.app")),
}
LINES_RULE = f"at-most-{MAX_LINES}-lines"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """(line, dotted module name) of every import in ``path`` (module ``name``), relative imports
    resolved.

    ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a module); ``import a.b`` yields
    ``a.b``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name.split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _dynamic_import(node):
            # importlib.import_module("x") / __import__("x"): imports all the same
            target = node.args[0]
            yield node.lineno, target.value if isinstance(target, ast.Constant) else "<computed>"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _dynamic_import(call: ast.Call) -> bool:
    function = call.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    return name in {"import_module", "__import__"} and bool(call.args)


def is_within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def broken_rules(path: Path, name: str) -> dict[str, list[str]]:
    """Rule -> what breaks it ("line 12: pynetdicom.evt", "647 lines"), for one module."""
    found: dict[str, list[str]] = {}
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if lines > MAX_LINES:
        found[LINES_RULE] = [f"{lines} lines"]
    for rule_name, rule in RULES.items():
        if not is_within(name, rule.package):
            continue
        for line, module in imported_modules(path, name):
            if module == "<computed>" or any(is_within(module, prefix) for prefix in rule.forbidden):
                found.setdefault(rule_name, []).append(f"line {line}: {module}")
    return found


def violations() -> dict[tuple[str, str], list[str]]:
    """(module relative to the repository, rule) -> what breaks it, over all of dicomfs/."""
    return {
        (str(path.relative_to(ROOT)), rule): what
        for path in sorted(PACKAGE.rglob("*.py"))
        for rule, what in broken_rules(path, module_name(path)).items()
    }


def test_the_checker_sees_imports_of_every_kind(tmp_path: Path) -> None:
    """Plain, from, relative, function-local and dynamic imports all count (so the rules can fail)."""
    sample = tmp_path / "probe.py"
    sample.write_text(
        "import pynetdicom.evt\n"
        "from ..dimse import client\n"
        "from . import ops\n"
        "def f() -> None:\n"
        "    from pydicom import dcmread\n"
        "importlib.import_module('pynetdicom')\n" + "\n" * (MAX_LINES - 1),
        encoding="utf-8",
    )
    modules = {module for _line, module in imported_modules(sample, "dicomfs.fuse.probe")}
    assert {"pynetdicom.evt", "dicomfs.dimse.client", "dicomfs.fuse.ops", "pydicom.dcmread"} <= modules
    assert broken_rules(sample, "dicomfs.fuse.probe") == {
        LINES_RULE: [f"{MAX_LINES + 5} lines"],
        "fuse-no-dimse": [
            "line 1: pynetdicom.evt",
            "line 2: dicomfs.dimse",
            "line 2: dicomfs.dimse.client",
            "line 5: pydicom",
            "line 5: pydicom.dcmread",
            "line 6: pynetdicom",
        ],
    }
    assert broken_rules(sample, "dicomfs.app.probe") == {LINES_RULE: [f"{MAX_LINES + 5} lines"]}
    assert not is_within("dicomfs.dimsex", "dicomfs.dimse")


def test_rules_of_the_house() -> None:
    found = violations()
    new = {key: found[key] for key in sorted(found)}
    assert not new, "modules break the rules of the house (tests/test_layout.py):\n" + "\n".join(
        f"  {module}: {rule}: {'; '.join(what)}" for (module, rule), what in new.items()
    )


_PAIR = re.compile(r"^D\d+ (?P<a>\S+?):\d+-\d+ ~ (?P<b>\S+?):\d+-\d+")


def duplicate_pairs() -> set[frozenset[str]]:
    """The pairs of files of dicomfs/ in which ``duplicates`` finds repeated code."""
    tool = shutil.which("duplicates")
    if tool is None:
        pytest.skip("the duplicates tool is not on PATH (it is not part of the project)")
    result = subprocess.run(
        [tool, "--repo", str(PACKAGE), "--most", "200", "--seconds", "120"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = result.stdout
    assert "incomplete:" not in report, report
    # Rows the tool marks "boilerplate" (runs of constructor assignments, self.x = x) are not logic.
    rows = [line for line in report.splitlines() if "boilerplate" not in line]
    return {frozenset({m["a"], m["b"]}) for m in map(_PAIR.match, rows) if m}


def test_duplicates_finds_no_new_repeated_code() -> None:
    new = duplicate_pairs()
    assert not new, "repeated code (run `duplicates --repo dicomfs`): " + "; ".join(
        " ~ ".join(sorted(pair)) for pair in new
    )
