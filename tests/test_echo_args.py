"""Pure: ``dicomfs echo``'s command line goes through the mount's option table."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomfs.app.echo import format_step, parse_echo_args, split_echo_args
from dicomfs.app.options import HelpRequested, OptionError
from dicomfs.dimse.diagnose import Step


@pytest.mark.parametrize(
    ("argv", "profile", "words", "as_json"),
    [
        ([], None, [], False),
        (["--json"], None, [], True),
        (["-o", "aec=PACS", "--json"], None, ["-o", "aec=PACS"], True),
        (["-oaec=PACS,aet=ME"], None, ["-oaec=PACS,aet=ME"], False),
        (["NAME", "-o", "aec=PACS"], "NAME", ["-o", "aec=PACS"], False),
        (["aec=PACS,aet=ME", "-d"], None, ["aec=PACS,aet=ME", "-d"], False),  # historic trailing words
        (["-o"], None, ["-o", ""], False),
    ],
)
def test_split(argv: list[str], profile: str | None, words: list[str], as_json: bool) -> None:
    assert split_echo_args(argv) == (profile, words, as_json)


def test_two_sources_are_a_usage_error() -> None:
    with pytest.raises(OptionError, match="at most one SOURCE"):
        split_echo_args(["ONE", "TWO"])


def test_options_are_those_of_a_mount() -> None:
    opts, as_json = parse_echo_args(["-o", "serveraddress=pacs,serverport=1040,aec=PACS", "aet=ME", "--json"])
    assert (opts.serveraddress, opts.serverport, opts.aec, opts.aet, as_json) == (
        "pacs",
        1040,
        "PACS",
        "ME",
        True,
    )
    with pytest.raises(OptionError, match="serverport"):
        parse_echo_args(["-o", "serverport=70000"])
    with pytest.raises(OptionError, match="unknown option 'serverprot'"):
        parse_echo_args(["-o", "serverprot=104"])


def test_a_profile_and_the_options_given_here_as_for_a_mount(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[pacs.main]\nserveraddress = "pacs.example.org"\naec = "PACS"\naet = "ME"\n')
    opts, _ = parse_echo_args(["main", "-o", f"config={config},aet=OTHER"])
    assert (opts.serveraddress, opts.aec, opts.aet, opts.profile) == (
        "pacs.example.org",
        "PACS",
        "OTHER",
        "main",
    )
    opts, _ = parse_echo_args(["-o", f"profile=main,config={config}"])
    assert (opts.serveraddress, opts.aet) == ("pacs.example.org", "ME")
    with pytest.raises(OptionError, match="no profile 'missing'"):
        parse_echo_args(["missing", "-o", f"config={config}"])


def test_a_source_written_as_an_address() -> None:
    opts, _ = parse_echo_args(["PACS@pacs.example.org:11112"])
    assert (opts.aec, opts.serveraddress, opts.serverport) == ("PACS", "pacs.example.org", 11112)


def test_help() -> None:
    with pytest.raises(HelpRequested, match="usage: dicomfs echo"):
        parse_echo_args(["-o", "aec=X", "-h"])


@pytest.mark.parametrize(
    ("step", "line"),
    [
        (Step("echo", True, "C-ECHO answered Success"), "  ok    echo      C-ECHO answered Success"),
        (Step("move", False, "no", "do this"), "  FAIL  move      no -> fix: do this"),
        (Step("move", True, "matched nothing", "retry"), "  note  move      matched nothing -> fix: retry"),
    ],
)
def test_one_line_per_step(step: Step, line: str) -> None:
    assert format_step(step) == line
