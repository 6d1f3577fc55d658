"""Hostile API records: a bad record is logged and skipped, the cycle goes on, the daemon never crashes.

Three levels, cheapest first:
1. the parsers (`snapshots.*.from_api`) and the classifier over arbitrary JSON: a snapshot or
   `MalformedRecord`, never another exception;
2. whole cycles through the real gateway (clearml SDK over HTTP to the simulator), with hostile records
   spliced into the server's answers: the cycle finishes, every hostile record is either considered or
   skipped with a `record_skipped` log line, and a real healthy task next to them is left alone;
3. the daemon as a real process against a server holding hostile records: it keeps cycling and still
   recovers a real loss.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import SPOT, WATCHDOG_CMD, Rig, config_data, fast_simulator, watchdog_env
from tests.hostile import detail_records, model_records, task_records, worker_records
from watchdog.detect import LiveWorkers, Scope, Thresholds, classify
from watchdog.gateway import _login
from watchdog.lineage import RESUMED_TAG
from watchdog.simulator import Simulator
from watchdog.snapshots import MalformedRecord, ModelSnapshot, TaskDetails, TaskSnapshot, WorkerSnapshot
from watchdog.verdict import Verdict

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
FAST = settings(max_examples=300, deadline=None)


# --- 1. parsers and classifier -----------------------------------------------------------------------


PARSERS: dict[str, tuple[Callable[[object], object], Callable[[], st.SearchStrategy[Any]]]] = {
    "task": (TaskSnapshot.from_api, task_records),  # a tasks.get_all row
    "worker": (WorkerSnapshot.from_api, worker_records),  # a workers.get_all row
    "model": (ModelSnapshot.from_api, model_records),  # a models.get_all row
    "details": (TaskDetails.from_api, detail_records),  # a tasks.get_by_id task, hyperparameters and all
}


@pytest.mark.parametrize("kind", sorted(PARSERS))
@FAST
@given(data=st.data())
def test_a_record_parses_or_is_malformed_never_anything_else(kind: str, data: st.DataObject) -> None:
    parse, records = PARSERS[kind]
    record = data.draw(records(), label=kind)
    with contextlib.suppress(MalformedRecord):
        parse(record)


@FAST
@given(task=task_records(), workers=st.lists(worker_records(), max_size=4))
def test_the_classifier_gives_a_verdict_for_every_readable_record(task: Any, workers: list[Any]) -> None:
    try:
        snapshot = TaskSnapshot.from_api(task)
    except MalformedRecord:
        return
    live = []
    for raw in workers:
        try:
            live.append(WorkerSnapshot.from_api(raw))
        except MalformedRecord:
            continue
    verdict = classify(snapshot, LiveWorkers.from_workers(live), NOW, Scope(), Thresholds(180, 90))
    assert isinstance(verdict, Verdict) and verdict.explanation


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 once moved to UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 once moved to UTC
    ],
)
def test_a_date_out_of_range_is_a_malformed_record(value: str) -> None:
    with pytest.raises(MalformedRecord, match="last_update"):
        TaskSnapshot.from_api({"id": "a" * 32, "status": "in_progress", "last_update": value})


# --- 2. whole cycles with hostile records spliced into real answers ----------------------------------


class HostileSession:
    """The SDK session the gateway logged in with, whose answers get hostile records appended."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.extra: dict[str, list[Any]] = {}  # endpoint -> records appended to its list answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def send_request(self, service: str, action: str, **kwargs: Any) -> Any:
        response = self._session.send_request(service, action, **kwargs)
        endpoint = f"{service}.{action}"
        extra = self.extra.get(endpoint)
        if extra and response is not None and response.status_code == 200:
            payload = response.json()
            key = {"tasks.get_all": "tasks", "workers.get_all": "workers", "models.get_all": "models"}[endpoint]
            body = kwargs.get("json") or {}
            if endpoint != "tasks.get_all" or body.get("status"):  # list queries, not lookups by id
                payload["data"][key] = [*payload["data"][key], *extra]
                response._content = json.dumps(payload).encode()
        return response


@pytest.fixture(scope="module")
def hostile_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Simulator, Rig, HostileSession, str]]:
    with fast_simulator() as sim:
        sim.start_agents(1, queues=[SPOT])
        healthy = sim.submit("healthy next to hostile records", queue=SPOT)
        sim.wait_running(healthy)
        rig = Rig(sim, tmp_path_factory.mktemp("hostile"))
        sessions: list[HostileSession] = []

        def login(settings: Any) -> HostileSession:
            sessions.append(HostileSession(_login(settings)))
            return sessions[-1]

        rig.gateway._login = login
        rig.reconciler.gateway = rig.gateway
        assert rig.cycle().finished  # logs in, resolves the queue
        yield sim, rig, sessions[0], healthy
        rig.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    running=st.lists(task_records(), max_size=6),
    ended=st.lists(task_records(), max_size=6),
    workers=st.lists(worker_records(), max_size=6),
)
def test_hostile_records_are_skipped_or_considered_and_the_cycle_finishes(
    hostile_rig: tuple[Simulator, Rig, HostileSession, str], running: list[Any], ended: list[Any], workers: list[Any]
) -> None:
    sim, rig, session, healthy = hostile_rig
    session.extra = {"tasks.get_all": [*running, *ended], "workers.get_all": workers}
    skipped_before = rig.gateway.stats.skipped_records
    try:
        with structlog.testing.capture_logs() as logs:
            report = rig.reconciler.run_cycle()
            rig.outbox.deliver_due()  # hostile names and reasons rendered for the console
    finally:
        session.extra = {}
    assert report.finished, report.blind_reason
    outcome = {o.task_id: o for o in report.outcomes}[healthy]
    assert outcome.verdict == "healthy" and outcome.action == "nothing"
    assert sim.task(healthy)["status"] == "in_progress"
    skipped = rig.gateway.stats.skipped_records - skipped_before
    assert skipped == sum(1 for line in logs if line["event"] == "record_skipped")
    # Every hostile task record was either skipped or considered (a repeated id is considered once).
    readable = set()
    for record in [*running, *ended]:
        try:
            readable.add(TaskSnapshot.from_api(record).id)
        except MalformedRecord:
            continue
    assert readable <= {o.task_id for o in report.outcomes}
    assert not [line for line in logs if line.get("log_level") in ("error", "critical")], logs


def test_a_record_with_an_out_of_range_date_does_not_blind_the_watchdog(
    hostile_rig: tuple[Simulator, Rig, HostileSession, str],
) -> None:
    _sim, rig, session, healthy = hostile_rig
    bad = {
        "id": "b" * 32,
        "name": "from year zero",
        "status": "in_progress",
        "last_update": "0001-01-01T00:00:00+01:00",
    }
    session.extra = {"tasks.get_all": [bad]}
    try:
        report = rig.reconciler.run_cycle()
    finally:
        session.extra = {}
    assert report.finished, report.blind_reason
    assert healthy in {o.task_id for o in report.outcomes}


def test_a_huge_unicode_hyperparameter_set_is_carried_into_the_clone_intact(tmp_path: Path) -> None:
    params = {
        "Args": {"resume_from": "", **{f"p{i:04d}": f"värde-{i}-🧪" for i in range(3000)}},
        "General": {"名前": "<b>&</b>", "empty": "", "newline": "a\nb", "long": "x" * 10_000},
        "Section with spaces": {"dotted.name": "1e-3"},
    }
    with fast_simulator() as sim:
        sim.start_agents(1, queues=[SPOT])
        task_id = sim.submit("big params", queue=SPOT, hyperparams=params)
        sim.wait_running(task_id)
        sim.wait_for(lambda: sim.models(task_id), timeout=5)
        rig = Rig(sim, tmp_path)
        worker = sim.worker_of(task_id)
        assert worker
        sim.kill_agent(worker)
        sim.advance(5)
        report = rig.cycle()
        rig.close()
        assert report.recoveries == 1, report.outcomes
        [clone] = [t for t in sim.tasks(parent=task_id) if RESUMED_TAG in t.get("tags", [])]
    got = {s: {n: p["value"] for n, p in items.items()} for s, items in clone["hyperparams"].items()}
    for section, values in params.items():
        for name, value in values.items():
            if (section, name) != ("Args", "resume_from"):
                assert got[section][name] == value, (section, name)
    assert got["Args"]["resume_from"].startswith("s3://")


# --- 3. the daemon as a real process ------------------------------------------------------------------


def plant_hostile_tasks(sim: Simulator) -> None:
    """Records the simulator stores as given but no real server should ever send."""
    spot = sim.state.queue_id(SPOT)
    odd = {
        "last_update": "0001-01-01T00:00:00+01:00",
        "status_changed": "9999-12-31T23:59:59-01:00",
        "started": "yesterday-ish",
    }
    hostile: list[dict[str, Any]] = [
        odd,
        {"tags": "not-a-list", "last_update": "2026-13-45T99:99:99"},
        {"name": "🧨" * 2000, "status_reason": "\ud800", "system_tags": [None, 5]},
        {"execution": "not-an-object"},
    ]
    for i, fields in enumerate(hostile):
        task_id = sim.state.seed_running_task(f"hostile-{i}", queue_id=spot, worker_id="ghost:gpu0")
        with sim.state.lock:
            doc = sim.state._tasks[task_id]
            doc.update(fields)


def test_the_daemon_keeps_cycling_over_hostile_records_and_still_recovers(tmp_path: Path) -> None:
    with fast_simulator() as sim:
        sim.start_agents(2, queues=[SPOT])
        lost = sim.submit("real loss", queue=SPOT, hyperparams={"Args": {"resume_from": ""}})
        sim.wait_running(lost)
        plant_hostile_tasks(sim)
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps(config_data(sim, tmp_path / "state")), encoding="utf-8")
        log = (tmp_path / "daemon.log").open("w")
        proc = subprocess.Popen(
            [*WATCHDOG_CMD, "run", "--config", str(config), "--log-format", "json"],
            env=watchdog_env(sim),
            stdout=log,
            stderr=log,
        )
        try:
            worker = sim.worker_of(lost)
            assert worker
            sim.kill_agent(worker)
            clones = sim.wait_for(
                lambda: [t for t in sim.tasks(parent=lost) if RESUMED_TAG in t.get("tags", [])], timeout=30
            )
            time.sleep(2)  # a few more cycles over the same hostile records
            assert proc.poll() is None, "the daemon exited"
        finally:
            proc.terminate()
            code = proc.wait(timeout=20)
            log.close()
    lines = [json.loads(t) for t in (tmp_path / "daemon.log").read_text().splitlines() if t.startswith("{")]
    events = [line.get("event") for line in lines]
    assert len(clones) == 1 and code == 0
    assert "cycle_crashed" not in events
    assert not [line for line in lines if line.get("event") == "cycle" and line["summary"].startswith("blind")]
    assert events.count("record_skipped") >= 3
    assert sum(1 for e in events if e == "cycle") >= 3


def test_hostile_dates_do_not_upset_time_arithmetic() -> None:
    """A record dated in the far future or past classifies without overflow."""
    for when in (datetime.min.replace(tzinfo=timezone.utc), datetime.max.replace(tzinfo=timezone.utc)):
        task = TaskSnapshot(id="c" * 32, name="t", status="in_progress", last_update=when, queue_id="q")
        verdict = classify(task, LiveWorkers({}), NOW, Scope(), Thresholds(180, 90))
        assert verdict.explanation
    assert NOW - timedelta(days=1) < NOW
