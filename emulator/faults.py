"""Injected faults and the request log, for tests and demos.

Faults arrive two ways: per request by header (``x-emulator-fault``, ``x-emulator-retry-after``,
``x-emulator-latency-ms``), or programmed through the control API as a queue consumed in
order, because traffic sent through the gateway does not carry arbitrary headers::

    POST /_emulator/faults {"match": {"provider": "anthropic"}, "fault": "529", "times": 2}

Both structures are guarded by a lock: the server's handlers and the control API touch them
from the event loop, tests read them from other threads.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

FAULT_KINDS = ("429", "500", "503", "529", "timeout", "reset", "broken-stream", "quota", "bad-schema", "garble")
# Faults that the protocol answers with an error body (the others act on the connection).
ERROR_FAULTS = ("429", "500", "503", "529", "quota")


_DIGIT_SHIFT = str.maketrans("0123456789", "5678901234")


def garble(text: str) -> str:
    """The ``garble`` fault's answer: each word reversed and each digit shifted by five.

    A model that degrades without failing: the request succeeds and the answer is well formed,
    but no longer says what the image says, so only a quality test can catch it (the guard's
    rollback on quality, not on errors)."""
    return " ".join(word[::-1].translate(_DIGIT_SHIFT) for word in text.split(" "))


@dataclass(frozen=True)
class Fault:
    """One fault to apply to one request. ``kind`` None means latency only."""

    kind: str | None = None
    retry_after: float | None = None
    latency_ms: int = 0
    source: str = "header"


def _number(value: Any, name: str, *, integer: bool = False) -> Any:
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if number < 0:
        raise ValueError(f"{name} must not be negative")
    return number


def _kind(value: Any) -> str | None:
    if value in (None, "", "none"):
        return None
    kind = str(value)
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    return kind


def fault_from_headers(headers: Mapping[str, str]) -> Fault | None:
    """The fault the request asks for by header, or None. Raises ``ValueError`` on bad values."""
    kind = _kind(headers.get("x-emulator-fault"))
    retry = headers.get("x-emulator-retry-after")
    latency = headers.get("x-emulator-latency-ms")
    if kind is None and latency is None:
        return None
    return Fault(kind, _number(retry, "x-emulator-retry-after") if retry is not None else None,
                 _number(latency, "x-emulator-latency-ms", integer=True) if latency is not None else 0, "header")


@dataclass
class ProgrammedFault:
    fault: Fault
    provider: str | None = None
    model: str | None = None
    times: int | None = 1  # None: until cleared

    def matches(self, provider: str, model: str) -> bool:
        return (self.provider in (None, provider)) and (self.model in (None, model))

    def describe(self) -> dict[str, Any]:
        return {"match": {"provider": self.provider, "model": self.model}, "fault": self.fault.kind,
                "retry_after": self.fault.retry_after, "latency_ms": self.fault.latency_ms, "times": self.times}


def parse_fault_spec(spec: Any) -> ProgrammedFault:
    """Validate one control-API body. Raises ``ValueError`` with a message for the caller."""
    if not isinstance(spec, Mapping):
        raise ValueError("the body must be a JSON object")
    unknown = set(spec) - {"match", "fault", "times", "retry_after", "latency_ms"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    match = spec.get("match") or {}
    if not isinstance(match, Mapping) or set(match) - {"provider", "model"}:
        raise ValueError("match takes only 'provider' and 'model'")
    provider = match.get("provider")
    if provider is not None and provider not in ("openai", "anthropic", "gemini"):
        raise ValueError(f"unknown provider {provider!r}")
    kind = _kind(spec.get("fault"))
    latency = _number(spec.get("latency_ms", 0), "latency_ms", integer=True)
    if kind is None and latency == 0:
        raise ValueError("give a fault, a latency_ms, or both")
    times = spec.get("times", 1)
    if times is not None:
        times = _number(times, "times", integer=True)
        if times < 1:
            raise ValueError("times must be at least 1 (or null for until cleared)")
    retry = spec.get("retry_after")
    fault = Fault(kind, _number(retry, "retry_after") if retry is not None else None, latency, "programmed")
    return ProgrammedFault(fault, provider, match.get("model"), times)


class FaultQueue:
    """Programmed faults, consumed in order: a request takes the first entry that matches it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[ProgrammedFault] = []

    def add(self, item: ProgrammedFault) -> None:
        with self._lock:
            self._items.append(item)

    def clear(self) -> int:
        with self._lock:
            n = len(self._items)
            self._items.clear()
            return n

    def take(self, provider: str, model: str) -> Fault | None:
        with self._lock:
            for i, item in enumerate(self._items):
                if item.matches(provider, model):
                    if item.times is not None:
                        item.times -= 1
                        if item.times <= 0:
                            del self._items[i]
                    return item.fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [item.describe() for item in self._items]


@dataclass
class LogEntry:
    """One request as the emulator saw it (tests assert attempt counts on these)."""

    seq: int
    protocol: str
    path: str
    model: str | None
    stream: bool
    images: int
    image_sizes: list[list[int]]
    details: list[str]
    effective_sizes: list[list[int]]
    image_tokens: list[int]
    status: int
    fault: str | None
    task: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    traceparent: str | None = None  # the W3C trace context the caller sent, if any


class RequestLog:
    """The last ``capacity`` requests, oldest first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._seq = 0

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def add(self, entry: LogEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(e) for e in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
