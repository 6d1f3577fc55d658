"""Shared test rig: a fast simulator, a watchdog config pointing at it, and the real watchdog pieces.

Nothing here replaces a watchdog module: the gateway talks HTTP through the real clearml SDK to the
simulator, the journal is a real SQLite file, the outbox delivers to a console channel on a buffer.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from watchdog.config import WatchdogConfig, build_config
from watchdog.gateway import Gateway
from watchdog.journal import Journal
from watchdog.notify.build import build_outbox
from watchdog.notify.console import ConsoleChannel
from watchdog.recovery import CycleReport, Reconciler
from watchdog.simulator import Simulator, SimulatorConfig

SPOT = "gpu-spot"
ONDEMAND = "gpu-ondemand"

# Agents report every 0.2 s; a task with no update for 2 s and no report for 1 s is lost.
FAST_SIM = {
    "report_interval_s": 0.2,
    "worker_timeout_s": 30.0,
    "pickup_delay_s": 0.05,
    "task_init_delay_s": 0.05,
    "task_ping_interval_s": 0.2,
    "iteration_period_s": 0.05,
    "checkpoint_every_iters": 5,
    "server_watchdog_enabled": False,
    "tick_s": 0.02,
}


def fast_simulator(**overrides: Any) -> Simulator:
    return Simulator(SimulatorConfig(**{**FAST_SIM, **overrides}))


def config_data(sim: Simulator, state_dir: Path, **sections: Any) -> dict[str, Any]:
    """A config (as parsed YAML) for a watchdog watching `gpu-spot` on `sim`; sections override."""
    data: dict[str, Any] = {
        "poll_interval_s": 0.5,
        "watch": {"queues": [SPOT]},
        "detect": {"task_stale_s": 2, "worker_stale_s": 1},
        "state_dir": str(state_dir),
        "clearml": {**sim.watchdog_clearml_section(), "request_timeout_s": 3, "retries": 1},
        "health": {"enabled": False},
        "notify": {"console": True, "group_wait_s": 0},
    }
    for key, value in sections.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), Mapping):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def make_config(sim: Simulator, state_dir: Path, **sections: Any) -> WatchdogConfig:
    return build_config(config_data(sim, state_dir, **sections), "test config")


class Rig:
    """One watchdog (in-process) against one simulator."""

    def __init__(self, sim: Simulator, state_dir: Path, **sections: Any) -> None:
        self.sim = sim
        self.config = make_config(sim, state_dir, **sections)
        self.gateway = Gateway(self.config.clearml)
        self.journal = Journal.open_in(self.config.state_dir)
        self.alerts = io.StringIO()
        self.outbox = build_outbox(self.journal, self.config.notify, channels=[ConsoleChannel(self.alerts)])
        self.reconciler = Reconciler(self.gateway, self.journal, self.outbox, self.config, self_task_id="")

    def cycle(self) -> CycleReport:
        report = self.reconciler.run_cycle()
        # Follow-ups of an incident go out after its first message (threads), one pass later.
        for _ in range(3):
            self.outbox.deliver_due()
        return report

    def queue_name(self, queue_id: str) -> str:
        return self.gateway.queue_names(refresh=True).get(queue_id, queue_id)

    def close(self) -> None:
        self.journal.close()


def lose(sim: Simulator, task_id: str, seconds: float = 5) -> None:
    """The spot machine vanishes: kill -9 the agent running `task_id`, then let `seconds` pass."""
    worker = sim.worker_of(task_id)
    assert worker, "the task is not running on a live agent"
    sim.kill_agent(worker)
    sim.advance(seconds)


def watchdog_env(sim: Simulator) -> dict[str, str]:
    """Environment for a watchdog subprocess: the simulator's ClearML variables, no user clearml.conf."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(sim.env())
    env["PYTHONUNBUFFERED"] = "1"
    return env


WATCHDOG_CMD = [sys.executable, "-m", "watchdog"]
