"""The Query/Retrieve information models as tables: SOP Class UIDs, levels and unique keys.

One place for what PS3.4 says of the Patient Root and Study Root models (C.6.1, C.6.2): the SOP
Class UID of each service (C-FIND, C-MOVE, C-GET), the levels from the root down to one
instance and the unique key of each level. A model is named as in the ``model=`` option
(``"patient"``, ``"study"``). pynetdicom exposes the UIDs only as attributes generated at import
time (invisible to mypy), hence the literals.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class QueryModel(str, enum.Enum):
    """A Q/R information model, named as in the ``model=`` option (a ``str``: compares equal to it)."""

    PATIENT_ROOT = "patient"
    STUDY_ROOT = "study"

    def other(self) -> QueryModel:
        """The other model (a PACS that refuses one may accept the other)."""
        return QueryModel.STUDY_ROOT if self is QueryModel.PATIENT_ROOT else QueryModel.PATIENT_ROOT


#: The Verification SOP Class (C-ECHO), PS3.4 A.4.
VERIFICATION = "1.2.840.10008.1.1"

#: Q/R SOP Class UIDs (PS3.4 C.6.1.1.1, C.6.2.1.1): model -> service ("find", "move", "get") -> UID.
MODELS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "study": MappingProxyType(
            {
                "find": "1.2.840.10008.5.1.4.1.2.2.1",
                "move": "1.2.840.10008.5.1.4.1.2.2.2",
                "get": "1.2.840.10008.5.1.4.1.2.2.3",
            }
        ),
        "patient": MappingProxyType(
            {
                "find": "1.2.840.10008.5.1.4.1.2.1.1",
                "move": "1.2.840.10008.5.1.4.1.2.1.2",
                "get": "1.2.840.10008.5.1.4.1.2.1.3",
            }
        ),
    }
)

#: The model's name as PS3.4 spells it, for messages.
ROOT_NAME: Mapping[str, str] = MappingProxyType({"patient": "Patient Root", "study": "Study Root"})

#: Levels from the root down to one instance, per model (PS3.4 C.6.1.1 and C.6.2.1).
LEVELS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"patient": ("PATIENT", "STUDY", "SERIES", "IMAGE"), "study": ("STUDY", "SERIES", "IMAGE")}
)

#: The unique key of each level (PS3.4 C.6.1.1.2 to C.6.1.1.5).
UNIQUE_KEY: Mapping[str, str] = MappingProxyType(
    {
        "PATIENT": "PatientID",
        "STUDY": "StudyInstanceUID",
        "SERIES": "SeriesInstanceUID",
        "IMAGE": "SOPInstanceUID",
    }
)
