"""``make bench``: run every benchmark, one after another, each printing its side-by-side ratios.

    python -m benchmarks               # all
    python -m benchmarks sniff spend   # some
"""

from __future__ import annotations

import importlib
import sys
import time

ALL = ["sniff", "ingest", "spend", "sequential", "evals", "clusters", "optimizer", "ocr_quality", "gateway_chat", "overhead", "upstream_client", "span_loss", "memory", "demo_stages", "state_backend", "guardrails"]


def main(argv: list[str]) -> None:
    names = argv or ALL
    for name in names:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            print(f"== {name}: not available ({exc})")
            continue
        print(f"\n== {name} " + "=" * (60 - len(name)))
        started = time.perf_counter()
        module.main([])
        print(f"(benchmark {name} took {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
