"""Run an ASGI app with uvicorn in a background thread on a loopback port (demo, tests, bench).

The implementation is shared with the emulator's test helper, which may not import this package.
"""

from __future__ import annotations

from emulator.testing import running_app

__all__ = ["running_app"]
