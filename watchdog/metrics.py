"""The watchdog's own figures: counted per cycle, read from the gateway and outbox at scrape time.

Who calls it: the service tells `Metrics` about every cycle (it is an observer); the health endpoint
asks it whether the daemon is healthy and renders `/metrics` from it. Counters that other objects
already keep (ClearML calls and errors in `Gateway.stats`, deliveries in the outbox) are read when
scraped, never copied, so they cannot drift. The outbox is read defensively: a counter it does not
expose is simply absent, and a failing read costs one comment line, never the scrape.

Rendering follows the Prometheus text exposition format 0.0.4: `# HELP`, `# TYPE`, then samples.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any

from watchdog import __version__
from watchdog.logs import mask

if TYPE_CHECKING:
    from watchdog.recovery import CycleReport

PREFIX = "clearml_watchdog_"
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# How the report counts map to "recoveries by outcome".
RECOVERY_OUTCOMES = (("requeued", "recoveries"), ("gave_up", "gave_up"), ("recovered", "resolved"))


@dataclass(frozen=True)
class Health:
    """The answer of /healthz."""

    ok: bool
    reason: str
    last_success_age_s: float | None
    cycles: int


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


class Metrics:
    """Counts what the cycles did and knows when the last good one ended. Thread-safe (scrapes run in
    the health server's threads, cycles in the scheduler's)."""

    def __init__(
        self,
        *,
        stale_after_s: float,
        gateway_stats: Any = None,
        outbox: Any = None,
        journal: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.gateway_stats = gateway_stats
        self.outbox = outbox
        self.journal = journal
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._started = clock()
        self._stopping = False
        self._ready = False
        self._last_success: float | None = None
        self._last_success_wall: float | None = None
        self._last_summary = ""
        self._last_blind_reason = ""
        self._cycles: dict[str, int] = {}
        self._durations = _Histogram(DURATION_BUCKETS)
        self._last_duration = 0.0
        self._tasks_watched = 0
        self._workers = 0
        self._verdicts: dict[str, int] = {}
        self._actions: dict[str, int] = {}
        self._recoveries: dict[str, int] = {name: 0 for name, _ in RECOVERY_OUTCOMES}
        self._refused = 0
        self._reported = 0
        self._delays = _Histogram((60.0, 120.0, 180.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0))
        self._last_delay: float | None = None

    # --- observer ------------------------------------------------------------------------------------

    def ready(self) -> None:
        with self._lock:
            self._ready = True

    def cycle_done(self, report: CycleReport, duration_s: float) -> None:
        with self._lock:
            result = "blind" if not report.finished else ("ok" if report.failures == 0 else "refused")
            self._cycles[result] = self._cycles.get(result, 0) + 1
            self._durations.observe(duration_s)
            self._last_duration = duration_s
            self._last_summary = report.summary()
            if not report.finished:
                self._last_blind_reason = report.blind_reason or "interrupted"
                return
            self._last_success = self._clock()
            self._last_success_wall = self._wall()
            self._last_blind_reason = ""
            self._tasks_watched = report.running_tasks
            self._workers = report.workers
            for outcome in report.outcomes:
                self._verdicts[outcome.verdict] = self._verdicts.get(outcome.verdict, 0) + 1
                self._actions[outcome.action] = self._actions.get(outcome.action, 0) + 1
            for name, attribute in RECOVERY_OUTCOMES:
                self._recoveries[name] += int(getattr(report, attribute, 0))
            self._refused += report.failures
            self._reported += report.reported
            for delay in report.detection_delays_s:
                self._delays.observe(delay)
                self._last_delay = delay

    def stopping(self) -> None:
        with self._lock:
            self._stopping = True

    # --- health --------------------------------------------------------------------------------------

    def health(self) -> Health:
        """Healthy while the last successful cycle ended less than `stale_after_s` ago."""
        with self._lock:
            now = self._clock()
            cycles = sum(self._cycles.values())
            age = None if self._last_success is None else now - self._last_success
            last = mask(self._last_blind_reason or self._last_summary)
            if self._stopping:
                return Health(False, "shutting down", age, cycles)
            if age is None:
                waited = now - self._started
                if cycles == 0:
                    reason = f"starting: no cycle has ended yet ({waited:.0f}s since start)"
                else:
                    reason = f"no successful cycle yet ({waited:.0f}s since start); last cycle: {last}"
                return Health(False, reason, None, cycles)
            if age > self.stale_after_s:
                reason = (
                    f"the last successful cycle ended {age:.0f}s ago (stale after {self.stale_after_s:.0f}s); "
                    f"last cycle: {last}"
                )
                return Health(False, reason, age, cycles)
            return Health(True, f"ok: last successful cycle {age:.0f}s ago: {last}", age, cycles)

    # --- exposition ----------------------------------------------------------------------------------

    def render(self) -> str:
        """All metrics in the Prometheus text format."""
        out = _Writer()
        health = self.health()
        with self._lock:
            out.metric("info", "gauge", "Build information.", [({"version": __version__}, 1)])
            out.metric("up", "gauge", "1 while /healthz answers 200.", [({}, 1 if health.ok else 0)])
            out.metric("ready", "gauge", "1 once the first cycle ended (systemd READY=1).", [({}, int(self._ready))])
            out.metric(
                "cycles_total",
                "counter",
                "Reconcile cycles by result: ok, refused (ClearML refused an action), blind (ClearML unreachable).",
                [({"result": r}, self._cycles.get(r, 0)) for r in ("ok", "refused", "blind")],
            )
            out.histogram("cycle_duration_seconds", "How long reconcile cycles took.", self._durations)
            out.metric(
                "last_cycle_duration_seconds", "gauge", "Duration of the last cycle.", [({}, self._last_duration)]
            )
            if self._last_success_wall is not None:
                out.metric(
                    "last_success_timestamp_seconds",
                    "gauge",
                    "Unix time when the last successful cycle ended.",
                    [({}, self._last_success_wall)],
                )
            out.metric(
                "tasks_watched",
                "gauge",
                "Running tasks seen by the last successful cycle.",
                [({}, self._tasks_watched)],
            )
            out.metric("workers", "gauge", "Workers listed by the last successful cycle.", [({}, self._workers)])
            out.metric(
                "verdicts_total",
                "counter",
                "Classifications made, by verdict (every considered task, every cycle).",
                [({"verdict": k}, v) for k, v in sorted(self._verdicts.items())],
            )
            out.metric(
                "actions_total",
                "counter",
                "Decisions taken, by action.",
                [({"action": k}, v) for k, v in sorted(self._actions.items())],
            )
            out.metric(
                "recoveries_total",
                "counter",
                "Recoveries by outcome: requeued (clone enqueued), gave_up, recovered (clone running).",
                [({"outcome": k}, v) for k, v in self._recoveries.items()],
            )
            out.metric(
                "actions_refused_total",
                "counter",
                "Actions ClearML refused (retried next cycle).",
                [({}, self._refused)],
            )
            out.metric(
                "reported_total",
                "counter",
                "Report-only incidents (user aborts, code failures).",
                [({}, self._reported)],
            )
            out.histogram(
                "detection_delay_seconds", "Time from a lost task's last update to its detection.", self._delays
            )
        self._render_gateway(out)
        self._render_notify(out)
        return out.text()

    def _render_gateway(self, out: _Writer) -> None:
        stats = self.gateway_stats
        if stats is None:
            return
        calls = getattr(stats, "calls", {})
        if isinstance(calls, Mapping):
            out.metric(
                "clearml_requests_total",
                "counter",
                "ClearML API calls sent, by endpoint.",
                [({"endpoint": str(k)}, float(v)) for k, v in sorted(calls.items()) if _is_number(v)],
            )
        for name, what in (
            ("errors", "ClearML calls that failed (unreachable, 5xx, refused)."),
            ("skipped_records", "Malformed ClearML records skipped."),
        ):
            value = getattr(stats, name, None)
            if isinstance(value, (int, float)) and _is_number(value):
                out.metric(f"clearml_{name}_total", "counter", what, [({}, float(value))])

    def _render_notify(self, out: _Writer) -> None:
        """Delivery counters from the outbox (whatever it exposes) and the outbox depth."""
        try:
            source = _stats_of(self.outbox)
            counters = notify_counters(source)
        except Exception as error:  # the outbox is someone else's object: never fail a scrape over it
            out.comment(f"notify counters unavailable: {type(error).__name__}")
            source, counters = None, []
        by_name: dict[str, list[tuple[Mapping[str, str], float]]] = {}
        for name, labels, value in counters:
            by_name.setdefault(name, []).append((labels, value))
        for name, samples in sorted(by_name.items()):
            out.metric(
                f"notify_{name}_total", "counter", f"Notifications: outbox counter '{name}', by channel.", samples
            )
        try:
            depth = outbox_depth(source, self.journal)
        except Exception as error:
            out.comment(f"outbox depth unavailable: {type(error).__name__}")
            return
        if depth is not None:
            out.metric(
                "outbox_depth",
                "gauge",
                "Notifications waiting in the outbox (all channels).",
                [({}, sum(depth.values()))],
            )
            out.metric(
                "outbox_pending",
                "gauge",
                "Notifications waiting in the outbox, by channel.",
                [({"channel": k}, v) for k, v in sorted(depth.items())],
            )
        oldest = _field(source, "oldest_pending_s")
        if isinstance(oldest, (int, float)) and _is_number(oldest):
            out.metric(
                "outbox_oldest_pending_seconds", "gauge", "Age of the oldest undelivered notification.", [({}, oldest)]
            )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Fields of the outbox's stats that are levels, not counters.
_GAUGE_FIELDS = frozenset({"depth", "oldest_pending_s", "pending"})


def _stats_of(outbox: Any) -> Any:
    """The outbox's statistics object (`stats()`, `stats`, `counters` ...), or None."""
    if outbox is None:
        return None
    for attribute in ("stats", "counters", "metrics"):
        candidate = getattr(outbox, attribute, None)
        if callable(candidate):
            candidate = candidate()
        if candidate is not None:
            return candidate
    return None


def _items(source: Any) -> list[tuple[str, Any]]:
    if source is None:
        return []
    if isinstance(source, Mapping):
        return [(str(k), v) for k, v in source.items()]
    if is_dataclass(source) and not isinstance(source, type):
        return [(f.name, getattr(source, f.name)) for f in fields(source)]
    return [(k, v) for k, v in getattr(source, "__dict__", {}).items() if not k.startswith("_")]


def _field(source: Any, name: str) -> Any:
    return dict(_items(source)).get(name) if source is not None else None


def notify_counters(source: Any) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for every numeric counter in the outbox's stats.

    Accepts a dataclass, an object with attributes, or a mapping; a nested mapping of numbers becomes
    a `channel` label (`delivered={"slack": 3}` -> `delivered{channel="slack"} 3`). Levels (depth,
    age of the oldest message) are left to `outbox_depth`.
    """
    found: list[tuple[str, dict[str, str], float]] = []
    for name, value in _items(source):
        if name in _GAUGE_FIELDS:
            continue
        key = _metric_name(name)
        if _is_number(value):
            found.append((key, {}, float(value)))
        elif isinstance(value, Mapping):
            for label, inner in value.items():
                if _is_number(inner):
                    found.append((key, {"channel": str(getattr(label, "value", label))}, float(inner)))
    return found


def outbox_depth(source: Any, journal: Any) -> dict[str, float] | None:
    """Undelivered notifications per channel: from the outbox's stats, else counted in the journal."""
    depth = _field(source, "depth")
    if isinstance(depth, Mapping):
        return {str(k): float(v) for k, v in depth.items() if _is_number(v)}
    if _is_number(depth):
        return {"all": float(depth)}
    query = getattr(journal, "query", None)
    if query is None:
        return None
    rows = query("SELECT channel, COUNT(*) AS n FROM outbox WHERE state = 'pending' GROUP BY channel")
    return {str(row[0]): float(row[1]) for row in rows}


def _metric_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name.lower()).strip("_")
    for suffix in ("_total", "_count"):
        if cleaned.endswith(suffix):
            cleaned = cleaned[: -len(suffix)]
    return cleaned or "unnamed"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


class _Writer:
    """Builds exposition text; one HELP/TYPE block per metric family."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def comment(self, text: str) -> None:
        self._lines.append("# " + " ".join(text.split()))

    def metric(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]) -> None:
        full = PREFIX + name
        self._lines.append(f"# HELP {full} {help_text}")
        self._lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            self._lines.append(f"{full}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, help_text: str, histogram: _Histogram) -> None:
        full = PREFIX + name
        self._lines.append(f"# HELP {full} {help_text}")
        self._lines.append(f"# TYPE {full} histogram")
        for bound, count in zip(histogram.buckets, histogram.counts, strict=True):
            self._lines.append(f'{full}_bucket{{le="{_number(bound)}"}} {count}')
        self._lines.append(f'{full}_bucket{{le="+Inf"}} {histogram.count}')
        self._lines.append(f"{full}_sum {_number(histogram.total)}")
        self._lines.append(f"{full}_count {histogram.count}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items())
    return "{" + inner + "}"
