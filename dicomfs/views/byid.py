"""``by-id/<PatientID>/<study>/...`` and ``by-accession/<AccessionNumber>/<study>/...``.

A name resolves with one STUDY-level C-FIND matching the identifier exactly (PatientID=x or
AccessionNumber=x, through ``Catalog.matching``); the view's own directory lists nothing. The
name is the identifier as typed, percent-decoded (``%2F`` is ``/``, ``%25`` is ``%``, a leading
``%2E`` a ``.``), since a file name cannot hold ``/`` and dotted names are not looked up.
Names that would not match exactly are ``NotFound`` without a query: wildcards (``*``, ``?``:
PS3.4 C.2.2.2.4 would match them), ``\\`` (a value separator, PS3.5 6.4), control characters, or
more characters than the VR holds (LO 64, SH 16). ``query/`` searches with wildcards.
"""

from __future__ import annotations

import logging
import urllib.parse

from dicomfs.core.catalog import Catalog
from dicomfs.core.errors import NotFound
from dicomfs.core.instances import Instances
from dicomfs.core.querykeys import KEYS, MAX_CHARS
from dicomfs.views.node import Node
from dicomfs.views.recordtree import FlatView, Search

LOGGER = logging.getLogger(__name__)

#: Characters an identifier looked up exactly cannot hold (wildcards and the value separator).
_NOT_EXACT = frozenset("*?\\")


def identifier_of(name: str, keyword: str) -> str | None:
    """The identifier a file name stands for (percent-decoded), or None when it cannot be
    matched exactly as a ``keyword`` value (then nothing is asked)."""
    try:
        value = urllib.parse.unquote(name, errors="strict") if "%" in name else name
    except UnicodeDecodeError:  # "%FF": no UTF-8 text, so no identifier of ours
        return None
    if not value.strip() or len(value) > MAX_CHARS[KEYS[keyword]]:
        return None
    if any(char in _NOT_EXACT or ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return None
    return value


class ByIdentifier(FlatView):
    """``by-id`` (``keyword="PatientID"``) or ``by-accession`` (``"AccessionNumber"``).

    Parameters
    ----------
    catalog, instances
        As for every view.
    keyword : str
        The identifier's key: ``PatientID`` or ``AccessionNumber``.
    mount_time : float
        The time of the view's own directory.
    """

    def __init__(self, catalog: Catalog, instances: Instances, *, keyword: str, mount_time: float) -> None:
        super().__init__(catalog, instances, mount_time=mount_time)
        self._keyword = keyword

    def resolve(self, name: str, path: str) -> Node:
        """The directory of the studies with this identifier; ``NotFound`` when there are none."""
        value = identifier_of(name, self._keyword)
        if value is None:
            raise NotFound(path)
        search = Search.of({self._keyword: value})
        studies = self._catalog.matching(dict(search.keys))
        if not studies:
            raise NotFound(path)
        return Node(name, True, max(study.mtime for study in studies), None, search)
