"""Table tests for dicomfs.app.options and .commandline: argv -> MountOptions, errors, help, README
table, environment (dicomfs.app.preflight)."""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from dicomfs import __version__
from dicomfs.app.commandline import parse_args
from dicomfs.app.options import (
    OPTIONS,
    HelpRequested,
    MountOptions,
    OptionError,
    with_overrides,
)
from dicomfs.app.preflight import check_environment
from dicomfs.app.usage import format_help, format_markdown_table

HISTORIC = (
    "/mnt/mountpoint -o serveraddress=localhost,serverport=1040,localport=11112 "
    "aec=aec,aet=aet,cachedir=/tmp/dcm-cache"
)
# Fields that are command-line flags or derived, not rows of the option table.
NON_TABLE_FIELDS = {"mountpoint", "foreground", "debug", "single_threaded", "fuse_options"}


@pytest.fixture(autouse=True)
def _fixed_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make the default cachedir independent of the machine running the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)  # no profiles but the tests' own


def parse(command: str) -> MountOptions:
    return parse_args(shlex.split(command))


# --------------------------------------------------------------------------- good command lines


def test_historic_invocation_verbatim(tmp_path: Path) -> None:
    opts = parse(HISTORIC)
    assert opts == MountOptions(
        mountpoint="/mnt/mountpoint",
        serveraddress="localhost",
        serverport=1040,
        aec="aec",
        aet="aet",
        localport=11112,
        localaddress="",
        cachedir="/tmp/dcm-cache",
        retrieve="move",
        timeout=30.0,
        ttl=300.0,
        cachesize=10 * 1024**3,
        model="study",
        maxassoc=4,
        tls=False,
        tlscert="",
        tlskey="",
        tlsca="",
        foreground=False,
        debug=False,
        single_threaded=False,
        fuse_options={},
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        # the historic space before aec=, and the same options in every other accepted spelling
        (HISTORIC, {"serverport": 1040, "aec": "aec", "aet": "aet"}),
        ("/m -o serverport=1040 -o aec=aec -o aet=aet", {"serverport": 1040, "aec": "aec"}),
        ("-o serverport=1040 /m aec=aec", {"serverport": 1040, "aec": "aec"}),
        ("/m -oserverport=1040,aec=X", {"serverport": 1040, "aec": "X"}),
        ("/m serverport=1040 aet=ME", {"serverport": 1040, "aet": "ME"}),
        # duplicates: the last one wins, across -o words and trailing words
        ("/m -o serverport=1 -o serverport=2", {"serverport": 2}),
        ("/m -o serverport=1,serverport=3 serverport=4", {"serverport": 4}),
        ("/m -o serverport=1,,aec=A,", {"serverport": 1, "aec": "A"}),
        # flags
        ("/m -f", {"foreground": True, "debug": False}),
        ("-d /m", {"foreground": True, "debug": True}),
        ("/m -s", {"single_threaded": True, "foreground": False}),
        ("/m -fs", {"single_threaded": True, "foreground": True}),
        # value kinds
        ("/m -o serveraddress=192.0.2.1", {"serveraddress": "192.0.2.1"}),
        ("/m -o serveraddress=[::1]", {"serveraddress": "::1"}),
        ("/m -o localaddress=127.0.0.1", {"localaddress": "127.0.0.1"}),
        ("/m -o serverport=65535,localport=1", {"serverport": 65535, "localport": 1}),
        ("/m -o retrieve=get,model=patient", {"retrieve": "get", "model": "patient"}),
        ("/m -o timeout=2.5,ttl=0", {"timeout": 2.5, "ttl": 0.0}),
        ("/m -o maxassoc=1", {"maxassoc": 1}),
        ("/m -o maxassoc=64", {"maxassoc": 64}),
        ("/m -o cachesize=20G", {"cachesize": 20 * 1024**3}),
        ("/m -o cachesize=512M", {"cachesize": 512 * 1024**2}),
        ("/m -o cachesize=100k", {"cachesize": 100 * 1024}),
        ("/m -o cachesize=1.5GiB", {"cachesize": 3 * 512 * 1024**2}),
        ("/m -o cachesize=2tb", {"cachesize": 2 * 1024**4}),
        ("/m -o cachesize=12345", {"cachesize": 12345}),
        ("/m -o cachesize=100B", {"cachesize": 100}),
        ("/m -o tls", {"tls": True}),
        ("/m -o tls=yes", {"tls": True}),
        ("/m -o tls=1,tls=false", {"tls": False}),
        ("/m -o tls=ON", {"tls": True}),
        ("/m -o tlscert=/c.pem,tlskey=/k.pem,tlsca=/ca.pem", {"tlscert": "/c.pem", "tlsca": "/ca.pem"}),
        # AE titles: 16 characters, inner spaces and punctuation are fine; outer spaces are not significant
        ("/m -o aet=ABCDEFGHIJKLMNOP", {"aet": "ABCDEFGHIJKLMNOP"}),
        ("/m -o 'aet=MY AE_1-x.y'", {"aet": "MY AE_1-x.y"}),
        ("/m -o 'aec= PACS '", {"aec": "PACS"}),
        # SOURCE as the PACS: AEC@host[:port]; the command line's own options win over it
        ("PACS@pacs.example.org:1040 /m", {"aec": "PACS", "serveraddress": "pacs.example.org"}),
        ("PACS@pacs.example.org:1040 /m", {"serverport": 1040, "profile": ""}),
        ("'MY PACS@[::1]:11112' /m", {"aec": "MY PACS", "serveraddress": "::1", "serverport": 11112}),
        ("A@B@host /m", {"aec": "A@B", "serveraddress": "host", "serverport": 104}),
        ("PACS@host:1 /m -o serverport=2,aec=OTHER", {"serverport": 2, "aec": "OTHER"}),
        # modes and owner
        ("/m -o umask=077", {"umask": 0o077}),
        ("/m -o umask=0", {"umask": 0}),
        ("/m -o umask=0027", {"umask": 0o027}),
        ("/m -o uid=1000,gid=50", {"uid": 1000, "gid": 50}),
        ("/m -o uid=root,gid=root", {"uid": 0, "gid": 0}),
        ("/m -o nonempty", {"nonempty": True}),
    ],
)
def test_parse_good(command: str, expected: dict[str, Any]) -> None:
    opts = parse(command)
    assert {name: getattr(opts, name) for name in expected} == expected


def test_paths_are_expanded_and_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DCMROOT", "/srv/dcm")
    monkeypatch.chdir(tmp_path)
    opts = parse("mnt -o cachedir=$DCMROOT/cache,tlsca=~/ca.pem tlscert=rel/c.pem")
    assert opts.mountpoint == str(tmp_path / "mnt")
    assert opts.cachedir == "/srv/dcm/cache"
    assert opts.tlsca == str(tmp_path / "home" / "ca.pem")
    assert opts.tlscert == str(tmp_path / "rel" / "c.pem")
    assert parse("-f -- -odd").mountpoint == str(tmp_path / "-odd")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("/m -oallow_other", {"allow_other": True}),
        ("/m -o allow_root,default_permissions", {"allow_root": True, "default_permissions": True}),
        ("/m -o auto_unmount,fsname=pacs@host", {"auto_unmount": True, "fsname": "pacs@host"}),
        ("/m -o allow_other=1,allow_other=0", {}),
        ("/m allow_other=yes", {"allow_other": True}),
        ("/m -o noexec", {"noexec": True}),
    ],
)
def test_fuse_pass_through(command: str, expected: dict[str, Any]) -> None:
    opts = parse(command)
    assert dict(opts.fuse_options) == expected
    assert isinstance(opts.fuse_options, MappingProxyType)


# --------------------------------------------------------------------------- bad command lines


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("/m -o serverport=0", "serverport: '0' is not a port number (1-65535)"),
        ("/m -o serverport=70000", "serverport: '70000' is not a port number (1-65535)"),
        ("/m -o serverport=abc", "serverport: 'abc' is not a port number (1-65535)"),
        ("/m -o localport=-1", "localport: '-1' is not a port number (1-65535)"),
        ("/m -o localport=1e3", "localport: '1e3' is not a port number (1-65535)"),
        ("/m -o cachesize=lots", "cachesize: 'lots' is not a size"),
        ("/m -o cachesize=10X", "cachesize: '10X' is not a size"),
        ("/m -o cachesize=0", "cachesize: '0' is not a size"),
        ("/m -o cachesize=-5G", "cachesize: '-5G' is not a size"),
        ("/m -o retrieve=fetch", "retrieve: 'fetch' is not one of move, get"),
        ("/m -o model=series", "model: 'series' is not one of study, patient"),
        ("/m -o retrieve=MOVE", "retrieve: 'MOVE' is not one of move, get"),
        ("/m -o aet=ABCDEFGHIJKLMNOPQ", "aet: AE title must be 1-16 characters"),
        ("/m -o 'aet=   '", "aet: AE title must be 1-16 characters"),
        ("/m -o aec=BACK\\\\SLASH", "aec: AE title must be 1-16 characters"),
        ("/m -o aec=caf\u00e9", "aec: AE title must be 1-16 characters"),
        ("/m -o 'aec=TAB\tX'", "aec: AE title must be 1-16 characters"),
        ("/m -o timeout=0", "timeout: must be a positive number of seconds"),
        ("/m -o timeout=-1", "timeout: must be a positive number of seconds"),
        ("/m -o timeout=soon", "timeout: must be a positive number of seconds"),
        ("/m -o timeout=inf", "timeout: must be a positive number of seconds"),
        ("/m -o timeout=nan", "timeout: must be a positive number of seconds"),
        ("/m -o ttl=-1", "ttl: must be a number of seconds >= 0"),
        ("/m -o maxassoc=0", "maxassoc: '0' is not a whole number from 1 to 64"),
        ("/m -o maxassoc=65", "maxassoc: '65' is not a whole number from 1 to 64"),
        ("/m -o tls=maybe", "tls: 'maybe' is not one of"),
        ("/m -o 'serveraddress=my host'", "serveraddress: 'my host' is not a host name"),
        ("/m -o foo", "unknown option 'foo'"),
        ("/m -o foo=1", "unknown option 'foo'"),
        ("/m -o severport=1", "unknown option 'severport' (did you mean 'serverport'?)"),
        ("/m -o Aet=X", "unknown option 'Aet'"),
        ("/m -o aet=", "aet: empty value (aet=AE)"),
        ("/m aec=", "aec: empty value (aec=AE)"),
        ("/m -o fsname=", "fsname: empty value"),
        ("/m -o aet", "aet: needs a value (aet=AE)"),
        ("/m -o cachedir", "cachedir: needs a value"),
        ("/m -o", "-o needs an argument"),
        ("/m -x", "unknown command-line flag '-x'"),
        ("/m --foreground", "unknown command-line flag '--foreground'"),
        ("", "missing mountpoint"),
        ("-f -o aet=X", "missing mountpoint"),
        ("/a /b", "'/a' is neither a profile name"),
        ("/a -o aet=X /b /c", "too many arguments: '/c'"),
        ("nosuch /m", "no profile 'nosuch' in "),
        ("PACS@ /m", "source 'PACS@' is not AEC@host:port"),
        ("PACS@host:port /m", "serverport: 'port' is not a port number"),
        ("@host:104 /m", "source '@host:104' is not AEC@host:port"),
        ("WAY-TOO-LONG-AE-TITLE@host /m", "aec: AE title must be 1-16 characters"),
        ("/m -o profile=a/b", "profile: 'a/b' is neither a profile name"),
        ("/m -o umask=999", "umask: '999' is not an octal mask"),
        ("/m -o umask=01000", "umask: '01000' is not an octal mask"),
        ("/m -o uid=-1", "uid: '-1' is neither a user ID nor a user name"),
        ("/m -o uid=4294967295", "uid: '4294967295' is not a user ID"),
        ("/m -o gid=no-such-group-here", "gid: 'no-such-group-here' is neither a group ID nor a group name"),
        ("/m -o nonempty=perhaps", "nonempty: 'perhaps' is not one of"),
        ("/m -o allow_other,allow_root", "allow_other and allow_root are mutually exclusive"),
    ],
)
def test_parse_bad(command: str, message: str) -> None:
    with pytest.raises(OptionError) as excinfo:
        parse(command)
    text = str(excinfo.value)
    assert text.startswith(message)
    assert "\n" not in text


MOUNT_WORDS = (
    "ro,rw,defaults,_netdev,nofail,noauto,auto,user,users,nouser,owner,group,dev,nodev,suid,nosuid,"
    "exec,sync,async,dirsync,atime,noatime,relatime,strictatime,lazytime,nodiratime,silent,loud,"
    "x-systemd.automount,x-systemd.mount-timeout=30,x-gvfs-show,comment=systemd.automount,user=alice"
)


@pytest.mark.parametrize(
    "command",
    [
        f"/m -o {MOUNT_WORDS}",
        # as mount.fuse3 runs an fstab line: SOURCE MOUNTPOINT -o <libmount's list>,dev,suid
        "PACS@host:104 /m -o rw,relatime,allow_other,exec,suid,dev,dev,suid",
    ],
)
def test_words_of_mount_and_fstab_are_accepted_and_ignored(command: str) -> None:
    opts = parse(command)
    fuse = {"allow_other": True} if "allow_other" in command else {}
    assert dict(opts.fuse_options) == fuse
    expected = MountOptions(mountpoint="/m", fuse_options=fuse)
    if "@" in command:
        expected = with_overrides(expected, aec="PACS", serveraddress="host")
    assert opts == expected


def test_last_duplicate_wins_before_validation() -> None:
    """Last wins before validation: a typo corrected later on the line is accepted."""
    assert parse("/m -o serverport=abc serverport=1040").serverport == 1040


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_requested(flag: str) -> None:
    with pytest.raises(HelpRequested) as excinfo:
        parse(f"/m -o aet=X {flag}")
    assert excinfo.value.text == format_help()
    assert not isinstance(excinfo.value, OptionError)


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_requested(flag: str) -> None:
    with pytest.raises(HelpRequested) as excinfo:
        parse_args(["/m", flag])
    assert excinfo.value.text.startswith(f"dicomfs {__version__} (pynetdicom ")
    for library in ("pydicom ", "mfusepy ", "libfuse 3."):
        assert library in excinfo.value.text


# --------------------------------------------------------------------------- defaults and the table


def test_defaults(tmp_path: Path) -> None:
    opts = parse("/m")
    assert opts == MountOptions(mountpoint="/m")
    assert (opts.serveraddress, opts.serverport, opts.aec, opts.aet) == (
        "localhost",
        104,
        "ANY-SCP",
        "DICOMFS",
    )
    assert (opts.localport, opts.localaddress, opts.retrieve, opts.model) == (11112, "", "move", "study")
    assert (opts.timeout, opts.ttl, opts.cachesize, opts.maxassoc) == (30.0, 300.0, 10 * 1024**3, 4)
    assert (opts.tls, opts.tlscert, opts.tlskey, opts.tlsca) == (False, "", "", "")
    assert (opts.foreground, opts.debug, opts.single_threaded) == (False, False, False)
    assert opts.cachedir == str(tmp_path / "home" / ".cache" / "dicomfs")
    assert dict(opts.fuse_options) == {}


@pytest.mark.parametrize(
    ("xdg", "expected"),
    [("/xdg", "/xdg/dicomfs"), ("relative/xdg", None), ("", None)],
)
def test_default_cachedir_follows_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg: str, expected: str | None
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    # The XDG base directory spec says relative (or empty) XDG_CACHE_HOME is ignored.
    assert parse("/m").cachedir == (expected or str(tmp_path / "home" / ".cache" / "dicomfs"))


def test_table_matches_dataclass() -> None:
    table = {option.name for option in OPTIONS if not option.fuse}
    fields = {f.name for f in dataclasses.fields(MountOptions)} - NON_TABLE_FIELDS
    assert table == fields
    assert len(OPTIONS) == len({option.name for option in OPTIONS})


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.default not in (None, "", False)], ids=str)
def test_table_default_round_trips(option: Any) -> None:
    """The displayed default parses back to the real default, so help never lies."""
    assert option.kind.parse(option.default_text) == option.default


def test_help_lists_every_option_and_default() -> None:
    text = format_help("dicomfs.py")
    assert text.startswith("usage: dicomfs.py ")
    for option in OPTIONS:
        assert option.syntax in text
        assert f"(default: {option.default_text})" in text
    for flag in ("-o", "-f", "-d", "-s", "--help", "--version"):
        assert flag in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_markdown_table_has_a_row_per_option() -> None:
    lines = format_markdown_table().splitlines()
    assert lines[:2] == ["| option | default | meaning |", "| --- | --- | --- |"]
    rows = lines[2:]
    assert len(rows) == len(OPTIONS)
    for option, row in zip(OPTIONS, rows, strict=True):
        assert row.startswith(f"| `{option.name}")
        assert option.default_text in row
        # "|" inside a cell (move|get) is escaped, so every row has exactly four separators
        assert row.replace("\\|", "").count("|") == 4


# --------------------------------------------------------------------------- value semantics


def test_mount_options_are_frozen() -> None:
    source = {"allow_other": True}
    opts = MountOptions(mountpoint="/m", fuse_options=source)
    source["allow_root"] = True
    assert dict(opts.fuse_options) == {"allow_other": True}
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.aet = "X"  # type: ignore[misc]
    with pytest.raises(TypeError):
        opts.fuse_options["fsname"] = "x"  # type: ignore[index]


def test_with_overrides() -> None:
    opts = parse(HISTORIC)
    changed = with_overrides(opts, serverport=4242, foreground=True)
    assert (changed.serverport, changed.foreground, changed.aet) == (4242, True, "aet")
    assert opts.serverport == 1040


# --------------------------------------------------------------------------- check_environment


def _env_opts(tmp_path: Path, **changes: Any) -> MountOptions:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir(exist_ok=True)
    base = MountOptions(mountpoint=str(mountpoint), cachedir=str(tmp_path / "cache"))
    return with_overrides(base, **changes)


def test_check_environment_creates_cachedir(tmp_path: Path) -> None:
    opts = _env_opts(tmp_path, cachedir=str(tmp_path / "a" / "b" / "cache"))
    check_environment(opts)
    assert os.path.isdir(opts.cachedir)
    assert os.stat(opts.cachedir).st_mode & 0o777 == 0o700
    check_environment(opts)  # an existing cachedir is fine


def test_check_environment_tls_ok(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("cert")
    key.write_text("key")
    check_environment(_env_opts(tmp_path, tls=True, tlscert=str(cert), tlskey=str(key)))


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing_mountpoint", "mountpoint '{tmp}/nowhere' does not exist"),
        ("file_mountpoint", "mountpoint '{tmp}/afile' is not a directory"),
        ("cachedir_under_file", "cachedir: cannot use '{tmp}/afile/sub'"),
        ("cachedir_is_file", "cachedir: cannot use '{tmp}/afile'"),
        ("tls_without_cert", "tls: needs tlscert and tlskey"),
        ("unreadable_cert", "tlscert: cannot read '{tmp}/missing.pem'"),
        ("directory_as_key", "tlskey: cannot read '{tmp}'"),
    ],
)
def test_check_environment_errors(tmp_path: Path, setup: str, message: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    cases: dict[str, dict[str, Any]] = {
        "missing_mountpoint": {"mountpoint": str(tmp_path / "nowhere")},
        "file_mountpoint": {"mountpoint": str(afile)},
        # Tests run as root, which can write anywhere; a path below a regular file can never be created.
        "cachedir_under_file": {"cachedir": str(afile / "sub")},
        "cachedir_is_file": {"cachedir": str(afile)},
        "tls_without_cert": {"tls": True},
        "unreadable_cert": {"tlscert": str(tmp_path / "missing.pem")},
        "directory_as_key": {"tlskey": str(tmp_path)},
    }
    with pytest.raises(OptionError) as excinfo:
        check_environment(_env_opts(tmp_path, **cases[setup]))
    assert str(excinfo.value).startswith(message.format(tmp=tmp_path))
