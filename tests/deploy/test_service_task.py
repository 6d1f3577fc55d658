"""The ClearML services-queue mode against the simulator: `deploy-service` creates then updates one task
of type service, with its config attached and no secret in it, enqueued by id; inside an agent the
watchdog reads that config back, leaves its own task alone and plots its figures on it."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import BIN, clones_of, env_without_clearml, free_port, lose_a_task

from watchdog.config import build_config, parse_yaml
from watchdog.service_task import (
    CONFIG_NAME,
    ENTRY_POINT,
    SERVICE_SCRIPT,
    SERVICE_TAG,
    check_round_trip,
    env_name_for,
    service_config,
)
from watchdog.simulator import Simulator

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

TELEGRAM_TOKEN = "123456:telegram-literal-secret-in-the-file"
SLACK_HOOK = "http://127.0.0.1:9/services/T000/B000/slack-secret-from-the-env"
CLEARML_SECRET = "sim-secret-key"  # the simulator's, written literally in the file
SECRETS = (TELEGRAM_TOKEN, SLACK_HOOK, CLEARML_SECRET, "slack-secret-from-the-env")


def config_text(tmp_path: Path, *, poll: float = 1, queues: str = "[gpu-spot]", port: int | None = None) -> str:
    return f"""\
poll_interval_s: {poll}
watch: {{queues: {queues}, exclude_tags: [no-watchdog]}}
detect: {{task_stale_s: 1, worker_stale_s: 1}}
state_dir: {tmp_path / "state"}
clearml:
  access_key: sim-access-key
  secret_key: {CLEARML_SECRET}
  request_timeout_s: 20
  retries: 0
notify:
  slack: {{webhook_url: "${{SLACK_HOOK}}"}}
  telegram: {{bot_token: "{TELEGRAM_TOKEN}", chat_id: "-1001234567890", api_base: "http://127.0.0.1:9"}}
health: {{port: {port or free_port()}, stale_after_s: 5}}
"""


def deploy_service(sim: Simulator, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = env_without_clearml()
    env.update(sim.env())
    env["SLACK_HOOK"] = SLACK_HOOK
    return subprocess.run(
        [str(BIN), "deploy-service", "--config", "config.yaml", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret leaked: {secret[:12]}..."


def service_tasks(sim: Simulator) -> list[dict[str, Any]]:
    return sim.tasks(tag=SERVICE_TAG)


# --- the attached config, without ClearML ----------------------------------------------------------


def test_service_config_leaves_every_secret_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_HOOK", SLACK_HOOK)
    raw = parse_yaml(config_text(tmp_path), "config.yaml")
    config = build_config(raw, "config.yaml")
    service = service_config(config, raw)
    assert_no_secret(service.text)
    attached = parse_yaml(service.text, "attached")
    # a secret the file took from a plain ${VAR} keeps it; a literal one gets a variable of its own
    assert attached["notify"]["slack"]["webhook_url"] == "${SLACK_HOOK}"
    telegram_var = env_name_for(("notify", "telegram", "bot_token"))
    assert telegram_var == "CLEARML_WATCHDOG_NOTIFY_TELEGRAM_BOT_TOKEN"
    assert attached["notify"]["telegram"]["bot_token"] == "${" + telegram_var + "}"
    assert service.required_env == ("CLEARML_WATCHDOG_NOTIFY_TELEGRAM_BOT_TOKEN", "SLACK_HOOK")
    # the connection to ClearML is the agent's: no keys, no host; the tuning stays
    assert attached["clearml"] == {"request_timeout_s": 20.0, "retries": 0}
    assert attached["state_dir"].startswith("${CLEARML_WATCHDOG_STATE_DIR:-")
    assert "Needed in the agent's environment: CLEARML_WATCHDOG_NOTIFY_TELEGRAM_BOT_TOKEN, SLACK_HOOK" in service.text
    check_round_trip(config, service)  # loads back into the same settings


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("${SLACK_HOOK}", True),  # a plain reference travels as it is
        ("${SLACK_HOOK:-http://127.0.0.1:9/services/x/y/default-secret}", False),  # a default may be a secret
        ("http://127.0.0.1:9/services/x/${PART}", False),  # a literal part may be a secret
    ],
)
def test_only_plain_references_are_kept(
    written: str, kept: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_HOOK", SLACK_HOOK)
    monkeypatch.setenv("PART", "z")
    raw = parse_yaml(f'notify: {{slack: {{webhook_url: "{written}"}}}}\n', "c")
    service = service_config(build_config(raw, "c"), raw)
    value = parse_yaml(service.text, "a")["notify"]["slack"]["webhook_url"]
    assert value == (written if kept else "${CLEARML_WATCHDOG_NOTIFY_SLACK_WEBHOOK_URL}")
    assert "default-secret" not in service.text


# --- deploy-service against the simulator ----------------------------------------------------------


def test_deploy_creates_then_updates_one_service_task(tmp_path: Path, sim: Simulator) -> None:
    services = sim.create_queue("services")
    (tmp_path / "config.yaml").write_text(config_text(tmp_path))
    first = deploy_service(sim, tmp_path)
    assert first.returncode == 0, first.stderr
    assert_no_secret(first.stdout + first.stderr)
    assert "CLEARML_WATCHDOG_NOTIFY_TELEGRAM_BOT_TOKEN" in first.stdout and "SLACK_HOOK" in first.stdout

    [brief] = service_tasks(sim)
    task = sim.task(brief["id"])
    assert first.stdout.startswith(f"created service task {task['id']}: enqueued on 'services'")
    assert task["type"] == "service" and task["status"] == "queued"
    assert task["execution"]["queue"] == services, "enqueued by queue id"
    assert sim.queue_entries("services") == [task["id"]]
    assert task["project"] == sim.state.project_id("DevOps")
    assert "no-watchdog" in task["tags"], "other watchdogs leave the service alone"
    script = task["script"]
    assert script["entry_point"] == ENTRY_POINT and script["diff"] == SERVICE_SCRIPT and not script["repository"]
    assert script["requirements"]["pip"].startswith("clearml-spot-watchdog==")
    attached = task["configuration"][CONFIG_NAME]
    assert attached["type"] == "yaml" and "poll_interval_s: 1" in attached["value"]
    assert_no_secret(json.dumps(task))  # nowhere in the task: not the config, not the comment, not the script

    # Second run with a changed config: the same task, updated, enqueued once.
    (tmp_path / "config.yaml").write_text(config_text(tmp_path, poll=2))
    second = deploy_service(sim, tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith(f"updated service task {task['id']}")
    assert [t["id"] for t in service_tasks(sim)] == [task["id"]]
    updated = sim.task(task["id"])
    assert "poll_interval_s: 2" in updated["configuration"][CONFIG_NAME]["value"]
    assert updated["status"] == "queued" and sim.queue_entries("services") == [task["id"]]

    # Aborted meanwhile: reset, updated, enqueued again.
    sim.user_abort(task["id"])
    assert sim.task(task["id"])["status"] == "stopped"
    third = deploy_service(sim, tmp_path)
    assert third.returncode == 0, third.stderr
    assert sim.task(task["id"])["status"] == "queued" and sim.queue_entries("services") == [task["id"]]

    # Running under an agent: its config is updated in place, it is not enqueued twice, the user is told.
    sim.start_agents(1, queues=["services"], prefix="services")
    sim.wait_running(task["id"], timeout=10)
    (tmp_path / "config.yaml").write_text(config_text(tmp_path, poll=3))
    fourth = deploy_service(sim, tmp_path)
    assert fourth.returncode == 0, fourth.stderr
    assert fourth.stdout.startswith(f"updated-running service task {task['id']}: not enqueued")
    assert "Abort it in the UI and Enqueue it again" in fourth.stdout
    running = sim.task(task["id"])
    assert running["status"] == "in_progress"
    assert "poll_interval_s: 3" in running["configuration"][CONFIG_NAME]["value"]
    assert [t["id"] for t in service_tasks(sim)] == [task["id"]]


def test_a_missing_queue_is_refused_and_not_created(tmp_path: Path, sim: Simulator) -> None:
    (tmp_path / "config.yaml").write_text(config_text(tmp_path))
    queues_before = sorted(sim.state.queue_ids())
    result = deploy_service(sim, tmp_path, "--queue", "servcies")
    assert result.returncode == 2
    assert "queue 'servcies' does not exist" in result.stderr and "Traceback" not in result.stderr
    assert sorted(sim.state.queue_ids()) == queues_before
    assert service_tasks(sim) == []


# --- inside the agent ----------------------------------------------------------------------------


def test_in_agent_mode(tmp_path: Path, sim: Simulator, start_daemon: Any) -> None:
    """CLEARML_TASK_ID set, no --config: config from the task, own task ignored, scalars on it."""
    sim.create_queue("services")
    deploy_dir = tmp_path / "deploy"
    deploy_dir.mkdir()
    # Watch the services queue too, so that the watchdog's own task, stale and with no worker reporting
    # it, would be an agent_lost candidate if the watchdog did not know it is itself.
    (deploy_dir / "config.yaml").write_text(config_text(deploy_dir, queues="[gpu-spot, services]"))
    assert deploy_service(sim, deploy_dir).returncode == 0
    [own] = service_tasks(sim)
    own_id = own["id"]
    sim.state.dequeue(own_id)
    sim.state.set_status(own_id, "in_progress", force=True)  # "started by an agent" that never reports it
    sim.state.edit_task(own_id, {"execution": {"queue": sim.create_queue("services")}}, force=True)
    sim.state.update_tags([own_id], remove=["no-watchdog"])  # only the self-check protects it now
    lost = lose_a_task(sim)

    agent_dir = tmp_path / "agent"  # no config.yaml here, no --config: the task's config is used
    agent_dir.mkdir()
    daemon = start_daemon(
        None,
        env={
            "CLEARML_TASK_ID": own_id,
            "SLACK_HOOK": SLACK_HOOK,
            "CLEARML_WATCHDOG_NOTIFY_TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
            "CLEARML_WATCHDOG_STATE_DIR": str(agent_dir / "state"),
        },
        directory=agent_dir,
    )
    daemon.wait_log("config_from_task", task_id=own_id)
    sim.wait_for(lambda: clones_of(sim, lost), timeout=30)

    def plotted() -> set[str]:
        return {e["metric"] for e in sim.state.task_events(own_id) if e.get("type") == "training_stats_scalar"}

    sim.wait_for(lambda: {"tasks", "incidents", "recoveries", "detection delay (s)"} <= plotted(), timeout=20)
    events = sim.state.task_events(own_id)
    watched = [e["value"] for e in events if e["metric"] == "tasks"]
    assert watched and all(isinstance(v, (int, float)) for v in watched)
    assert [e["value"] for e in events if e["variant"] == "requeued"][-1] == 1

    daemon.notify.wait_for("WATCHDOG=1", timeout_s=10, count=4)  # several cycles saw the stale own task
    assert clones_of(sim, own_id) == [], "the watchdog never clones itself"
    me = sim.task(own_id)
    assert me["status"] == "in_progress" and not any(t.startswith("watchdog:") for t in me["tags"])
    assert not [e for e in daemon.events() if e.get("event") == "decision" and e.get("task_id") == own_id]
    assert_no_secret(daemon.log_path.read_text())

    daemon.signal(signal.SIGTERM)
    assert daemon.process.wait(10) == 0
    assert (agent_dir / "state" / "journal.sqlite3").is_file(), "state_dir came from the agent's environment"


def run_cli(sim: Simulator, cwd: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = env_without_clearml()
    environment.update(sim.env())
    environment.update(env)
    return subprocess.run([str(BIN), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60)


def test_config_source_inside_an_agent(tmp_path: Path, sim: Simulator) -> None:
    sim.create_queue("services")
    (tmp_path / "config.yaml").write_text(config_text(tmp_path, poll=7))
    assert deploy_service(sim, tmp_path).returncode == 0
    [own] = service_tasks(sim)
    secrets = {"SLACK_HOOK": SLACK_HOOK, "CLEARML_WATCHDOG_NOTIFY_TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    from_task = run_cli(sim, elsewhere, ["check-config", "--offline"], {"CLEARML_TASK_ID": own["id"], **secrets})
    assert from_task.returncode == 0, from_task.stderr
    assert "poll_interval_s: 7" in from_task.stdout
    assert_no_secret(from_task.stdout + from_task.stderr)  # expanded from the env, then masked

    (elsewhere / "mine.yaml").write_text("poll_interval_s: 42\n")
    explicit = run_cli(
        sim, elsewhere, ["check-config", "--offline", "--config", "mine.yaml"], {"CLEARML_TASK_ID": own["id"]}
    )
    assert explicit.returncode == 0 and "poll_interval_s: 42" in explicit.stdout, "--config wins over the task"

    missing_secret = run_cli(sim, elsewhere, ["check-config", "--offline"], {"CLEARML_TASK_ID": own["id"]})
    assert missing_secret.returncode == 2
    assert "environment variable" in missing_secret.stderr and "is not set" in missing_secret.stderr

    bare = sim.create_task("not a service")
    no_config = run_cli(sim, elsewhere, ["check-config", "--offline"], {"CLEARML_TASK_ID": bare})
    assert no_config.returncode == 2
    assert "configuration object 'watchdog': not found" in no_config.stderr
    assert "deploy-service" in no_config.stderr
