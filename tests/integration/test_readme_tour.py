"""The README's five-minute tour, run as a newcomer would: in a fresh directory holding the
repository's examples, every block marked ``<!-- tour -->`` in order, servers in the background.

Only what a test must change is changed: the emulator and the gateway get free ports (and the
gateway is told the emulator's), ``aperture`` is the virtualenv's, and the Python block talks to
the gateway's port. Each command must exit 0 (``guard --once`` too: no canary yet).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aperture.servers import listen_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BLOCK = re.compile(r"<!-- tour -->\s*```(\w+)\n(.*?)```", re.S)

pytestmark = pytest.mark.slow


def tour_blocks(readme: str) -> list[tuple[str, str]]:
    return [(lang, code) for lang, code in BLOCK.findall(readme)]


def commands(code: str) -> list[str]:
    """Shell lines of a bash block, comments dropped (the README aligns them after the command)."""
    out = []
    for line in code.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def test_readme_has_a_tour() -> None:
    blocks = tour_blocks((ROOT / "README.md").read_text())
    langs = [lang for lang, _ in blocks]
    assert langs.count("bash") >= 2 and "python" in langs
    servers = [c for _, code in blocks for c in commands(code) if c.endswith("&")]
    assert [s.split()[1] for s in servers] == ["emulate", "serve"]


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture()
def newcomer(tmp_path: Path) -> Iterator[Path]:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    yield tmp_path


def test_tour_runs_verbatim(newcomer: Path) -> None:
    ports = {"emulate": listen_port("127.0.0.1"), "serve": listen_port("127.0.0.1")}
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "APERTURE_EMULATOR_URL": f"http://127.0.0.1:{ports['emulate']}"}
    env.pop("APERTURE_DB", None)
    servers: list[subprocess.Popen[bytes]] = []
    outputs: dict[str, str] = {}
    try:
        for lang, code in tour_blocks((ROOT / "README.md").read_text()):
            if lang == "python":
                code = code.replace("127.0.0.1:8080", f"127.0.0.1:{ports['serve']}")
                done = subprocess.run([sys.executable, "-c", code], cwd=newcomer, env=env, capture_output=True,
                                      text=True, timeout=300)
                assert done.returncode == 0, done.stderr
                outputs["python"] = done.stdout
                continue
            for line in commands(code):
                if line.endswith("&"):
                    servers.append(_start(line, ports, newcomer, env))
                    continue
                done = subprocess.run(line, shell=True, cwd=newcomer, env=env, capture_output=True, text=True,
                                      timeout=300)
                assert done.returncode == 0, f"{line}: {done.stdout}\n{done.stderr}"
                outputs[line.split()[1]] = done.stdout
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGINT)
        for proc in servers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    serve_out = servers[1].stdout.read().decode() if servers[1].stdout else ""
    assert f"store: {newcomer.resolve() / 'aperture.duckdb'}" in serve_out, serve_out
    assert len(outputs["python"].splitlines()) == 4  # one route + estimate per image
    assert (newcomer / "aperture.duckdb").exists() and (newcomer / "aperture-rules").is_dir()
    assert any((newcomer / "aperture-blobs").rglob("*")), "capture wrote no image blobs"
    assert "gpt-4o" in outputs["spend"], outputs["spend"]
    # `aperture spend` in the same directory sees the tour's four images, billed.
    report = json.loads(subprocess.run(["aperture", "spend", "--format", "json"], cwd=newcomer, env=env,
                                       capture_output=True, text=True, check=True, timeout=120).stdout)
    assert sum(g["images"] for g in report["groups"]) == 4
    assert sum(g["spend_usd"] for g in report["groups"]) > 0


def _start(line: str, ports: dict[str, int], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = line.rstrip("&").strip()
    name = command.split()[1]
    proc = subprocess.Popen(f"exec {command} --port {ports[name]}", shell=True, cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    path = "/healthz" if name == "serve" else "/_emulator/health"
    _wait(f"http://127.0.0.1:{ports[name]}{path}", proc)
    return proc
