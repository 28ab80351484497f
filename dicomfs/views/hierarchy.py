"""The patient hierarchy: the archive as patients, studies, series and instance files.

    /                                      patients      (catalog.patients)
    /<patient>                             studies       (catalog.studies)
    /<patient>/<study>                     series        (catalog.series)
    /<patient>/<study>/<series>            instances     (catalog.instances)
    /<patient>/<study>/<series>/<n>.dcm    one SOP instance, retrieved with its series

Names come from :mod:`dicomfs.views.naming` (safe, unique within their directory, stable across
remounts); a study directory and everything below it carry the study's date and time. The view
keeps the named form of the listings it served last (``recordtree.NamedListings``, shared with
the other views), so resolving a path names a directory once per catalog answer, not once per
``stat``. It never sees DIMSE or FUSE.
"""

from __future__ import annotations

import logging
import time

from dicomfs.core.catalog import Catalog
from dicomfs.core.errors import NotFound
from dicomfs.core.instances import Instances
from dicomfs.views.node import Node
from dicomfs.views.recordtree import MAX_NAMED_LISTINGS, RecordTree, base_name

LOGGER = logging.getLogger(__name__)

__all__ = ["DEPTH", "PatientHierarchy", "base_name"]

#: Levels below the root: patient, study, series, instance file.
DEPTH = 4


class PatientHierarchy(RecordTree):
    """``/patient/study/series/n.dcm`` over the catalog: a :class:`~dicomfs.views.node.Namespace`.

    The parameters are :class:`~dicomfs.views.recordtree.RecordTree`'s; records are named by
    :func:`~dicomfs.views.recordtree.base_name` (the names the patient tree always had).
    """

    def __init__(
        self, catalog: Catalog, instances: Instances, *, max_named_listings: int = MAX_NAMED_LISTINGS
    ) -> None:
        super().__init__(catalog, instances, max_named_listings=max_named_listings)
        self.mount_time = time.time()
        self._root = Node("", True, self.mount_time)

    def lookup(self, path: str) -> Node:
        """The node at ``path`` (``"/"``: the root). Raises ``NotFound``, and ``PacsError`` when a
        directory on the way cannot be listed."""
        parts = [part for part in path.split("/") if part]
        if len(parts) > DEPTH:
            raise NotFound(path)
        return self.walk(self._root, parts, path)
