"""A whole deployment in one process, for the demo and the end-to-end tests: the emulator, a
gateway, the autopilot and a client sending traffic at a steady pace, each doing only what it
does in production. Nothing here drives the loop: the autopilot decides, on its own clock.

Example::

    with LoopSession(config, out_dir) as session:
        session.send(records, workload_dir)      # steady traffic, through the openai SDK
        session.wait_for(lambda e: e.decision in ("promote", "rollback"), timeout_s=300)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aperture.autopilot.controller import Autopilot
from aperture.autopilot.lease import FileLease
from aperture.autopilot.state import StateFile
from aperture.autopilot.steps import StoreLoopSteps
from aperture.policies import open_rule_store, ruleset_validator
from aperture.servers import running_app
from aperture.traffic import TrafficResult, send_workload
from aperture.wiring import build_gateway_app
from collector.queries.autopilot import AutopilotEvent, recent_events, unevaluated_requests
from router.config import AppConfig


@dataclass
class SessionTraffic:
    """What the client saw: every request it sent, and each failure by code."""

    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, result: TrafficResult) -> None:
        self.sent += result.sent
        self.ok += result.ok
        for code, n in result.errors.items():
            self.errors[code] = self.errors.get(code, 0) + n


def loop_config(config: AppConfig, out: Path, gateway_url: str = "http://127.0.0.1:0") -> AppConfig:
    """``config`` with its store, blobs and rule store under ``out`` (absolute paths)."""
    cfg = config.model_copy(deep=True)
    cfg.telemetry.capture_content = True
    cfg.telemetry.db_path = str((out / "aperture.duckdb").resolve())
    cfg.telemetry.blob_dir = str((out / "blobs").resolve())
    cfg.routing.rules_store = str((out / "rules").resolve())
    cfg.autopilot.gateway_url = gateway_url
    return cfg


class LoopSession:
    """Gateway + autopilot (a thread running :meth:`Autopilot.run`) on loopback.

    The emulator is the caller's (its URL is already in ``config``'s providers)."""

    def __init__(self, config: AppConfig, out: Path, *, owner: str = "session") -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.config = loop_config(config, out)
        self.db = (out / "aperture.duckdb").resolve()
        self.owner = owner
        self.traffic = SessionTraffic()
        self._stack = contextlib.ExitStack()
        self._stop = threading.Event()
        self.autopilot: Autopilot | None = None
        self.gateway_url = ""
        self.app: Any = None

    def __enter__(self) -> LoopSession:
        store = open_rule_store(self.config)  # bootstraps v0001 from the config's rules file
        self.app = build_gateway_app(self.config, db_path=self.db)
        self.gateway_url = self._stack.enter_context(running_app(self.app, name="gateway"))
        self.config.autopilot.gateway_url = self.gateway_url
        telemetry = self.app.state.telemetry
        folder = Path(store.root) / "autopilot"
        steps = StoreLoopSteps(self.config, self.db, store, blob_dir=Path(str(self.config.telemetry.blob_dir)),
                               workdir=folder, validate=ruleset_validator(self.config),
                               tracer_provider=telemetry.provider, optuna_path=self.out / "optuna.db")
        self.autopilot = Autopilot(self.config.autopilot, self.db, steps, StateFile(folder),
                                   FileLease(folder, self.owner, self.config.autopilot.lease_ttl_s),
                                   tracer_provider=telemetry.provider)
        thread = threading.Thread(target=self.autopilot.run, args=(self._stop,), name="autopilot", daemon=True)
        thread.start()
        self._stack.callback(thread.join, 60)
        self._stack.callback(self._stop.set)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def send(self, records: Sequence[dict[str, Any]], workload_dir: Path, *, batch: int = 8, pace_s: float = 0.0,
             concurrency: int = 2, until: Callable[[], bool] | None = None,
             progress: Callable[[int], None] | None = None) -> int:
        """Send ``records`` in small batches (a steady stream); stop early once ``until()`` holds.
        Returns how many were sent."""
        sent = 0
        for start in range(0, len(records), batch):
            if until is not None and until():
                break
            chunk = records[start : start + batch]
            self.traffic.add(send_workload(self.gateway_url, chunk, workload_dir, concurrency=concurrency,
                                           progress=progress))
            sent += len(chunk)
            if pace_s:
                time.sleep(pace_s)
        return sent

    def autopilot_steps(self) -> StoreLoopSteps:
        assert self.autopilot is not None and isinstance(self.autopilot.steps, StoreLoopSteps)
        return self.autopilot.steps

    def unscored(self) -> int:
        """User requests answered but not yet evaluated (0 once the autopilot caught up)."""
        try:
            return unevaluated_requests(self.db)
        except Exception:  # noqa: BLE001 - the store may be mid-write
            return -1

    def events(self, limit: int = 200) -> list[AutopilotEvent]:
        """The autopilot's decisions, oldest first."""
        try:
            return list(reversed(recent_events(self.db, limit)))
        except Exception:  # noqa: BLE001 - the store may be mid-write; no events yet is the answer
            return []

    def decided(self) -> AutopilotEvent | None:
        """The guard's promote or rollback, once the autopilot recorded one."""
        return next((e for e in self.events() if e.step == "guard" and e.decision in ("promote", "rollback")), None)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.5) -> bool:
        return wait_until(predicate, timeout_s, poll_s)


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.5) -> bool:
    """Poll ``predicate`` every ``poll_s`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True
