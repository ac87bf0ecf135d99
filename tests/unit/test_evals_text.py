"""Normalisation, number canonicalisation and claim extraction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evals.claims import date_candidates, extract_claims
from evals.normalize import canonical_number, normalize_text


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("  Hello\n\n  WORLD  ", "hello world"),
        ("\ufb01le \uff21\uff22\uff23", "file abc"),  # NFKC: ligature, full-width
        ("Stra\u00dfe", "strasse"),  # case-fold, not lower()
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("\u201cquoted\u201d \u2013 it\u2019s", '"quoted" - it\'s'),
        ("```text\nTotal: **12.50**\n```", "total: 12.50"),
        ("# Invoice\n- item one\n* item two", "invoice item one item two"),
    ],
)
def test_normalize_examples(raw: str, want: str) -> None:
    assert normalize_text(raw) == want


def test_markdown_is_kept_when_asked() -> None:
    assert normalize_text("**bold**", markdown=False) == "**bold**"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert once == once.strip() and "  " not in once and "\n" not in once


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("1,234.56", "1234.56"),
        ("1.234,56", "1234.56"),
        ("$1234.560", "1234.56"),
        ("12,5", "12.5"),
        ("1,234", "1234"),
        ("0,25", "0.25"),
        ("007", "7"),
        ("-45.00", "-45"),
        ("abc", None),
        ("", None),
    ],
)
def test_canonical_number(raw: str, want: str | None) -> None:
    assert canonical_number(raw) == want


def kinds(text: str) -> list[tuple[str, str]]:
    return [(c.kind, c.text) for c in extract_claims(text)]


def test_claims_of_a_typical_answer() -> None:
    got = kinds(
        "The total is $1,234.50. Invoice INV-2024-001 from Bob Jones (bob@acme.com), "
        'dated March 3, 2024. Note: "pay within thirty days".'
    )
    assert got == [
        ("number", "$1,234.50"),
        ("code", "INV-2024-001"),
        ("name", "Bob Jones"),
        ("email", "bob@acme.com"),
        ("date", "March 3, 2024"),
        ("quote", "pay within thirty days"),
    ]


def test_sentence_starters_single_digits_and_json_keys_are_not_claims() -> None:
    assert kinds("Sure. Here is the text.") == []
    assert kinds("There are 3 items.") == []
    assert kinds('{"invoice_number": "INV-77", "vendor": "Globex Ltd"}') == [
        ("code", "INV-77"),
        ("name", "Globex Ltd"),
    ]


def test_sentence_initial_label_gives_an_alternative_reading() -> None:
    [c] = extract_claims("Contact Maria de la Cruz today")
    assert c.kind == "name" and "maria de la cruz" in c.alternatives


def test_date_candidates_cover_ambiguous_orders() -> None:
    assert date_candidates("03/01/2024") == {"2024-03-01", "2024-01-03"}
    assert date_candidates("March 1, 2024") == {"2024-03-01"}
    assert date_candidates("2024-02-30") == set()
    assert date_candidates("99999/1/1") == set()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_claim_extraction_never_crashes(text: str) -> None:
    for c in extract_claims(text):
        assert 0 <= c.start <= c.end <= len(text)
        assert c.canonical


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789.,$-/ :ABCxyz@", max_size=60))
def test_claim_extraction_never_crashes_on_number_soup(text: str) -> None:
    extract_claims(text)
