"""From first traffic to promotion with nothing but the processes a deployment runs.

``python -m benchmarks.autopilot_cycle [--out DIR] [--n 400] [--mode vision] [--rate 4] [--test-rails]``

Starts ``aperture emulate``, ``aperture serve`` and ``aperture autopilot`` as processes on
loopback, all on ``examples/autopilot.yaml`` (with the rails given below), and sends a steady
stream of workload images to ``aperture/auto`` through the ``openai`` SDK until the autopilot
records a promotion or a rollback. Prints the wall time and the requests sent from the first
request to the decision, and the failed client requests (there should be none).

The end-to-end tests (tests/integration/test_autopilot_processes.py) run the same
:class:`Deployment`, so what this prints is what they assert.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from aperture.autopilot.session import wait_until as session_wait_until
from aperture.autopilot.state import AutopilotState, StateFile
from aperture.servers import listen_port, wait_answering
from aperture.traffic import send_workload
from collector.queries.autopilot import recent_events

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "autopilot.yaml"


def free_port() -> int:
    """A free loopback port below the ephemeral range (``aperture.servers.listen_port``): the
    gateway dials the emulator, and the tests dial the gateway, while they start."""
    return listen_port("127.0.0.1")


def write_config(out: Path, gateway_url: str, autopilot: dict[str, Any], rollout: dict[str, Any] | None = None) -> Path:
    """``examples/autopilot.yaml`` with the given autopilot and rollout rails (the file's own
    keys stay unless overridden), the rules file absolute, and the gateway's URL for replays."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["routing"]["rules_file"] = str(EXAMPLE.parent / "rules" / "baseline.yaml")
    data["routing"]["poll_interval_s"] = 0.2
    data["autopilot"].update(autopilot, gateway_url=gateway_url)
    data["rollout"].update(rollout or {})
    path = out / "autopilot.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Generator:
    """A client sending ``records`` at a steady rate (``batch`` requests every ``pace_s``) until
    stopped or out of records; counts what it sent and every failure by code."""

    url: str
    records: list[dict[str, Any]]
    workload_dir: Path
    batch: int = 4
    pace_s: float = 1.0
    concurrency: int = 2
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_at: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for start in range(0, len(self.records), self.batch):
            if self.stop.is_set():
                return
            self.first_at = self.first_at or time.monotonic()
            began = time.monotonic()
            result = send_workload(self.url, self.records[start : start + self.batch], self.workload_dir,
                                   concurrency=self.concurrency)
            self.sent, self.ok = self.sent + result.sent, self.ok + result.ok
            for code, n in result.errors.items():
                self.errors[code] = self.errors.get(code, 0) + n
            self.stop.wait(max(0.0, self.pace_s - (time.monotonic() - began)))

    @property
    def failed(self) -> int:
        return self.sent - self.ok


class Deployment:
    """Emulator, gateway and autopilot as three processes sharing a store, a blob dir and a rule
    store under ``out``. ``env`` reaches every process (e.g. ``APERTURE_CACHE_DIR``)."""

    def __init__(self, out: Path, autopilot: dict[str, Any], *, mode: str = "vision", world: str = "pixels",
                 rollout: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> None:
        self.out = out.resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.emulator_url = f"http://127.0.0.1:{free_port()}"
        self.gateway_port = free_port()
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.config = write_config(self.out, self.gateway_url, autopilot, rollout)
        self.db, self.rules = self.out / "aperture.duckdb", self.out / "rules"
        self.env = {**os.environ, **(env or {}), "APERTURE_EMULATOR_URL": self.emulator_url,
                    "APERTURE_DB": str(self.db), "APERTURE_RULES_STORE": str(self.rules),
                    "APERTURE_BLOB_DIR": str(self.out / "blobs")}
        self.mode, self.world = mode, world
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.autopilot_starts = 0

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.out / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-c", "from aperture.cli import app; app()", *args], env=self.env, cwd=self.out,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start(self, references: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
        """Emulator, then the store's ground truth (what ``aperture eval`` scores against), then
        the gateway and the autopilot."""
        from collector.store import load_references, open_store

        port = self.emulator_url.rsplit(":", 1)[1]
        emu = self._spawn("emulator", "emulate", "--port", port, "--mode", self.mode, "--world", self.world,
                          "--catalog", str(self.config))
        if references:
            with open_store(self.db) as conn:
                load_references(conn, list(references))
        gw = self._spawn("gateway", "serve", "--config", str(self.config), "--port", str(self.gateway_port),
                         "--db", str(self.db), "--rules-store", str(self.rules))
        wait_answering(self.emulator_url + "/_emulator/health", emu.poll, 120, what="aperture emulate")
        wait_answering(self.gateway_url + "/healthz", gw.poll, 120, what="aperture serve")
        self.start_autopilot()

    def start_autopilot(self) -> subprocess.Popen[bytes]:
        self.autopilot_starts += 1
        return self._spawn(f"autopilot{self.autopilot_starts}", "autopilot", "--config", str(self.config),
                           "--db", str(self.db), "--rules-store", str(self.rules))

    def kill_autopilot(self) -> None:
        """``kill -9``: no handler runs, the lease is not released, the state file is whatever the
        last completed write left."""
        proc = self.procs[f"autopilot{self.autopilot_starts}"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def state(self) -> AutopilotState:
        return StateFile(self.rules / "autopilot").load()

    def fault(self, **spec: Any) -> None:
        httpx.post(f"{self.emulator_url}/_emulator/faults", json=spec, timeout=10).raise_for_status()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def traffic(generator: Generator) -> Iterator[Generator]:
    thread = threading.Thread(target=generator.run, name="generator", daemon=True)
    thread.start()
    try:
        yield generator
    finally:
        generator.stop.set()
        thread.join(timeout=600)


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 1.0) -> bool:
    return session_wait_until(predicate, timeout_s, poll_s)


def decided(deployment: Deployment) -> bool:
    return deployment.state().last_outcome in ("promote", "rollback")


def workload(n: int, seed: int, out: Path) -> tuple[list[dict[str, Any]], Path]:
    """``n`` generated images (reused when already generated by the same generator)."""
    from emulator.workload import generate_workload, load_ground_truth
    from emulator.workload.generate import GENERATOR_VERSION

    folder = out / f"workload-s{seed}"
    truth = folder / "ground_truth.jsonl"
    if truth.exists():
        records = load_ground_truth(truth)
        if len(records) == n and records[0]["params"].get("generator_version") == GENERATOR_VERSION:
            return records, folder
    return list(generate_workload(n, seed, folder, workers=2)), folder


#: The rails of the end-to-end promotion: search once ``min_evidence`` requests are scored,
#: replay 64 images on each of three cheaper routes, shadow every canary request.
PROMOTION_RAILS: dict[str, Any] = {
    "interval_s": 2.0, "lease_ttl_s": 30.0, "min_evidence": 100, "min_new_requests": 100, "replay_sample": 64,
    "trials": 150, "min_savings": 0.05, "seed": 7, "canary_fraction": 0.5, "max_canary_fraction": 0.5,
    "max_canary_requests": 300, "cooldown_s": 3600.0, "max_replay_usd_per_day": 5.0,
}

#: The guard of the end-to-end tests: δ = 0.10 for quality and errors. They test the deployment
#: (processes, shadows, lease, the decision reached untouched), not the guard's power, which
#: ``benchmarks.sequential --paired`` measures: at the default δ = 0.01 an equal canary needs a
#: median of 730 canary requests (p90 2,142), far more than such a test should wait for.
PROMOTION_ROLLOUT: dict[str, Any] = {"delta": 0.10, "error_delta": 0.10}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("autopilot-cycle-out"))
    parser.add_argument("--n", type=int, default=400, help="images available to send (the run stops at the decision)")
    parser.add_argument("--mode", default="vision")
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--test-rails", action="store_true",
                        help="the end-to-end tests' rails (PROMOTION_RAILS) instead of the example's own")
    args = parser.parse_args(argv)
    records, folder = workload(args.n, 7, args.out.resolve())
    rails, rollout = (PROMOTION_RAILS, PROMOTION_ROLLOUT) if args.test_rails else ({}, {})
    with Deployment(args.out / "run", rails, mode=args.mode, rollout=rollout) as dep:
        dep.start(records)
        gen = Generator(dep.gateway_url, records, folder, batch=4, pace_s=4 / args.rate)
        with traffic(gen):
            done = wait_until(lambda: dep.state().last_outcome is not None, args.timeout)
            ended = time.monotonic()
        state = dep.state()
    events = [f"{e.ts:%H:%M:%S} {e.step} {e.decision}: {e.reason}"
              for e in reversed(recent_events(dep.db, 200)) if e.decision != "wait"]
    report = {"decision": state.last_outcome if done else "none", "candidate": state.candidate, "events": events,
              "seconds_from_first_request": round(ended - (gen.first_at or ended), 1),
              "requests_sent": gen.sent, "failed": gen.failed, "errors": gen.errors,
              "load_average": os.getloadavg()}
    print(json.dumps(report, indent=2))
    return 0 if state.last_outcome == "promote" and gen.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
