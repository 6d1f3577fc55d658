"""Simulated agents: pickup, training, and every row of the endings table (CLEARML_FACTS.md)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from sim_helpers import FAST, RawClient

from watchdog.simulator import Simulator
from watchdog.simulator import transitions as st


def _ending(sim: Simulator, task_id: str) -> tuple[str, str, str]:
    task = sim.task(task_id)
    return task["status"], task.get("status_reason", ""), task.get("status_message", "")


def _running(sim: Simulator, name: str = "train") -> tuple[str, str]:
    """Submit a task, wait until an agent runs it; returns (task id, worker id)."""
    task_id = sim.submit(name)
    sim.wait_running(task_id, 5)
    worker = sim.worker_of(task_id)
    assert worker is not None
    return task_id, worker


def _listed(sim: Simulator) -> dict[str, dict[str, Any]]:
    return {w["id"]: w for w in sim.workers()}


def test_pickup_looks_like_a_real_agent_start(sim: Simulator) -> None:
    (worker,) = sim.start_agents(1)
    task_id = sim.submit("pickup")
    started = sim.wait_for(lambda: sim.task(task_id)["status"] == "in_progress" and sim.task(task_id), 5)
    assert started["status_reason"] == "worker starting task execution"
    assert started["status_message"] == f"Changed by clearml-agent {worker}"
    running = sim.wait_running(task_id, 5)  # Task.init inside the task clears both
    assert (running["status_reason"], running["status_message"]) == ("", "")
    assert running["last_worker"] == worker and running["started"].endswith("+00:00")
    assert running["execution"]["queue"] == sim.state.queue_id("default")  # kept after the pull
    listed = _listed(sim)[worker]
    assert set(listed["task"]) == {"id", "name", "running_time", "last_iteration"}
    assert (listed["task"]["id"], listed["task"]["name"]) == (task_id, "pickup")
    assert listed["queue"]["name"] == "default"


def test_an_idle_worker_has_no_task_and_no_queue_key(sim: Simulator) -> None:
    (worker,) = sim.start_agents(1)
    listed = _listed(sim)[worker]
    assert "task" not in listed and "queue" not in listed
    assert listed["queues"] == [{"id": sim.state.queue_id("default"), "name": "default", "num_tasks": 0}]
    for key in ("register_time", "last_activity_time", "last_report_time"):
        assert str(listed[key]).endswith("+00:00")
    assert listed["user"] == {"id": sim.state.identity.user, "name": "sim-user"}


def test_training_saves_one_remote_checkpoint_model_per_task(sim: Simulator) -> None:
    sim.start_agents(1)
    task_id, _ = _running(sim)
    first = sim.wait_for(lambda: sim.models(task_id), 5)[0]
    time.sleep(0.5)
    (model,) = sim.models(task_id)
    assert model["id"] == first["id"] and model["last_update"] > first["last_update"]
    assert model["uri"].startswith(f"s3://sim-bucket/sim-project/{task_id}/checkpoint_")
    iteration = int(model["uri"].rsplit("_", 1)[1].split(".")[0])
    assert iteration % FAST.checkpoint_every_iters == 0
    task = sim.task(task_id)
    assert task["last_iteration"] >= iteration
    assert len(task["models"]["output"]) >= 2 and {m["model"] for m in task["models"]["output"]} == {model["id"]}


def test_local_checkpoints_record_a_path_on_the_dead_machine() -> None:
    with Simulator(replace(FAST, local_checkpoints=True)) as sim:
        sim.start_agents(1)
        task_id, _ = _running(sim)
        model = sim.wait_for(lambda: sim.models(task_id), 5)[0]
        assert model["uri"].startswith(f"file:///tmp/clearml-sim/{task_id}/checkpoint_")


def test_user_abort_with_a_live_agent(sim: Simulator) -> None:
    sim.start_agents(1)
    task_id, worker = _running(sim)
    sim.user_abort(task_id)
    assert sim.wait_for(lambda: sim.task(task_id)["status"] == "stopped", 5)
    assert _ending(sim, task_id) == ("stopped", "task was stopped by tasks.stop", f"Changed by clearml-agent {worker}")
    assert sim.running_task_of(worker) is None  # the agent is free again


def test_user_abort_with_no_live_agent(sim: Simulator) -> None:
    sim.start_agents(1)
    task_id, worker = _running(sim)
    sim.kill_agent(worker)
    sim.user_abort(task_id)  # the task was updated moments ago: the server only asks the agent to stop
    status, _, message = _ending(sim, task_id)
    assert (status, message) == ("in_progress", "stopping")
    sim.advance(601)  # nobody acts on it; once 600 s pass without an update, Abort stops it at once
    sim.user_abort(task_id)
    assert _ending(sim, task_id) == ("stopped", "", "Stopped by sim-user")


def test_kill_9_leaves_a_running_zombie_and_a_listed_worker_until_timeout(sim: Simulator) -> None:
    sim.start_agents(1)
    task_id, worker = _running(sim)
    sim.kill_agent(worker)
    frozen = sim.task(task_id)
    time.sleep(0.4)  # four report intervals
    after = sim.task(task_id)
    assert (after["status"], after["last_update"]) == ("in_progress", frozen["last_update"])
    assert (after["status_reason"], after["status_message"]) == (frozen["status_reason"], frozen["status_message"])
    listed = _listed(sim)[worker]
    assert listed["task"]["id"] == task_id
    sim.advance(590)
    assert worker in _listed(sim)  # still listed just before last report + 600 s
    sim.advance(15)
    assert worker not in _listed(sim)
    assert sim.task(task_id)["status"] == "in_progress"


def test_sigterm_stops_the_task_and_unregisters_at_once(sim: Simulator) -> None:
    sim.start_agents(1)
    task_id, worker = _running(sim)
    sim.sigterm_agent(worker)
    assert _ending(sim, task_id) == ("stopped", "user abort", f"Changed by clearml-agent {worker}")
    assert worker not in _listed(sim)


def test_code_failure_fails_the_task_and_frees_the_agent(sim: Simulator) -> None:
    (worker,) = sim.start_agents(1)
    task_id, _ = _running(sim)
    follow_up = sim.submit("next in line")
    sim.code_failure(task_id, exit_code=3)
    assert _ending(sim, task_id) == ("failed", "worker execution exit code 3", f"Changed by clearml-agent {worker}")
    sim.wait_running(follow_up, 5)
    assert sim.worker_of(follow_up) == worker


def test_clean_exit_completes() -> None:
    with Simulator(replace(FAST, task_duration_iters=6)) as sim:
        sim.create_queue("default")
        sim.start_agents(1)
        task_id = sim.submit("short run")
        sim.wait_for(lambda: sim.task(task_id)["status"] == "completed", 5)
        assert _ending(sim, task_id) == ("completed", "worker execution done", "")
        assert sim.task(task_id)["last_iteration"] == 6


def test_complete_on_demand(sim: Simulator) -> None:
    sim.start_agents(1)
    task_id, _ = _running(sim)
    sim.complete(task_id)
    assert _ending(sim, task_id) == ("completed", "worker execution done", "")


def test_server_watchdog_force_stops_stale_tasks() -> None:
    config = replace(FAST, server_watchdog_threshold_s=45, server_watchdog_interval_s=10)
    with Simulator(config) as sim:
        sim.create_queue("default")
        sim.start_agents(2)
        lost, worker = _running(sim, "lost")
        alive, _ = _running(sim, "alive")
        sim.kill_agent(worker)
        for _ in range(6):  # one minute in ten-second steps: the watchdog runs every 10 s
            sim.advance(10)
        task = sim.task(lost)
        assert _ending(sim, lost) == ("stopped", "Forced stop (non-responsive)", "Forced stop (non-responsive)")
        assert task["last_changed_by"] == "__apiserver__"
        assert sim.task(alive)["status"] == "in_progress"  # its agent kept it fresh


def test_server_watchdog_can_be_disabled_and_forced_on_demand() -> None:
    config = replace(FAST, server_watchdog_enabled=False, server_watchdog_threshold_s=45,
                     server_watchdog_interval_s=10)
    with Simulator(config) as sim:
        sim.create_queue("default")
        sim.start_agents(1)
        task_id, worker = _running(sim)
        sim.kill_agent(worker)
        sim.advance(7200)
        assert sim.task(task_id)["status"] == "in_progress"
        sim.force_stop(task_id)
        assert _ending(sim, task_id) == ("stopped", "Forced stop (non-responsive)", "Forced stop (non-responsive)")


def test_restarted_agent_keeps_its_id_but_reports_no_task(sim: Simulator) -> None:
    sim.start_agents(1)
    task_id, worker = _running(sim)
    sim.restart_agent(worker)
    frozen = sim.task(task_id)["last_update"]
    time.sleep(0.3)
    listed = _listed(sim)[worker]
    assert "task" not in listed
    assert sim.task(task_id)["status"] == "in_progress" and sim.task(task_id)["last_update"] == frozen
    assert sim.task(task_id)["last_worker"] == worker  # still names the worker: "is it listed" is not enough


def test_quiet_but_healthy_task(sim: Simulator) -> None:
    sim.start_agents(1)
    task_id, worker = _running(sim)
    sim.set_quiet(task_id)
    frozen = sim.task(task_id)["last_update"]
    report_before = _listed(sim)[worker]["last_report_time"]
    time.sleep(0.4)
    assert sim.task(task_id)["last_update"] == frozen
    listed = _listed(sim)[worker]
    assert listed["task"]["id"] == task_id and listed["last_report_time"] > report_before
    sim.set_quiet(task_id, False)
    sim.wait_for(lambda: sim.task(task_id)["last_update"] > frozen, 5)


def test_dead_spot_workers_are_replaced_after_a_delay() -> None:
    with Simulator(replace(FAST, replace_dead_workers_after_s=0.2)) as sim:
        sim.create_queue("default")
        (worker,) = sim.start_agents(1)
        task_id, _ = _running(sim)
        sim.kill_agent(worker)
        waiting = sim.submit("for the new machine")
        sim.wait_running(waiting, 5)
        replacement = sim.worker_of(waiting)
        assert replacement not in (None, worker) and replacement is not None
        assert replacement.endswith(":gpu0")
        assert sim.task(task_id)["status"] == "in_progress"  # the lost task is not touched


def test_stopped_task_re_enqueued_runs_again(raw: RawClient, sim: Simulator) -> None:
    sim.start_agents(1)
    task_id, _ = _running(sim)
    sim.sigterm_agent(sim.worker_of(task_id) or "")
    sim.spawn_worker()
    raw.ok("tasks.enqueue", task=task_id, queue_name="default")
    sim.wait_running(task_id, 5)
    assert sim.task(task_id)["status"] == st.IN_PROGRESS


def test_bulk_seeding_at_benchmark_scale() -> None:
    config = replace(FAST, training_progress=False, report_interval_s=30.0)
    with Simulator(config) as sim:
        began = time.perf_counter()
        ids = sim.seed_running(50_000, 12_500)
        seeded = time.perf_counter() - began
        assert len(ids) == 50_000 and seeded < 20
        client = RawClient(sim)
        fields = ["id", "name", "status", "status_changed", "last_update", "last_worker", "execution.queue", "tags",
                  "system_tags", "project", "parent", "type"]
        client.ok("tasks.get_all", status=["in_progress"], only_fields=fields, page=0, page_size=500)
        cpu = time.process_time()
        pages = [client.ok("tasks.get_all", status=["in_progress"], only_fields=fields, page=p, page_size=500)
                 for p in range(1, 11)]
        per_page = (time.process_time() - cpu) / 10  # includes this test's own requests/json decoding
        assert all(len(p["tasks"]) == 500 for p in pages) and per_page < 0.1
        assert len(sim.workers()) == 12_500
        dev = sim.task(ids[-1])
        assert dev["system_tags"] == ["development"] and "last_worker" not in dev
