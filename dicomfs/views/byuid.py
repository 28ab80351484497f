"""``by-uid/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``: the archive by UID.

A study UID resolves with one targeted STUDY-level C-FIND (StudyInstanceUID=x, through
``Catalog.matching``), its series and instances with the usual listings of the study and series;
every level is named by its UID (instances with ``.dcm``). ``by-uid`` itself lists nothing: it
never queries everything. A name that is no UID (PS3.5 9.1: digits and dots, at most 64
characters) is ``NotFound`` without a query.
"""

from __future__ import annotations

import logging

from dicomfs.core.catalog import Catalog
from dicomfs.core.errorlog import OncePerCause
from dicomfs.core.errors import NotFound
from dicomfs.core.instances import Instances
from dicomfs.core.querykeys import is_uid
from dicomfs.core.records import InstanceRecord, Record, SeriesRecord, StudyRecord
from dicomfs.views import naming
from dicomfs.views.node import Node
from dicomfs.views.recordtree import FlatView

LOGGER = logging.getLogger(__name__)

#: One warning per study UID found under several patients (not one per lookup).
_SHARED = OncePerCause(LOGGER, level=logging.WARNING, counted="lookups")


def uid_name(record: Record) -> str:
    """A record's UID as its name (``<SOP Instance UID>.dcm`` for an instance), made safe."""
    if isinstance(record, StudyRecord):
        return naming.sanitize(record.study_uid)
    if isinstance(record, SeriesRecord):
        return naming.sanitize(record.series_uid)
    if isinstance(record, InstanceRecord):
        return naming.sanitize(record.sop_uid + ".dcm")
    return naming.sanitize(record.patient_id)


class ByUid(FlatView):
    """The ``by-uid`` view: a :class:`~dicomfs.views.node.Namespace` (study, series, instance file)."""

    depth = 3

    def __init__(self, catalog: Catalog, instances: Instances, *, mount_time: float) -> None:
        super().__init__(catalog, instances, mount_time=mount_time, namer=uid_name)

    def resolve(self, name: str, path: str) -> Node:
        """The study ``name``: one STUDY-level C-FIND, unless ``name`` is no UID (no query).

        A Study Instance UID filed under two patients (issue #7) shows the first patient's
        study (by Patient ID and issuer), and says so once; the patient tree shows both.
        """
        if not is_uid(name):
            raise NotFound(path)
        found = [
            study for study in self._catalog.matching({"StudyInstanceUID": name}) if study.study_uid == name
        ]
        if not found:
            raise NotFound(path)
        found.sort(key=lambda study: study.chain_text)
        if len(found) > 1:
            _SHARED.say(
                f"by-uid/{name}",
                f"the PACS files this study under {len(found)} patients; showing Patient ID "
                f"{found[0].patient.patient_id!r} (the patient tree shows each)",
            )
        return Node(name, True, found[0].mtime, None, found[0])
