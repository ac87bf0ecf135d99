"""A real ``redis-server`` on a free loopback port with its own temp dir, for state and cache tests.

``redis_server`` (module-scoped pytest fixture) yields a :class:`RedisServer`; ``kill()`` and
``start()`` let a test take Redis away mid-run and bring it back on the same port (empty: persistence is off, as in a Redis
that lost its data).
Where ``redis-server`` cannot be found the tests skip with a loud message; ``make test``
installs it first, and under CI (``CI`` or ``APERTURE_REQUIRE_REDIS`` set, as ``.ci/run`` does)
a missing server fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aperture.servers import listen_port

SKIP_MESSAGE = (
    "\n" + "!" * 78 + "\n!!! redis-server NOT FOUND: the Redis state and cache tests are SKIPPED.\n"
    "!!! Install it (Debian: apt-get install -y redis-server) or run `make test`, which does.\n" + "!" * 78
)


class RedisServer:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir = binary, workdir
        self.port = listen_port("127.0.0.1")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: the abrupt failure a crashed or partitioned Redis looks like to clients."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or shutil.which("valkey-server")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = find_redis_server()
    if binary is None:
        if os.environ.get("CI") or os.environ.get("APERTURE_REQUIRE_REDIS"):
            pytest.fail("redis-server is required here (CI / APERTURE_REQUIRE_REDIS) and was not found")
        sys.stderr.write(SKIP_MESSAGE + "\n")
        pytest.skip(SKIP_MESSAGE)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()
