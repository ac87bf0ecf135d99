"""The loop closes itself: emulator (vision mode, real OCR) + gateway + autopilot + a client
sending a steady stream through the openai SDK. No loop command is run: the autopilot scores,
searches, proposes, canaries and decides on its own; the gateway sends the guard's shadows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aperture.autopilot.session import LoopSession
from collector.store import load_references, open_store
from emulator.testing import running_emulator
from emulator.workload import generate_workload
from router.config import parse_config
from router.rollout.store import DirectoryRuleStore

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Lean rails: a small workload still gives the optimizer and the guard their minimum evidence.
RAILS: dict[str, Any] = {
    "autopilot": {
        "enabled": True, "interval_s": 1.0, "lease_ttl_s": 30, "min_evidence": 40, "min_new_requests": 40,
        "replay_sample": 12, "replay_routes": ["gpt-4.1-mini:high", "gpt-4o:low"],
        "allowed_models": ["gpt-4o", "gpt-4.1-mini"], "trials": 40, "min_savings": 0.05,
        "canary_fraction": 0.5, "max_canary_fraction": 0.5, "max_canary_requests": 150, "cooldown_s": 600,
        "max_replay_usd_per_day": 1.0,
    },
    "rollout": {"paired": True, "shadow_fraction": 1.0, "delta": 0.10, "beta": 0.10},
}


def _config(emulator_url: str, rails: dict[str, Any]) -> Any:
    data = yaml.safe_load((EXAMPLES / "autopilot.yaml").read_text()
                          .replace("${APERTURE_EMULATOR_URL:-http://127.0.0.1:9100}", emulator_url))
    for section, values in rails.items():
        data.setdefault(section, {}).update(values)
    return parse_config(yaml.safe_dump(data), base_dir=EXAMPLES)


@pytest.fixture(scope="module")
def workloads(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("workloads")
    return root, generate_workload(48, 71, root / "train", workers=2), generate_workload(120, 72, root / "fresh", workers=2)


def test_the_autopilot_promotes_a_good_proposal_untouched(tmp_path: Path, workloads: Any) -> None:
    root, train, fresh = workloads
    with (running_emulator(mode="vision", catalog=str(EXAMPLES / "emulated.yaml"), ocr_workers=2) as emulator_url,
          LoopSession(_config(emulator_url, RAILS), tmp_path / "run") as session):
        with open_store(session.db) as conn:
            load_references(conn, train + fresh)
        session.send(train, root / "train")
        searched = session.wait_for(lambda: any(e.step == "canary" and e.decision == "start" for e in session.events())
                                    or any(e.step == "search" and e.decision == "nothing" for e in session.events()),
                                    timeout_s=400)
        assert searched, "\n".join(f"{e.step} {e.decision}: {e.reason}" for e in session.events())
        session.send(fresh, root / "fresh", until=lambda: session.decided() is not None)
        session.wait_for(lambda: session.decided() is not None, timeout_s=120)
        events = [(e.step, e.decision, e.reason) for e in session.events()]
        decided = session.decided()
    assert decided is not None and decided.decision == "promote", "\n".join(" ".join(e) for e in events)
    assert session.traffic.errors == {} and session.traffic.ok == session.traffic.sent
    pointer = DirectoryRuleStore(tmp_path / "run" / "rules").pointer()
    assert pointer.active == decided.candidate_version and pointer.canary is None
    steps = [e[:2] for e in events]
    assert steps.index(("search", "start")) < steps.index(("propose", "proposed")) < steps.index(("canary", "start"))
