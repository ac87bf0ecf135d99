"""Features of scored request spans for failure clustering.

Each scored span becomes a set of categorical tokens: ``model=…``, ``detail=…``, size,
aspect and text-height buckets, ``format=…``, ``task=…`` and up to two ``term=…`` tokens,
the explanation words that TF-IDF finds most characteristic of that explanation. Buckets
are coarse on purpose: a cluster label has to read like a routing rule condition.
"""

from __future__ import annotations

import re
from datetime import datetime

import duckdb
import numpy as np
import polars as pl

from collector.queries.evals import scored_verdicts

FEATURES = (
    "f_model",
    "f_detail",
    "f_size",
    "f_aspect",
    "f_format",
    "f_task",
    "f_text",
    "f_term1",
    "f_term2",
)
BUCKET_FEATURES = ("f_size", "f_text")  # what a suggested fix must match


def size_bucket(long_side: pl.Expr) -> pl.Expr:
    return (
        pl.when(long_side.is_null())
        .then(None)
        .when(long_side < 512)
        .then(pl.lit("size<512px"))
        .when(long_side < 1024)
        .then(pl.lit("size 512-1024px"))
        .when(long_side < 2048)
        .then(pl.lit("size 1024-2048px"))
        .otherwise(pl.lit("size>=2048px"))
    )


def aspect_bucket(w: pl.Expr, h: pl.Expr) -> pl.Expr:
    r = w.cast(pl.Float64) / h.cast(pl.Float64)
    return (
        pl.when(w.is_null() | h.is_null() | (h <= 0))
        .then(None)
        .when(r < 0.6)
        .then(pl.lit("aspect tall"))
        .when(r < 0.9)
        .then(pl.lit("aspect portrait"))
        .when(r <= 1.1)
        .then(pl.lit("aspect square"))
        .when(r <= 2.0)
        .then(pl.lit("aspect landscape"))
        .otherwise(pl.lit("aspect wide"))
    )


def text_bucket(px: pl.Expr) -> pl.Expr:
    """The text-height buckets of the brief: <10, 10-16, 16-24, >=24 px."""
    return (
        pl.when(px.is_null() | px.is_nan())
        .then(None)
        .when(px < 10)
        .then(pl.lit("text<10px"))
        .when(px < 16)
        .then(pl.lit("text 10-16px"))
        .when(px < 24)
        .then(pl.lit("text 16-24px"))
        .otherwise(pl.lit("text>=24px"))
    )


def _prefixed(prefix: str, col: str) -> pl.Expr:
    return (
        pl.when(pl.col(col).is_null())
        .then(None)
        .otherwise(pl.lit(prefix) + pl.col(col).cast(pl.Utf8))
    )


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NONWORD = re.compile(r"[^a-z]+")


def clean_explanation(text: str | None) -> str:
    """Explanation words only: quoted values, numbers and punctuation go (they are per-case)."""
    if not text:
        return ""
    return _NONWORD.sub(" ", _QUOTED.sub(" ", text.lower())).strip()


def _term_groups(docs: list[str], vocab: np.ndarray, binary: np.ndarray) -> dict[int, str]:
    """Column -> display term; terms that occur in exactly the same explanations are one
    phrase ("misread" + "characters" -> "misread characters"), in their order of appearance."""
    groups: dict[bytes, list[int]] = {}
    for j in range(binary.shape[1]):
        groups.setdefault(binary[:, j].tobytes(), []).append(j)
    names: dict[int, str] = {}
    for cols in groups.values():
        doc = docs[int(np.argmax(binary[:, cols[0]]))]
        words = doc.split()
        terms = [str(vocab[j]) for j in cols]
        terms.sort(key=lambda t: words.index(t) if t in words else len(words))
        name = " ".join(terms)
        names.update({j: name for j in cols})
    return names


def explanation_terms(
    explanations: list[str], failing: np.ndarray, k: int = 2, keep: float = 0.8
) -> list[tuple[str | None, ...]]:
    """Up to ``k`` characteristic terms per explanation (TF-IDF learnt on failing ones).

    Terms in nearly every failing explanation ("cer", "claims") carry nothing and are
    dropped; a further term is kept only when its weight is within ``keep`` of the best one,
    so "missed" does not drag along the "text" it shares with "invented text".
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    cleaned = [clean_explanation(e) for e in explanations]
    uniq = sorted({c for c, f in zip(cleaned, failing, strict=True) if f and c})
    empty: tuple[str | None, ...] = (None,) * k
    if len(uniq) < 2:
        return [empty] * len(explanations)
    vec = TfidfVectorizer(token_pattern=r"\b[a-z]{3,}\b", stop_words="english", max_df=0.9)
    try:
        fitted = vec.fit_transform(uniq)
    except ValueError:  # every term pruned
        return [empty] * len(explanations)
    vocab = np.array(vec.get_feature_names_out())
    names = _term_groups(uniq, vocab, (fitted.toarray() > 0))
    all_uniq = sorted(set(cleaned))
    weights = vec.transform(all_uniq).toarray()
    terms: dict[str, tuple[str | None, ...]] = {}
    for text, w in zip(all_uniq, weights, strict=True):
        picked: list[str] = []
        for j in np.argsort(-w, kind="stable"):
            if w[j] <= 0 or len(picked) == k or (picked and w[j] < keep * w[np.argmax(w)]):
                break
            name = f"term={names[int(j)]}"
            if name not in picked:
                picked.append(name)
        terms[text] = tuple(sorted(picked)) + (None,) * (k - len(picked))
    return [terms[c] for c in cleaned]


def load_scored(conn: duckdb.DuckDBPyConnection, *, since: datetime | None = None) -> pl.DataFrame:
    """Latest scored verdict per (span, evaluator) with its request and first image's features."""
    return scored_verdicts(conn, since=since)


def add_features(df: pl.DataFrame) -> pl.DataFrame:
    """The categorical feature columns (``FEATURES``) for every row of :func:`load_scored`."""
    long_side = pl.max_horizontal(pl.col("width"), pl.col("height"))
    df = df.with_columns(
        _prefixed("model=", "model").alias("f_model"),
        _prefixed("detail=", "detail").alias("f_detail"),
        size_bucket(long_side).alias("f_size"),
        aspect_bucket(pl.col("width"), pl.col("height")).alias("f_aspect"),
        _prefixed("format=", "format").alias("f_format"),
        _prefixed("task=", "task").alias("f_task"),
        text_bucket(pl.col("text_height_px")).alias("f_text"),
    )
    terms = explanation_terms(df["explanation"].to_list(), (~df["passed"]).to_numpy())
    return df.with_columns(
        pl.Series("f_term1", [t[0] for t in terms], dtype=pl.Utf8),
        pl.Series("f_term2", [t[1] for t in terms], dtype=pl.Utf8),
    )
