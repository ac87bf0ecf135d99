"""Explicit registry of evaluators, looked up by name.

The built-in evaluators are listed in :func:`builtin_evaluators` (no module scanning);
anything made with ``@evaluator`` or passed to :func:`register` joins them. The LLM judge
is not built in because it needs a gateway URL: construct :class:`evals.judge.RubricJudge`
and pass it to the runner or register it.
"""

from __future__ import annotations

from evals.base import Evaluator

_REGISTRY: dict[str, Evaluator] = {}


def builtin_evaluators() -> list[Evaluator]:
    """Fresh instances of the evaluators that need no configuration."""
    from evals.field_accuracy import FieldAccuracy
    from evals.grounding import Grounding
    from evals.ocr_faithfulness import OcrFaithfulness

    return [OcrFaithfulness(), FieldAccuracy(), Grounding()]


def _ensure_builtins() -> None:
    for ev in builtin_evaluators():
        _REGISTRY.setdefault(ev.name, ev)


def register(ev: Evaluator, *, replace: bool = True) -> Evaluator:
    """Add ``ev`` under ``ev.name``; returns it so it can be used as a decorator."""
    if not ev.name or not ev.version:
        raise ValueError(f"evaluator {ev!r} needs a name and a version")
    if not replace and ev.name in _REGISTRY:
        raise ValueError(f"evaluator {ev.name!r} is already registered")
    _REGISTRY[ev.name] = ev
    return ev


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str, version: str | None = None) -> Evaluator:
    """The registered evaluator called ``name`` (KeyError when unknown or wrong version)."""
    _ensure_builtins()
    try:
        ev = _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown evaluator {name!r} (known: {known})") from None
    if version is not None and ev.version != version:
        raise KeyError(f"evaluator {name!r} is at version {ev.version}, not {version}")
    return ev


def all_evaluators() -> list[Evaluator]:
    """Every registered evaluator, built-ins first, in a stable order."""
    _ensure_builtins()
    builtin = [ev.name for ev in builtin_evaluators()]
    rest = sorted(n for n in _REGISTRY if n not in builtin)
    return [_REGISTRY[n] for n in [*builtin, *rest]]
