"""What every long loop (inversion, adaptation) shares: stopping on request."""

from __future__ import annotations

from typing import Optional, Protocol


class StopSignal(Protocol):
    """Anything with ``is_set()``, such as ``threading.Event``: set it from another thread to stop a loop."""

    def is_set(self) -> bool: ...


class Cancelled(Exception):
    """A loop saw its ``stop`` signal set and stopped before its next step; nothing it made is returned."""


def check_stop(stop: Optional[StopSignal], *, what: str, step: int, total: int) -> None:
    """Raise ``Cancelled`` when ``stop`` is set; loops call it before each step, so they stop within one."""
    if stop is not None and stop.is_set():
        raise Cancelled(f"{what} cancelled after {step} of {total} steps")
