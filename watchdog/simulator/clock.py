"""The simulator's clock: wall time plus an offset that tests can push forward.

Everything the simulator stamps, compares and sends (including the HTTP ``Date`` header) reads
this clock, so ``advance(600)`` makes a worker expire or a task go stale without waiting, and a
client that trusts the server's ``Date`` header sees a consistent world.
"""

from __future__ import annotations

import threading
import time


class SimClock:
    """Monotone-enough wall clock with a forward-only offset."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._offset = offset_s

    def now(self) -> float:
        """Epoch seconds as the simulated server sees them."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Jump the simulated time forward (never backward: real servers do not rewind)."""
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        with self._lock:
            self._offset += seconds

    @property
    def offset(self) -> float:
        return self._offset
