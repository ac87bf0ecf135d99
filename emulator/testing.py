"""Run the emulator on a free loopback port for the length of a test.

    >>> with running_emulator(mode="instant") as base_url:     # doctest: +SKIP
    ...     httpx.get(f"{base_url}/_emulator/health").json()["status"]
    'ok'
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from emulator.server import create_emulator_app


@contextmanager
def running_emulator(**kw: Any) -> Iterator[str]:
    """Start ``create_emulator_app(**kw)`` with uvicorn in a thread on 127.0.0.1 and a free port;
    yield its base URL (``http://127.0.0.1:PORT``); stop it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_emulator_app(**kw), log_level="warning", ws="none", lifespan="on",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"emulator-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the emulator did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
