"""/metrics under ``serve --workers 2`` sums both workers (prometheus-client multiprocess mode),
and the collector's metrics come out of prometheus-client."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aperture.servers import listen_port, wait_answering
from emulator.testing import running_emulator
from tests.integration.gateway_harness import EXAMPLE, config_text

pytestmark = pytest.mark.slow


def _requests_total(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "aperture_requests":
            return sum(s.value for s in family.samples if s.name == "aperture_requests_total")
    return 0.0


def test_metrics_sum_every_worker(tmp_path: Path) -> None:
    with running_emulator(mode="instant", catalog=str(EXAMPLE)) as emulator_url:
        config = tmp_path / "gateway.yaml"
        config.write_text(config_text(emulator_url, {"routing.rules_file": str(EXAMPLE.parent / "rules" / "baseline.yaml")}))
        port = listen_port("127.0.0.1")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP") and k != "PROMETHEUS_MULTIPROC_DIR"}
        env["APERTURE_IMAGES__TEXT_FEATURES"] = "false"
        proc = subprocess.Popen(
            [sys.executable, "-c", "from aperture.cli import app; app()", "serve", "--config", str(config),
             "--port", str(port), "--db", str(tmp_path / "store.duckdb"), "--workers", "2"],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            wait_answering(f"http://127.0.0.1:{port}/healthz", proc.poll, 90, what="aperture serve")
            sent = 24
            with httpx.Client(timeout=30) as client:
                for _ in range(sent):  # a new connection each time, so the kernel spreads them
                    r = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"connection": "close"},
                                    json={"model": "gpt-4o-mini", "max_tokens": 8,
                                          "messages": [{"role": "user", "content": "hi"}]})
                    assert r.status_code == 200, r.text
            scrapes = [httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"connection": "close"}, timeout=10).text
                       for _ in range(6)]
        finally:
            proc.send_signal(signal.SIGTERM)
            output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, output
    # Whichever worker answers the scrape, it reports all the requests both workers served.
    assert all(_requests_total(text) == sent for text in scrapes), [_requests_total(t) for t in scrapes]
    assert not re.search(r"aperture-metrics-", output)
