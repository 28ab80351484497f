"""C-STORE SCU of one uploaded file: the ``core.ports.StoreService`` over the mount's associations.

One file is one C-STORE on one association (``PacsClient.associate``, within the mount's slots):
a single DIMSE message, so a refused or failed send leaves nothing at the PACS, and an aborted
association nothing half-stored (PS3.7 9.1.1). The file goes in its own transfer syntax, streamed
from disk (pynetdicom's ``send_c_store`` of a path with ``STORE_SEND_CHUNKED_DATASET``). Proposed
for its SOP class: its own syntax, then the uncompressed ones it can be converted to (explicit <->
implicit VR little endian; a compressed file only where pydicom can decompress it), each in a
presentation context of its own so the accepted one is known exactly (PS3.8 9.3.2.2), plus
Verification so that a PACS refusing the SOP class still accepts the association and the refusal
can be named. A conversion is said in the log; a conversion that fails (pydicom cannot decode the
pixel data, or pynetdicom cannot encode the result) is a refusal like the others. A DICOMDIR is
no object to store (PS3.10 8.6): ``MediaDirectory``, never sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MediaStorageDirectoryStorage

from dicomfs.core.errorlog import OncePerCause
from dicomfs.core.errors import MediaDirectory, NotDicom, PacsError, QueryRefused, StoreRejected
from dicomfs.core.ports import StoredObject
from dicomfs.dimse.associations import AssociationsBusy
from dicomfs.dimse.client import PacsClient
from dicomfs.dimse.explain import Explanation
from dicomfs.dimse.progress import status_of
from dicomfs.dimse.qrmodels import VERIFICATION
from dicomfs.dimse.storestatus import judge_store, warning_of
from dicomfs.dimse.wholefile import NOT_PART10_FIX, check_whole

LOGGER = logging.getLogger(__name__)

#: The syntaxes any DICOM application accepts (PS3.5 10.1: implicit VR little endian is the default).
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: The fix of a PACS that cannot be reached or went silent (as ``explain.association_failure``).
UNREACHABLE_FIX = (
    "is the PACS running, and are serveraddress= and serverport= right? (dicomfs echo tells more); "
    "then copy the file again"
)
#: Header attributes read before sending (the rest streams from disk unread).
_HEADER = [
    "SOPClassUID",
    "SOPInstanceUID",
    "PatientID",
    "IssuerOfPatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyDate",
    "AccessionNumber",
]


def read_header(path: str) -> tuple[Dataset, StoredObject, UID, UID]:
    """A Part 10 file's header -> (file meta, identity, SOP class, transfer syntax).

    Raises ``NotDicom`` for anything that is not a DICOM Part 10 file naming its SOP class,
    SOP instance, transfer syntax, study and series (PS3.10 7.1: preamble, "DICM", group 0002);
    ``MediaDirectory`` for a DICOMDIR (PS3.10 8.6: a medium's index, not an object to store).
    """
    check_whole(path)  # pydicom reads a file cut short without a word
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=_HEADER)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError) as exc:
        raise NotDicom(f"not a readable DICOM Part 10 file: {pydicom_words(exc)}; {NOT_PART10_FIX}") from exc
    meta = ds.file_meta
    sop_class = meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID")
    syntax = meta.get("TransferSyntaxUID")
    sop_uid = meta.get("MediaStorageSOPInstanceUID") or ds.get("SOPInstanceUID")
    if sop_class == MediaStorageDirectoryStorage:  # before the UIDs: a DICOMDIR has no study
        raise MediaDirectory("a DICOMDIR is a media directory, not an object to store: not sent")
    missing = [
        name
        for name, value in (
            ("SOP Class UID", sop_class),
            ("SOP Instance UID", sop_uid),
            ("Transfer Syntax UID", syntax),
            ("Study Instance UID", ds.get("StudyInstanceUID")),
            ("Series Instance UID", ds.get("SeriesInstanceUID")),
        )
        if not value
    ]
    if missing:
        raise NotDicom(
            f"not a DICOM Part 10 file the PACS could store: no {', '.join(missing)}; fix: give the "
            "file its UIDs (dcmodify from DCMTK) or copy the instance it was made from"
        )
    stored = StoredObject(
        patient_id=str(ds.get("PatientID", "") or ""),
        issuer=str(ds.get("IssuerOfPatientID", "") or ""),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(sop_uid),
        study_date=str(ds.get("StudyDate", "") or ""),
        accession=str(ds.get("AccessionNumber", "") or ""),
        transfer_syntax=str(syntax),
    )
    return meta, stored, UID(str(sop_class)), UID(str(syntax))


def pydicom_words(exc: Exception) -> str:
    """pydicom's reason, without its advice to the programmer ("Use force=True to force reading.")."""
    sentences = re.split(r"(?<=\.)\s+", str(exc).strip())
    return " ".join(part for part in sentences if "force=" not in part).rstrip(".") or type(exc).__name__


def uid_words(uid: UID, *, with_uid: bool = False) -> str:
    """``MR Image Storage`` (``with_uid``: ``MR Image Storage (1.2.840.10008.5.1.4.1.1.4)``); the
    UID alone where pydicom knows no name for it (a private SOP class)."""
    if uid.name == str(uid):
        return str(uid)
    return f"{uid.name} ({uid})" if with_uid else uid.name


def can_decompress(syntax: UID) -> bool:
    """Whether pydicom can decode pixel data in ``syntax`` here (RLE always; JPEG with plugins)."""
    if not syntax.is_compressed:
        return True
    try:
        from pydicom.pixels.decoders.base import get_decoder

        return bool(get_decoder(syntax).is_available)
    except (ImportError, NotImplementedError, ValueError):
        return False


def proposals(sop_class: UID, own: UID) -> list[tuple[str, Sequence[str]]]:
    """Presentation contexts for one file: its own syntax first, then what it can become."""
    fallbacks = [syntax for syntax in UNCOMPRESSED if syntax != own] if can_decompress(own) else []
    contexts: list[tuple[str, Sequence[str]]] = [(sop_class, [own])]
    contexts += [(sop_class, [syntax]) for syntax in fallbacks]
    contexts.append((VERIFICATION, list(UNCOMPRESSED)))
    return contexts


def not_convertible(own: UID, exc: Exception) -> str:
    """The refusal of a file whose conversion failed: cause (pydicom's or pynetdicom's) and fix."""
    reason = " ".join(pydicom_words(exc).split())  # one line: pydicom lists its plugins' failures
    if isinstance(exc, ImportError):
        reason += " (pip install numpy: pydicom decodes pixel data with it)"
    return (
        f"the PACS accepts none of the file's transfer syntax {uid_words(own)}, and it cannot be "
        f"converted here: {reason}; fix: configure the PACS to accept {uid_words(own)}, or convert "
        "the file before copying it (dcmdrle or dcmdjpeg from DCMTK, gdcmconv --raw)"
    )


class DimseSender:
    """Sends uploaded files by C-STORE; thread-safe (each send has its own association)."""

    def __init__(self, client: PacsClient) -> None:
        self._client = client
        self._conversions = OncePerCause(LOGGER, level=logging.INFO, counted="files converted")

    def store(self, path: str) -> StoredObject:
        """C-STORE the Part 10 file at ``path``; what was stored.

        Raises
        ------
        NotDicom
            Not a DICOM Part 10 file (EINVAL for the writer).
        StoreRejected
            The PACS refused (a failure status, its SOP class or every syntax we can send); the
            message holds the status, the cause and the fix.
        PacsError
            The PACS cannot be reached or did not answer within ``timeout``.
        """
        _meta, stored, sop_class, own = read_header(path)
        address = self._client.address
        try:
            response = self._send(path, sop_class, own)
        except (QueryRefused, AssociationsBusy):
            raise  # a refusal names its fix; busy slots are ours
        except PacsError as exc:
            if "; fix: " in str(exc):
                raise
            raise PacsError(Explanation(str(exc), UNREACHABLE_FIX).line()) from exc
        code = getattr(response, "Status", None)
        comment = str(response.get("ErrorComment", "") or "")
        why = judge_store(
            None if code is None else status_of(response), comment, address.calling_aet, address.timeout
        )
        if why is not None:
            if code is None:
                raise PacsError(why.line())
            raise StoreRejected(why.line())
        if status_of(response) != 0:
            warned = warning_of(status_of(response), comment)
            LOGGER.warning("stored %s with a warning: %s", stored.sop_uid, warned)
        return stored

    def _send(self, path: str, sop_class: UID, own: UID) -> Any:
        """One association, one C-STORE: the response (empty without one)."""
        with self._client.associate(proposals(sop_class, own)) as assoc:
            accepted = [
                UID(str(cx.transfer_syntax[0]))
                for cx in assoc.accepted_contexts
                if str(cx.abstract_syntax) == sop_class
            ]
            payload = self._payload(path, sop_class, own, accepted)
            try:
                return assoc.send_c_store(payload)
            except (ValueError, AttributeError) as exc:  # pynetdicom cannot encode it in that syntax
                if isinstance(payload, Dataset):
                    raise StoreRejected(not_convertible(own, exc)) from exc
                words = f"{uid_words(sop_class, with_uid=True)} in {uid_words(own)}"
                raise StoreRejected(f"cannot send {words}: {exc}") from exc

    def _payload(self, path: str, sop_class: UID, own: UID, accepted: list[UID]) -> Any:
        """The path itself (sent as it is), or a converted dataset; StoreRejected when neither."""
        if own in accepted:
            return path
        if not accepted:
            raise StoreRejected(
                f"the PACS accepts no presentation context for {uid_words(sop_class, with_uid=True)}; "
                "fix: configure the PACS to accept this storage SOP class"
            )
        target = next((syntax for syntax in UNCOMPRESSED if syntax in accepted), None)
        if target is None or not can_decompress(own):
            raise StoreRejected(
                f"the PACS accepts {uid_words(sop_class, with_uid=True)} only in "
                f"{', '.join(uid_words(s) for s in accepted)}, and this file in {uid_words(own)} "
                f"cannot be converted here; fix: configure the PACS to accept {uid_words(own)}"
            )
        try:
            dataset = dcmread(path)
            if own.is_compressed:
                dataset.decompress()  # to explicit VR little endian (pydicom); pynetdicom then encodes
        except Exception as exc:  # pydicom's decoders raise what they like (ImportError without NumPy)
            raise StoreRejected(not_convertible(own, exc)) from exc
        self._conversions.say(
            f"upload of {dataset.get('SOPInstanceUID', '?')}",
            f"the PACS does not accept {uid_words(own)} for {uid_words(sop_class)}: converted to "
            f"{uid_words(target)}",
        )
        return dataset
