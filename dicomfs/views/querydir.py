"""``query/<Key=value,...>/<study>/...``: a STUDY-level search named by its own directory.

``cd 'query/PatientName=DOE^J*,StudyDate=20240101-20240131,ModalitiesInStudy=CT'`` lists the
studies that one C-FIND finds (through ``Catalog.matching``, cached like any listing). The keys
and values are checked first (``core.querykeys``): a bad one is ``NotFound`` without a query,
and one log line (per cause, per minute) says what is wrong and what would be right. The
directory ``query`` itself lists nothing.
"""

from __future__ import annotations

import logging

from dicomfs.core.errorlog import OncePerCause
from dicomfs.core.errors import NotFound
from dicomfs.core.querykeys import BadQuery, parse_query
from dicomfs.views.node import Node
from dicomfs.views.recordtree import FlatView, Search

LOGGER = logging.getLogger(__name__)

#: Shells and file managers look a name up several times: say why it is refused once.
_REFUSED = OncePerCause(LOGGER, level=logging.WARNING, counted="lookups")


class QueryDirectories(FlatView):
    """The ``query`` view: a :class:`~dicomfs.views.node.Namespace` of searches."""

    def resolve(self, name: str, path: str) -> Node:
        """The search ``name`` as a directory (no query yet: listing it asks)."""
        try:
            keys = parse_query(name)
        except BadQuery as exc:
            _REFUSED.say(f"query/{name}", f"not a search: {exc}")
            raise NotFound(path) from exc
        return Node(name, True, self.mount_time, None, Search.of(keys))
