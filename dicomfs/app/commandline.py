"""The ``dicomfs`` command line: argv -> validated ``MountOptions``, with profiles and mount(8) words.

The historic invocation must keep working verbatim, so options are accepted both after ``-o``
(repeatable, attached or detached) and as trailing ``key=value[,key=value]`` words::

    dicomfs.py /mnt/pacs -o serveraddress=localhost,serverport=1040,localport=11112 aec=aec,aet=aet

``[SOURCE] MOUNTPOINT``: the optional SOURCE is what mount(8) passes as the fstab's first field, a
profile name or ``AEC@host:port`` (``dicomfs.app.mounthelper``). Values come in layers, each
overriding the one before: the option table's defaults, the profile, the SOURCE word, then the
command line's own options.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dicomfs.app.mounthelper import check_profile_name, is_address, is_ignored_word, split_address
from dicomfs.app.options import (
    OPTIONS_BY_NAME,
    HelpRequested,
    MountOptions,
    OptionError,
    convert_option,
)
from dicomfs.app.profiles import load_profile
from dicomfs.app.usage import format_help
from dicomfs.app.valuekinds import parse_path

# A trailing positional word is an option list when it starts with "identifier=".
_OPTION_WORD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SHORT_FLAGS = frozenset("fds")

#: Looks up a profile: (name, config file or "") -> option values by name, already validated.
ProfileLookup = Callable[[str, str], Mapping[str, Any]]


def _split_option_words(words: Sequence[str]) -> dict[str, str | None]:
    """``["a=1,b", "a=2"]`` -> ``{"a": "2", "b": None}``: later duplicates win, like mount(8)."""
    raw: dict[str, str | None] = {}
    for word in words:
        for item in word.split(","):
            if not item:
                continue  # tolerate "a=1,,b" and a trailing comma
            key, sep, value = item.partition("=")
            raw.pop(key, None)  # keep insertion order = order of last occurrence
            raw[key] = value if sep else None
    return raw


def _convert_words(words: Sequence[str]) -> dict[str, Any]:
    """Option words -> typed values by name; the words mount(8) and fstab add are dropped."""
    values: dict[str, Any] = {}
    for key, raw in _split_option_words(words).items():
        if not is_ignored_word(key, raw):
            values[key] = convert_option(key, raw)[1]
    return values


def _scan_argv(argv: Sequence[str]) -> tuple[list[str], list[str], set[str]]:
    """Split argv into positional words, option words and short flags; handles help and version."""
    positionals: list[str] = []
    option_words: list[str] = []
    flags: set[str] = set()
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            raise HelpRequested(format_help())
        if arg in ("-V", "--version"):
            from dicomfs.app.versions import version_line  # loads libfuse: only when asked

            raise HelpRequested(version_line())
        if arg == "--":
            positionals.extend(args)
        elif arg == "-o":
            word = next(args, None)
            if word is None:
                raise OptionError("-o needs an argument (-o name=value,...)")
            option_words.append(word)
        elif arg.startswith("-o"):
            option_words.append(arg[2:])
        elif arg.startswith("-") and len(arg) > 1:
            if not set(arg[1:]) <= _SHORT_FLAGS:
                raise OptionError(f"unknown command-line flag '{arg}' (see --help)")
            flags.update(arg[1:])
        elif _OPTION_WORD_RE.match(arg):
            option_words.append(arg)  # historic form: options as trailing words
        else:
            positionals.append(arg)
    return positionals, option_words, flags


def _source_values(source: str) -> dict[str, Any]:
    """The option values a SOURCE word stands for: ``aec``, host and port, or ``profile``."""
    try:
        if not is_address(source):
            return {"profile": check_profile_name(source)}
        address = split_address(source)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    return {key: convert_option(key, raw)[1] for key, raw in address.items()}


def _layered_values(source: str | None, given: dict[str, Any], profiles: ProfileLookup) -> dict[str, Any]:
    """Profile, then the SOURCE word, then the command line's own options: later layers win."""
    from_source = _source_values(source) if source is not None else {}
    profile = from_source.get("profile", "")
    if profile and given.get("profile", profile) != profile:
        raise OptionError(f"two profiles given: '{profile}' and profile={given['profile']}")
    profile = profile or given.get("profile", "")
    from_profile = dict(profiles(profile, given.get("config", ""))) if profile else {}
    return {**from_profile, **from_source, **given}


def parse_args(argv: Sequence[str], profiles: ProfileLookup | None = None) -> MountOptions:
    """argv (without the program name) -> validated ``MountOptions``.

    ``[SOURCE] MOUNTPOINT``: SOURCE is a profile name or ``AEC@host:port`` (mount(8) passes the
    fstab's first field there). ``profiles`` looks profiles up (default:
    ``dicomfs.app.profiles.load_profile``, reading the config files). Raises ``OptionError``
    for anything wrong and ``HelpRequested`` for ``-h``/``--version``.
    """
    positionals, option_words, flags = _scan_argv(argv)
    if not positionals:
        raise OptionError("missing mountpoint")
    if len(positionals) > 2:
        extra = " ".join(repr(word) for word in positionals[2:])
        raise OptionError(f"too many arguments: {extra} (usage: dicomfs [SOURCE] MOUNTPOINT)")
    source = positionals[0] if len(positionals) == 2 else None
    layered = _layered_values(source, _convert_words(option_words), profiles or load_profile)
    values: dict[str, Any] = {}
    fuse_options: dict[str, str | bool] = {}
    for key, value in layered.items():
        if not OPTIONS_BY_NAME[key].fuse:
            values[key] = value
        elif value is not False:  # allow_other=0 means "do not pass it"
            fuse_options[key] = value
    if fuse_options.get("allow_other") and fuse_options.get("allow_root"):
        raise OptionError("allow_other and allow_root are mutually exclusive")
    modes = [word for word in _split_option_words(option_words) if word in ("ro", "rw")]
    if values.get("upload") and modes[-1:] == ["ro"]:
        # mount(8) adds "rw" unless the fstab line says "ro": a read-only mount cannot take uploads.
        raise OptionError("upload=on needs a writable mount, but 'ro' was given: drop 'ro' or upload=on")
    debug = "d" in flags
    return MountOptions(
        mountpoint=parse_path(positionals[-1]),
        foreground=debug or "f" in flags,
        debug=debug,
        single_threaded="s" in flags,
        fuse_options=fuse_options,
        **values,
    )
