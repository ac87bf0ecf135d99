"""Pure parts of failure clustering: distances, grouping, terms, trend."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from evals.cluster_features import clean_explanation, explanation_terms
from evals.clusters import cluster_token_sets, jaccard_distances, trend


def test_weighted_jaccard_distances() -> None:
    a = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    d = jaccard_distances(a, a)
    assert d[0, 0] == 0.0 and d[0, 1] == 1.0
    w = sp.csr_matrix(np.array([[np.sqrt(2.0), 1.0], [np.sqrt(2.0), 0.0]]))
    assert jaccard_distances(w, w)[0, 1] == pytest.approx(1 / 3)  # weights 2 + 1 vs 2


def pattern(model: str, text: str, fmt: str, size: str = "size 512-1024px") -> frozenset[str]:
    return frozenset(
        {f"model={model}", "detail=low", text, f"format={fmt}", size, "task=transcribe"}
    )


def test_one_pattern_over_incidental_features_is_one_cluster() -> None:
    sets = [
        pattern("mini", "text<10px", f, s)
        for f in ("png", "jpeg", "webp")
        for s in ("size<512px", "size 512-1024px")
    ]
    labels = cluster_token_sets(sets, [50] * len(sets))
    assert len(set(labels)) == 1


def test_different_routes_on_different_text_are_separate() -> None:
    sets = [
        pattern("mini", "text<10px", "png"),
        pattern("mini", "text<10px", "jpeg"),
        pattern("gpt-4o", "text>=24px", "png"),
        pattern("gpt-4o", "text>=24px", "jpeg"),
    ]
    labels = cluster_token_sets(sets, [40, 40, 40, 40])
    assert labels[0] == labels[1] != labels[2] == labels[3]


def test_rare_combinations_join_a_near_cluster_or_group_among_themselves() -> None:
    sets = [
        pattern("mini", "text<10px", "png"),
        pattern("mini", "text<10px", "jpeg"),
        pattern("mini", "text<10px", "heic"),  # rare, close to the pattern
        frozenset({"model=claude", "detail=auto", "text>=24px", "aspect wide"}),  # rare, alone
        frozenset({"model=claude", "detail=auto", "text>=24px", "aspect tall"}),
    ]
    labels = cluster_token_sets(sets, [500, 480, 1, 1, 1])
    assert labels[2] == labels[0] == labels[1]
    assert labels[3] == labels[4] != labels[0]
    assert cluster_token_sets([], []).size == 0 and list(cluster_token_sets([sets[0]], [1])) == [0]


def test_explanations_lose_numbers_and_quoted_values() -> None:
    assert (
        clean_explanation("CER 0.41; unsupported: name 'Bob Marley', number \"12\"")
        == "cer unsupported name number"
    )
    assert clean_explanation(None) == ""


def test_terms_that_always_co_occur_become_one_phrase() -> None:
    expl = [
        "CER 0.4 (below 0.90); mostly misread characters (coverage 90%)",
        "CER 0.5 (below 0.90); mostly missed text (coverage 40%)",
        "CER 0.3 (below 0.90); mostly invented text (coverage 100%)",
        "CER 0.01 (ok)",
    ]
    terms = explanation_terms(expl, np.array([True, True, True, False]))
    assert terms[0] == ("term=misread characters", None)
    assert terms[1][0] == "term=missed" and terms[2][0] == "term=invented"
    assert explanation_terms(expl[:1], np.array([True])) == [(None, None)]


def times(*minutes: int) -> pl.Series:
    return pl.Series([datetime(2026, 1, 1) + timedelta(minutes=m) for m in minutes])


def test_trend_compares_shares_of_the_two_halves() -> None:
    window = times(*range(100))
    assert trend(times(60, 70, 80, 90), window) == "rising"
    assert trend(times(1, 2, 3, 4), window) == "falling"
    assert trend(times(10, 20, 60, 70), window) == "steady"
    assert trend(times(5), times(5, 5)) == "steady"
