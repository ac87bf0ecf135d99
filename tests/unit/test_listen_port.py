"""``aperture.servers.listen_port``: a port a server can bind while clients already dial it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aperture import servers


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_the_port_is_free_and_below_the_ephemeral_range() -> None:
    low = servers.ephemeral_start()
    ports = [servers.listen_port("127.0.0.1") for _ in range(20)]
    if low > 11_000:
        assert all(10_000 <= p < low for p in ports)
    assert all(_bindable(p) for p in ports)


def test_a_range_starting_too_low_falls_back_to_a_port_the_kernel_picks(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With no room below the range, the port comes from the kernel (port 0): inside the real
    range, where the picking below it would never land."""
    real_low = servers.ephemeral_start()
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("1024\t65535\n")
    monkeypatch.setattr(servers, "_EPHEMERAL", ranges)
    port = servers.listen_port("127.0.0.1")
    assert _bindable(port)
    if real_low > 11_000:
        assert port >= real_low
