"""C-FIND identifiers per level and Q/R information model, and their matches as text rows.

The only place that builds query identifiers (PS3.4 C.4.1.1.3.1) and knows the Patient Root model
from the Study Root one (PS3.4 C.6.1, C.6.2). It implements :class:`dicomfs.core.ports.QueryService`
over :meth:`PacsClient.find`. Only what a listing shows, and what tells parents and persons apart,
is asked for: Orthanc opens every file for non-indexed IMAGE-level keys (issue #3).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from pydicom.dataset import Dataset

from dicomfs.core.errors import AnswerCapped, QueryRefused
from dicomfs.core.rows import RAW_PATIENT_ID, Matches, Row
from dicomfs.core.splitting import SUSPECT_CAPS, complete_studies
from dicomfs.dimse import decode
from dicomfs.dimse.client import PacsClient
from dicomfs.dimse.qrmodels import QueryModel

LOGGER = logging.getLogger(__name__)

#: ``PacsClient.model`` of the Patient Root model (the other is Study Root).
PATIENT_ROOT = QueryModel.PATIENT_ROOT
STUDY_ROOT = QueryModel.STUDY_ROOT

#: The return keys of every STUDY-level query: what a study directory shows, and whose it is.
STUDY_RETURN_KEYS = {
    "StudyInstanceUID": "",
    "NumberOfStudyRelatedSeries": "",
    "StudyDate": "",
    "StudyTime": "",
    "StudyDescription": "",
    "AccessionNumber": "",
    "PatientID": "",
    "PatientName": "",
    "IssuerOfPatientID": "",
}


def identifier(level: str, **keys: str) -> Dataset:
    """A C-FIND identifier at ``level`` (PS3.4 C.4.1.1.3.1) with the given keys.

    Parameters
    ----------
    level : str
        QueryRetrieveLevel: ``PATIENT``, ``STUDY``, ``SERIES`` or ``IMAGE``.
    **keys : str
        Keyword -> value: a value matches (PS3.4 C.2.2.2), ``""`` asks for the key's value back.
    """
    found = Dataset()
    found.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(found, keyword, value)
    return found


#: Distinct values per keyword that one answer's rows share (:class:`RowReader`): a day's studies
#: have a handful of dates, levels and counts, and their UIDs are all different, so past this many
#: a keyword's values are taken as unique and no longer looked up.
MAX_SHARED_VALUES = 256


class RowReader:
    """Turns each match of one C-FIND into a :data:`~dicomfs.core.rows.Row` as it arrives.

    The text of every key the query asked for (and the level). A Patient ID also keeps its value
    as sent (:data:`~dicomfs.core.rows.RAW_PATIENT_ID`): a PACS that stored ``" SP"`` matches a
    query for ``" SP"``, not for the ``"SP"`` the name shows.

    Rows are what a listing keeps (a 50,000-study day is 50,000 of them), so equal values of one
    keyword are one string object (at most :data:`MAX_SHARED_VALUES` per keyword and answer).

    Parameters
    ----------
    asked : Dataset
        The request's identifier: its keywords are the keys of every row.
    """

    def __init__(self, asked: Dataset) -> None:
        self._keywords = ["QueryRetrieveLevel", *(elem.keyword for elem in asked if elem.keyword)]
        self._shared: dict[str, dict[str, str]] = {keyword: {} for keyword in self._keywords}

    def _share(self, keyword: str, value: str) -> str:
        shared = self._shared[keyword]
        if len(shared) >= MAX_SHARED_VALUES:
            return shared.get(value, value)
        return shared.setdefault(value, value)

    def __call__(self, match: Dataset) -> Row:
        """One match as text by keyword; a key the match lacks is ``""``."""
        row = {keyword: self._share(keyword, decode.text_of(match, keyword)) for keyword in self._keywords}
        if "PatientID" in row:
            row[RAW_PATIENT_ID] = self._share("PatientID", _raw_text(match, "PatientID") or row["PatientID"])
        return row


def read_rows(matches: Sequence[Dataset], asked: Dataset) -> list[Row]:
    """Every match of ``matches`` as :class:`RowReader` reads it (one row per match, in order)."""
    reader = RowReader(asked)
    return [reader(match) for match in matches]


def _raw_text(match: Dataset, keyword: str) -> str:
    """The value as sent, without its trailing padding only ('' when it is not plain ASCII)."""
    element = match.get_item(keyword)
    value = getattr(element, "value", None)
    if isinstance(value, bytes) and value.isascii() and b"\\" not in value and b"\x1b" not in value:
        return value.decode("ascii").rstrip(" \x00")
    if isinstance(value, str) and "\\" not in value:
        return value.rstrip(" \x00")
    return ""


class DimseQueries:
    """Level queries over C-FIND in the mount's Q/R model (``QueryService``).

    Parameters
    ----------
    client : PacsClient
        Associations to the PACS; ``client.model`` is the mount's model (``patient`` or ``study``).

    Thread-safe: the one piece of state, whether Patient Root PATIENT-level queries are answered,
    is learned once and only ever set to the same value by racing threads.
    """

    def __init__(self, client: PacsClient) -> None:
        self._client = client
        # Whether the PACS answers Patient Root PATIENT-level queries (None: not tried yet).
        self._patient_root: bool | None = None

    @property
    def down_reason(self) -> str | None:
        """Why the PACS is known to be unreachable (``PacsHealth``), or None."""
        return self._client.health.down_reason

    def _find(self, query: Dataset, model_name: str = "", limit: int | None = None) -> list[Row]:
        """The rows of one C-FIND; a capped answer raises ``AnswerCapped`` with its rows.

        Each match becomes a row as it arrives (``RowReader``): the decoded identifiers are never
        all held."""
        return self._client.find(query, model_name, limit=limit, keep=RowReader(query))

    def patients(self, limit: int | None = None) -> list[Row] | None:
        """Patient Root PATIENT-level rows where the PACS accepts such a query (half the rows of
        a study-level query, and fewer keys); None where it does not (learned once, logged once).
        At most ``limit`` rows (the C-FIND is cancelled there).

        Raises
        ------
        AnswerCapped
            When the PACS capped the answer.
        QueryRefused
            When the mount's model is Patient Root and the PACS refuses it.
        PacsError
            When the PACS cannot be reached.
        """
        if self._patient_root is False:
            return None
        query = identifier(
            "PATIENT", PatientID="", IssuerOfPatientID="", PatientName="", NumberOfPatientRelatedStudies=""
        )
        try:
            rows = self._find(query, PATIENT_ROOT, limit)
        except QueryRefused as exc:
            if self._client.model == PATIENT_ROOT or isinstance(exc, AnswerCapped):
                raise
            LOGGER.info("patients come from studies: %s", exc)
            self._patient_root = False
            return None
        self._patient_root = True
        return self._whole_root(rows, limit)

    def _whole_root(self, rows: list[Row], limit: int | None) -> list[Row]:
        """The root's rows, unless there are exactly as many as PACSes cut answers at
        (``splitting.SUSPECT_CAPS``, from 500) and the mount names no ``findlimit``: a root cannot be split,
        and a cut one must not look whole, so it raises ``AnswerCapped`` (README.txt instead)."""
        # From 500 up: a small archive of exactly 100 or 200 patients is likelier than a cap there.
        suspect = len(rows) in SUSPECT_CAPS and len(rows) >= 500 and (limit is None or len(rows) < limit)
        if suspect and self._client.find_limit == 0:
            raise AnswerCapped(
                f"the root's C-FIND gave exactly {len(rows)} matches, a number PACSes cut answers "
                "at; fix: set findlimit= to the PACS's cap (or, for a PACS without one, to any number "
                "above the archive's size) to list them",
                len(rows),
                rows,
            )
        return rows

    def studies(self, patient_id: str, limit: int | None = None) -> list[Row]:
        """STUDY-level rows of one Patient ID (``""``: universal matching, every study, at most
        ``limit``: the root's query), in the mount's model. One patient's studies are made whole
        where the PACS caps them (``core.splitting``: StudyDate, then StudyTime ranges).

        Raises
        ------
        AnswerCapped
            Every study (``""``) capped by the PACS; or one patient's studies that splitting
            could not make whole (the message says what is missing).
        """
        if not patient_id:
            return self._whole_root(self._find(identifier("STUDY", **STUDY_RETURN_KEYS), limit=limit), limit)
        matches = complete_studies(
            lambda matching: self._find(self._study_query(matching)),
            {"PatientID": patient_id},
            where=f"Patient ID {patient_id!r}",
        )
        if matches.missing:
            raise AnswerCapped(matches.missing, len(matches.rows), matches.rows)
        return matches.rows

    def matching_studies(self, keys: Mapping[str, str], *, where: str = "") -> Matches:
        """STUDY-level rows matching ``keys`` (keyword -> value, PS3.4 C.2.2.2; checked by the
        caller, e.g. ``core.querykeys``) with the study return keys; where the PACS caps the
        answer, asked again in parts until each is whole (``core.splitting.complete_studies``),
        else ``missing`` says what is not listed.

        Asked in the Study Root model, which is the one for study searches across patients
        (PS3.4 C.6.2: STUDY is its top level, so no patient unique key is needed, C.4.1.2.2.1);
        a Patient Root mount whose PACS refuses Study Root asks in Patient Root instead.

        Raises
        ------
        QueryRefused, PacsError
            As every query (a cap is no error here: it is split or reported in ``missing``).
        """
        return complete_studies(
            lambda matching: self._find_any_root(self._study_query(matching)), keys, where=where
        )

    @staticmethod
    def _study_query(keys: Mapping[str, str]) -> Dataset:
        query = identifier("STUDY", **{**STUDY_RETURN_KEYS, **keys})
        if not all(value.isascii() for value in keys.values()):
            # Matching values beyond ASCII need their character set named (PS3.4 C.4.1.1.3.1 and
            # C.2.2.2: the identifier's Specific Character Set); UTF-8 holds whatever was typed.
            query.SpecificCharacterSet = "ISO_IR 192"
        return query

    def _find_any_root(self, query: Dataset) -> list[Row]:
        """A STUDY-level search in Study Root; in the mount's Patient Root where that is refused."""
        try:
            return self._find(query, STUDY_ROOT)
        except AnswerCapped:
            raise
        except QueryRefused as exc:
            if self._client.model != PATIENT_ROOT:
                raise
            LOGGER.info("searching studies in the Patient Root model: %s", exc)
            return self._find(query)

    def _patient_key(self, patient_id: str) -> str:
        """PatientID's value below the STUDY level: a matching key in Patient Root, where it is the
        patient's unique key (PS3.4 C.6.1.2); in Study Root a return key only, so that a study or
        series filed under two patients shows each only its own rows (PatientID is indexed by
        every PACS)."""
        return patient_id if self._client.model == PATIENT_ROOT else ""

    def series(self, patient_id: str, study_uid: str) -> list[Row]:
        """SERIES-level rows of one study, with the keys that say whose series each is: one
        Patient ID and one study may hold two persons' series (issue #7)."""
        return self._find(
            identifier(
                "SERIES",
                StudyInstanceUID=study_uid,
                SeriesInstanceUID="",
                SeriesNumber="",
                Modality="",
                SeriesDescription="",
                NumberOfSeriesRelatedInstances="",
                PatientID=self._patient_key(patient_id),
                IssuerOfPatientID="",
                PatientName="",
            )
        )

    def instances(self, patient_id: str, study_uid: str, series_uid: str, *, with_issuer: bool) -> list[Row]:
        """IMAGE-level rows of one series: SOPInstanceUID, InstanceNumber and whose they are.

        PatientName only (indexed by PACSes; the issuer may cost a file read per instance), and
        IssuerOfPatientID too with ``with_issuer`` (a Patient ID known to be shared).
        """
        keys = {
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series_uid,
            "SOPInstanceUID": "",
            "InstanceNumber": "",
            "PatientID": self._patient_key(patient_id),
            "PatientName": "",
        }
        if with_issuer:
            keys["IssuerOfPatientID"] = ""
        return self._find(identifier("IMAGE", **keys))
