"""Per-endpoint call counts, so a test can assert what a watchdog cycle costs in API calls.

Every request that reaches the router is counted under its endpoint name ("tasks.get_all"),
including failed, faulted and unauthorized ones: that is what a metered server would bill.
Simulated agents act on the state directly and are never counted.
"""

from __future__ import annotations

import threading
from collections import Counter


class CallCounter:
    """Thread-safe counter with snapshot and reset."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def record(self, endpoint: str) -> None:
        with self._lock:
            self._counts[endpoint] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def count(self, endpoint: str) -> int:
        with self._lock:
            return self._counts[endpoint]

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def reset(self) -> dict[str, int]:
        """Zero the counts and return what they were."""
        with self._lock:
            before = dict(self._counts)
            self._counts.clear()
            return before
