"""Domain errors. Only ``dicomfs.fuse.ops`` turns them into errno values."""

from __future__ import annotations

from typing import Any


class DicomFSError(Exception):
    """Base class of every error dicomfs raises on purpose."""


class NotFound(DicomFSError):
    """No such patient, study, series or instance (ENOENT)."""


class PacsError(DicomFSError):
    """The PACS refused, aborted, timed out or answered with a failure status (EIO)."""


class QueryRefused(PacsError):
    """The PACS answered no: association rejected, model not accepted, or a failure status."""


class AnswerCapped(QueryRefused):
    """The PACS capped or refused a C-FIND answer for its size (EIO unless the query is split).

    Attributes
    ----------
    count : int
        How many matches came before the answer ended (0 when it was refused outright).
    partial : list
        Those matches (the raiser's own form: datasets in the DIMSE client, text rows above it).
        Never a complete answer: at most a start of one, in the PACS's order.
    """

    def __init__(
        self, message: str, count: int = 0, partial: list[Any] | None = None, *, proven: bool = True
    ) -> None:
        super().__init__(message)
        self.count = count
        self.partial: list[Any] = list(partial or [])
        #: The PACS said more exist (a cap or refusal status); False where only the answer's size
        #: (``findlimit``, a well-known cap) makes it suspect.
        self.proven = proven


class RetrievalFailed(DicomFSError):
    """A requested instance did not arrive whole (EIO)."""


class FailedFast(RetrievalFailed):
    """Refused without asking the PACS: it is known to be down, or the series' retrieval failed
    a moment ago. The cause has been logged once already; each refusal is only worth DEBUG."""


class StorageFull(DicomFSError):
    """The cache's disk is full (ENOSPC)."""


class NotDicom(DicomFSError):
    """A file written into ``upload/`` is no DICOM Part 10 file the PACS could store (EINVAL)."""


class MediaDirectory(DicomFSError):
    """A file written into ``upload/`` is a DICOMDIR (Media Storage Directory Storage, PS3.10 8.6):
    the index of a medium, not an object to store. Accepted and not sent (its close succeeds)."""


class StoreRejected(QueryRefused):
    """The PACS refused an upload (EIO): a C-STORE failure status, or its SOP class or transfer
    syntax not accepted; the message names the status, the cause and the fix. An answer, so the
    PACS is not taken for down (``dimse.associations``)."""
