"""The evaluator contract: scores, the decorator, the registry and bad input."""

from __future__ import annotations

import pickle

import pytest

from evals import registry
from evals.base import (
    EvalCase,
    Evaluator,
    NotEvaluable,
    Score,
    evaluator,
    safe_evaluate,
    usable_answer,
)


def case(answer: object = "Total 12.50", **kw: object) -> EvalCase:
    return EvalCase(trace_id="t" * 32, span_id="s" * 16, answer=answer, **kw)  # type: ignore[arg-type]


def test_score_rejects_values_outside_unit_interval() -> None:
    with pytest.raises(ValueError):
        Score.scored("x", "1", 1.5, True, "too good")
    with pytest.raises(ValueError):
        Score("x", 0.5, None, "why", "1", status="not_evaluable")
    with pytest.raises(ValueError):
        Score("x", 0.5, True, "why", "1", status="maybe")  # type: ignore[arg-type]


@evaluator("test_length", "3", register=False)
def length_eval(c: EvalCase) -> Score:
    n = len(usable_answer(c))
    return Score.scored("test_length", "3", min(n / 10, 1.0), n >= 5, f"{n} chars")


def test_decorator_makes_an_evaluator_with_name_and_version() -> None:
    assert isinstance(length_eval, Evaluator)
    assert (length_eval.name, length_eval.version) == ("test_length", "3")
    [s] = length_eval.evaluate(case("abcdef"))
    assert s.value == pytest.approx(0.6) and s.passed is True


def test_registry_get_register_and_pickle_by_name() -> None:
    registry.register(length_eval)
    try:
        assert registry.get("test_length") is length_eval
        assert registry.get("test_length", "3") is length_eval
        with pytest.raises(KeyError):
            registry.get("test_length", "2")
        names = [e.name for e in registry.all_evaluators()]
        assert names[:3] == ["ocr_faithfulness", "field_accuracy", "grounding"]
        assert "test_length" in names
        assert pickle.loads(pickle.dumps(length_eval)) is length_eval
    finally:
        registry.unregister("test_length")
    with pytest.raises(KeyError, match="unknown evaluator"):
        registry.get("test_length")


def test_register_refuses_nameless_and_duplicates_when_asked() -> None:
    class Nameless(Evaluator):
        def evaluate(self, case: EvalCase) -> list[Score]:
            return []

    with pytest.raises(ValueError):
        registry.register(Nameless())
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("grounding"), replace=False)


@pytest.mark.parametrize(
    ("answer", "extra", "reason"),
    [
        (None, {}, "no answer captured"),
        ("   \n", {}, "empty answer"),
        (b"\xff\xfe caf\xe9", {}, "not valid UTF-8"),
        ("abc \udcff def", {}, "not valid UTF-8"),
        ("\ufffd" * 40, {}, "undecodable"),
        (
            "fine",
            {"status": "error", "error_type": "upstream_timeout"},
            "request failed (upstream_timeout)",
        ),
    ],
)
def test_bad_answers_are_not_evaluable_with_a_reason(
    answer: object, extra: dict, reason: str
) -> None:
    [s] = safe_evaluate(length_eval, case(answer, **extra))
    assert s.status == "not_evaluable" and s.value is None and s.passed is None
    assert reason in s.explanation


def test_bytes_answer_in_utf8_is_decoded() -> None:
    assert usable_answer(case("caf\u00e9".encode())) == "caf\u00e9"


def test_safe_evaluate_turns_crashes_and_empty_results_into_not_evaluable() -> None:
    @evaluator("boom", "1", register=False)
    def boom(c: EvalCase) -> list[Score]:
        raise ZeroDivisionError("bad math")

    @evaluator("silent", "1", register=False)
    def silent(c: EvalCase) -> list[Score]:
        return []

    @evaluator("declines", "1", register=False)
    def declines(c: EvalCase) -> list[Score]:
        raise NotEvaluable("not my kind of case")

    [a] = safe_evaluate(boom, case())
    assert a.status == "not_evaluable" and "ZeroDivisionError: bad math" in a.explanation
    [b] = safe_evaluate(silent, case())
    assert b.explanation == "evaluator returned no score"
    [c] = safe_evaluate(declines, case())
    assert (c.name, c.evaluator_version, c.explanation) == ("declines", "1", "not my kind of case")
