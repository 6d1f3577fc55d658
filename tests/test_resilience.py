"""What a cycle costs, and what it does when ClearML is slow, down, or sends odd records."""

from __future__ import annotations

import math
import time
from pathlib import Path

from tests.harness import SPOT, Rig, fast_simulator
from watchdog.recovery import CURSOR_KEY
from watchdog.service import Service


def test_idle_cycle_costs_one_workers_call_one_changes_query_and_a_page_per_500(tmp_path: Path) -> None:
    running = 1000  # on agents; as many local development runs again, which are not even fetched
    with fast_simulator(training_progress=False) as sim:
        sim.seed_running(2 * running, running, queue=SPOT)
        rig = Rig(sim, tmp_path)
        rig.cycle()  # warm-up: login and queue names
        sim.calls.reset()
        report = rig.cycle()
        calls = sim.calls.snapshot()
        rig.close()
    assert report.finished and report.running_tasks == running
    # Pages stop at the first short page: N running tasks cost floor(N/500) + 1 pages.
    pages = running // 500 + 1
    assert calls == {"workers.get_all": 1, "tasks.get_all": 1 + pages}, calls
    assert sum(calls.values()) <= 3 + math.ceil(running / 500)


def test_outage_ends_the_cycle_in_bounded_time_and_the_next_cycle_recovers(tmp_path: Path) -> None:
    with fast_simulator() as sim:
        sim.start_agents(1, queues=[SPOT])
        task_id = sim.submit("resnet", queue=SPOT)
        sim.wait_running(task_id)
        rig = Rig(sim, tmp_path)
        assert rig.cycle().finished
        cursor = rig.journal.get_value(CURSOR_KEY)
        sim.faults.outage(True)  # every call 503: the SDK alone would retry forever
        started = time.monotonic()
        blind = rig.cycle()
        elapsed = time.monotonic() - started
        assert not blind.finished and "503" in blind.blind_reason
        assert elapsed < 10, f"a 503 cycle took {elapsed:.1f}s"
        assert rig.journal.get_value(CURSOR_KEY) == cursor, "a blind cycle must not move the cursor"
        assert sim.task(task_id)["status"] == "in_progress"  # blindness is not evidence of death
        sim.faults.outage(False)
        assert rig.cycle().finished
        rig.close()


def test_refused_connections_make_the_watchdog_blind_not_trigger_happy(tmp_path: Path) -> None:
    with fast_simulator() as sim:
        sim.start_agents(1, queues=[SPOT])
        task_id = sim.submit("resnet", queue=SPOT)
        sim.wait_running(task_id)
        rig = Rig(sim, tmp_path)
        rig.cycle()
        sim.stop_listener()
        started = time.monotonic()
        report = rig.cycle()
        assert not report.finished and "unreachable" in report.blind_reason
        assert time.monotonic() - started < 15
        sim.start_listener()
        report = rig.cycle()
        assert report.finished and report.recoveries == 0
        rig.close()


def test_malformed_records_are_skipped_and_the_cycle_goes_on(tmp_path: Path) -> None:
    with fast_simulator() as sim:
        sim.start_agents(4, queues=[SPOT])
        ids = [sim.submit(f"job-{i}", queue=SPOT) for i in range(4)]
        for task_id in ids:
            sim.wait_running(task_id)
        rig = Rig(sim, tmp_path)
        rig.cycle()
        odd_date, wrong_type, numeric_date, lost = ids
        sim.set_quiet(odd_date)  # or its agent would write a good date over the bad one
        with sim.state.lock:
            sim.state._tasks[odd_date]["last_update"] = "yesterday-ish"
            sim.state._tasks[wrong_type]["tags"] = "not-a-list"
            sim.state._tasks[numeric_date]["status_changed"] = 1795460705
        worker = sim.worker_of(lost)
        assert worker
        sim.kill_agent(worker)
        sim.advance(5)
        report = rig.cycle()
        assert report.finished
        assert report.recoveries == 1
        assert rig.gateway.stats.skipped_records == 3
        assert {o.task_id for o in report.outcomes} >= {lost}
        rig.close()


def test_unhealthy_and_healthy_again_are_announced_once(tmp_path: Path) -> None:
    with fast_simulator() as sim:
        rig = Rig(sim, tmp_path)
        service = Service(rig.reconciler, rig.journal, rig.outbox, rig.outbox, poll_interval_s=1, unhealthy_after_s=0.5)
        assert service.run_cycle() is not None
        sim.faults.outage(True)
        service.run_cycle()
        time.sleep(0.6)
        service.run_cycle()
        service.run_cycle()
        sim.faults.outage(False)
        service.run_cycle()
        service.run_cycle()
        for _ in range(3):
            rig.outbox.deliver_due()
        alerts = rig.alerts.getvalue()
        events = [row["event"] for row in rig.journal.query("SELECT event FROM outbox WHERE state = 'sent'")]
        rig.close()
    assert sorted(events) == ["watchdog_healthy", "watchdog_unhealthy"], events
    assert "cannot reach ClearML" in alerts and "reachable again" in alerts
