"""The REAL clearml SDK (2.1.12) against the simulator over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from watchdog.simulator import Simulator


def test_session_logs_in_and_reads_the_token(sdk_session: Any, sim: Simulator) -> None:
    from clearml.backend_api.session import Session

    # The SDK took api_version/server_version/feature_set from our unverified JWT.
    assert Session.api_version == "2.31"
    assert Session.server_version == "2.0.0"
    assert Session.feature_set == "basic"
    assert sdk_session.host == sim.url
    assert sim.calls.count("auth.login") >= 1


def test_raw_send_request_get_all(sdk_session: Any, sim: Simulator) -> None:
    task_id = sim.create_task("raw query")
    res = sdk_session.send_request(
        "tasks", "get_all", json={"id": [task_id], "only_fields": ["id", "name", "status", "execution.queue"]}
    )
    assert res.status_code == 200
    body = res.json()
    assert body["meta"]["result_code"] == 200
    assert body["data"]["tasks"] == [{"id": task_id, "name": "raw query", "status": "created", "execution": {}}]


def test_typed_api_client_parses_tasks_workers_queues_models(sdk_session: Any, sim: Simulator) -> None:
    from clearml.backend_api.session.client import APIClient

    sim.start_agents(1)
    task_id = sim.submit("typed", hyperparams={"Args": {"lr": 0.1}})
    sim.wait_running(task_id)
    sim.wait_for(lambda: sim.models(task_id))
    client = APIClient(session=sdk_session)

    tasks = client.tasks.get_all(id=[task_id], only_fields=["id", "name", "status", "last_update", "hyperparams"])
    assert [t.id for t in tasks] == [task_id]
    assert str(tasks[0].status.value) == "in_progress"
    assert tasks[0].last_update.tzinfo is not None
    assert tasks[0].hyperparams["Args"]["lr"].value == "0.1"

    workers = client.workers.get_all(last_seen=3600)
    assert [w.id for w in workers] == ["spot-01:gpu0"]
    assert workers[0].task.id == task_id
    assert workers[0].queues[0].name == "default"

    queues = client.queues.get_all(name="default")
    assert queues[0].name == "default"

    models = client.models.get_all(task=[task_id])
    assert models[0].uri.startswith("s3://sim-bucket/sim-project/" + task_id + "/checkpoint_")


def test_task_get_task_reads_hyperparameters(sdk_session: Any, sim: Simulator) -> None:
    from clearml import Task

    task_id = sim.create_task("reader", hyperparams={"Args": {"lr": 0.1, "epochs": 3}, "General": {"resume_from": ""}})
    task = Task.get_task(task_id=task_id)
    assert task.name == "reader"
    assert task.get_parameters() == {"Args/lr": "0.1", "Args/epochs": "3", "General/resume_from": ""}
    assert task.get_status() == "created"


def test_sdk_clone_and_enqueue(sdk_session: Any, sim: Simulator) -> None:
    from clearml import Task

    sim.start_agents(2)
    source_id = sim.submit("to clone", hyperparams={"Args": {"lr": 0.1}})
    sim.wait_running(source_id)
    source = Task.get_task(task_id=source_id)

    clone = Task.clone(source_task=source, name="resumed", parent=source.id)
    assert clone.get_status() == "created"
    assert clone.parent == source_id
    assert clone.get_parameters() == {"Args/lr": "0.1"}
    clone.set_parameter("Args/resume_from", "s3://bucket/ckpt.pt")
    assert sim.task(clone.id)["hyperparams"]["Args"]["resume_from"]["value"] == "s3://bucket/ckpt.pt"

    Task.enqueue(clone, queue_name="default")
    assert sim.task(clone.id)["status"] in ("queued", "in_progress")
    running = sim.wait_for(lambda: sim.task(clone.id)["status"] == "in_progress" and sim.task(clone.id), 5)
    assert running["execution"]["queue"] == sim.state.queue_id("default")


def test_sdk_marks_stopped_and_reads_status(sdk_session: Any, sim: Simulator) -> None:
    from clearml import Task

    sim.start_agents(1)
    task_id = sim.submit("mark me")
    sim.wait_running(task_id)
    worker = sim.worker_of(task_id)
    assert worker is not None
    sim.kill_agent(worker)
    Task.get_task(task_id=task_id).mark_stopped(force=True, status_message="lost machine")
    task = sim.task(task_id)
    assert (task["status"], task["status_message"]) == ("stopped", "lost machine")


def test_everyday_sdk_task_operations(sdk_session: Any, sim: Simulator) -> None:
    from clearml import Model, Task

    sim.start_agents(1)
    task_id = sim.submit("everyday", hyperparams={"Args": {"lr": 0.1}})
    sim.wait_running(task_id)
    sim.wait_for(lambda: sim.models(task_id), 5)
    task = Task.get_task(task_id=task_id)

    assert [t.id for t in Task.get_tasks(task_filter={"status": ["in_progress"]})] == [task_id]
    assert Task.query_tasks(task_filter={"status": ["in_progress"]}) == [task_id]
    assert task.models["output"][0].url.startswith("s3://sim-bucket/")
    assert Model.query_models(project_name="sim-project")
    assert task.get_project_name() == "sim-project"
    task.add_tags(["nightly"])
    assert task.get_tags() == ["nightly"]
    assert task.get_last_iteration() > 0
    assert "loss" in task.get_reported_scalars()

    clone = Task.clone(source_task=task, name="everyday (clone)")
    clone.set_parameters({"Args/lr": "0.5"})  # REPLACES every hyperparameter
    clone.update_parameters({"Args/resume_from": "s3://ckpt"})  # merges
    assert clone.get_parameters() == {"Args/lr": "0.5", "Args/resume_from": "s3://ckpt"}
    Task.enqueue(clone, queue_id=sim.state.queue_id("default"))
    Task.dequeue(clone)
    assert sim.task(clone.id)["status"] == "created"
    assert Task.get_num_enqueued_tasks(queue_name="default") == 0
    clone.delete()
    assert not sim.state.has_task(clone.id)


TASK_INIT_SCRIPT = """
from clearml import Task
task = Task.init(project_name="svc-project", task_name="watchdog service", task_type=Task.TaskTypes.service,
                 auto_connect_frameworks=False, auto_resource_monitoring=False)
task.connect({"poll_s": 30})
task.get_logger().report_scalar("lost", "tasks", 3, iteration=7)
print("TASK", task.id, flush=True)
task.close()
"""


def test_task_init_reports_and_closes_in_a_child_process(sim: Simulator, tmp_path: Path) -> None:
    """Task.init has process-wide side effects, so it runs in a child, as a service would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(sim.env())
    # Report from a thread, not the SDK's reporter subprocess, which waits ~10 s at close().
    conf = tmp_path / "clearml.conf"
    conf.write_text("sdk.development.report_use_subprocess: false\n")
    env["CLEARML_CONFIG_FILE"] = str(conf)
    run = subprocess.run([sys.executable, "-c", TASK_INIT_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Action failed" not in run.stderr, run.stderr
    task_id = next(line.split()[1] for line in run.stdout.splitlines() if line.startswith("TASK"))
    task = sim.task(task_id)
    assert (task["status"], task["type"], task["system_tags"]) == ("completed", "service", ["development"])
    assert task["hyperparams"]["General"]["poll_s"]["value"] == "30"
    assert task["last_iteration"] == 7
    assert sim.calls.count("events.add_batch") >= 1
