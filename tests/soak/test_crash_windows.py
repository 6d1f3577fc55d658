"""Crash windows the soak can only hit by luck, hit on purpose: the process dies between two journal writes.

A `Crash` (a BaseException, like SIGKILL it skips every `except Exception`) is raised from inside one step of
a cycle; a new watchdog on the same state directory then runs, and what ClearML and the outbox show is
checked against "every incident's alert is delivered once per event".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import SPOT, Rig, fast_simulator
from watchdog.simulator import Simulator


class Crash(BaseException):
    """The process died here."""


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with fast_simulator() as simulator:
        simulator.start_agents(2, queues=[SPOT])
        yield simulator


def crash_on_first_call(target: Any, name: str) -> None:
    original = getattr(target, name)
    calls = {"n": 0}

    def once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Crash(name)
        return original(*args, **kwargs)

    setattr(target, name, once)


def outbox_events(rig: Rig, task_id: str) -> list[str]:
    rows = rig.journal.query("SELECT event FROM outbox WHERE incident_id LIKE ?", (f"{task_id}:%",))
    return sorted(row["event"] for row in rows)


@pytest.mark.parametrize("ending", ["user_abort", "code_failure"])
def test_a_crash_after_recording_a_report_only_incident_still_alerts_after_restart(
    sim: Simulator, tmp_path: Path, ending: str
) -> None:
    task_id = sim.submit("ends by a person or a bug", queue=SPOT)
    sim.wait_running(task_id)
    first = Rig(sim, tmp_path)
    first.cycle()
    if ending == "user_abort":
        sim.user_abort(task_id)
    else:
        sim.code_failure(task_id)
    sim.wait_for(lambda: sim.task(task_id)["status"] in ("stopped", "failed"))
    crash_on_first_call(first.outbox, "add")  # dies right after the incident row was written
    with pytest.raises(Crash):
        first.reconciler.run_cycle()
    first.close()

    second = Rig(sim, tmp_path)
    second.cycle()
    events = outbox_events(second, task_id)
    second.close()
    assert events == ["user_aborted" if ending == "user_abort" else "code_failed"], events


def test_a_crash_after_the_loss_incident_is_recorded_still_clones_once_and_alerts(
    sim: Simulator, tmp_path: Path
) -> None:
    task_id = sim.submit("lost", queue=SPOT, hyperparams={"Args": {"resume_from": ""}})
    sim.wait_running(task_id)
    first = Rig(sim, tmp_path)
    first.cycle()
    worker = sim.worker_of(task_id)
    assert worker
    sim.kill_agent(worker)
    sim.advance(5)
    crash_on_first_call(first.outbox, "add")
    with pytest.raises(Crash):
        first.reconciler.run_cycle()
    first.close()

    second = Rig(sim, tmp_path)
    second.cycle()
    events = outbox_events(second, task_id)
    second.close()
    clones = [t for t in sim.tasks(parent=task_id) if "watchdog:resumed" in t.get("tags", [])]
    assert len(clones) == 1 and clones[0]["status"] in ("queued", "in_progress")
    assert events[:1] == ["agent_lost"], events


def test_a_crash_between_a_send_and_marking_it_sent_repeats_that_alert_once(sim: Simulator, tmp_path: Path) -> None:
    """Delivery is at-least-once: the window between the chat's OK and the SQLite update repeats a message
    after a restart, once, and nothing else is repeated (docs/reliability.md measures how often)."""
    task_id = sim.submit("aborted", queue=SPOT)
    sim.wait_running(task_id)
    first = Rig(sim, tmp_path)
    first.cycle()
    sim.user_abort(task_id)
    sim.wait_for(lambda: sim.task(task_id)["status"] == "stopped")
    first.reconciler.run_cycle()
    crash_on_first_call(first.outbox, "_mark_sent")  # the console printed it; the row is still pending
    with pytest.raises(Crash):
        first.outbox.deliver_due()
    first.close()

    second = Rig(sim, tmp_path)
    second.cycle()
    second.cycle()
    sent = second.journal.query("SELECT state FROM outbox WHERE incident_id LIKE ?", (f"{task_id}:%",))
    second.close()
    printed = first.alerts.getvalue().count("Aborted by a person") + second.alerts.getvalue().count(
        "Aborted by a person"
    )
    assert printed == 2, (first.alerts.getvalue(), second.alerts.getvalue())
    assert [row["state"] for row in sent] == ["sent"]
