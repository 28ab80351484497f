"""What each C-GET of one retrieval offers, learning the series' SOP classes and the PACS's syntaxes.

A C-GET SCP can only send an instance over a presentation context we proposed for its SOP class
(PS3.4 C.4.3.1.3, PS3.7 D.3.3.4), and a PACS that cannot convert (dcmqrscp) only over one whose
transfer syntax is the stored one - and it takes the *first* context accepted for the class. So
when sub-operations fail, the next C-GET offers, in this order:

1. **the series' classes exactly**, one context per (class, syntax), every stored syntax of
   PS3.5 Annex A (the first offer has only the likely ones): as soon as a class is known that
   no exact offer covered (the PACS's IMAGE-level C-FIND answers with SOPClassUID);
2. **each compressed syntax the PACS accepted, first**, one per offer ("lead"): for a PACS that
   sends a class over its first accepted context, one of these is the stored syntax;
3. when the PACS does not say which classes the series holds (dcmqrscp returns no SOPClassUID),
   beside the lead: **every storage class we can name and did not offer yet** (standard and
   known private), uncompressed, in the room the lead leaves.

Each offer is at most ``room`` contexts; there are never more than a handful of offers (the
compressed syntaxes the PACS accepts, or two for the further classes, whichever is more).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dicomfs.dimse.negotiation import (
    COMPRESSED,
    MAX_CONTEXTS,
    Contexts,
    discovery_contexts,
    exact_contexts,
    storage_contexts,
)


@dataclass(frozen=True)
class Offer:
    """The storage contexts of one C-GET, and what they are, for the log."""

    contexts: Contexts
    why: str


class OfferPlanner:
    """The offers of one chain of C-GET attempts (one worker's; not shared between threads)."""

    def __init__(self, known_classes: Sequence[str], room: int = MAX_CONTEXTS - 1) -> None:
        """``known_classes``: the SOP classes known so far ([] = unknown); ``room``: contexts per offer."""
        self._room = room
        self._classes: list[str] = list(dict.fromkeys(known_classes))
        self._told = bool(self._classes)  # the PACS said which classes (some of) the series holds
        self._exact: set[str] = set()  # classes that had one context per syntax
        self._offered: set[str] = set()  # classes offered in any way
        self._accepted: dict[str, list[str]] = {}  # class -> syntaxes the PACS accepted
        self._led: set[str] = set()  # lead syntaxes tried

    def first(self) -> Offer:
        """The first offer: the known classes' likely syntaxes, then the fallback for the rest."""
        contexts = storage_contexts(self._classes, self._room)
        why = "the known SOP classes, then common ones" if self._classes else "common SOP classes"
        return self._note(Offer(contexts, why))

    def learn_classes(self, classes: Iterable[str]) -> None:
        """Classes the series holds (from the PACS's C-FIND, or instances that arrived)."""
        new = [uid for uid in dict.fromkeys(classes) if uid and uid not in self._classes]
        if new:
            self._told = True
            self._classes += new

    def note_accepted(self, accepted: Iterable[tuple[str, str]]) -> None:
        """The (class, syntax) pairs the PACS accepted on the last association."""
        for uid, syntax in accepted:
            syntaxes = self._accepted.setdefault(uid, [])
            if syntax not in syntaxes:
                syntaxes.append(syntax)

    def next(self) -> Offer | None:
        """The next offer after failed sub-operations, or None when nothing new is left to try."""
        if any(uid not in self._exact for uid in self._classes):
            self._exact.update(self._classes)
            exact = exact_contexts(self._classes, self._room)
            return self._note(Offer(exact, "exactly the series' SOP classes"))
        lead = self._next_lead()
        if lead:
            self._led.add(lead)
        if self._told:
            if not lead:
                return None
            return self._note(Offer(exact_contexts(self._classes, self._room, lead), f"{lead} first"))
        # Classes unknown: the lead for the classes that accepted it (a missing instance may be
        # stored so), and in the rest of the room classes never offered (one may be of such a class).
        leading: Contexts = [(uid, (lead,)) for uid, syntaxes in self._accepted.items() if lead in syntaxes]
        further = discovery_contexts(self._offered, self._room - len(leading))
        if not leading and not further:
            return None
        parts = [f"{lead} first"] if lead else []
        parts += [f"{len(further)} further SOP classes"] if further else []
        return self._note(Offer(leading + further, " and ".join(parts)))

    def _next_lead(self) -> str:
        """A compressed syntax the PACS accepted for a class that matters and that has not led yet."""
        classes = self._classes or list(self._accepted)
        accepted = {syntax for uid in classes for syntax in self._accepted.get(uid, ())}
        return next((syntax for syntax in COMPRESSED if syntax in accepted and syntax not in self._led), "")

    def _note(self, offer: Offer) -> Offer:
        self._offered.update(uid for uid, _ in offer.contexts)
        return offer
