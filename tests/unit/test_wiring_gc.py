"""A gateway process runs the cyclic garbage collector less often (``aperture.wiring.tune_gc``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from aperture.wiring import GC_THRESHOLDS, build_gateway_app
from router.config import parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "emulated.yaml"


@pytest.fixture
def restored_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_building_the_gateway_raises_the_collector_thresholds(
    restored_thresholds: None, tmp_path: Path
) -> None:
    assert gc.get_threshold() == (700, 10, 10)
    data = yaml.safe_load(EXAMPLE.read_text())
    config = parse_config(yaml.safe_dump(data), base_dir=EXAMPLE.parent)
    app = build_gateway_app(config, db_path=tmp_path / "store.duckdb")
    app.state.telemetry.shutdown()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700 and gc.isenabled()  # tuned, never switched off
