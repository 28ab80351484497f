"""Which presentation contexts to offer, so instances arrive in the transfer syntax they are stored in.

dicomfs never transcodes, and some archives cannot either: dcmqrscp fails a sub-operation whose
stored syntax was not accepted, and sends every instance of a SOP class over the *first* context
accepted for it. A C-GET SCU therefore offers one context per (SOP class, transfer syntax) pair,
letting a PACS pick the one that matches each file (PS3.4 C.4.3.1.3, PS3.8 9.3.2.2), and can put
any one syntax first (``lead``). 128 contexts is the limit, so the pairs are chosen with care:
exactly the series' classes when they are known, a fallback offer otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydicom._uid_dict import UID_dictionary
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
from pynetdicom.sop_class import _STORAGE_CLASSES

#: A context per (class, syntax) pair: the pairs one association may carry. Context IDs are odd
#: numbers 1-255 (PS3.8 9.3.2.2).
MAX_CONTEXTS = 128

UNCOMPRESSED: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
#: The encapsulated syntaxes archives hold most, in the order they are offered.
COMMON_COMPRESSED: tuple[str, ...] = (
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,  # Process 14: older CT/MR archives
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
)
# Transfer syntaxes of PS3.6 Table A-1 that never encode a stored SOP instance: PS3.19 hosting
# (MIME, XML), PS3.22 real-time video (SMPTE ST 2110).
_NOT_STORED = ("1.2.840.10008.1.2.6.", "1.2.840.10008.1.2.7.")
#: Every other stored syntax of PS3.5 Annex A, retired ones included (JPEG processes 3-29, JPIP,
#: MPEG, HEVC, HTJ2K, ..., Papyrus 3), from pydicom's copy of PS3.6 Table A-1.
RARE: tuple[str, ...] = tuple(
    uid
    for uid, (_name, kind, _info, _retired, _keyword) in UID_dictionary.items()
    if kind == "Transfer Syntax"
    and uid not in UNCOMPRESSED
    and uid not in COMMON_COMPRESSED
    and not uid.startswith(_NOT_STORED)
)
COMPRESSED: tuple[str, ...] = COMMON_COMPRESSED + RARE
#: The compressed syntaxes of the fallback offer, one context each per compressible class: the
#: common ones but JPEG-LS near-lossless, so that twelve classes leave room for others.
FALLBACK_COMPRESSED: tuple[str, ...] = tuple(s for s in COMMON_COMPRESSED if s != JPEGLSNearLossless)
#: Every transfer syntax an instance may be stored in (PS3.5 Annex A).
TRANSFER_SYNTAXES: tuple[str, ...] = UNCOMPRESSED + COMPRESSED

#: Private storage classes archives commonly hold (dcm4chee-arc's conformance statement lists
#: them): Siemens CSA Non-Image, CT MR Volume, AX Frame Sets.
PRIVATE_STORAGE_CLASSES: tuple[str, ...] = (
    "1.3.12.2.1107.5.9.1",
    "1.3.12.2.1107.5.99.3.10",
    "1.3.12.2.1107.5.99.3.11",
)

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
#: Every storage class we can name, in the order offers take them: the compressible ones, the
#: known private ones (three contexts; standard classes are the PACS's to convert, these are not
#: always), the other common ones, then the rest of pynetdicom's.
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    dict.fromkeys(
        (
            *COMPRESSIBLE_CLASSES,
            *PRIVATE_STORAGE_CLASSES,
            *PREFERRED_OTHER_CLASSES,
            *_STORAGE_CLASSES.values(),
        )
    )
)

# Storage classes without pixel data (PS3.4 Annex B): SR, encapsulated documents, presentation
# states, raw data, registration and segmentation-free RT objects (structure set, plans, records).
_NON_IMAGE_PREFIXES = tuple(
    f"1.2.840.10008.5.1.4.1.1.{suffix}"
    for suffix in ("88.", "104.", "11.", "66", "481.3", "481.4", "481.5", "481.6", "481.7", "481.8", "481.9")
)

Contexts = list[tuple[str, tuple[str, ...]]]


def may_be_compressed(sop_class: str) -> bool:
    """False for classes without pixel data: offering them compressed syntaxes only invites relabelling."""
    return not sop_class.startswith(_NON_IMAGE_PREFIXES)


def syntaxes_for(sop_class: str, lead: str = "") -> tuple[str, ...]:
    """The syntaxes ``sop_class`` may be stored in, most likely first, ``lead`` (if any) before all."""
    candidates = TRANSFER_SYNTAXES if may_be_compressed(sop_class) else UNCOMPRESSED
    if lead and lead in candidates:
        return (lead, *(syntax for syntax in candidates if syntax != lead))
    return candidates


def exact_contexts(sop_classes: Sequence[str], room: int, lead: str = "") -> Contexts:
    """One context per (class, syntax) for exactly these classes, at most ``room``.

    When every pair does not fit, the classes take turns: each gets its likeliest syntaxes
    (``lead``, then uncompressed, then the common compressed ones) before any gets a rare one.
    """
    queues: list[Contexts] = [
        [(uid, (syntax,)) for syntax in syntaxes_for(uid, lead)] for uid in dict.fromkeys(sop_classes)
    ]
    contexts: Contexts = []
    depth = 0
    while len(contexts) < room and any(depth < len(queue) for queue in queues):
        contexts += [queue[depth] for queue in queues if depth < len(queue)]
        depth += 1
    if len(contexts) > room:  # the last turn overflowed: keep every class's earlier pairs
        contexts = contexts[:room]
    # Grouped by class, as a PACS reading the offer in order expects (uncompressed first per class).
    order = {uid: index for index, uid in enumerate(dict.fromkeys(sop_classes))}
    rank = {pair: index for queue in queues for index, pair in enumerate(queue)}
    return sorted(contexts, key=lambda pair: (order[pair[0]], rank[pair]))


def likely_contexts(sop_classes: Sequence[str], room: int) -> Contexts:
    """Each likely syntax of each class (uncompressed, common compressed) in its own context."""
    likely = set(UNCOMPRESSED + COMMON_COMPRESSED)
    contexts: Contexts = [
        (uid, (syntax,))
        for uid in dict.fromkeys(sop_classes)
        for syntax in syntaxes_for(uid)
        if syntax in likely
    ]
    return contexts[:room]


def fallback_contexts(room: int, exclude: Iterable[str] = ()) -> Contexts:
    """The offer for classes not known to be in the series, at most ``room`` contexts.

    The compressible classes get the uncompressed syntaxes in one context and each syntax of
    ``FALLBACK_COMPRESSED`` in its own (a PACS that cannot convert needs the stored syntax's
    own context); the other classes share one context each (the PACS picks, and may convert).
    Classes in ``exclude`` are left out.
    """
    skip = set(exclude)
    contexts: Contexts = []
    for uid in COMPRESSIBLE_CLASSES:
        if uid not in skip:
            contexts += [(uid, UNCOMPRESSED), *((uid, (syntax,)) for syntax in FALLBACK_COMPRESSED)]
    offered = {uid for uid, _ in contexts} | skip
    # Not all of TRANSFER_SYNTAXES in shared contexts: a hundred contexts of fifty syntaxes
    # each would make a 130 kB A-ASSOCIATE-RQ.
    shared = UNCOMPRESSED + COMMON_COMPRESSED
    for uid in STORAGE_SOP_CLASSES:
        if uid not in offered:
            contexts.append((uid, shared if may_be_compressed(uid) else UNCOMPRESSED))
            offered.add(uid)
    return contexts[:room]


def storage_contexts(sop_classes: Sequence[str], room: int) -> Contexts:
    """The first offer for a series: its known classes' likely syntaxes each in its own context,
    the rest of ``room`` as a fallback.

    ``sop_classes`` may be those of a few instances only ([] = unknown): instances of other
    classes still find a context in the fallback part. The rare syntaxes come only when
    sub-operations failed (``exact_contexts``).
    """
    likely = likely_contexts(sop_classes, room)
    return likely + fallback_contexts(room - len(likely), exclude=sop_classes)


def discovery_contexts(offered: Iterable[str], room: int) -> Contexts:
    """One uncompressed context for each storage class not ``offered`` yet, at most ``room``.

    For a PACS that does not say which classes a series holds: what it sends over these tells.
    """
    seen = set(offered)
    return [(uid, UNCOMPRESSED) for uid in STORAGE_SOP_CLASSES if uid not in seen][:room]
