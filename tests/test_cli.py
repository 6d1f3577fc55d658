"""The command line as a user meets it: real processes, exit codes, no tracebacks, no secrets."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.harness import SPOT, WATCHDOG_CMD, config_data, fast_simulator, lose, watchdog_env
from watchdog.simulator import Simulator

REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-do-not-print-me-123456"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WATCHDOG_CMD, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    yaml = YAML(typ="safe", pure=True)
    with path.open("w") as stream:
        yaml.dump(data, stream)
    return path


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with fast_simulator() as simulator:
        simulator.start_agents(2, queues=[SPOT])
        yield simulator


def test_check_config_prints_the_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    env = watchdog_env_without_server()
    env["MY_SECRET"] = SECRET
    config = tmp_path / "c.yaml"
    text = (
        (REPO / "config.yaml")
        .read_text()
        .replace("  # secret_key: ${CLEARML_API_SECRET_KEY}", "  secret_key: ${MY_SECRET}")
    )
    config.write_text(text)
    result = run_cli("check-config", "--offline", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "secret_key: '**********'" in result.stdout
    assert "- agent_lost" in result.stdout
    assert "config is valid" in result.stdout


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("recover:\n  on: [user_aborted]\n", "never undone"),
        ("poll_interval_s: fast\n", "poll_interval_s"),
        ("watch: [unclosed\n", "not valid YAML"),
        ("clearml:\n  secret_key: ${UNSET_VARIABLE_X}\n", "UNSET_VARIABLE_X is not set"),
    ],
)
def test_bad_config_exits_2_with_a_message_not_a_traceback(tmp_path: Path, content: str, words: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    for command in ("check-config", "run", "once"):
        result = run_cli(command, "--config", str(config), env=watchdog_env_without_server())
        assert result.returncode == 2, (command, result.stderr)
        assert words in result.stderr
        assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("once", "--config", str(tmp_path / "nope.yaml"), env=watchdog_env_without_server())
    assert result.returncode == 2
    assert "no such config file" in result.stderr


def test_usage_error_exits_2() -> None:
    result = run_cli("frobnicate")
    assert result.returncode == 2


def test_once_json_lists_every_task_and_history_shows_the_incident(sim: Simulator, tmp_path: Path) -> None:
    healthy = sim.submit("healthy-run", queue=SPOT)
    lost = sim.submit("lost-run", queue=SPOT)
    sim.wait_running(healthy)
    sim.wait_running(lost)
    lose(sim, lost)
    config = write_config(tmp_path / "c.yaml", config_data(sim, tmp_path / "state"))
    env = watchdog_env(sim)

    dry = run_cli("once", "--dry-run", "--json", "--config", str(config), env=env)
    assert dry.returncode == 0, dry.stderr
    planned = {t["task_id"]: t for t in json.loads(dry.stdout)["tasks"]}
    assert planned[lost]["verdict"] == "agent_lost" and planned[lost]["action"] == "requeue"
    assert planned[healthy]["verdict"] == "healthy"
    assert sim.tasks(parent=lost) == []

    real = run_cli("once", "--json", "--config", str(config), env=env)
    assert real.returncode == 0, real.stderr
    done = {t["task_id"]: t for t in json.loads(real.stdout)["tasks"]}
    assert done[lost]["clone_id"]
    assert {t["id"] for t in sim.tasks(parent=lost)} == {done[lost]["clone_id"]}

    history = run_cli("history", "--json", "--config", str(config), env=env)
    assert history.returncode == 0, history.stderr
    [incident] = json.loads(history.stdout)
    assert incident["task_id"] == lost and incident["state"] == "requeued"
    assert incident["clone_id"] == done[lost]["clone_id"]


def test_unreachable_server_exits_1_in_bounded_time(tmp_path: Path) -> None:
    port = free_port()
    data = {
        "state_dir": str(tmp_path / "state"),
        "clearml": {
            "api_host": f"http://127.0.0.1:{port}",
            "access_key": "key",
            "secret_key": SECRET,
            "request_timeout_s": 2,
            "retries": 1,
        },
    }
    config = write_config(tmp_path / "c.yaml", data)
    started = time.monotonic()
    result = run_cli("once", "--config", str(config), env=watchdog_env_without_server())
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "ClearML" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert elapsed < 30


def test_wrong_credentials_say_so(sim: Simulator, tmp_path: Path) -> None:
    data = config_data(sim, tmp_path / "state")
    data["clearml"]["secret_key"] = SECRET
    config = write_config(tmp_path / "c.yaml", data)
    result = run_cli("once", "--config", str(config), env=watchdog_env(sim))
    assert result.returncode == 1
    assert "credentials" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def watchdog_env_without_server() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env["CLEARML_CONFIG_FILE"] = "/nonexistent"
    return env


def test_logs_are_json_lines_off_a_terminal_and_each_decision_is_explained(sim: Simulator, tmp_path: Path) -> None:
    lost = sim.submit("lost-run", queue=SPOT)
    sim.wait_running(lost)
    lose(sim, lost)
    config = write_config(tmp_path / "c.yaml", config_data(sim, tmp_path / "state"))
    result = run_cli("once", "--config", str(config), env=watchdog_env(sim))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    [decision] = [line for line in lines if line["event"] == "decision"]
    assert decision["task_id"] == lost
    assert decision["verdict"] == "agent_lost" and decision["action"] == "requeue"
    assert "no update" in decision["reason"]
    assert all("timestamp" in line and "level" in line for line in lines)


def test_notify_test_command_diagnoses_each_channel_without_printing_tokens(tmp_path: Path) -> None:
    from watchdog.simulator.chat import TelegramStandIn

    with TelegramStandIn() as telegram:
        good = {"bot_token": telegram.token, "chat_id": "-1001234567890", "api_base": telegram.api_base}
        for token, code, line in (
            (telegram.token, 0, "telegram: ok"),
            ("42:NotTheRightTokenAtAll", 1, "telegram: 401 Unauthorized: check bot_token"),
        ):
            data = {"state_dir": str(tmp_path / "state"), "notify": {"telegram": {**good, "bot_token": token}}}
            config = write_config(tmp_path / "c.yaml", data)
            result = run_cli("notify-test", "--config", str(config), env=watchdog_env_without_server())
            assert result.returncode == code, result.stdout + result.stderr
            assert line in result.stdout
            assert token not in result.stdout + result.stderr
