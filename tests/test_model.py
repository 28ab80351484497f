"""Telling patients apart (dicomfs.core.model): pure, table-tested."""

from __future__ import annotations

import pytest

from dicomfs.core.model import PatientKey, identify_patients, name_key


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("DOE^JANE", "doe^jane"),
        ("Doe^Jane^^^", "doe^jane"),
        ("  DOE ^  JANE ", "doe^jane"),
        ("DOE^JANE=", "doe^jane"),
        ("Yamada^Tarou=山田^太郎", "yamada^tarou=山田^太郎"),
        ("", ""),
        ("^^^", ""),
        ("Ｄｏｅ", "doe"),  # NFKC: full-width forms are the same letters
    ],
)
def test_name_key(name: str, key: str) -> None:
    assert name_key(name) == key


def ids(rows: list[tuple[str, str, str]]) -> list[tuple[str, str, bool, bool, str]]:
    return [(k.patient_id, k.issuer, k.split, k.by_name, k.name) for k in identify_patients(rows)]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(
            [("X", "ABCD", "NGUYEN^AN"), ("X", "HOSP2", "TRAN^BINH")],
            [("X", "ABCD", True, False, ""), ("X", "HOSP2", True, False, "")],
            id="two issuers",
        ),
        pytest.param(
            [("X", "", "SMITH^ANN"), ("X", "", "JONES^BOB")],
            [("X", "", True, True, "smith^ann"), ("X", "", True, True, "jones^bob")],
            id="no issuer, two names",
        ),
        pytest.param(
            [("X", "", "DOE^JANE"), ("X", "", "Doe^Jane^^")],
            [("X", "", False, False, ""), ("X", "", False, False, "")],
            id="one name spelled two ways",
        ),
        pytest.param(
            [("X", "", "DOE^JANE"), ("X", "", "")],
            [("X", "", False, False, ""), ("X", "", False, False, "")],
            id="an empty name proves nothing",
        ),
        pytest.param(
            [("X", "", "A"), ("X", "", "B"), ("X", "", "")],
            [("X", "", True, True, "a"), ("X", "", True, True, "b"), ("X", "", True, True, "")],
            id="beside two names, no name is a person of its own",
        ),
        pytest.param(
            [("X", "I", "A"), ("Y", "I", "B"), ("X", "I", "a")],
            [("X", "I", False, False, ""), ("Y", "I", False, False, ""), ("X", "I", False, False, "")],
            id="different IDs never mix",
        ),
        pytest.param(
            [("X", " I ", "A"), ("X", "I", "A")],
            [("X", "I", False, False, ""), ("X", "I", False, False, "")],
            id="padding of the issuer",
        ),
    ],
)
def test_identify_patients(
    rows: list[tuple[str, str, str]], expected: list[tuple[str, str, bool, bool, str]]
) -> None:
    assert ids(rows) == expected


@pytest.mark.parametrize(
    ("key", "row", "admitted"),
    [
        (PatientKey("X"), ("X", "ANY", "ANYONE"), True),
        (PatientKey("X"), ("Y", "", ""), False),
        (PatientKey("X", "ABCD", split=True), ("X", "ABCD", "Other^Name"), True),
        (PatientKey("X", "ABCD", split=True), ("X", "HOSP2", "NGUYEN^AN"), False),
        (PatientKey("X", "ABCD", split=True), ("X", "", "NGUYEN^AN"), False),
        (PatientKey("X", "", split=True, by_name=True, name="a"), ("X", "", "A^^"), True),
        (PatientKey("X", "", split=True, by_name=True, name="a"), ("X", "", "B"), False),
        (PatientKey("X", "", split=True, by_name=True, name=""), ("X", "", ""), True),
        (PatientKey("X", "", split=True, by_name=True, name=""), ("X", "", "A"), False),
    ],
)
def test_a_patient_admits_only_its_own_rows(
    key: PatientKey, row: tuple[str, str, str], admitted: bool
) -> None:
    assert key.admits(*row) is admitted


def test_key_texts_are_distinct_and_stable() -> None:
    keys = identify_patients([("X", "", "A"), ("X", "", "B"), ("X", "I", "A"), ("X/Y", "", "A")])
    texts = [key.text for key in keys]
    assert len(set(texts)) == len(texts)
    assert texts == [
        key.text
        for key in identify_patients([("X", "", "A"), ("X", "", "B"), ("X", "I", "A"), ("X/Y", "", "A")])
    ]
