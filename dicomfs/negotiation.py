"""Which presentation contexts to offer, so instances arrive in the transfer syntax they are stored in.

dicomfs never transcodes, and some archives cannot either (dcmqrscp fails a sub-operation whose
stored syntax was not accepted). A C-GET SCU therefore offers one context per (SOP class,
transfer syntax) pair, letting the PACS pick the one that matches each file (PS3.4 C.4.3.1.3,
PS3.8 9.3.2.2). 128 contexts is the limit, so the pairs are chosen with care.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom.presentation import StoragePresentationContexts

UNCOMPRESSED: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
COMPRESSED: tuple[str, ...] = (
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
)
#: Every transfer syntax we accept as stored (PS3.5 Annex A).
TRANSFER_SYNTAXES: tuple[str, ...] = UNCOMPRESSED + COMPRESSED

#: Presentation contexts one association may carry: context IDs are odd numbers 1-255 (PS3.8 9.3.2.2).
MAX_CONTEXTS = 128

#: pynetdicom's 120 most common storage classes.
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(str(cx.abstract_syntax) for cx in StoragePresentationContexts)

#: Image classes archives commonly hold compressed: CT, MR, CR, DX, MG, US, US multi-frame, SC,
#: multi-frame grayscale SC, XA, NM, PET (PS3.4 B.5). Unknown series get a context per syntax for these.
COMPRESSIBLE_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.2",
    "1.2.840.10008.5.1.4.1.1.6.1",
    "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.12.1",
    "1.2.840.10008.5.1.4.1.1.20",
    "1.2.840.10008.5.1.4.1.1.128",
)
#: Other classes an archive commonly holds, offered before the rest of pynetdicom's list: SR
#: (basic text, enhanced, comprehensive, comprehensive 3D, key object selection, dose, mammo CAD),
#: encapsulated PDF, GSPS, enhanced CT/MR/PET/XA, segmentation, registration, RT (image, dose,
#: structure set, plan), breast tomosynthesis, XRF, VL photographic, raw data.
PREFERRED_OTHER_CLASSES: tuple[str, ...] = tuple(
    f"1.2.840.10008.5.1.4.1.1.{suffix}"
    for suffix in (
        "88.11", "88.22", "88.33", "88.34", "88.59", "88.67", "88.50", "104.1", "11.1", "2.1", "4.1",
        "130", "12.1.1", "66.4", "66.1", "481.1", "481.2", "481.3", "481.5", "13.1.3", "12.2",
        "77.1.4", "66",
    )
)  # fmt: skip
# The compressed syntaxes seen most in archives, for the unknown-series offer.
_COMMON_COMPRESSED = (
    RLELossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEG2000,
)


# Storage classes without pixel data (PS3.4 Annex B): SR, encapsulated documents, presentation
# states, raw data, registration and segmentation-free RT objects (structure set, plans, records).
_NON_IMAGE_PREFIXES = tuple(
    f"1.2.840.10008.5.1.4.1.1.{suffix}"
    for suffix in ("88.", "104.", "11.", "66", "481.3", "481.4", "481.5", "481.6", "481.7", "481.8", "481.9")
)


def may_be_compressed(sop_class: str) -> bool:
    """False for classes without pixel data: offering them compressed syntaxes only invites relabelling."""
    return not sop_class.startswith(_NON_IMAGE_PREFIXES)


def get_storage_contexts(
    sop_classes: Sequence[str], room: int, compressed_first: bool = False
) -> list[tuple[str, tuple[str, ...]]]:
    """Storage contexts for a C-GET of a series with these SOP classes ([] = unknown), at most ``room``.

    Known classes: one context per (class, syntax), then the rest of the room as for an unknown
    series, for instances of other classes. Unknown: the compressible classes get the
    uncompressed syntaxes in one context and each common compressed syntax in its own; the other
    common classes share one context each with every syntax (the PACS picks, and may convert).
    A PACS that takes the first context accepted for a class sees uncompressed ones first, or
    compressed ones with ``compressed_first``.
    """
    known = list(dict.fromkeys(sop_classes))
    contexts: list[tuple[str, tuple[str, ...]]] = []
    if known and len(known) * len(TRANSFER_SYNTAXES) <= room:
        order = COMPRESSED + UNCOMPRESSED if compressed_first else TRANSFER_SYNTAXES
        contexts = [(uid, (syntax,)) for uid in known for syntax in order]
        known_first = known  # the rest of the room: the unknown-series offer, for other classes
    else:
        known_first = []
    offered = set(known_first)
    for uid in [uid for uid in (known or COMPRESSIBLE_CLASSES) if uid not in offered]:
        compressed = [(uid, (syntax,)) for syntax in _COMMON_COMPRESSED]
        contexts += (
            [*compressed, (uid, UNCOMPRESSED)] if compressed_first else [(uid, UNCOMPRESSED), *compressed]
        )
    offered = {uid for uid, _ in contexts}
    others = dict.fromkeys(
        uid
        for uid in (*COMPRESSIBLE_CLASSES, *PREFERRED_OTHER_CLASSES, *STORAGE_SOP_CLASSES)
        if uid not in offered
    )
    contexts += [(uid, TRANSFER_SYNTAXES if may_be_compressed(uid) else UNCOMPRESSED) for uid in others]
    return contexts[:room]
