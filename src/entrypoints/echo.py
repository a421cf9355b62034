"""Echoing client input in messages: always bounded, so an answer never grows with the input."""

from __future__ import annotations

MAX_ECHO = 100


def bounded(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when it was longer."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
