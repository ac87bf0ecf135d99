"""examples/replicas.yaml: a valid config whose key sk-demo-a gets 60 requests a minute across
two separate gateway processes sharing one redis-server (not 60 each)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from router.cache import build_cache
from router.cache.redis import RedisCache
from router.config import load_config
from router.keys import authenticate
from router.state import FailoverState, build_state
from tests.redis_fixture import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.xdist_group("redis")
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "replicas.yaml"

# One "replica": loads the example, builds its state, says it is ready, waits for "go" (so both
# burst together, not a refill apart), fires 50 concurrent admissions for sk-demo-a and prints
# how many were let through.
REPLICA = """
import asyncio, sys
from router.config import load_config
from router.errors import RateLimited
from router.keys import authenticate
from router.state import build_state

async def main() -> None:
    config = load_config(sys.argv[1])
    state = build_state(config)
    principal = authenticate("Bearer sk-demo-a", config)
    print("ready", flush=True)
    sys.stdin.readline()
    results = await asyncio.gather(*(state.limits.check(principal) for _ in range(50)), return_exceptions=True)
    assert all(r is None or isinstance(r, RateLimited) for r in results), results
    assert not state.degraded
    print(sum(r is None for r in results))
    await state.close()

asyncio.run(main())
"""


def test_the_example_is_the_emulated_config_plus_shared_state() -> None:
    cfg = load_config(EXAMPLE, environ={})
    emulated = load_config(ROOT / "examples" / "emulated.yaml", environ={})
    assert cfg.providers == emulated.providers and cfg.models == emulated.models
    assert cfg.state.backend == "redis" and cfg.state.url == "redis://127.0.0.1:6379/0"
    assert cfg.cache.enabled and cfg.cache.backend == "redis" and cfg.cache.enabled_for("a")
    principal = authenticate("Bearer sk-demo-a", cfg)
    assert principal.team == "a" and principal.rpm == 60 and not principal.open_mode
    custom = load_config(EXAMPLE, environ={"APERTURE_REDIS_URL": "redis://127.0.0.1:7000/2"})
    assert custom.state.url == custom.cache.url == "redis://127.0.0.1:7000/2"


async def test_two_processes_share_sk_demo_a_rpm(redis_server: RedisServer, tmp_path: Path) -> None:  # noqa: F811
    # A fresh prefix per run, so the test does not see another run's buckets.
    text = EXAMPLE.read_text(encoding="utf-8").replace('key_prefix: "aperture:"', f'key_prefix: "t{uuid.uuid4().hex[:8]}:"')
    # 50 admissions on a fresh connection pool: on a loaded machine one can pass the example's
    # 0.25 s, and the replica would then rightly fall back to its own limits. The test is about
    # sharing, not that deadline.
    assert text.count("timeout_s: 0.25") == 1
    text = text.replace("timeout_s: 0.25", "timeout_s: 5")
    config_path = tmp_path / "replicas.yaml"
    config_path.write_text(text, encoding="utf-8")
    (tmp_path / "rules").symlink_to(ROOT / "examples" / "rules")
    env = {"APERTURE_REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", REPLICA, str(config_path)], cwd=ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.stdout is not None and p.stdin is not None
        if p.stdout.readline() != b"ready\n":
            pytest.fail(p.communicate(timeout=60)[1].decode())
    for p in procs:
        p.stdin.write(b"go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    outputs = [p.communicate(timeout=60) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()
    counts = [int(out) for out, _ in outputs]
    assert 60 <= sum(counts) <= 61  # 61: one request refilled while they ran

    cfg = load_config(config_path, environ={"APERTURE_REDIS_URL": redis_server.url})
    state, cache = build_state(cfg), build_cache(cfg)
    assert isinstance(state, FailoverState) and isinstance(cache, RedisCache)
    remaining = await state.limits.remaining(authenticate("Bearer sk-demo-a", cfg))
    assert remaining["requests"] <= 1
    await state.close()
    await cache.close()
