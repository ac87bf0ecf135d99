"""The search space: a ruleset template with up to K buckets, each routed to a candidate route.

Buckets are cut on the estimated text height logged at intake, relative to the image's long side
(``text_height_permille``: text that stays readable after a downscale to a fixed size, which is
what low detail and fixed-view models do), and on the long side itself (what high detail keeps). Thresholds are drawn from quantiles of the logged
data, so the space adapts to the traffic. One task may be split off (the router's rules match on
``task``): its images get their own rules, one route or two around a text-height cut, ahead of
the general buckets (models differ by task: a small model transcribes well and fails to extract). ``build_params`` is the *only* place that turns
parameters into rules: the objective calls it with an Optuna trial, and the winner is rebuilt
from its params with ``optuna.trial.FixedTrial`` through the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from collector.semconv import DEFAULT_TASK
from optimizer.routes import Route
from router.rules import Conditions, DefaultRoute, Range, Rule, Ruleset, Target


@dataclass(frozen=True)
class SearchSpace:
    routes: tuple[Route, ...]
    text_grid: tuple[float, ...]  # candidate text-height thresholds (‰ of the long side)
    side_grid: tuple[float, ...]  # candidate long-side thresholds (px)
    max_text_cuts: int = 2
    max_side_cuts: int = 1
    fallback: Target | None = None
    tasks: tuple[str, ...] = ()  # tasks one of which may be split off (empty: no task dimension)

    @classmethod
    def from_data(cls, routes: Sequence[Route], text_permille: np.ndarray, long_side: np.ndarray, *,
                  fallback: Target | None = None, task: np.ndarray | None = None) -> SearchSpace:
        th = text_permille[~np.isnan(text_permille)]
        text_grid = tuple(sorted({round(float(q), 2) for q in np.quantile(th, np.linspace(0.1, 0.9, 9))})) if len(th) else ()
        side_grid = tuple(sorted({float(int(q)) for q in np.quantile(long_side, np.linspace(0.2, 0.8, 4))})) if len(long_side) else ()
        # A task is worth its own rules only when the traffic has another one too. The default
        # task is never split off: the log records it for requests that named no task, which a
        # rule on ``task`` would not match (the router sees no task there).
        seen = {str(t) for t in task} if task is not None else set()
        tasks = tuple(sorted(seen - {DEFAULT_TASK})) if len(seen) >= 2 else ()
        return cls(tuple(routes), text_grid, side_grid, fallback=fallback, tasks=tasks)


@dataclass(frozen=True)
class Policy:
    """A point of the space: text/side cut points and a route index per bucket."""

    text_cuts: tuple[float, ...]
    side_cuts: tuple[float, ...]
    bucket_routes: tuple[int, ...]  # len = (len(text_cuts)+1) * (len(side_cuts)+1)
    unknown_route: int  # images without a text estimate
    task: str | None = None  # the task split off, matched before the general buckets
    task_cuts: tuple[float, ...] = ()  # its text-height cut (at most one)
    task_routes: tuple[int, ...] = ()  # len = len(task_cuts) + 1 when ``task`` is set

    @property
    def route_table(self) -> np.ndarray:
        """Route per bucket index as :func:`buckets` numbers them: general buckets, the unknown-text
        bucket, then the split task's buckets."""
        return np.asarray([*self.bucket_routes, self.unknown_route, *self.task_routes], dtype=np.int64)


def build_params(trial: Any, space: SearchSpace) -> Policy:
    """Suggest a policy from ``trial`` (an ``optuna.Trial`` or ``FixedTrial``)."""
    route_names = [r.key for r in space.routes]
    n_text = trial.suggest_int("n_text_cuts", 0, min(space.max_text_cuts, len(space.text_grid)))
    cuts: list[float] = []
    for k in range(n_text):
        cuts.append(space.text_grid[trial.suggest_int(f"text_cut_{k}", 0, len(space.text_grid) - 1)])
    text_cuts = tuple(sorted(set(cuts)))
    n_side = trial.suggest_int("n_side_cuts", 0, min(space.max_side_cuts, len(space.side_grid)))
    side = [space.side_grid[trial.suggest_int(f"side_cut_{k}", 0, len(space.side_grid) - 1)] for k in range(n_side)]
    side_cuts = tuple(sorted(set(side)))
    n_buckets = (len(text_cuts) + 1) * (len(side_cuts) + 1)
    buckets = tuple(route_names.index(trial.suggest_categorical(f"route_{b}", route_names)) for b in range(n_buckets))
    unknown = route_names.index(trial.suggest_categorical("route_unknown_text", route_names))
    if not space.tasks:
        return Policy(text_cuts, side_cuts, buckets, unknown)
    task = trial.suggest_categorical("task_split", ["none", *space.tasks])
    if task == "none":
        return Policy(text_cuts, side_cuts, buckets, unknown)
    n_task = trial.suggest_int("n_task_cuts", 0, min(1, len(space.text_grid)))
    task_cuts = tuple(space.text_grid[trial.suggest_int(f"task_cut_{k}", 0, len(space.text_grid) - 1)] for k in range(n_task))
    task_routes = tuple(route_names.index(trial.suggest_categorical(f"task_route_{b}", route_names))
                        for b in range(n_task + 1))
    return Policy(text_cuts, side_cuts, buckets, unknown, str(task), task_cuts, task_routes)


def is_route_param(name: str) -> bool:
    """Whether ``name`` is one of :func:`build_params`' route choices (not a cut or the task split)."""
    return name == "route_unknown_text" or name.startswith(("route_", "task_route_"))


class _CutsOnly:
    """A trial view that samples every parameter but the routes, which it answers with the first
    choice without recording them: the cuts are searched, the routes chosen elsewhere."""

    def __init__(self, trial: Any) -> None:
        self._trial = trial

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return int(self._trial.suggest_int(name, low, high))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return choices[0] if is_route_param(name) else self._trial.suggest_categorical(name, choices)


def cuts_only(trial: Any) -> Any:
    """``trial`` for :func:`build_params` with the route choices left out (placeholders)."""
    return _CutsOnly(trial)


def route_params(policy: Policy, space: SearchSpace) -> dict[str, str]:
    """The route params :func:`build_params` reads for ``policy``'s buckets: with the policy's cut
    and task params they rebuild ``policy`` exactly through a ``FixedTrial``."""
    names = [r.key for r in space.routes]
    params = {f"route_{b}": names[r] for b, r in enumerate(policy.bucket_routes)}
    params["route_unknown_text"] = names[policy.unknown_route]
    params.update({f"task_route_{b}": names[r] for b, r in enumerate(policy.task_routes)})
    return params


def buckets(policy: Policy, text_permille: np.ndarray, long_side: np.ndarray,
            task: np.ndarray | None = None) -> np.ndarray:
    """Bucket index per image under ``policy``; images without a text estimate get their own
    index, ``len(policy.bucket_routes)``; images of the split task with a text estimate come
    after it (those without one fall through to the unknown-text bucket, as in the rules)."""
    t_bucket = np.searchsorted(np.asarray(policy.text_cuts), np.nan_to_num(text_permille, nan=0.0), side="right")
    s_bucket = np.searchsorted(np.asarray(policy.side_cuts), long_side, side="right")
    bucket = t_bucket * (len(policy.side_cuts) + 1) + s_bucket
    unknown = np.isnan(text_permille)
    if policy.task is not None and task is not None:
        k = np.searchsorted(np.asarray(policy.task_cuts), np.nan_to_num(text_permille, nan=0.0), side="right")
        bucket = np.where(np.asarray(task) == policy.task, len(policy.bucket_routes) + 1 + k, bucket)
    return np.where(unknown, len(policy.bucket_routes), bucket)


def assign(policy: Policy, text_permille: np.ndarray, long_side: np.ndarray, task: np.ndarray | None = None) -> np.ndarray:
    """Route index per image under ``policy`` (vectorised; mirrors the emitted rules exactly).
    Without ``task`` the split task's rules are ignored (as for requests that name no task)."""
    return policy.route_table[buckets(policy, text_permille, long_side, task)]


def _band(cuts: Sequence[float], k: int) -> Range | None:
    lo = cuts[k - 1] if k > 0 else None
    hi = cuts[k] if k < len(cuts) else None
    if lo is None and hi is None:
        return None
    return Range(gte=lo, lt=hi)


def to_ruleset(policy: Policy, space: SearchSpace, *, name: str, claims: Sequence[str] = ()) -> Ruleset:
    """The deployable ruleset for ``policy``; first match wins, as :func:`assign` assumes.

    Images without a text estimate match no text band (``Range.contains(None)`` is false), so
    they fall through to the default route, which is the policy's ``unknown_route``.
    """
    fallbacks = [space.fallback] if space.fallback else []
    rules: list[Rule] = []
    if policy.task is not None:
        for k, r in enumerate(policy.task_routes):
            route = space.routes[r]
            target = route.target()
            when = Conditions(task=[policy.task], text_height_permille=_band(policy.task_cuts, k) or Range(gte=0))
            rules.append(Rule(id=f"t{k}-{policy.task}-{route.model}-{route.detail}", when=when, route=target,
                              fallbacks=[f for f in fallbacks if f != target]))
    n_side = len(policy.side_cuts) + 1
    for t in range(len(policy.text_cuts) + 1):
        for s in range(n_side):
            route = space.routes[policy.bucket_routes[t * n_side + s]]
            text_band = _band(policy.text_cuts, t) or Range(gte=0)
            when = Conditions(text_height_permille=text_band, long_side=_band(policy.side_cuts, s))
            target = route.target()
            rules.append(Rule(id=f"b{t}{s}-{route.model}-{route.detail}", when=when, route=target,
                              fallbacks=[f for f in fallbacks if f != target]))
    default_target = space.routes[policy.unknown_route].target()
    default = DefaultRoute(route=default_target, fallbacks=[f for f in fallbacks if f != default_target])
    return Ruleset(name=name, claims=list(claims), rules=rules, default=default)
