"""Synthetic vision workload: document, screen and photo images with exact ground truth.

    >>> from emulator.workload import generate_workload
    >>> records = generate_workload(50, seed=7, out_dir=Path("workload"))  # doctest: +SKIP
"""

from __future__ import annotations

from emulator.workload.generate import (
    GeneratedItem,
    generate_item,
    generate_workload,
    item_id,
    load_ground_truth,
    plan,
)
from emulator.workload.spec import DEFAULT_MIX, KINDS, PROMPTS, TASK_MIX, parse_mix

__all__ = [
    "DEFAULT_MIX",
    "KINDS",
    "PROMPTS",
    "TASK_MIX",
    "GeneratedItem",
    "generate_item",
    "generate_workload",
    "item_id",
    "load_ground_truth",
    "parse_mix",
    "plan",
]
