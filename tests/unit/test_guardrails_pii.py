from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.guardrails.pii import (
    find_pii,
    iban_check_digits,
    iban_valid,
    luhn_check_digit,
    luhn_valid,
    shannon_entropy,
    ssn_valid,
)


def kinds(text: str) -> list[str]:
    return [f.kind for f in find_pii(text)]


@given(st.text(alphabet="0123456789", min_size=12, max_size=18))
def test_luhn_check_digit_makes_valid_and_any_single_change_breaks_it(payload: str) -> None:
    number = payload + luhn_check_digit(payload)
    assert luhn_valid(number)
    last = int(number[-1])
    assert not luhn_valid(number[:-1] + str((last + 1) % 10))


@given(st.sampled_from(["DE", "GB", "FR", "NL"]), st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=12, max_size=26))
def test_iban_round_trip_and_single_digit_error_detected(country: str, bban: str) -> None:
    iban = country + iban_check_digits(country, bban) + bban
    assert iban_valid(iban)
    wrong = str((int(iban[2]) + 1) % 10)
    assert not iban_valid(iban[:2] + wrong + iban[3:])


@given(st.text(max_size=200))
def test_find_pii_spans_are_sorted_disjoint_and_point_at_the_text(text: str) -> None:
    found = find_pii(text)
    for f in found:
        assert text[f.start : f.end] == f.text
        assert 0 < f.score <= 1
    for a, b in zip(found, found[1:], strict=False):
        assert a.end <= b.start


def test_known_values() -> None:
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not iban_valid("GB83 WEST 1234 5698 7654 32")
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert ssn_valid("123-45-6789") and not ssn_valid("000-45-6789") and not ssn_valid("666-12-3456")
    assert shannon_entropy("aaaa") == 0 and shannon_entropy("ab") == 1


def test_recognizers_find_each_kind() -> None:
    assert kinds("write to jane.doe@example.com today") == ["email"]
    assert kinds("call +1 (415) 555-2671") == ["phone"]
    assert kinds("card 4111 1111 1111 1111") == ["card"]
    assert kinds("IBAN DE89 3704 0044 0532 0130 00") == ["iban"]
    assert kinds("SSN 123-45-6789") == ["ssn"]
    assert kinds("host 192.168.1.20") == ["ipv4"]
    assert kinds("host 2001:db8::1") == ["ipv6"]
    assert kinds("key sk-proj-Ab3dEf9hIj2kLm5nOp8q") == ["secret"]
    assert kinds("AKIAIOSFODNN7EXAMPLE") == ["secret"]
    assert kinds("ghp_16C7e42F292c6912E7710c838347Ae178B4a") == ["secret"]


def test_near_misses_are_not_findings() -> None:
    assert kinds("card 4111 1111 1111 1112") != ["card"]
    assert "iban" not in kinds("IBAN GB83 WEST 1234 5698 7654 32")
    assert kinds("on 12.03.2024 we paid 1234 for 3 items") == []
    assert kinds("host 999.1.1.1") == []
    assert kinds("sk-aaaaaaaaaaaaaaaa") == []
    assert kinds("The quarterly report lists revenue and costs.") == []
