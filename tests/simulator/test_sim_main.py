"""``python -m watchdog.simulator`` as a user runs it: prints the env, serves, stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import requests


def test_standalone_simulator_prints_env_and_serves_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchdog.simulator", "--port", "0", "--tasks", "3", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        env: dict[str, str] = {}
        while len(env) < 6:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "no output"
            key, _, value = line.removeprefix("export ").strip().partition("=")
            env[key] = value
        assert env["CLEARML_CONFIG_FILE"] == "/nonexistent"
        host = env["CLEARML_API_HOST"]
        login = requests.get(f"{host}/auth.login", auth=(env["CLEARML_API_ACCESS_KEY"],
                                                         env["CLEARML_API_SECRET_KEY"]), timeout=5)
        token = login.json()["data"]["token"]
        tasks = requests.get(f"{host}/tasks.get_all", json={"only_fields": ["name"]},
                             headers={"Authorization": f"Bearer {token}"}, timeout=5).json()["data"]["tasks"]
        assert sorted(t["name"] for t in tasks) == ["train-000", "train-001", "train-002"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
