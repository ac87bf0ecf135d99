"""Routing rules: schema, matching and validation. Pure: no I/O beyond parsing text.

A ruleset is an ordered list of rules; the first whose conditions all hold wins, else the
default route applies. Rules apply to requests for ``aperture/auto`` and for the models the
ruleset ``claims``; a request naming any other concrete model gets exactly that model.

A request with several images is routed by its *most demanding* image: the image features are
those of the largest image (by pixel count), except ``text_height_px`` and
``text_height_permille`` (text height per thousand pixels of its image's long side), which are
the smallest found in any image (fine print anywhere needs the detail).

Example ruleset::

    name: screenshots-v2
    claims: [gpt-4o]
    rules:
      - id: big-text-small-image
        when: {long_side: {lte: 1024}, text_height_px: {gte: 20}}
        route: {model: gpt-4o-mini, detail: low}
        fallbacks: [{model: claude-haiku-4-5}]
    default:
      route: {model: gpt-4o, detail: high}
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

AUTO_MODEL = "aperture/auto"

RANGE_FEATURES = ("long_side", "short_side", "megapixels", "aspect", "bytes", "text_height_px", "text_height_permille",
                  "image_count")
SET_FEATURES = ("format", "task", "team", "model")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    def contains(self, value: float | None) -> bool:
        if value is None:
            return False
        if self.gte is not None and not value >= self.gte:
            return False
        if self.gt is not None and not value > self.gt:
            return False
        if self.lte is not None and not value <= self.lte:
            return False
        return not (self.lt is not None and not value < self.lt)

    def bounds(self) -> tuple[float, float]:
        low = max(x for x in (self.gte, self.gt, float("-inf")) if x is not None)
        high = min(x for x in (self.lte, self.lt, float("inf")) if x is not None)
        return low, high


class Conditions(_Strict):
    long_side: Range | None = None
    short_side: Range | None = None
    megapixels: Range | None = None
    aspect: Range | None = None
    bytes: Range | None = None
    text_height_px: Range | None = None
    text_height_permille: Range | None = None
    image_count: Range | None = None
    format: list[str] | None = None
    task: list[str] | None = None
    team: list[str] | None = None
    model: list[str] | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in (*RANGE_FEATURES, *SET_FEATURES))


class Target(_Strict):
    model: str
    detail: str = "auto"
    max_side: int | None = Field(default=None, gt=0)

    @property
    def key(self) -> str:
        """``model:detail`` (plus ``@max_side``) — the route's name in spans and reports."""
        suffix = f"@{self.max_side}" if self.max_side else ""
        return f"{self.model}:{self.detail}{suffix}"


class Rule(_Strict):
    id: str
    when: Conditions = Field(default_factory=Conditions)
    route: Target
    fallbacks: list[Target] = Field(default_factory=list)


class DefaultRoute(_Strict):
    route: Target
    fallbacks: list[Target] = Field(default_factory=list)


class Ruleset(_Strict):
    name: str = "unnamed"
    claims: list[str] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    default: DefaultRoute

    @model_validator(mode="after")
    def _unique_ids(self) -> Ruleset:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule ids: {', '.join(dupes)}")
        return self

    def targets(self) -> Iterable[Target]:
        for rule in self.rules:
            yield rule.route
            yield from rule.fallbacks
        yield self.default.route
        yield from self.default.fallbacks


class RulesetError(ValueError):
    """The text is not a valid ruleset; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_ruleset_text(text: str) -> Ruleset:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesetError([f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise RulesetError(["a ruleset must be a mapping with 'rules' and 'default'"])
    try:
        return Ruleset(**data)
    except ValidationError as exc:
        raise RulesetError(
            [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        ) from exc


def dump_ruleset(ruleset: Ruleset) -> str:
    return yaml.safe_dump(ruleset.model_dump(exclude_none=True, exclude_defaults=False), sort_keys=False)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ImageFeatures:
    width: int
    height: int
    nbytes: int
    format: str
    text_height_px: float | None = None

    @property
    def long_side(self) -> int:
        return max(self.width, self.height)

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def aspect(self) -> float:
        return self.long_side / max(self.short_side, 1)

    @property
    def text_height_permille(self) -> float | None:
        """Text height per thousand pixels of the long side: what a fixed-size downscale keeps
        (a model that sees 768 px on the long side sees this text at ``‰ × 0.768`` px)."""
        if self.text_height_px is None:
            return None
        return self.text_height_px * 1000.0 / max(self.long_side, 1)


@dataclass(frozen=True)
class RequestFeatures:
    """What rules can see of a request. ``images`` empty means a text-only request."""

    images: tuple[ImageFeatures, ...] = ()
    task: str | None = None
    team: str | None = None
    model: str | None = None

    def value(self, name: str) -> Any:
        if name == "image_count":
            return len(self.images)
        if name in ("task", "team", "model"):
            return getattr(self, name)
        if not self.images:
            return None
        if name in ("text_height_px", "text_height_permille"):
            heights = [getattr(i, name) for i in self.images if i.text_height_px is not None]
            return min(heights) if heights else None
        largest = max(self.images, key=lambda i: i.width * i.height)
        if name == "bytes":
            return largest.nbytes
        return getattr(largest, name)


def matches(conditions: Conditions, features: RequestFeatures) -> bool:
    for name in RANGE_FEATURES:
        rng: Range | None = getattr(conditions, name)
        if rng is not None and not rng.contains(features.value(name)):
            return False
    for name in SET_FEATURES:
        allowed: list[str] | None = getattr(conditions, name)
        if allowed is not None and features.value(name) not in allowed:
            return False
    return True


@dataclass(frozen=True)
class RouteChoice:
    rule_id: str
    target: Target
    fallbacks: tuple[Target, ...]


def choose_route(ruleset: Ruleset, features: RequestFeatures) -> RouteChoice:
    """First matching rule wins; otherwise the default route."""
    for rule in ruleset.rules:
        if matches(rule.when, features):
            return RouteChoice(rule.id, rule.route, tuple(rule.fallbacks))
    return RouteChoice("default", ruleset.default.route, tuple(ruleset.default.fallbacks))


def applies_to(ruleset: Ruleset, requested_model: str) -> bool:
    return requested_model == AUTO_MODEL or requested_model in ruleset.claims


def _subsumes(earlier: Conditions, later: Conditions) -> bool:
    """True when every request matching ``later`` also matches ``earlier`` (conservative)."""
    for name in RANGE_FEATURES:
        a: Range | None = getattr(earlier, name)
        if a is None:
            continue
        b: Range | None = getattr(later, name)
        if b is None:
            return False
        (alo, ahi), (blo, bhi) = a.bounds(), b.bounds()
        if blo < alo or bhi > ahi:
            return False
        if (alo == blo and a.gt is not None and b.gt is None) or (ahi == bhi and a.lt is not None and b.lt is None):
            return False
    for name in SET_FEATURES:
        a_set: list[str] | None = getattr(earlier, name)
        if a_set is None:
            continue
        b_set: list[str] | None = getattr(later, name)
        if b_set is None or not set(b_set) <= set(a_set):
            return False
    return True


def validate_ruleset(ruleset: Ruleset, catalog: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Problems (the version must be refused) and warnings (unreachable rules) of a ruleset.

    ``catalog`` maps model id → an object with a ``details`` list (``router.config.ModelSpec``).
    """
    problems: list[str] = []
    warnings: list[str] = []
    for target in ruleset.targets():
        spec = catalog.get(target.model)
        if spec is None:
            problems.append(f"target model {target.model!r} is not in the catalog")
        elif target.detail not in spec.details:
            problems.append(f"model {target.model!r} does not take detail {target.detail!r} (takes {spec.details})")
    for claimed in ruleset.claims:
        if claimed not in catalog:
            problems.append(f"claimed model {claimed!r} is not in the catalog")
    for i, rule in enumerate(ruleset.rules):
        for rng_name in RANGE_FEATURES:
            rng: Range | None = getattr(rule.when, rng_name)
            if rng is not None:
                lo, hi = rng.bounds()
                if lo > hi or (lo == hi and (rng.gt is not None or rng.lt is not None)):
                    warnings.append(f"rule {rule.id!r} can never match: empty range for {rng_name}")
        for earlier in ruleset.rules[:i]:
            if _subsumes(earlier.when, rule.when):
                warnings.append(f"rule {rule.id!r} is unreachable: rule {earlier.id!r} matches everything it does")
                break
    return problems, warnings
