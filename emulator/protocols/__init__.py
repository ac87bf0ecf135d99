"""The three wire protocols the emulator speaks, each a module of pure functions.

Every module exposes the same names (``NAME``, ``MAX_BODY_BYTES``, ``check_auth``, ``parse``,
``check_images``, ``fault``, ``render``, ``render_stream``, ``list_models`` and the error
constructors), so the server treats them alike.
"""

from __future__ import annotations

from emulator.protocols import anthropic, gemini, openai

PROTOCOLS = {"openai": openai, "anthropic": anthropic, "gemini": gemini}

__all__ = ["PROTOCOLS", "anthropic", "gemini", "openai"]
