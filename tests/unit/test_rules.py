from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.config import load_config
from router.policy import PolicySnapshot, RoutingPolicy, explore_routes, route_request
from router.rules import (
    ImageFeatures,
    RequestFeatures,
    RulesetError,
    Target,
    choose_route,
    load_ruleset_text,
    validate_ruleset,
)

RULESET = """
name: test
claims: [gpt-4o]
rules:
  - id: big-text
    when: {long_side: {lte: 1024}, text_height_px: {gte: 20}}
    route: {model: gpt-4o-mini, detail: low}
    fallbacks: [{model: claude-haiku-4-5}]
  - id: receipts
    when: {task: [extract], format: [jpeg]}
    route: {model: gemini-2.5-flash, detail: auto}
default:
  route: {model: gpt-4o, detail: high}
"""


@pytest.fixture(scope="module")
def catalog():
    return load_config("examples/emulated.yaml").models


def feats(w=800, h=600, text=None, fmt="png", task=None, more=()):
    return RequestFeatures(images=(ImageFeatures(w, h, 1000, fmt, text), *more), task=task, team="t", model="aperture/auto")


def test_first_match_wins_and_default():
    rs = load_ruleset_text(RULESET)
    assert choose_route(rs, feats(text=24)).rule_id == "big-text"
    assert choose_route(rs, feats(text=24)).fallbacks == (Target(model="claude-haiku-4-5"),)
    assert choose_route(rs, feats(text=10, fmt="jpeg", task="extract")).rule_id == "receipts"
    assert choose_route(rs, feats(w=3000, text=24)).target == Target(model="gpt-4o", detail="high")
    # No text height known: a condition on it does not hold.
    assert choose_route(rs, feats(text=None)).rule_id == "default"


def test_text_only_request_skips_image_conditions():
    rs = load_ruleset_text(RULESET)
    assert choose_route(rs, RequestFeatures(task="extract")).rule_id == "default"


def test_several_images_route_by_largest_image_and_smallest_text():
    rs = load_ruleset_text(RULESET)
    small_big_text = ImageFeatures(400, 300, 10, "png", 30)
    big_page_fine_print = ImageFeatures(900, 700, 10, "png", 9)
    f = RequestFeatures(images=(small_big_text, big_page_fine_print))
    assert f.value("long_side") == 900
    assert f.value("text_height_px") == 9
    assert choose_route(rs, f).rule_id == "default"
    assert f.value("text_height_permille") == pytest.approx(10.0)  # 9 px on a 900 px long side
    assert RequestFeatures(images=(ImageFeatures(400, 300, 10, "png", None),)).value("text_height_permille") is None


def test_relative_text_height_separates_what_a_fixed_size_view_keeps():
    rs = load_ruleset_text("""
name: rel
rules:
  - id: readable-at-768
    when: {text_height_permille: {gte: 12}}
    route: {model: gemini-2.5-flash, detail: auto}
default:
  route: {model: gpt-4o, detail: high}
""")
    # The same 20 px text: 13.3 ‰ of a 1500 px page, 5 ‰ of a 4K screenshot.
    page = RequestFeatures(images=(ImageFeatures(1500, 1100, 10, "png", 20.0),))
    screen = RequestFeatures(images=(ImageFeatures(4000, 2250, 10, "png", 20.0),))
    assert choose_route(rs, page).rule_id == "readable-at-768"
    assert choose_route(rs, screen).rule_id == "default"


def test_validation_flags_unknown_models_bad_detail_and_unreachable(catalog):
    rs = load_ruleset_text(RULESET)
    assert validate_ruleset(rs, catalog) == ([], [])
    bad = load_ruleset_text(
        """
rules:
  - {id: all, route: {model: gpt-4o, detail: low}}
  - {id: never, when: {long_side: {lte: 100}}, route: {model: gpt-9, detail: high}}
  - {id: claude-low, when: {task: [x]}, route: {model: claude-haiku-4-5, detail: low}}
default: {route: {model: gpt-4o, detail: high}}
"""
    )
    problems, warnings = validate_ruleset(bad, catalog)
    assert any("gpt-9" in p for p in problems)
    assert any("claude-haiku-4-5" in p and "low" in p for p in problems)
    assert any("'never' is unreachable" in w for w in warnings)


@pytest.mark.parametrize(
    "text",
    ["rules: [", "- a\n- b", "default: {route: {model: gpt-4o}}\nrules: [{id: a, route: {model: x}}, {id: a, route: {model: y}}]", "rules: []", "default: {route: {model: gpt-4o, colour: red}}"],
)
def test_invalid_ruleset_text_is_refused(text):
    with pytest.raises(RulesetError):
        load_ruleset_text(text)


def test_explicit_model_is_not_rerouted_unless_claimed(catalog):
    snap = PolicySnapshot(active=RoutingPolicy("v1", load_ruleset_text(RULESET)))
    d = route_request(snap, feats(text=24), requested_model="gpt-4.1", requested_detail="low", arm="active")
    assert (d.arm, d.target) == ("explicit", Target(model="gpt-4.1", detail="low"))
    d = route_request(snap, feats(text=24), requested_model="gpt-4o", requested_detail="high", arm="active")
    assert d.rule_id == "big-text" and d.version == "v1"


def test_canary_arm_uses_canary_version():
    canary = RoutingPolicy("v2", load_ruleset_text("default: {route: {model: gpt-4.1-mini, detail: low}}"))
    snap = PolicySnapshot(active=RoutingPolicy("v1", load_ruleset_text(RULESET)), canary=canary, canary_fraction=0.1)
    d = route_request(snap, feats(), requested_model="aperture/auto", requested_detail=None, arm="canary")
    assert (d.version, d.arm, d.target.model) == ("v2", "canary", "gpt-4.1-mini")


@given(seed=st.integers(0, 10**6))
def test_explore_propensity_matches_logging_policy(seed):
    catalog = load_config("examples/emulated.yaml").models
    routes = explore_routes(catalog, ["gpt-4o", "gpt-4o-mini"])
    assert Target(model="gpt-4o", detail="auto") not in routes and len(routes) == 4
    snap = PolicySnapshot(active=RoutingPolicy("v1", load_ruleset_text(RULESET)))
    d = route_request(snap, feats(w=3000), requested_model="aperture/auto", requested_detail=None, arm="explore",
               explore_fraction=0.2, explore_set=routes, rng=random.Random(seed))
    expected = 0.2 / 4 + (0.8 if d.target == Target(model="gpt-4o", detail="high") else 0.0)
    assert d.propensity == pytest.approx(expected)
    active = route_request(snap, feats(w=3000), requested_model="aperture/auto", requested_detail=None, arm="active",
                    explore_fraction=0.2, explore_set=routes)
    assert active.propensity == pytest.approx(0.8 + 0.05)
