"""Injected trouble for the HTTP layer: random errors, latency, outages, scripted failures.

The watchdog must tell "ClearML is unreachable" from "a task died" (STYLE.md rule 4), so tests
need a server that misbehaves on demand and reproducibly (seeded RNG). The server asks
``decide()`` once per request before doing any work. Stopping the listener itself (connection
refused) lives on the server, since it is a socket matter rather than a response.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

_FAULT_TEXT = {
    500: "General server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
    429: "Too many requests",
}


@dataclass(frozen=True)
class FaultPlan:
    """What to break. Replace it at run time with ``FaultInjector.set(...)``."""

    error_rate: float = 0.0  # fraction of calls answered with one of error_codes
    error_codes: tuple[int, ...] = (500, 502, 503)
    latency_s: float = 0.0  # added to every faultable call
    spike_rate: float = 0.0  # fraction of calls that also wait spike_s
    spike_s: float = 0.0
    outage: bool = False  # every faultable call gets 503
    fault_auth: bool = False  # auth.login is spared unless this is set
    endpoints: tuple[str, ...] = ()  # limit faults to these endpoints ("tasks.enqueue"); empty = all
    seed: int = 0


@dataclass(frozen=True)
class Fault:
    """The decision for one call: wait this long, then fail with ``error`` if set."""

    delay_s: float = 0.0
    error: ApiError | None = None


def fault_error(code: int, why: str = "simulated fault") -> ApiError:
    """A ClearML-shaped error body for an injected HTTP status."""
    return ApiError(code, 0, f"{_FAULT_TEXT.get(code, 'Error')} ({why})")


class FaultInjector:
    """Thread-safe holder of the current plan plus one-shot scripted failures."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self._plan = plan or FaultPlan()
        self._rng = random.Random(self._plan.seed)
        self._scripted: dict[str, list[int]] = {}

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    def set(self, **changes: Any) -> FaultPlan:
        """Change some plan fields (e.g. ``set(error_rate=0.2)``); a new seed restarts the RNG."""
        with self._lock:
            self._plan = dataclasses.replace(self._plan, **changes)
            if "seed" in changes:
                self._rng = random.Random(self._plan.seed)
            return self._plan

    def clear(self) -> None:
        """Back to a well-behaved server (keeps the seed, drops scripted failures)."""
        with self._lock:
            self._plan = FaultPlan(seed=self._plan.seed)
            self._scripted.clear()

    def outage(self, on: bool = True) -> None:
        """Every faultable call answers 503 while on (the SDK retries 503 forever by default)."""
        self.set(outage=on)

    def fail_next(self, endpoint: str, times: int = 1, code: int = 500) -> None:
        """Make the next ``times`` calls of ``endpoint`` fail with ``code``, whatever the plan says."""
        with self._lock:
            self._scripted.setdefault(endpoint, []).extend([code] * times)

    def decide(self, endpoint: str) -> Fault:
        """The fault for one incoming call of ``endpoint`` (e.g. "tasks.get_all")."""
        with self._lock:
            scripted = self._scripted.get(endpoint)
            if scripted:
                code = scripted.pop(0)
                return Fault(error=fault_error(code, "scripted fault"))
            plan = self._plan
            if endpoint == "auth.login" and not plan.fault_auth:
                return Fault()
            if plan.endpoints and endpoint not in plan.endpoints:
                return Fault()
            delay = plan.latency_s
            if plan.spike_rate > 0 and self._rng.random() < plan.spike_rate:
                delay += plan.spike_s
            if plan.outage:
                return Fault(delay, fault_error(503, "simulated outage"))
            if plan.error_rate > 0 and plan.error_codes and self._rng.random() < plan.error_rate:
                return Fault(delay, fault_error(self._rng.choice(plan.error_codes)))
            return Fault(delay)
