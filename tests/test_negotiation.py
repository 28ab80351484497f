"""Presentation contexts offered for C-GET."""

from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from dicomfs.negotiation import (
    COMPRESSED,
    MAX_CONTEXTS,
    TRANSFER_SYNTAXES,
    UNCOMPRESSED,
    get_storage_contexts,
    may_be_compressed,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


@pytest.mark.parametrize("compressed_first", [False, True])
def test_known_classes_get_one_context_per_syntax(compressed_first: bool) -> None:
    contexts = get_storage_contexts([CT, CT], MAX_CONTEXTS - 1, compressed_first)
    assert len(contexts) == MAX_CONTEXTS - 1
    ct = [syntaxes for uid, syntaxes in contexts if uid == CT]
    assert contexts[: len(ct)] == [(CT, syntaxes) for syntaxes in ct]  # the known class comes first
    assert all(len(syntaxes) == 1 for syntaxes in ct)
    assert {syntaxes[0] for syntaxes in ct} == set(TRANSFER_SYNTAXES)
    assert ct[0][0] == (COMPRESSED[0] if compressed_first else UNCOMPRESSED[0])
    # Instances of other classes in the series still find a context.
    assert COMPREHENSIVE_SR in {uid for uid, _ in contexts}


@pytest.mark.parametrize("compressed_first", [False, True])
def test_unknown_classes_fit_the_association_and_keep_common_ones(compressed_first: bool) -> None:
    contexts = get_storage_contexts([], MAX_CONTEXTS - 1, compressed_first)
    assert len(contexts) <= MAX_CONTEXTS - 1
    offered = {uid for uid, _ in contexts}
    assert CT in offered and COMPREHENSIVE_SR in offered
    ct_syntaxes = [syntaxes for uid, syntaxes in contexts if uid == CT]
    assert (RLELossless,) in ct_syntaxes
    first = ct_syntaxes[0]
    assert (first != UNCOMPRESSED) == compressed_first


def test_classes_without_pixel_data_are_offered_uncompressed_only() -> None:
    assert not may_be_compressed(COMPREHENSIVE_SR)
    assert may_be_compressed(CT)
    sr = [syntaxes for uid, syntaxes in get_storage_contexts([], MAX_CONTEXTS - 1) if uid == COMPREHENSIVE_SR]
    assert sr == [UNCOMPRESSED]
    assert ExplicitVRLittleEndian in sr[0]


def test_too_many_known_classes_fall_back_to_shared_contexts() -> None:
    many = [f"1.2.840.10008.5.1.4.1.1.{n}" for n in range(1, 40)]
    contexts = get_storage_contexts(many, MAX_CONTEXTS - 1)
    assert len(contexts) <= MAX_CONTEXTS - 1
