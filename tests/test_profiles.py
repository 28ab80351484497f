"""Profiles (dicomfs.app.profiles): [pacs.NAME] tables, lookup order, layering under the command line,
and one line naming the file and the key for everything wrong in a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomfs.app import profiles
from dicomfs.app.commandline import parse_args
from dicomfs.app.options import OptionError

GOOD = """
# a comment
[pacs.main]
serveraddress = "pacs.example.org"
serverport = 11112
aec = "PACS"
aet = "ME"
retrieve = "get"
cachesize = "20G"
timeout = 2.5
ttl = 0
tls = false
allow_other = true
umask = "027"

[pacs."other-1.b"]
aec = "OTHER"
"""


@pytest.fixture(autouse=True)
def _config_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A user config directory of the test's own, and no system file."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(profiles, "SYSTEM_CONFIG", str(tmp_path / "etc" / "config.toml"))
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def user_file(tmp_path: Path, text: str) -> Path:
    return write(tmp_path / "xdg" / "dicomfs" / "config.toml", text)


def test_a_profile_holds_any_mount_option(tmp_path: Path) -> None:
    user_file(tmp_path, GOOD)
    opts = parse_args(["main", "/m"])
    assert (opts.serveraddress, opts.serverport) == ("pacs.example.org", 11112)
    assert (opts.aec, opts.aet, opts.retrieve) == ("PACS", "ME", "get")
    assert (opts.cachesize, opts.timeout, opts.ttl, opts.tls) == (20 * 1024**3, 2.5, 0, False)
    assert opts.umask == 0o027 and dict(opts.fuse_options) == {"allow_other": True}
    assert opts.profile == "main" and opts.mountpoint == "/m"
    assert parse_args(["/m", "-o", "profile=main"]) == opts


def test_the_command_line_overrides_the_profile(tmp_path: Path) -> None:
    user_file(tmp_path, GOOD)
    opts = parse_args(["main", "/m", "-o", "serverport=104,retrieve=move,allow_other=0", "aet=YOU"])
    assert (opts.serverport, opts.retrieve, opts.aet, opts.aec) == (104, "move", "YOU", "PACS")
    assert dict(opts.fuse_options) == {}


def test_user_file_first_then_system_file(tmp_path: Path) -> None:
    user_file(tmp_path, '[pacs.both]\naec = "USER"\n')
    write(tmp_path / "etc" / "config.toml", '[pacs.both]\naec = "SYSTEM"\n[pacs.sys]\naec = "SYS"\n')
    assert parse_args(["both", "/m"]).aec == "USER"
    assert parse_args(["sys", "/m"]).aec == "SYS"
    listed = profiles.all_profiles()
    assert [(p.name, p.values["aec"]) for p in listed] == [("both", "USER"), ("sys", "SYS")]


def test_xdg_config_home_relative_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative")
    write(tmp_path / "home" / ".config" / "dicomfs" / "config.toml", '[pacs.home]\naec = "HOME"\n')
    assert parse_args(["home", "/m"]).aec == "HOME"


def test_config_option_names_the_only_file(tmp_path: Path) -> None:
    user_file(tmp_path, '[pacs.p]\naec = "USER"\n')
    other = write(tmp_path / "other.toml", '[pacs.p]\naec = "OTHER"\n')
    assert parse_args(["p", "/m", "-o", f"config={other}"]).aec == "OTHER"


def test_listing(tmp_path: Path) -> None:
    path = user_file(tmp_path, GOOD)
    text = profiles.format_profiles(profiles.all_profiles())
    header, main, other = text.splitlines()
    assert header.split() == ["NAME", "PACS", "OPTIONS", "FILE"]
    assert main.split()[:2] == ["main", "PACS@pacs.example.org:11112"]
    assert "retrieve=get" in main and "cachesize=20G" in main and main.endswith(str(path))
    assert other.split()[:3] == ["other-1.b", "OTHER@localhost:104", "-"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pacs.a]\nserverport = \n", "not valid TOML: "),
        ("[pacs.a\n", "not valid TOML: "),
        ("\xff", "not valid TOML"),
        ("[pacs.a]\nsererport = 1\n", "[pacs.a] unknown option 'sererport' (did you mean 'serverport'?)"),
        ("[pacs.a]\nserverport = 70000\n", "[pacs.a] serverport: '70000' is not a port number (1-65535)"),
        ('[pacs.a]\nserverport = "abc"\n', "[pacs.a] serverport: 'abc' is not a port number"),
        ("[pacs.a]\nserverport = true\n", "[pacs.a] serverport: 'true' is not a port number"),
        ('[pacs.a]\nretrieve = "fetch"\n', "[pacs.a] retrieve: 'fetch' is not one of move, get"),
        ('[pacs.a]\naec = ""\n', "[pacs.a] aec: empty value"),
        ("[pacs.a]\naec = [1, 2]\n", "[pacs.a] aec: must be a string, a number or true/false"),
        ("[pacs.a]\n[pacs.a.sub]\nx = 1\n", "[pacs.a] sub: must be a string, a number or true/false"),
        ('[pacs.a]\nprofile = "b"\n', "[pacs.a] profile: not allowed in a profile"),
        ('[pacs.a]\nconfig = "/x"\n', "[pacs.a] config: not allowed in a profile"),
        ("[pacs.a]\numask = 18\n", "[pacs.a] umask: '18' is not an octal mask"),
        ('[pacs."a b"]\naec = "X"\n', "[pacs.a b]: a profile name is letters, digits"),
        ("[server]\nx = 1\n", "unknown table or key 'server' (profiles are [pacs.NAME] tables)"),
        ('pacs = "x"\n', "pacs must hold [pacs.NAME] tables"),
        ('[pacs]\na = "x"\n', "pacs.a must be a table: [pacs.a]"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "xdg" / "dicomfs" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_bytes(text.encode("latin-1"))
    for call in (lambda: parse_args(["a", "/m"]), profiles.all_profiles):
        with pytest.raises(OptionError) as excinfo:
            call()
        line = str(excinfo.value)
        assert line.startswith(f"{path}: ") and message in line and "\n" not in line, line


def test_missing_profile_and_missing_config_file(tmp_path: Path) -> None:
    user_file(tmp_path, GOOD)
    with pytest.raises(OptionError, match=r"^no profile 'nosuch' in .*xdg/dicomfs/config.toml or "):
        parse_args(["nosuch", "/m"])
    with pytest.raises(OptionError, match=r"^config: '.*/missing.toml' does not exist"):
        parse_args(["main", "/m", "-o", f"config={tmp_path}/missing.toml"])
    with pytest.raises(OptionError, match=r"^two profiles given: 'main' and profile=other-1.b"):
        parse_args(["main", "/m", "-o", "profile=other-1.b"])


def test_no_config_file_at_all_is_no_profiles() -> None:
    assert profiles.all_profiles() == []
