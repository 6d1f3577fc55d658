"""Fixtures for the deploy tests: a simulator on loopback and the daemon as a real process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import Daemon

from watchdog.simulator import Simulator, SimulatorConfig


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(
        SimulatorConfig(report_interval_s=0.2, worker_timeout_s=1.0, pickup_delay_s=0.2, iteration_period_s=0.05)
    )
    simulator.start()
    simulator.create_queue("gpu-spot")
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def start_daemon(tmp_path: Path, sim: Simulator) -> Iterator[Any]:
    started: list[Daemon] = []

    def start(config: Path | None, env: dict[str, str] | None = None, directory: Path | None = None) -> Daemon:
        daemon = Daemon(directory or tmp_path, sim, config, env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
