"""Exactly once, with real processes: the daemon is SIGKILLed between protocol steps and a new one finishes.

The kill comes from the simulator, right after it carried out a step and before the daemon hears the
answer: the harshest place for a crash (the server did the work, the client never learned it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.harness import SPOT, WATCHDOG_CMD, config_data, fast_simulator, watchdog_env
from watchdog.lineage import HANDLED_TAG, RESUMED_TAG, STOP_REASON
from watchdog.simulator import Simulator

pytestmark = pytest.mark.process


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with fast_simulator() as simulator:
        simulator.start_agents(3, queues=[SPOT])
        yield simulator


def write_config(sim: Simulator, tmp_path: Path) -> Path:
    data = config_data(sim, tmp_path / "state")
    path = tmp_path / "config.yaml"
    with path.open("w") as stream:
        YAML(typ="safe", pure=True).dump(data, stream)
    return path


def start_daemon(sim: Simulator, config: Path, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*WATCHDOG_CMD, "run", "--config", str(config), "--log-format", "json"],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        text=True,
        env=watchdog_env(sim),
    )


def resume_clones(sim: Simulator, task_id: str) -> list[dict[str, Any]]:
    return [t for t in sim.tasks(parent=task_id) if RESUMED_TAG in t.get("tags", [])]


def wait_first_cycle(sim: Simulator, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while sim.calls.count("workers.get_all") == 0:
        assert proc.poll() is None, "the daemon died before its first cycle"
        assert time.monotonic() < deadline, "no cycle within 30 s"
        time.sleep(0.05)


@pytest.mark.parametrize("step", ["tasks.stopped", "tasks.clone", "tasks.enqueue", "tasks.update_tags"])
def test_a_daemon_killed_after_each_step_is_finished_by_the_next_one(sim: Simulator, tmp_path: Path, step: str) -> None:
    task_id = sim.submit("resnet50", queue=SPOT, hyperparams={"Args": {"lr": 0.1, "resume_from": ""}})
    sim.wait_running(task_id)
    sim.wait_for(lambda: sim.models(task_id), timeout=5)
    config = write_config(sim, tmp_path)
    log = tmp_path / "daemon.log"
    first = start_daemon(sim, config, log)
    killed = threading.Event()

    def kill_after(endpoint: str, body: dict[str, Any], result: dict[str, Any]) -> None:
        if endpoint == step and not killed.is_set():
            killed.set()
            os.kill(first.pid, signal.SIGKILL)

    sim.server.after_success.append(kill_after)
    try:
        wait_first_cycle(sim, first)
        worker = sim.worker_of(task_id)
        assert worker
        sim.kill_agent(worker)
        sim.advance(5)
        assert first.wait(timeout=30) == -signal.SIGKILL
        assert killed.is_set()
    finally:
        sim.server.after_success.remove(kill_after)
        if first.poll() is None:
            first.kill()

    sim.calls.reset()
    second = start_daemon(sim, config, log)
    try:
        wait_first_cycle(sim, second)
        sim.wait_for(lambda: HANDLED_TAG in sim.task(task_id).get("tags", []), timeout=30)
        time.sleep(1.5)  # a few more cycles: nothing more may happen
        clones = resume_clones(sim, task_id)
        assert len(clones) == 1, [c["id"] for c in clones]
        [clone] = clones
        assert clone["status"] in ("queued", "in_progress")
        assert sim.task(task_id)["status_reason"] == STOP_REASON
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=15) == 0
    finally:
        if second.poll() is None:
            second.kill()
    output = log.read_text()
    assert output.count("Machine lost: resnet50") == 1, output[-4000:]


def test_the_daemon_outlives_a_clearml_outage_and_catches_up(sim: Simulator, tmp_path: Path) -> None:
    task_id = sim.submit("bert", queue=SPOT)
    sim.wait_running(task_id)
    config = write_config(sim, tmp_path)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(sim, config, log)
    try:
        wait_first_cycle(sim, daemon)
        sim.faults.outage(True)
        before = sim.calls.count("workers.get_all")
        sim.wait_for(lambda: sim.calls.count("workers.get_all") >= before + 4, timeout=30)
        assert daemon.poll() is None, "the daemon exited on a server error"
        sim.stop_listener()
        time.sleep(2)
        assert daemon.poll() is None, "the daemon exited on refused connections"
        sim.start_listener()
        sim.faults.outage(False)
        worker = sim.worker_of(task_id)
        assert worker
        sim.kill_agent(worker)
        sim.advance(5)
        sim.wait_for(lambda: len(resume_clones(sim, task_id)) == 1, timeout=30)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert "Traceback" not in log.read_text()
