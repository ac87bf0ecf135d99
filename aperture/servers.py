"""Running servers: an ASGI app in a background thread (demo, tests, bench), and the gateway as
several worker processes in front of one collector (``aperture serve --workers N``).

Why a collector with several workers: DuckDB takes writes from one process at a time, so N
processes each holding the store open would contend for (or fail on) its lock. Each worker
exports its spans by OTLP/HTTP instead, and one ``aperture collector`` process is the store's
only writer. Shutdown order keeps every span: SIGTERM (or Ctrl-C) stops the workers first —
each finishes its in-flight requests and flushes its exporter into the still-running
collector — and only then is the collector stopped, which drains its queue into DuckDB.

The thread runner is shared with the emulator's test helper, which may not import this package.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from aperture.wiring import (
    STARTUP_FAILURE,
    WORKER_CONFIG_ENV,
    WORKER_RULES_STORE_ENV,
    WORKER_SPOOL_ENV,
)
from emulator.testing import running_app
from router.metrics import MULTIPROC_ENV

__all__ = ["running_app", "serve_workers", "collector_forward_url", "CollectorSupervisor", "restart_delay"]

log = logging.getLogger("aperture")

_TRACES_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"


def collector_forward_url(environ: dict[str, str]) -> str | None:
    """Where the user's own OTLP variables pointed (Tempo, …): the child collector forwards there,
    so turning on workers does not cut an existing OTLP fan-out."""
    if traces := environ.get(_TRACES_ENV):
        return traces
    if base := environ.get(_ENDPOINT_ENV):
        return base.rstrip("/") + "/v1/traces"
    return None


_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_start() -> int:
    """The first port the kernel hands out to outgoing connections (32768 where it cannot be read)."""
    return int(_EPHEMERAL.read_text().split()[0]) if _EPHEMERAL.exists() else 32768


def listen_port(host: str, *, attempts: int = 200) -> int:
    """A free port on ``host`` below the kernel's ephemeral range, for a server that clients
    may dial before it listens (or again while it restarts).

    In the ephemeral range one of those connects could be given the port as its own source
    (a TCP self-connect: it "succeeds" against itself), or another process's outgoing
    connection could take it; the server would then fail to bind until that connection ends.
    Falls back to any free port when the range starts too low to leave room below it.
    """
    low = ephemeral_start()
    pick = random.Random()
    for _ in range(attempts):
        port = pick.randrange(10_000, low) if low > 11_000 else 0
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError(f"no free port on {host} below the ephemeral range")


def _run_collector(db: str, host: str, port: int, forward: str | None, restarts: int = 0) -> None:
    # Its own process group: a Ctrl-C in the terminal reaches the workers, not the collector,
    # which must outlive them to receive their last spans; the parent stops it afterwards.
    os.setpgrp()
    from collector.receiver import serve_receiver

    serve_receiver(db, host=host, port=port, forward=forward, restarts=restarts)


def restart_delay(failures: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Backoff before restart number ``failures`` (1, 2, …) in a row: base · 2^(n−1), capped."""
    return min(cap_s, base_s * 2 ** max(0, failures - 1))


class CollectorSupervisor:
    """Starts the child collector and starts it again (with backoff) whenever it dies.

    ``restarts`` counts restarts; the child is told the number, so its /metrics shows it.
    A collector that stayed up ``stable_s`` resets the backoff.
    """

    def __init__(self, db: str, port: int, forward: str | None, *, poll_s: float = 0.2,
                 base_s: float = 0.5, cap_s: float = 30.0, stable_s: float = 60.0) -> None:
        self.db, self.port, self.forward = db, port, forward
        self.poll_s, self.base_s, self.cap_s, self.stable_s = poll_s, base_s, cap_s, stable_s
        self.restarts = 0
        self.proc: Any = None
        self._ctx = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _spawn(self) -> Any:
        proc = self._ctx.Process(target=_run_collector, args=(self.db, "127.0.0.1", self.port, self.forward,
                                                              self.restarts), name="aperture-collector")
        proc.start()
        return proc

    def start(self) -> None:
        """Start the collector, wait until it answers, then watch it from a thread."""
        self.proc = self._spawn()
        try:
            _wait_healthy(f"http://127.0.0.1:{self.port}/healthz", self.proc)
        except BaseException:
            _stop(self.proc, 10)
            raise
        self._thread = threading.Thread(target=self._watch, name="aperture-collector-supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        failures, started = 0, time.monotonic()
        while not self._stopping.wait(self.poll_s):
            if self.proc.is_alive():
                if failures and time.monotonic() - started > self.stable_s:
                    failures = 0
                continue
            failures += 1
            delay = restart_delay(failures, self.base_s, self.cap_s)
            log.error("the collector (pid %s) died with exit code %s; restarting it in %.1f s (restart %d)",
                      self.proc.pid, self.proc.exitcode, delay, self.restarts + 1)
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            self.proc = self._spawn()
            started = time.monotonic()
            log.info("collector restarted (pid %s); workers replay their spools into it", self.proc.pid)

    def stop(self, timeout_s: float) -> None:
        """Stop watching, then stop the collector (it drains its queue and spool into the store).

        A collector that died (or is still starting) is first brought up and waited for, so that
        what it acknowledged into its spool reaches the store before ``serve`` exits.
        """
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.proc is None:
            return
        if not self.proc.is_alive():
            log.warning("the collector is down at shutdown; starting it once more to drain its spool")
            self.restarts += 1
            self.proc = self._spawn()
        try:
            _wait_healthy(f"http://127.0.0.1:{self.port}/healthz", self.proc)
        except RuntimeError as exc:
            log.error("%s; its spool stays for the next start", exc)
        _stop(self.proc, timeout_s)


def _wait_healthy(url: str, proc: Any, timeout_s: float = 60.0) -> None:
    wait_answering(url, lambda: None if proc.is_alive() else proc.exitcode, timeout_s, what="the collector")


def wait_answering(url: str, exit_code: Callable[[], int | None], timeout_s: float = 60.0, *,
                   what: str = "the server") -> None:
    """Poll ``url`` until it answers 200. ``exit_code`` returns the process's exit code once it
    has ended (``Popen.poll`` fits): a server that dies while starting fails at once, naming its
    code, instead of at the deadline. Raises ``RuntimeError`` either way."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = exit_code()
        if code is not None:
            raise RuntimeError(f"{what} exited with code {code} before it was ready")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout_s:.0f} s")


def serve_workers(
    config: Path,
    *,
    host: str,
    port: int,
    workers: int,
    db_path: Path,
    rules_store: Path | None = None,
    collector: str | None = None,
    collector_stop_timeout_s: float = 120.0,
    spool_dir: Path | None = None,
) -> int:
    """Serve the gateway with ``workers`` uvicorn processes until SIGTERM / Ctrl-C.

    ``collector`` is the OTLP/HTTP traces URL of a collector that is already running; without
    it a child ``aperture collector`` writing ``db_path`` is started on a free loopback port,
    forwarding to whatever ``OTEL_EXPORTER_OTLP_*`` named before, restarted when it dies, and
    stopped last. Workers spool undelivered spans under ``spool_dir`` (default ``<db>.spool``,
    one ``worker-N`` slot each; ``APERTURE_SERVE_SPOOL_DIR`` when set wins). Returns the
    exit code: 0, or 3 when a worker could not start (bad rules file, …).
    """
    import uvicorn

    child = None
    env = os.environ
    if collector is None:
        collector_port = listen_port("127.0.0.1")
        child = CollectorSupervisor(str(db_path), collector_port, collector_forward_url(dict(env)))
        child.start()
        collector = f"http://127.0.0.1:{collector_port}/v1/traces"
        log.info("collector (pid %s) writes %s; workers export to %s", child.proc.pid, db_path, collector)
    # The workers are spawned with this environment.
    env[_TRACES_ENV] = collector
    env.setdefault(WORKER_SPOOL_ENV, str(spool_dir or db_path.with_name(db_path.name + ".spool")))
    env[WORKER_CONFIG_ENV] = str(config.resolve())
    if rules_store is not None:
        env[WORKER_RULES_STORE_ENV] = str(rules_store.resolve())
    else:
        env.pop(WORKER_RULES_STORE_ENV, None)
    # One metrics directory for all workers, so /metrics on any of them sums them all. Set before
    # the workers are spawned: prometheus-client reads it when it is imported.
    own_metrics_dir = None
    if not env.get(MULTIPROC_ENV):
        own_metrics_dir = tempfile.mkdtemp(prefix="aperture-metrics-")
        env[MULTIPROC_ENV] = own_metrics_dir
    try:
        # No access log (a line per request is pure overhead; errors are still logged); "auto"
        # takes uvloop + httptools when installed, asyncio + h11 otherwise.
        return _supervise(uvicorn.Config("aperture.wiring:worker_app", factory=True, host=host, port=port,
                                         workers=workers, log_level="warning", access_log=False,
                                         loop="auto", http="auto"))
    finally:
        if child is not None:
            child.stop(collector_stop_timeout_s)
        if own_metrics_dir is not None:
            env.pop(MULTIPROC_ENV, None)
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


def _supervise(config: Any) -> int:
    """uvicorn's own supervisor (what ``uvicorn.run`` does with workers), keeping its verdict:
    a worker that could not build its app ends the whole server with exit code 3."""
    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    supervisor = Multiprocess(config, sockets=[sock])
    try:
        supervisor.run()
    finally:
        sock.close()
    return STARTUP_FAILURE if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes) else 0


def _stop(proc: Any, timeout_s: float) -> None:
    """SIGTERM, then wait for the collector's lifespan to drain its queue into the store."""
    if proc.is_alive():
        proc.terminate()
    proc.join(timeout_s)
    if proc.is_alive():
        log.error("the collector did not stop within %.0f s; killing it (spans still queued are lost)", timeout_s)
        proc.kill()
        proc.join(10)
