"""The PACS client: C-ECHO, C-FIND, C-MOVE and C-GET over pynetdicom.

Every network wait is bounded by the mount's ``timeout``; a silent PACS becomes :class:`PacsError`.
Each query uses its own short association (``associations``): pynetdicom 3.0.4 can lose a C-FIND
response on a reused association when queries come back to back (issue #4). A C-MOVE/C-GET lasts
while it makes progress (``progress.ProgressWatch``).

Importing this module changes nothing in pynetdicom: the process-wide tuning (``patches``) is
installed by ``dicomfs.app.compose``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_role, evt

from dicomfs.core.errors import PacsError, QueryRefused
from dicomfs.core.health import PacsHealth
from dicomfs.dimse import statuses
from dicomfs.dimse.associations import Associations, AssociationsBusy, AssociationSlots, PacsAddress
from dicomfs.dimse.explain import explain_no_response
from dicomfs.dimse.negotiation import MAX_CONTEXTS
from dicomfs.dimse.progress import MESSAGE_ID, ProgressWatch, RetrieveOutcome, status_of
from dicomfs.dimse.qrmodels import MODELS, VERIFICATION

__all__ = ["AssociationSlots", "PacsAddress", "PacsClient", "RetrieveOutcome"]

LOGGER = logging.getLogger(__name__)

#: What :meth:`PacsClient.find` keeps of each match (``keep``).
Kept = TypeVar("Kept")


def _take_scp_role(accepted_storage: Sequence[Any]) -> None:
    """Act as storage SCP on every accepted storage context of our C-GET, role granted or not.

    We propose the SCP role for each class (PS3.7 D.3.3.4). Orthanc 1.10 accepts contexts of
    classes it does not know (private ones, with ``UnknownSopClassAccepted``) without answering
    that proposal, so the default roles apply and pynetdicom refuses the C-STOREs Orthanc then
    sends over them (0x0122): the object it was asked for is lost. Its sending them is answer
    enough. pynetdicom keeps the negotiated role in ``PresentationContext._as_scp``.
    """
    for context in accepted_storage:
        if not context.as_scp:
            context._as_scp = True


class PacsClient:
    """Speaks DIMSE to one PACS. Thread-safe; at most ``max_associations`` associations at once."""

    def __init__(self, address: PacsAddress, model: str = "study") -> None:
        self.address = address
        self.model = model
        self.where = f"{address.called_aet}@{address.host}:{address.port}"
        self.health = PacsHealth(self.probe, where=self.where)
        self._associations = Associations(address, self.health)

    def close(self) -> None:
        """Stop the background reachability check (FUSE destroy())."""
        self.health.close()

    @property
    def max_associations(self) -> int:
        """The current limit: ``maxassoc``, or lower once the PACS has pushed back."""
        return self._associations.limit

    # -- services ------------------------------------------------------------------------------

    def echo(self) -> None:
        """C-ECHO; raises PacsError unless the PACS answers Success."""
        with self._associations.open(
            [(VERIFICATION, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
        ) as assoc:
            status = assoc.send_c_echo()
            if status_of(status) != statuses.SUCCESS:
                raise PacsError(f"C-ECHO failed with status 0x{int(status.Status):04X}")

    def probe(self) -> None:
        """The cheap reachability check: an association, and a C-ECHO where Verification is accepted.

        Any answer counts (an accepted association, a rejection, any C-ECHO status): only "cannot
        be reached" or silence raises PacsError. The other Q/R contexts are proposed too, so a
        PACS without the Verification SOP class still accepts the association. Never retried.
        """
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        contexts = [(VERIFICATION, syntaxes), *((models["find"], syntaxes) for models in MODELS.values())]
        try:
            with self._associations.open(contexts, retry_transient=False) as assoc:
                if any(cx.abstract_syntax == VERIFICATION for cx in assoc.accepted_contexts):
                    status_of(assoc.send_c_echo())
        except (QueryRefused, AssociationsBusy):
            # An answer; or every slot is in use by associations that will report themselves.
            return

    @overload
    def find(self, identifier: Dataset, model_name: str = "") -> list[Dataset]: ...

    @overload
    def find(
        self, identifier: Dataset, model_name: str = "", *, keep: Callable[[Dataset], Kept]
    ) -> list[Kept]: ...

    def find(
        self, identifier: Dataset, model_name: str = "", *, keep: Callable[[Dataset], Any] | None = None
    ) -> list[Any]:
        """C-FIND with ``identifier`` in the mount's query model (or ``model_name``); all matches.

        ``keep``: what to keep of each match, called as it arrives, so that the decoded
        identifiers (about 4 kB each in pydicom) never pile up: a 50,000-study answer would hold
        200 MB of them (bench/bigday.py). Without it, the identifiers themselves.

        Raises QueryRefused when the PACS does not accept the model or fails the query, and
        PacsError when it cannot be reached or gives up.
        """
        model = MODELS[model_name or self.model]["find"]
        started = time.monotonic()
        matches: list[Any] = []
        # Both models are proposed: a PACS that accepts none of the contexts aborts the association
        # (pynetdicom), which would look like an outage; with two, the missing one is a clear "no".
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        contexts = [(models["find"], syntaxes) for models in MODELS.values()]
        with self._associations.open(contexts) as assoc:
            if not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
                raise QueryRefused(
                    f"the PACS does not accept C-FIND in the {model_name or self.model} root model"
                )
            for status, match in assoc.send_c_find(identifier, model):
                dropped = time.monotonic() - started < 0.9 * self.address.timeout
                if getattr(status, "Status", None) is None and assoc.is_aborted and dropped:
                    # Dropped well before our DIMSE timeout (which also aborts) instead of answered:
                    # how Orthanc refuses an AE title it does not know.
                    why = explain_no_response(
                        "C-FIND",
                        aborted=True,
                        calling_aet=self.address.calling_aet,
                        timeout=self.address.timeout,
                    )
                    raise PacsError(why.line())
                code = status_of(status)
                if statuses.is_pending(code):
                    if match is not None:
                        matches.append(match if keep is None else keep(match))
                elif code == statuses.SUCCESS:
                    break
                else:
                    raise QueryRefused(f"C-FIND failed with status 0x{code:04X}")
        LOGGER.debug(
            "C-FIND %s: %d matches in %.3f s",
            identifier.get("QueryRetrieveLevel", "?"),
            len(matches),
            time.monotonic() - started,
        )
        return matches

    def move(
        self,
        identifier: Dataset,
        destination: str,
        *,
        progress: Callable[[], float] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> RetrieveOutcome:
        """C-MOVE to ``destination`` (our storage SCP's AE title); sub-operations arrive there.

        ``progress`` returns when (monotonic seconds) the caller last saw one of the retrieval's
        C-STOREs land, ``cancelled`` whether it no longer wants the retrieval: see
        :class:`ProgressWatch`. Raises PacsError when the PACS fails, is silent, or the retrieval
        makes no progress for ``timeout`` seconds (it is then cancelled).
        """
        model = MODELS[self.model]["move"]
        contexts = [(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
        with (
            self._associations.open(contexts) as assoc,
            ProgressWatch(assoc, model, self.address.timeout, progress, cancelled) as watch,
        ):
            return watch.collect(assoc.send_c_move(identifier, destination, model, msg_id=MESSAGE_ID))

    def get(
        self,
        identifier: Dataset,
        on_store: Callable[[evt.Event], int],
        storage_contexts: Sequence[tuple[str, Sequence[str]]],
        *,
        progress: Callable[[], float] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> RetrieveOutcome:
        """C-GET: the PACS sends C-STOREs on this same association, to ``on_store``.

        ``storage_contexts`` are (SOP class, transfer syntaxes) pairs, at most ``MAX_CONTEXTS - 1``
        (see ``negotiation``); we take the SCP role for each class. The outcome says which pairs
        the PACS accepted. ``progress`` and ``cancelled`` as for :meth:`move`.
        """
        model = MODELS[self.model]["get"]
        uncompressed = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        contexts: list[tuple[str, Sequence[str]]] = [(model, uncompressed)]
        contexts += list(storage_contexts)[: MAX_CONTEXTS - 1]
        classes = list(dict.fromkeys(uid for uid, _ in contexts[1:]))
        # PS3.4 C.4.3.1.3 and PS3.7 D.3.3.4: the C-GET SCU must take the SCP role for the storage
        # classes, or the PACS may not send C-STOREs over them.
        roles = [build_role(uid, scp_role=True) for uid in classes]
        handlers = [(evt.EVT_C_STORE, on_store)]
        with (
            self._associations.open(contexts, roles=roles, handlers=handlers) as assoc,
            ProgressWatch(assoc, model, self.address.timeout, progress, cancelled) as watch,
        ):
            storage = [cx for cx in assoc.accepted_contexts if str(cx.abstract_syntax) != model]
            _take_scp_role(storage)
            accepted = tuple((str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in storage)
            outcome = watch.collect(assoc.send_c_get(identifier, model, msg_id=MESSAGE_ID))
        return dataclasses.replace(outcome, accepted=accepted)
