"""The recovery core end to end, in-process: real gateway (clearml SDK over HTTP) against the simulator.

Time is moved with the simulator's clock (`sim.advance`), which also moves the server's `Date` header
the watchdog reads, so nothing here sleeps for staleness.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ONDEMAND, SPOT, Rig, fast_simulator, lose
from watchdog.lineage import HANDLED_TAG, RESUMED_TAG, STOP_REASON
from watchdog.simulator import Simulator

PARAMS = {"Args": {"lr": 0.1, "epochs": 90, "resume_from": ""}, "General": {"batch_size": 256, "arch": "resnet50"}}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with fast_simulator() as simulator:
        simulator.start_agents(3, queues=[SPOT])
        yield simulator


def start_training(sim: Simulator, name: str = "resnet50", queue: str = SPOT, **fields: Any) -> str:
    task_id = sim.submit(name, queue=queue, hyperparams=PARAMS, **fields)
    sim.wait_running(task_id)
    sim.wait_for(lambda: sim.models(task_id), timeout=5)  # it saved a checkpoint
    return task_id


def clones_of(sim: Simulator, task_id: str) -> list[dict[str, Any]]:
    return [t for t in sim.tasks(parent=task_id) if RESUMED_TAG in t.get("tags", [])]


def newest_checkpoint(sim: Simulator, task_id: str) -> str:
    models = sorted(sim.models(task_id), key=lambda m: m.get("last_update") or m.get("created"))
    return str(models[-1]["uri"])


def param(task: dict[str, Any], section: str, name: str) -> str:
    return str(task["hyperparams"][section][name]["value"])


def test_lost_agent_is_cloned_from_checkpoint_and_requeued_once(sim: Simulator, tmp_path: Path) -> None:
    task_id = start_training(sim)
    rig = Rig(sim, tmp_path)
    assert [o.verdict for o in rig.cycle().outcomes if o.task_id == task_id] == ["healthy"]
    checkpoint_before_loss = None
    lose(sim, task_id)
    checkpoint_before_loss = newest_checkpoint(sim, task_id)

    report = rig.cycle()

    assert report.finished and report.recoveries == 1, report.outcomes
    original = sim.task(task_id)
    assert original["status"] == "stopped"
    assert original["status_reason"] == STOP_REASON
    assert HANDLED_TAG in original["tags"]
    [clone] = clones_of(sim, task_id)
    assert clone["parent"] == task_id
    assert {RESUMED_TAG, "watchdog:attempt-1", f"watchdog:root-{task_id}"} <= set(clone["tags"])
    assert param(clone, "Args", "resume_from") == checkpoint_before_loss
    # every other hyperparameter intact
    for section, values in PARAMS.items():
        for name, value in values.items():
            if (section, name) != ("Args", "resume_from"):
                assert param(clone, section, name) == str(value)
    assert clone["execution"]["queue"] == sim.state.queue_id(SPOT)
    assert clone["status"] in ("queued", "in_progress")
    assert "attempt 1 of 5" in clone["comment"]
    assert "resnet50" in rig.alerts.getvalue()

    # Later cycles add nothing; once the clone runs, the incident is resolved.
    sim.wait_running(clone["id"])
    second = rig.cycle()
    assert second.resolved == 1
    rig.cycle()
    assert len(clones_of(sim, task_id)) == 1
    [incident] = rig.journal.recent_incidents()
    assert incident.state == "recovered" and incident.clone_id == clone["id"]
    assert incident.checkpoint_uri == checkpoint_before_loss
    rig.close()


def test_quiet_task_with_live_agent_is_never_touched(sim: Simulator, tmp_path: Path) -> None:
    task_id = start_training(sim)
    sim.set_quiet(task_id)
    rig = Rig(sim, tmp_path)
    for _ in range(3):
        sim.advance(60)
        report = rig.cycle()
        [outcome] = [o for o in report.outcomes if o.task_id == task_id]
        assert outcome.verdict == "healthy", outcome.explanation
    assert sim.task(task_id)["status"] == "in_progress"
    assert clones_of(sim, task_id) == []
    rig.close()


@pytest.mark.parametrize(
    ("event", "verdict"),
    [
        ("sigterm", "agent_stopped"),  # spot 2-minute notice: the agent stops the task
        ("restart", "agent_lost"),  # the agent came back with the same id but without the task
        ("force_stop", "server_forced_stop"),  # the server's non-responsive watchdog
    ],
)
def test_other_losses_are_recovered(sim: Simulator, tmp_path: Path, event: str, verdict: str) -> None:
    task_id = start_training(sim)
    rig = Rig(sim, tmp_path)
    rig.cycle()
    worker = sim.worker_of(task_id)
    assert worker
    if event == "sigterm":
        sim.sigterm_agent(worker)
    elif event == "restart":
        sim.restart_agent(worker)
        sim.advance(5)
    else:
        sim.force_stop(task_id)
    report = rig.cycle()
    [outcome] = [o for o in report.outcomes if o.task_id == task_id]
    assert (outcome.verdict, outcome.action) == (verdict, "requeue"), outcome
    assert len(clones_of(sim, task_id)) == 1
    rig.cycle()
    assert len(clones_of(sim, task_id)) == 1
    rig.close()


@pytest.mark.parametrize(("event", "verdict"), [("abort", "user_aborted"), ("crash", "code_failed")])
def test_human_abort_and_code_failure_are_reported_not_cloned(
    sim: Simulator, tmp_path: Path, event: str, verdict: str
) -> None:
    task_id = start_training(sim, name="bert-finetune")
    rig = Rig(sim, tmp_path)
    rig.cycle()
    if event == "abort":
        sim.user_abort(task_id)
        sim.wait_for(lambda: sim.task(task_id)["status"] == "stopped")
    else:
        sim.code_failure(task_id, exit_code=1)
    for _ in range(3):  # reported once, whatever the number of cycles
        rig.cycle()
    assert clones_of(sim, task_id) == []
    assert HANDLED_TAG not in sim.task(task_id).get("tags", [])  # users' tasks are not tagged for reports
    incidents = [i for i in rig.journal.recent_incidents() if i.task_id == task_id]
    assert [(i.reason, i.state) for i in incidents] == [(verdict, "reported")]
    assert rig.alerts.getvalue().count("bert-finetune") == 1
    rig.close()


def test_code_failure_is_rerun_when_opted_in(sim: Simulator, tmp_path: Path) -> None:
    task_id = start_training(sim)
    rig = Rig(sim, tmp_path, recover={"on": ["agent_lost", "code_failed"]})
    sim.code_failure(task_id, exit_code=3)
    report = rig.cycle()
    [outcome] = [o for o in report.outcomes if o.task_id == task_id]
    assert (outcome.verdict, outcome.action) == ("code_failed", "requeue")
    assert len(clones_of(sim, task_id)) == 1
    rig.close()


def test_lineage_escalates_to_fallback_then_gives_up(sim: Simulator, tmp_path: Path) -> None:
    sim.start_agents(2, queues=[ONDEMAND], prefix="ondemand")
    rig = Rig(sim, tmp_path, recover={"max_attempts": 3, "fallback_queue": ONDEMAND, "fallback_after": 2})
    current = start_training(sim)
    queues = []
    for attempt in (1, 2, 3):
        lose(sim, current)
        rig.cycle()
        [clone] = clones_of(sim, current)
        assert f"watchdog:attempt-{attempt}" in clone["tags"]
        queues.append(rig.queue_name(clone["execution"]["queue"]))
        current = clone["id"]
        sim.wait_running(current)
        sim.wait_for(lambda c=current: sim.models(c), timeout=5)
    assert queues == [SPOT, ONDEMAND, ONDEMAND]
    # The 4th loss is over the budget of 3 recoveries: reported, tagged, not cloned.
    lose(sim, current)
    report = rig.cycle()
    assert report.gave_up == 1
    assert clones_of(sim, current) == []
    assert HANDLED_TAG in sim.task(current)["tags"]
    assert sim.task(current)["status"] == "stopped"  # no zombie left behind either
    assert "budget spent" in rig.alerts.getvalue()
    rig.close()


def test_local_checkpoint_is_refused_and_when_missing_decides(tmp_path: Path) -> None:
    with fast_simulator(local_checkpoints=True) as sim:
        sim.start_agents(2, queues=[SPOT])
        requeued = start_training(sim, name="requeue-me")
        given_up = start_training(sim, name="give-me-up")
        rig = Rig(sim, tmp_path / "a")
        lose(sim, requeued)
        rig.cycle()
        [clone] = clones_of(sim, requeued)
        assert param(clone, "Args", "resume_from") == ""  # not a local path of a dead machine
        assert "from scratch" in sim.task(clone["id"])["comment"] or "none" in clone["comment"]
        rig.close()

        strict = Rig(sim, tmp_path / "b", checkpoint={"when_missing": "give_up"})
        lose(sim, given_up)
        report = strict.cycle()
        assert report.gave_up == 1
        assert clones_of(sim, given_up) == []
        assert "when_missing" in strict.alerts.getvalue()
        strict.close()


def test_tasks_outside_the_watch_are_ignored(sim: Simulator, tmp_path: Path) -> None:
    sim.start_agents(1, queues=["cpu"], prefix="cpu")
    other_queue = start_training(sim, name="cpu-job", queue="cpu")
    excluded = start_training(sim, name="excluded", tags=["no-watchdog"])
    rig = Rig(sim, tmp_path)
    for task_id in (other_queue, excluded):
        lose(sim, task_id, seconds=0)
    sim.advance(5)
    report = rig.cycle()
    verdicts = {o.task_id: o.verdict for o in report.outcomes}
    assert verdicts[other_queue] == "ignored" and verdicts[excluded] == "ignored"
    assert clones_of(sim, other_queue) == [] and clones_of(sim, excluded) == []
    rig.close()


def test_dry_run_changes_nothing(sim: Simulator, tmp_path: Path) -> None:
    task_id = start_training(sim)
    lose(sim, task_id)
    rig = Rig(sim, tmp_path)
    rig.reconciler.dry_run = True
    report = rig.cycle()
    [outcome] = [o for o in report.outcomes if o.task_id == task_id]
    assert (outcome.verdict, outcome.action) == ("agent_lost", "requeue")
    assert sim.task(task_id)["status"] == "in_progress"
    assert clones_of(sim, task_id) == []
    assert rig.journal.recent_incidents() == []
    rig.close()


def test_project_scope_is_resolved_by_exact_name(sim: Simulator, tmp_path: Path) -> None:
    inside = start_training(sim, name="in-scope", project="vision (prod)")  # regex characters in the name
    outside = start_training(sim, name="out-of-scope", project="vision (prod) old")
    rig = Rig(sim, tmp_path, watch={"queues": [SPOT], "projects": ["vision (prod)", "missing-project"]})
    assert rig.reconciler.check_scope() == [
        "project 'missing-project' does not exist on the ClearML server: not watched"
    ]
    lose(sim, inside, seconds=0)
    lose(sim, outside, seconds=0)
    sim.advance(5)
    report = rig.cycle()
    verdicts = {o.task_id: o.verdict for o in report.outcomes}
    assert verdicts.get(inside) == "agent_lost"
    assert outside not in verdicts  # filtered on the server: not even fetched
    assert len(clones_of(sim, inside)) == 1 and clones_of(sim, outside) == []
    rig.close()


def test_the_oldest_clone_wins_and_younger_drafts_are_deleted(sim: Simulator, tmp_path: Path) -> None:
    """Two drafts for the same attempt (a crashed run, or a second watchdog): one survives, the oldest."""
    from watchdog.lineage import clone_tags, lineage_of

    task_id = start_training(sim)
    rig = Rig(sim, tmp_path)
    lose(sim, task_id)
    tags = clone_tags([], lineage_of(task_id, []))
    older = rig.gateway.clone(task_id, name="resnet50", comment="", tags=tags, hyperparams={})
    younger = rig.gateway.clone(task_id, name="resnet50", comment="", tags=tags, hyperparams={})
    report = rig.cycle()
    assert report.recoveries == 1
    assert [c["id"] for c in clones_of(sim, task_id)] == [older]
    assert not sim.state.has_task(younger)
    assert sim.task(older)["status"] in ("queued", "in_progress")
    rig.close()


def test_a_refused_recovery_is_retried_then_given_up_with_the_reason(sim: Simulator, tmp_path: Path) -> None:
    task_id = start_training(sim)
    rig = Rig(sim, tmp_path, recover={"fallback_queue": "gpu-typo", "fallback_after": 1})
    lose(sim, task_id)
    failures = [rig.cycle().failures for _ in range(3)]
    assert failures == [1, 1, 1]
    [incident] = rig.journal.recent_incidents()
    assert incident.state == "gave_up"
    assert "gpu-typo" in incident.explanation or "gpu-typo" in rig.alerts.getvalue()
    assert HANDLED_TAG in sim.task(task_id)["tags"]
    assert sim.state.queue_id("gpu-typo") is None, "a misspelt queue must never be created"
    [draft] = clones_of(sim, task_id)
    assert draft["status"] == "created"  # left for a person to enqueue where they want
    assert rig.cycle().failures == 0  # and then it is over
    rig.close()


def test_an_open_incident_handled_by_another_watchdog_is_closed_quietly(sim: Simulator, tmp_path: Path) -> None:
    task_id = start_training(sim)
    first = Rig(sim, tmp_path / "first")
    second = Rig(sim, tmp_path / "second")
    lose(sim, task_id)
    sim.faults.fail_next("tasks.clone", times=1, code=400)  # the first watchdog's clone is refused
    assert first.cycle().failures == 1
    second.cycle()  # the second one handles the task
    [clone] = clones_of(sim, task_id)
    sim.wait_running(clone["id"])
    first.cycle()
    first.cycle()
    assert len(clones_of(sim, task_id)) == 1
    [incident] = first.journal.recent_incidents()
    assert (incident.state, incident.clone_id) == ("handled_elsewhere", clone["id"])
    assert first.journal.open_incidents() == []
    # The one that handled it tells people; the other one stays quiet (its alert would have no thread).
    assert "Recovered" not in first.alerts.getvalue()
    first.close()
    second.close()
