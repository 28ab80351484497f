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
from contextlib import AbstractContextManager
from typing import Any, TypeVar, overload

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_role, evt

from dicomfs.core.errors import AnswerCapped, PacsError, QueryRefused
from dicomfs.core.health import PacsHealth
from dicomfs.dimse import statuses
from dicomfs.dimse.associations import Associations, AssociationsBusy, AssociationSlots, PacsAddress
from dicomfs.dimse.explain import explain_capped_find, explain_no_response
from dicomfs.dimse.negotiation import MAX_CONTEXTS
from dicomfs.dimse.progress import MESSAGE_ID, ProgressWatch, RetrieveOutcome, status_of
from dicomfs.dimse.qrmodels import MODELS, VERIFICATION

__all__ = ["AssociationSlots", "PacsAddress", "PacsClient", "RetrieveOutcome"]

LOGGER = logging.getLogger(__name__)

#: After our C-CANCEL, the Pending responses (already sent) we read and drop before A-ABORT, and
#: the seconds the PACS has to send its final response (PS3.7 9.3.2.3: it should end with 0xFE00).
CANCEL_GRACE_RESPONSES = 64
CANCEL_GRACE_S = 2.0

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

    def __init__(self, address: PacsAddress, model: str = "study", find_limit: int = 0) -> None:
        self.address = address
        self.model = model
        #: The PACS's own cap on C-FIND answers (``findlimit``), 0 when unknown: an answer of
        #: exactly this many matches is taken as cut (:meth:`_judge_final`).
        self.find_limit = find_limit
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

    def associate(self, contexts: Sequence[tuple[str, Sequence[str]]]) -> AbstractContextManager[Any]:
        """An established association proposing ``contexts`` (within our slots; released on
        exit): for services that choose their own presentation contexts (``sender``'s C-STORE).
        Raises as :meth:`Associations.open`."""
        return self._associations.open(contexts)

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
    def find(self, identifier: Dataset, model_name: str = "", limit: int | None = None) -> list[Dataset]: ...

    @overload
    def find(
        self,
        identifier: Dataset,
        model_name: str = "",
        limit: int | None = None,
        *,
        keep: Callable[[Dataset], Kept],
    ) -> list[Kept]: ...

    def find(
        self,
        identifier: Dataset,
        model_name: str = "",
        limit: int | None = None,
        *,
        keep: Callable[[Dataset], Any] | None = None,
    ) -> list[Any]:
        """C-FIND with ``identifier`` in the mount's query model (or ``model_name``); all matches.

        Parameters
        ----------
        identifier : Dataset
            The request's identifier (``dimse.queries`` builds them).
        model_name : str
            ``patient`` or ``study``; ``""``: the mount's model.
        limit : int or None
            Keep at most this many matches: at the ``limit``-th we send C-CANCEL (PS3.4 C.4.1.2.3;
            PS3.7 9.1.2.1.5) and read no further match, so a huge answer is never read whole. A
            caller that asks for one more match than it will show learns that there are more.
        keep : callable or None
            What to keep of each match, called as it arrives, so that the decoded identifiers
            (about 4 kB each in pydicom) never pile up: a 50,000-study answer would hold 200 MB
            of them (bench/bigday.py). Without it, the identifiers themselves.

        Returns
        -------
        list
            What ``keep`` made of each Pending response's identifier (or the identifiers), in
            order (at most ``limit``).

        Raises
        ------
        AnswerCapped
            The PACS capped or refused the answer for its size (see :meth:`_judge_final`); its
            ``count`` and ``partial`` are the matches that came (as ``keep`` made them).
        QueryRefused
            The PACS does not accept the model or fails the query.
        PacsError
            The PACS cannot be reached or gives up.
        """
        model = MODELS[model_name or self.model]["find"]
        started = time.monotonic()
        matches: list[Any] = []
        # Both models are proposed: a PACS that accepts none of the contexts aborts the association
        # (pynetdicom), which would look like an outage; with two, the missing one is a clear "no".
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        contexts = [(models["find"], syntaxes) for models in MODELS.values()]
        with self._associations.open(contexts) as assoc:
            context_id = next(
                (cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == model), None
            )
            if context_id is None:
                raise QueryRefused(
                    f"the PACS does not accept C-FIND in the {model_name or self.model} root model"
                )
            cancelled_at = 0.0
            ignored = 0
            for status, match in assoc.send_c_find(identifier, model, msg_id=MESSAGE_ID):
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
                if not statuses.is_pending(code):
                    self._judge_final(code, matches, cancelled=bool(cancelled_at), limit=limit)
                    break
                if cancelled_at:
                    # Pending responses already on their way when the PACS read our C-CANCEL are
                    # not kept; a PACS that ignores it is left (A-ABORT) rather than read whole.
                    ignored += 1
                    if ignored > CANCEL_GRACE_RESPONSES or time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                        LOGGER.debug("the PACS ignores C-CANCEL; aborting the association")
                        assoc.abort()
                        break
                    continue
                if match is not None:
                    matches.append(match if keep is None else keep(match))
                if limit is not None and len(matches) >= limit:
                    assoc.send_c_cancel(MESSAGE_ID, context_id)
                    cancelled_at = time.monotonic()
        LOGGER.debug(
            "C-FIND %s: %d matches in %.3f s%s",
            identifier.get("QueryRetrieveLevel", "?"),
            len(matches),
            time.monotonic() - started,
            " (cancelled at the limit)" if cancelled_at else "",
        )
        return matches

    def _judge_final(self, code: int, matches: list[Any], *, cancelled: bool, limit: int | None) -> None:
        """Raise unless the final status ``code`` says the answer in ``matches`` is whole.

        Capped (:class:`AnswerCapped`): Cancel (0xFE00) that we did not ask for (Orthanc's
        LimitFindResults / LimitFindInstances), 0xA700 (a refusal for the answer's size,
        dcm4chee's QueryMaxNumberOfResults), any warning status (0xB001: response limit reached,
        PS3.4 C.4.1.1.4), and Success after exactly ``find_limit`` matches (a PACS known to cut
        its answers there and report plain success). Other failures: :class:`QueryRefused`.
        """
        how = ""
        if code == statuses.CANCEL:
            how = "" if cancelled else "cancel"
        elif code == statuses.FIND_OUT_OF_RESOURCES:
            how = "refused"
        elif statuses.is_warning(code):
            how = "warning"
        elif code == statuses.SUCCESS:
            capped = self.find_limit > 0 and len(matches) == self.find_limit
            # Our own limit below the cap hides it: those answers are cut by us, not the PACS.
            how = "findlimit" if capped and (limit is None or limit > self.find_limit) else ""
        else:
            raise QueryRefused(f"C-FIND failed with status 0x{code:04X}")
        if how:
            why = explain_capped_find(how)
            raise AnswerCapped(
                f"{why.line()} ({len(matches)} matches came)",
                len(matches),
                matches,
                proven=how != "findlimit",
            )

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
