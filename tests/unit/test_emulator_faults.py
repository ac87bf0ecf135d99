from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.faults import (
    Fault,
    FaultQueue,
    LogEntry,
    RequestLog,
    fault_from_headers,
    garble,
    parse_fault_spec,
)


def test_headers_give_a_fault() -> None:
    assert fault_from_headers({}) is None
    assert fault_from_headers({"x-emulator-fault": "429", "x-emulator-retry-after": "1.5"}) == Fault("429", 1.5, 0)
    assert fault_from_headers({"x-emulator-latency-ms": "20"}) == Fault(None, None, 20)


@pytest.mark.parametrize(
    "headers",
    [{"x-emulator-fault": "418"}, {"x-emulator-fault": "429", "x-emulator-retry-after": "soon"},
     {"x-emulator-latency-ms": "-3"}],
)
def test_bad_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        fault_from_headers(headers)


@pytest.mark.parametrize(
    "spec",
    [
        [], {"fault": "nope"}, {"fault": "500", "times": 0}, {"match": {"provider": "azure"}, "fault": "500"},
        {"match": {"team": "x"}, "fault": "500"}, {"fault": "500", "colour": "red"}, {"latency_ms": 0},
    ],
)
def test_bad_specs_are_refused(spec: object) -> None:
    with pytest.raises(ValueError):
        parse_fault_spec(spec)


def test_queue_is_consumed_in_order_and_by_match() -> None:
    queue = FaultQueue()
    queue.add(parse_fault_spec({"match": {"provider": "anthropic"}, "fault": "529", "times": 2}))
    queue.add(parse_fault_spec({"match": {"model": "gpt-4o"}, "fault": "500"}))
    queue.add(parse_fault_spec({"fault": "429", "retry_after": 1}))
    assert queue.take("openai", "gpt-4o") == Fault("500", None, 0, "programmed")
    assert queue.take("anthropic", "claude-haiku-4-5").kind == "529"  # type: ignore[union-attr]
    assert queue.take("anthropic", "claude-haiku-4-5").kind == "529"  # type: ignore[union-attr]
    assert queue.take("gemini", "gemini-2.5-pro") == Fault("429", 1.0, 0, "programmed")
    assert queue.take("gemini", "gemini-2.5-pro") is None
    assert queue.pending() == []


def test_unlimited_entry_stays_until_cleared() -> None:
    queue = FaultQueue()
    queue.add(parse_fault_spec({"fault": "503", "times": None}))
    for _ in range(5):
        assert queue.take("openai", "gpt-4o") is not None
    assert queue.clear() == 1
    assert queue.take("openai", "gpt-4o") is None


def test_request_log_is_bounded_and_clearable() -> None:
    log = RequestLog(capacity=2)
    for _ in range(3):
        log.add(LogEntry(log.next_seq(), "openai", "/v1/chat/completions", "gpt-4o", False, 0, [], [], [], [],
                         200, None, None))
    assert [e["seq"] for e in log.entries()] == [2, 3]
    log.clear()
    assert log.entries() == []


@given(st.text(alphabet="abc XYZ 0123456789.,:-", max_size=60))
def test_garble_keeps_the_shape_and_changes_the_content(text: str) -> None:
    out = garble(text)
    assert len(out) == len(text) and out.count(" ") == text.count(" ")
    shift = str.maketrans("0123456789", "5678901234")
    assert sorted(c for c in out if c.isdigit()) == sorted(c.translate(shift) for c in text if c.isdigit())
    assert garble(garble(text)) == text


def test_garble_is_a_programmable_fault_for_one_model() -> None:
    item = parse_fault_spec({"match": {"model": "gemini-2.5-flash"}, "fault": "garble", "times": None})
    assert item.fault.kind == "garble" and item.times is None
    assert garble("TOTAL 42041.64") == "LATOT 91.69579"
