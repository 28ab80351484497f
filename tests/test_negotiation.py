"""Presentation contexts offered for C-GET, and the planner that picks them after failures."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    AllTransferSyntaxes,
    ExplicitVRLittleEndian,
    JPEGExtended12Bit,
    JPEGLossless,
    RLELossless,
)

from dicomfs.dimse.negotiation import (
    COMMON_COMPRESSED,
    COMPRESSIBLE_CLASSES,
    FALLBACK_COMPRESSED,
    MAX_CONTEXTS,
    PRIVATE_STORAGE_CLASSES,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    UNCOMPRESSED,
    exact_contexts,
    fallback_contexts,
    may_be_compressed,
    storage_contexts,
)
from dicomfs.dimse.offers import OfferPlanner

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"
UNNAMED = "1.2.826.0.1.3680043.8.498.1.7.1"  # a private class no list knows
ROOM = MAX_CONTEXTS - 1
# PS3.5 Annex A syntaxes pydicom has no constant for, retired ones (JPEG processes 3-29) included.
RETIRED_JPEG = [f"1.2.840.10008.1.2.4.{n}" for n in (52, 53, 54, 55, 56, 58, 59, 60, 61, 62, 63, 64, 65, 66)]


def test_every_stored_syntax_is_offered_retired_ones_included() -> None:
    smpte_2110 = "1.2.840.10008.1.2.7."  # real-time video (PS3.22), never a stored instance
    stored = [uid for uid in AllTransferSyntaxes if not uid.startswith(smpte_2110)]
    assert set(stored) <= set(TRANSFER_SYNTAXES)
    assert set(RETIRED_JPEG) <= set(TRANSFER_SYNTAXES)
    assert "1.2.840.10008.1.2.6.2" not in TRANSFER_SYNTAXES  # XML encoding never stores an instance
    assert len(set(TRANSFER_SYNTAXES)) == len(TRANSFER_SYNTAXES)


@pytest.mark.parametrize("lead", ["", JPEGLossless, JPEGExtended12Bit])
def test_known_classes_get_one_context_per_syntax_lead_first(lead: str) -> None:
    contexts = exact_contexts([CT, CT], ROOM, lead)
    assert all(uid == CT and len(syntaxes) == 1 for uid, syntaxes in contexts)
    assert [syntaxes[0] for _, syntaxes in contexts][: len(TRANSFER_SYNTAXES)] == sorted(
        TRANSFER_SYNTAXES, key=lambda syntax: (syntax != lead, TRANSFER_SYNTAXES.index(syntax))
    )
    assert contexts[0][1][0] == (lead or UNCOMPRESSED[0])


def test_two_classes_get_every_syntax_each() -> None:
    contexts = exact_contexts([CT, CSA_NON_IMAGE], ROOM)
    for uid in (CT, CSA_NON_IMAGE):
        assert {syntaxes[0] for cls, syntaxes in contexts if cls == uid} == set(TRANSFER_SYNTAXES)
    assert len(contexts) <= ROOM


def test_many_classes_take_turns_so_each_gets_its_likely_syntaxes() -> None:
    classes = [CT, MR, CSA_NON_IMAGE, "1.2.840.10008.5.1.4.1.1.1"]
    contexts = exact_contexts(classes, ROOM, lead=JPEGLossless)
    assert len(contexts) == ROOM
    for uid in classes:
        syntaxes = [syntaxes[0] for cls, syntaxes in contexts if cls == uid]
        assert syntaxes[:2] == [JPEGLossless, ExplicitVRLittleEndian]
        assert RLELossless in syntaxes


def test_first_offer_keeps_room_for_unknown_classes() -> None:
    contexts = storage_contexts([CT], ROOM)
    assert len(contexts) == ROOM
    ct = [syntaxes for uid, syntaxes in contexts if uid == CT]
    assert all(len(syntaxes) == 1 for syntaxes in ct)
    assert {syntaxes[0] for syntaxes in ct} == set(UNCOMPRESSED + COMMON_COMPRESSED)
    offered = {uid for uid, _ in contexts}
    assert {MR, COMPREHENSIVE_SR} <= offered


def test_unknown_classes_fit_the_association_and_keep_common_ones() -> None:
    contexts = fallback_contexts(ROOM)
    assert len(contexts) == ROOM
    offered = {uid for uid, _ in contexts}
    assert CT in offered and COMPREHENSIVE_SR in offered
    ct_syntaxes = [syntaxes for uid, syntaxes in contexts if uid == CT]
    assert ct_syntaxes[0] == UNCOMPRESSED
    assert (RLELossless,) in ct_syntaxes and (JPEGLossless,) in ct_syntaxes
    for uid in COMPRESSIBLE_CLASSES:  # a PACS that cannot convert needs the stored syntax's own
        assert [syntaxes for cls, syntaxes in contexts if cls == uid] == [
            UNCOMPRESSED,
            *((syntax,) for syntax in FALLBACK_COMPRESSED),
        ]
    assert len(offered - set(COMPRESSIBLE_CLASSES)) >= 15


def test_classes_without_pixel_data_are_offered_uncompressed_only() -> None:
    assert not may_be_compressed(COMPREHENSIVE_SR)
    assert may_be_compressed(CT)
    sr = [syntaxes for uid, syntaxes in fallback_contexts(ROOM) if uid == COMPREHENSIVE_SR]
    assert sr == [UNCOMPRESSED]
    exact = exact_contexts([COMPREHENSIVE_SR], ROOM)
    assert {syntaxes for _, syntaxes in exact} == {(syntax,) for syntax in UNCOMPRESSED}


def test_private_classes_are_storage_classes_we_can_name() -> None:
    assert CSA_NON_IMAGE in PRIVATE_STORAGE_CLASSES
    assert set(PRIVATE_STORAGE_CLASSES) <= set(STORAGE_SOP_CLASSES)


# -- the planner ---------------------------------------------------------------------------------


def classes_of(contexts: list[tuple[str, tuple[str, ...]]]) -> set[str]:
    return {uid for uid, _ in contexts}


def test_planner_offers_learned_classes_exactly() -> None:
    planner = OfferPlanner([CT])
    assert CSA_NON_IMAGE in classes_of(planner.first().contexts)  # a private class we can name
    assert UNNAMED not in classes_of(planner.first().contexts)
    planner.learn_classes([CT, UNNAMED])
    offer = planner.next()
    assert offer is not None
    assert classes_of(offer.contexts) == {CT, UNNAMED}
    assert {syntaxes[0] for uid, syntaxes in offer.contexts if uid == UNNAMED} == set(TRANSFER_SYNTAXES)


def test_planner_offers_rare_syntaxes_then_leads_with_each_accepted_compressed_one() -> None:
    planner = OfferPlanner([CT])
    assert "1.2.840.10008.1.2.4.52" not in {syntaxes[0] for _, syntaxes in planner.first().contexts}
    planner.note_accepted([(CT, ExplicitVRLittleEndian), (CT, JPEGExtended12Bit), (CT, JPEGLossless)])
    offers = list(iter(planner.next, None))
    assert {syntaxes[0] for _, syntaxes in offers[0].contexts} == set(TRANSFER_SYNTAXES)  # retired ones too
    assert [offer.contexts[0] for offer in offers[1:]] == [(CT, (JPEGExtended12Bit,)), (CT, (JPEGLossless,))]
    assert all(classes_of(offer.contexts) == {CT} for offer in offers)


def test_planner_without_anything_new_to_try_gives_up() -> None:
    planner = OfferPlanner([CT])
    planner.first()
    planner.note_accepted([(CT, ExplicitVRLittleEndian)])
    assert planner.next() is not None  # every syntax for the known class
    assert planner.next() is None


def test_planner_discovers_classes_when_the_pacs_does_not_say() -> None:
    planner = OfferPlanner([])
    offered = classes_of(planner.first().contexts)
    planner.learn_classes([])  # dcmqrscp returns no SOPClassUID
    planner.note_accepted([(CT, ExplicitVRLittleEndian), (CT, RLELossless)])
    offers = list(iter(planner.next, None))
    # The accepted compressed syntax leads, and the same offer brings classes never offered.
    assert offers[0].contexts[0] == (CT, (RLELossless,))
    assert CSA_NON_IMAGE in offered  # the known private classes come with the first offer
    discovered = set().union(*(classes_of(offer.contexts) for offer in offers))
    assert offered | discovered == set(STORAGE_SOP_CLASSES)
    assert all(len(offer.contexts) <= ROOM for offer in offers)
    assert len(offers) == 2  # 173 classes: 31 in the first offer, 126 then the last 16
