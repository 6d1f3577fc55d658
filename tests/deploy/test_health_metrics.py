"""The health endpoint over real HTTP with a fake clock and hand-made cycle reports; the metrics text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
from deploy_helpers import http_get, parse_prometheus

from watchdog.health import HealthServer, default_stale_after_s
from watchdog.metrics import Metrics, notify_counters, outbox_depth
from watchdog.notify.outbox import OutboxStats
from watchdog.recovery import CycleReport, TaskOutcome


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeGatewayStats:
    calls: dict[str, int] = field(default_factory=lambda: {"workers.get_all": 3, "tasks.get_all": 6})
    errors: int = 1
    skipped_records: int = 0


class FakeOutbox:
    """Exposes what the real outbox exposes: `stats()` returning `OutboxStats`."""

    def stats(self) -> OutboxStats:
        return OutboxStats(
            delivered={"slack": 3, "telegram": 1},
            messages={"slack": 2},
            failed={"telegram": 1},
            expired={},
            dead={},
            edits={},
            edit_failures={},
            depth={"slack": 2},
            oldest_pending_s=12.5,
        )


def report(finished: bool = True, **counts: int) -> CycleReport:
    result = CycleReport(started_at=datetime.now(timezone.utc), finished=finished, **counts)
    if not finished:
        result.blind_reason = "workers.get_all: ClearML unreachable: ConnectionError"
    return result


@pytest.fixture
def served() -> tuple[Metrics, FakeClock, str]:
    clock = FakeClock()
    metrics = Metrics(stale_after_s=60, gateway_stats=FakeGatewayStats(), outbox=FakeOutbox(), clock=clock)
    server = HealthServer(metrics, "127.0.0.1", 0)
    assert server.start()
    address = server.address
    assert address is not None
    yield metrics, clock, f"http://{address[0]}:{address[1]}"
    server.stop()


def test_healthz_lifecycle(served: tuple[Metrics, FakeClock, str]) -> None:
    metrics, clock, base = served
    status, content_type, body = http_get(base + "/healthz")
    assert status == 503 and content_type == "application/json"
    assert json.loads(body)["reason"].startswith("starting")  # before the first cycle

    metrics.cycle_done(report(running_tasks=5), 0.3)
    status, _, body = http_get(base + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"

    clock.now += 30
    metrics.cycle_done(report(finished=False), 10.0)  # blind, but the last success is still recent
    assert http_get(base + "/healthz")[0] == 200

    clock.now += 31  # 61 s since the last success: stale
    status, _, body = http_get(base + "/healthz")
    answer = json.loads(body)
    assert status == 503 and "61s ago" in answer["reason"] and "ClearML unreachable" in answer["reason"]
    assert answer["last_success_age_s"] == 61.0

    metrics.cycle_done(report(), 0.1)  # ClearML is back
    assert http_get(base + "/healthz")[0] == 200
    metrics.stopping()
    status, _, body = http_get(base + "/healthz")
    assert status == 503 and json.loads(body)["reason"] == "shutting down"


def test_metrics_text_parses_and_moves(served: tuple[Metrics, FakeClock, str]) -> None:
    metrics, _clock, base = served
    status, content_type, body = http_get(base + "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    before = parse_prometheus(body)
    assert before.total("clearml_watchdog_cycles_total") == 0

    first = report(running_tasks=7, workers=2, recoveries=1, gave_up=1, failures=1)
    first.outcomes = [
        TaskOutcome("t1", "a", "in_progress", "healthy", "", "nothing", ""),
        TaskOutcome("t2", "b", "in_progress", "agent_lost", "", "requeue", ""),
    ]
    first.detection_delays_s = [200.0]
    metrics.cycle_done(first, 0.4)
    metrics.cycle_done(report(finished=False), 3.0)
    after = parse_prometheus(http_get(base + "/metrics")[2])

    assert after.value("clearml_watchdog_cycles_total", result="refused") == 1
    assert after.value("clearml_watchdog_cycles_total", result="blind") == 1
    assert after.value("clearml_watchdog_cycle_duration_seconds_count") == 2
    assert after.value("clearml_watchdog_cycle_duration_seconds_sum") == pytest.approx(3.4)
    assert after.value("clearml_watchdog_cycle_duration_seconds_bucket", le="0.5") == 1
    assert after.value("clearml_watchdog_cycle_duration_seconds_bucket", le="+Inf") == 2
    assert after.value("clearml_watchdog_tasks_watched") == 7
    assert after.value("clearml_watchdog_verdicts_total", verdict="agent_lost") == 1
    assert after.value("clearml_watchdog_verdicts_total", verdict="healthy") == 1
    assert after.value("clearml_watchdog_recoveries_total", outcome="requeued") == 1
    assert after.value("clearml_watchdog_recoveries_total", outcome="gave_up") == 1
    assert after.value("clearml_watchdog_actions_refused_total") == 1
    assert after.value("clearml_watchdog_detection_delay_seconds_sum") == 200
    assert after.value("clearml_watchdog_clearml_requests_total", endpoint="tasks.get_all") == 6
    assert after.value("clearml_watchdog_clearml_errors_total") == 1
    assert after.value("clearml_watchdog_notify_delivered_total", channel="slack") == 3
    assert after.value("clearml_watchdog_notify_failed_total", channel="telegram") == 1
    assert after.value("clearml_watchdog_outbox_depth") == 2
    assert after.value("clearml_watchdog_outbox_pending", channel="slack") == 2
    assert after.value("clearml_watchdog_outbox_oldest_pending_seconds") == 12.5
    assert after.types["clearml_watchdog_cycle_duration_seconds"] == "histogram"


def test_unknown_path(served: tuple[Metrics, FakeClock, str]) -> None:
    _, _, base = served
    assert http_get(base + "/nope")[0] == 404


def test_port_taken_is_not_fatal() -> None:
    metrics = Metrics(stale_after_s=10)
    first = HealthServer(metrics, "127.0.0.1", 0)
    assert first.start()
    address = first.address
    assert address is not None
    second = HealthServer(metrics, "127.0.0.1", address[1])
    try:
        assert second.start() is False  # one error line; the daemon goes on recovering tasks
    finally:
        first.stop()


class BrokenOutbox:
    def stats(self) -> object:
        raise RuntimeError("half-built")


def test_broken_outbox_never_breaks_a_scrape() -> None:
    metrics = Metrics(stale_after_s=10, outbox=BrokenOutbox())
    text = metrics.render()
    parsed = parse_prometheus(text)
    assert "notify counters unavailable: RuntimeError" in text
    assert "clearml_watchdog_up" in parsed.names()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (None, []),  # no outbox at all
        (object(), []),  # stats that expose nothing
        ({"delivered": 2, "dead": 0}, [("delivered", {}, 2.0), ("dead", {}, 0.0)]),  # a plain mapping
        ({"sent_total": 1, "depth": 5}, [("sent", {}, 1.0)]),  # a suffix dropped; depth is a level, not counted
        ({"failed": {"slack": 2}}, [("failed", {"channel": "slack"}, 2.0)]),  # per channel
    ],
)
def test_notify_counters_shapes(source: object, expected: list[tuple[str, dict[str, str], float]]) -> None:
    assert notify_counters(source) == expected


def test_outbox_depth_from_journal_rows() -> None:
    class Journal:
        def query(self, sql: str) -> list[tuple[str, int]]:
            assert "FROM outbox WHERE state = 'pending'" in sql
            return [("slack", 3), ("telegram", 1)]

    assert outbox_depth(None, Journal()) == {"slack": 3.0, "telegram": 1.0}
    assert outbox_depth(None, None) is None


def test_default_stale_threshold() -> None:
    assert default_stale_after_s(15, 15) == 60
