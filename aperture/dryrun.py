"""Dry run of a ruleset over the last logged images: where traffic would go, what it would cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.table import Table

from collector.queries.summary import last_images
from collector.store import open_store
from optimizer.routes import Route, assigned_costs
from router.config import AppConfig
from router.rules import ImageFeatures, RequestFeatures, Ruleset, choose_route


def dry_run(db: Path, ruleset: Ruleset, config: AppConfig, *, last: int = 1000) -> Table:
    with open_store(db, read_only=True) as conn:
        df = last_images(conn, last)
    table = Table(title=f"dry run over the last {df.height} logged images")
    for col in ("route now", "route under this ruleset", "images", "cost now (USD)", "estimated (USD)"):
        table.add_column(col)
    if df.height == 0:
        return table
    targets = []
    for row in df.iter_rows(named=True):
        image = ImageFeatures(row["width"], row["height"], row["bytes"] or 0, row["format"] or "png", row["text_height_px"])
        features = RequestFeatures(images=(image,), task=row["task"], team=row["team"], model=row["requested_model"])
        t = choose_route(ruleset, features).target
        targets.append(Route(t.model, t.detail))
    text_tokens = np.maximum(df["input_tokens"].fill_null(0).to_numpy() - df["tokens_billed"].fill_null(0).to_numpy(), 0)
    outputs = df["output_tokens"].fill_null(0).to_numpy()
    new_costs = assigned_costs(config.models, targets, df["width"].to_numpy(), df["height"].to_numpy(), text_tokens, outputs)
    groups: dict[tuple[str, str], list[float]] = {}
    for row, target, new_cost in zip(df.iter_rows(named=True), targets, new_costs.tolist(), strict=True):
        key = (row["route"] or "-", target.key)
        acc = groups.setdefault(key, [0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += row["billed_cost_usd"] or 0.0
        acc[2] += new_cost
    for (now, new), (n, old_cost, new_cost) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        table.add_row(now, new, str(int(n)), f"{old_cost:.4f}", f"{new_cost:.4f}")
    total_old = sum(v[1] for v in groups.values())
    total_new = sum(v[2] for v in groups.values())
    change = (total_new / total_old - 1) * 100 if total_old else 0.0
    table.caption = f"estimated cost change: {total_old:.4f} → {total_new:.4f} USD ({change:+.1f} %)"
    return table
