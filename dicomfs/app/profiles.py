"""Named PACS: ``[pacs.NAME]`` tables of a TOML file, each holding any mount option.

::

    # ~/.config/dicomfs/config.toml  (or /etc/dicomfs/config.toml for system mounts)
    [pacs.main]
    serveraddress = "pacs.example.org"
    serverport = 104
    aec = "PACS"
    aet = "DICOMFS"
    retrieve = "get"
    cachesize = "20G"

``dicomfs main /mnt/pacs`` (or ``-o profile=main``) mounts it; options on the command line override
the profile's. Files are looked up in order: ``config=PATH`` alone when given, else
``$XDG_CONFIG_HOME/dicomfs/config.toml`` (``~/.config`` when unset or relative, as the XDG base
directory spec says), then ``/etc/dicomfs/config.toml``; the first file naming a profile wins.
Every value is checked against the option table (``dicomfs.app.options``) as the file is read, and
anything wrong is one ``OptionError`` line naming the file, the profile and the key.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dicomfs.app.mounthelper import PROFILE_NAME_RE, pacs_name
from dicomfs.app.options import OPTIONS_BY_NAME, OptionError, convert_option

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has the same parser as the tomli package
    import tomli as tomllib

LOGGER = logging.getLogger(__name__)

SYSTEM_CONFIG = "/etc/dicomfs/config.toml"
#: Options that choose profiles; a profile holding them would be a loop.
_NOT_IN_PROFILES = frozenset({"profile", "config"})


@dataclass(frozen=True)
class Profile:
    """One ``[pacs.NAME]`` table: its typed option values by option name, and where it came from."""

    name: str
    path: str
    values: Mapping[str, Any]

    @property
    def pacs(self) -> str:
        """``AEC@host:port`` this profile mounts (table defaults for what it does not set)."""
        keys = ("aec", "serveraddress", "serverport")
        return pacs_name({key: self.values.get(key, OPTIONS_BY_NAME[key].default) for key in keys})


def user_config_path() -> str:
    """``$XDG_CONFIG_HOME/dicomfs/config.toml``; a relative or empty XDG_CONFIG_HOME is ignored."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "dicomfs", "config.toml")


def config_paths(config: str = "") -> list[str]:
    """The files profiles are looked up in, first one first: ``config`` alone when given."""
    return [config] if config else [user_config_path(), SYSTEM_CONFIG]


def _typed_value(where: str, key: str, raw: Any) -> Any:
    if key in _NOT_IN_PROFILES:
        raise OptionError(f"{where} {key}: not allowed in a profile")
    if isinstance(raw, bool):  # before int: bool is an int in Python
        text = "true" if raw else "false"
    elif isinstance(raw, (int, float, str)):
        text = str(raw)
    else:
        raise OptionError(f"{where} {key}: must be a string, a number or true/false")
    try:
        return convert_option(key, text)[1]
    except OptionError as exc:
        raise OptionError(f"{where} {exc}") from None


def _profile(path: str, name: str, table: Any) -> Profile:
    if not PROFILE_NAME_RE.match(name):
        raise OptionError(f"{path}: [pacs.{name}]: a profile name is letters, digits, '_', '.' and '-'")
    if not isinstance(table, dict):
        raise OptionError(f"{path}: pacs.{name} must be a table: [pacs.{name}]")
    where = f"{path}: [pacs.{name}]"
    values = {key: _typed_value(where, key, raw) for key, raw in table.items()}
    return Profile(name, path, MappingProxyType(values))


def read_profiles(path: str, required: bool = False) -> dict[str, Profile]:
    """The profiles of one file, by name, every value checked.

    A missing file has none, unless ``required`` (a file the user named). Raises ``OptionError``
    (one line naming the file, and the profile and key where there is one) for an unreadable file,
    a TOML syntax error, a table other than ``[pacs.NAME]``, an unknown option or a bad value.
    """
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        if required:
            raise OptionError(f"config: '{path}' does not exist") from None
        return {}
    except OSError as exc:
        raise OptionError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OptionError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key != "pacs":
            raise OptionError(f"{path}: unknown table or key '{key}' (profiles are [pacs.NAME] tables)")
    tables = data.get("pacs", {})
    if not isinstance(tables, dict):
        raise OptionError(f"{path}: pacs must hold [pacs.NAME] tables")
    return {name: _profile(path, name, table) for name, table in tables.items()}


def all_profiles(config: str = "") -> list[Profile]:
    """Every profile of the config files, in lookup order; a name seen before is left out."""
    found: dict[str, Profile] = {}
    for path in config_paths(config):
        for name, profile in read_profiles(path, required=bool(config)).items():
            found.setdefault(name, profile)
    return list(found.values())


def load_profile(name: str, config: str = "") -> Mapping[str, Any]:
    """The typed option values of profile ``name``, from the first config file that has it.

    Files after the one holding the profile are not read. Raises ``OptionError`` when no file
    names the profile, or for anything wrong in a file read on the way (``read_profiles``).
    """
    paths = config_paths(config)
    for path in paths:
        profiles = read_profiles(path, required=bool(config))
        if name in profiles:
            LOGGER.debug("profile %s from %s", name, path)
            return profiles[name].values
    raise OptionError(
        f"no profile '{name}' in {' or '.join(paths)} "
        "(dicomfs profiles lists them; a PACS itself is written AEC@host:port)"
    )


def format_profiles(profiles: Sequence[Profile]) -> str:
    """``dicomfs profiles``: one line per profile, NAME, PACS, its other options, its file."""
    rows = [("NAME", "PACS", "OPTIONS", "FILE")]
    for profile in profiles:
        others = ",".join(
            f"{key}={OPTIONS_BY_NAME[key].kind.show(value)}"
            for key, value in profile.values.items()
            if key not in ("aec", "serveraddress", "serverport")
        )
        rows.append((profile.name, profile.pacs, others or "-", profile.path))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "".join(
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}\n" for row in rows
    )
