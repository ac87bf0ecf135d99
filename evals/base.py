"""The evaluator contract: cases in, scores out.

An evaluator looks at one request span (its prompt, its answer, its images and, when the
request named one, its ground-truth reference) and returns one or more :class:`Score`.
Evaluators are pure with respect to the store: they never read or write DuckDB; the
runner does that. They may be slow (reference-free OCR) and they may be run in worker
processes, so instances must be picklable.

Example::

    from evals.base import EvalCase, Score, evaluator

    @evaluator("answer_length", "1")
    def answer_length(case: EvalCase) -> Score:
        n = len(case.answer or "")
        return Score.scored("answer_length", "1", min(n / 100, 1.0), n >= 20, f"{n} chars")
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["scored", "not_evaluable"]


class NotEvaluable(Exception):
    """Raised inside an evaluator when the case cannot be judged; the message is the reason.

    :func:`safe_evaluate` turns it into a ``not_evaluable`` score.
    """


@dataclass(frozen=True)
class Score:
    """One verdict of one evaluator on one request span.

    ``value`` is in [0, 1] (higher is better) or None when the case could not be judged;
    ``passed`` is the evaluator's own threshold applied to ``value``.
    """

    name: str
    value: float | None
    passed: bool | None
    explanation: str
    evaluator_version: str
    status: Status = "scored"
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in ("scored", "not_evaluable"):
            raise ValueError(f"unknown score status {self.status!r}")
        if self.status == "scored":
            if self.value is None or not 0.0 <= self.value <= 1.0:
                raise ValueError(f"scored value must be in [0, 1], got {self.value!r}")
        elif self.value is not None or self.passed is not None:
            raise ValueError("a not_evaluable score carries no value and no verdict")

    @classmethod
    def scored(
        cls,
        name: str,
        version: str,
        value: float,
        passed: bool,
        explanation: str,
        details: dict[str, Any] | None = None,
    ) -> Score:
        return cls(name, float(value), bool(passed), explanation, version, "scored", details or {})

    @classmethod
    def not_evaluable(
        cls, name: str, version: str, reason: str, details: dict[str, Any] | None = None
    ) -> Score:
        return cls(name, None, None, reason, version, "not_evaluable", details or {})

    @property
    def retryable(self) -> bool:
        """A transient failure (judge unreachable...): the runner does not store it."""
        return bool(self.details.get("retryable"))


@dataclass(frozen=True)
class Reference:
    """Ground truth for an image, as loaded into the ``references`` table."""

    reference_id: str
    text: str | None = None
    lines: list[str] | None = None
    fields: dict[str, Any] | None = None
    qa: Any = None
    kind: str | None = None
    task: str | None = None
    image_sha256: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    """One image of the request, as the router saw and routed it."""

    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    detail: str | None = None
    model: str | None = None
    text_height_px: float | None = None
    loader: Callable[[], bytes | None] | None = None

    def load(self) -> bytes | None:
        """Image bytes from the blob store, or None when they were not kept."""
        if self.loader is None:
            return None
        return self.loader()


@dataclass(frozen=True)
class EvalCase:
    """Everything an evaluator may look at for one request span."""

    trace_id: str
    span_id: str
    task: str | None = None
    prompt: str | None = None
    answer: str | None = None
    reference_id: str | None = None
    reference: Reference | None = None
    images: tuple[ImageInfo, ...] = ()
    model: str | None = None
    route: str | None = None
    status: str | None = None
    error_type: str | None = None


class Evaluator(abc.ABC):
    """Base of every evaluator: ``evaluate(case) -> list[Score]``.

    Threading: ``evaluate`` is called from one thread per process; instances are pickled
    to worker processes, so keep heavy state (models, clients) lazy and out of __init__.
    """

    name: str = ""
    version: str = ""

    @abc.abstractmethod
    def evaluate(self, case: EvalCase) -> list[Score]: ...

    def not_evaluable(self, reason: str, **details: Any) -> list[Score]:
        return [Score.not_evaluable(self.name, self.version, reason, details)]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}@{self.version}>"


def usable_answer(case: EvalCase) -> str:
    """The case's answer text, or NotEvaluable saying why there is none worth judging."""
    answer = case.answer
    if case.status == "error":
        raise NotEvaluable(f"request failed ({case.error_type or 'error'}), no answer to judge")
    if answer is None:
        raise NotEvaluable("no answer captured (content capture off or empty response)")
    if isinstance(answer, bytes | bytearray):
        try:
            answer = bytes(answer).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotEvaluable(f"answer is not valid UTF-8 ({exc.reason})") from exc
    if any("\ud800" <= ch <= "\udfff" for ch in answer):
        raise NotEvaluable("answer is not valid UTF-8 (lone surrogates)")
    if not answer.strip():
        raise NotEvaluable("empty answer")
    if answer.count("\ufffd") > max(3, len(answer) // 10):
        raise NotEvaluable("answer is mostly undecodable bytes (U+FFFD)")
    return answer


def safe_evaluate(ev: Evaluator, case: EvalCase) -> list[Score]:
    """``ev.evaluate(case)`` that never raises: failures become ``not_evaluable`` scores."""
    try:
        scores = ev.evaluate(case)
    except NotEvaluable as exc:
        return [Score.not_evaluable(ev.name, ev.version, str(exc))]
    except Exception as exc:  # an evaluator bug must not stop a run over the store
        reason = f"evaluator error: {type(exc).__name__}: {exc}"[:500]
        return [Score.not_evaluable(ev.name, ev.version, reason, {"error": type(exc).__name__})]
    if not scores:
        return [Score.not_evaluable(ev.name, ev.version, "evaluator returned no score")]
    return scores


class FunctionEvaluator(Evaluator):
    """An evaluator made from a plain function by :func:`evaluator`."""

    def __init__(self, name: str, version: str, fn: Callable[[EvalCase], Score | list[Score]]):
        self.name = name
        self.version = version
        self._fn = fn
        self.__doc__ = fn.__doc__

    def evaluate(self, case: EvalCase) -> list[Score]:
        out = self._fn(case)
        return [out] if isinstance(out, Score) else list(out)

    def __call__(self, case: EvalCase) -> list[Score]:
        return self.evaluate(case)

    def __reduce__(self) -> tuple[Any, ...]:
        # The decorated name now points at this object, so the function cannot be pickled
        # by reference; workers look the evaluator up in their registry instead.
        from evals.registry import get

        return (get, (self.name, self.version))


def evaluator(
    name: str, version: str, *, register: bool = True
) -> Callable[[Callable[[EvalCase], Score | list[Score]]], FunctionEvaluator]:
    """Turn ``fn(case) -> Score | list[Score]`` into a registered :class:`Evaluator`."""

    def wrap(fn: Callable[[EvalCase], Score | list[Score]]) -> FunctionEvaluator:
        ev = FunctionEvaluator(name, version, fn)
        if register:
            from evals.registry import register as _register

            _register(ev)
        return ev

    return wrap
