"""The demo's HTML report: the summary tables and plots, self-contained (images inlined)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _table(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in df.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6f}" if abs(v) < 1 else f"{v:.3f}"
    return str(v)


def bucket_plot(before: pl.DataFrame, after: pl.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = sorted(set(before["size_bucket"].to_list()) | set(after["size_bucket"].to_list()))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, column, title in ((ax1, "cost_per_image_usd", "USD per image"), (ax2, "quality", "quality")):
        for k, (df, label) in enumerate(((before, "before"), (after, "after"))):
            values = dict(zip(df["size_bucket"].to_list(), df[column].to_list(), strict=True))
            xs = [i + (k - 0.5) * 0.38 for i in range(len(buckets))]
            ax.bar(xs, [values.get(b) or 0 for b in buckets], width=0.38, label=label)
        ax.set_xticks(range(len(buckets)), buckets, rotation=15)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    ax1.legend()
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out


def write_report(result: Any, proposal: Any) -> None:
    extra = result.extra
    parts = [
        "<!doctype html><meta charset='utf-8'><title>Aperture demo report</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f4f4f4}pre{background:#f8f8f8;padding:1em;overflow:auto}</style>",
        "<h1>Aperture demo report</h1>",
        f"<p>Store: <code>{html.escape(str(result.db))}</code>. Guard decision on <b>{html.escape(str(result.candidate))}</b>: "
        f"<b>{html.escape(result.decision)}</b> after {extra.get('canary_requests')} fresh requests.</p>",
        "<h2>Before and after</h2>",
        _table(pl.DataFrame([
            {"phase": "baseline, training traffic", **result.before},
            *([{"phase": "baseline, fresh traffic (active arm)", **extra["baseline_on_fresh"]}]
              if extra.get("baseline_on_fresh", {}).get("requests") else []),
            {"phase": "candidate, fresh traffic", **result.after},
        ])),
        *(["<h2>Same images, both routes</h2><p>Every fresh image the candidate served, shadowed on the baseline "
           "route (tagged as replay): cost cut and paired quality difference with its 95 % interval.</p>",
           _table(pl.DataFrame([extra["paired"]]))] if extra.get("paired", {}).get("pairs") else []),
        "<h2>Per size bucket</h2><h3>before</h3>", _table(extra["buckets_before"]),
        "<h3>after</h3>", _table(extra["buckets_after"]),
        f"<img alt='per bucket' src='data:image/png;base64,{bucket_plot(extra['buckets_before'], extra['buckets_after'])}'>",
        "<h2>Optimizer</h2>",
        f"<p>Predicted savings {proposal.savings:.1%}; predicted quality {proposal.predicted_quality:.3f} "
        f"[{proposal.quality_interval[0]:.3f}, {proposal.quality_interval[1]:.3f}] vs baseline {proposal.baseline_quality:.3f}; "
        f"APGR {proposal.tradeoff.apgr:.3f}.</p>",
    ]
    if proposal.plot is not None and proposal.plot.exists():
        parts.append(f"<img alt='Pareto front' src='data:image/png;base64,{base64.b64encode(proposal.plot.read_bytes()).decode()}'>")
    parts.append("<h3>Route mix after</h3>")
    parts.append(_table(pl.DataFrame({"route": list(extra["routes_after"]), "share": list(extra["routes_after"].values())})))
    parts.append("<h3>Proposed ruleset</h3><pre>" + html.escape(proposal.text) + "</pre>")
    if extra.get("clusters"):
        parts.append("<h2>Failure clusters (top)</h2>")
        parts.append(_table(pl.DataFrame([{k: str(v) for k, v in c.items()} for c in extra["clusters"]])))
    result.report.write_text("\n".join(parts), encoding="utf-8")


def print_summary(console: Console, result: Any, proposal: Any, baseline: str) -> None:
    """The demo's before/after on the console (``result`` is an ``aperture.demo.DemoResult``)."""
    b, a = result.before, result.after
    table = Table(title="Aperture demo: before and after the loop", show_lines=False)
    for col in ("", "requests", "images", "spend (USD)", "USD / image", "quality"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("before: baseline on training traffic", str(b["requests"]), str(b["images"]), f"{b['spend_usd']:.4f}", f"{b['cost_per_image_usd']:.6f}", f"{b['quality']:.3f}")
    f = result.extra.get("baseline_on_fresh") or {}
    if f.get("requests"):
        table.add_row("baseline on the fresh traffic (active arm)", str(f["requests"]), str(f["images"]), f"{f['spend_usd']:.4f}",
                      f"{f['cost_per_image_usd']:.6f}", f"{f['quality']:.3f}")
    table.add_row(f"after: {result.candidate} on the fresh traffic ({result.decision})", str(a["requests"]), str(a["images"]), f"{a['spend_usd']:.4f}", f"{a['cost_per_image_usd']:.6f}", f"{a['quality']:.3f}")
    console.print(table)
    buckets = Table(title="per size bucket (USD / image, quality)")
    for col in ("size", "before USD/img", "before q", "after USD/img", "after q"):
        buckets.add_column(col)
    after_rows = {r["size_bucket"]: r for r in result.extra["buckets_after"].iter_rows(named=True)}
    for row in result.extra["buckets_before"].iter_rows(named=True):
        other = after_rows.get(row["size_bucket"], {})
        buckets.add_row(row["size_bucket"], f"{row['cost_per_image_usd']:.6f}", _fmt(row["quality"]),
                        _fmt(other.get("cost_per_image_usd"), 6), _fmt(other.get("quality")))
    console.print(buckets)
    pair = result.extra.get("paired") or {}
    if pair.get("pairs"):
        console.print(
            f"on the same {pair['pairs']} fresh images, served by {result.candidate} and shadowed on {baseline}: "
            f"cost {pair['baseline_cost_usd']:.4f} → {pair['cost_usd']:.4f} USD, cut by [bold]{pair['cost_cut']:.1%}[/bold]; "
            f"quality {pair['baseline_quality']:.3f} → {pair['quality']:.3f} "
            f"([bold]{pair['quality_delta'] * 100:+.1f} points[/bold], 95 % interval {pair['delta_low'] * 100:+.1f} to "
            f"{pair['delta_high'] * 100:+.1f})."
        )
    console.print(
        f"Guard decision: [bold]{result.decision}[/bold] after {result.extra.get('canary_requests')} fresh requests "
        f"(guard: δ = {result.extra.get('guard_delta')}, β = {result.extra.get('guard_beta')}, α = 0.005)."
    )
    predicted = result.extra.get("predicted_cost_on_after")
    if predicted:
        console.print(f"predicted cost of the after-traffic {predicted:.4f} USD vs billed {a['spend_usd']:.4f} USD "
                      f"({(predicted / a['spend_usd'] - 1) * 100 if a['spend_usd'] else 0:+.2f} %).")
    lo, hi = (x - proposal.baseline_quality for x in proposal.quality_interval)
    console.print(f"proposal (on the training traffic): savings {proposal.savings:.1%}, quality "
                  f"{(proposal.predicted_quality - proposal.baseline_quality) * 100:+.1f} points "
                  f"[{lo * 100:+.1f}, {hi * 100:+.1f}] against the baseline"
                  + (f"; realised {pair['quality_delta'] * 100:+.1f} points, "
                     f"{'inside' if lo <= pair['quality_delta'] <= hi else 'outside'} that interval"
                     if pair.get("pairs") else ""))
    console.print(f"store: {result.db}\nreport: {result.report}\nelapsed: {result.extra['elapsed_s']:.0f} s")


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
