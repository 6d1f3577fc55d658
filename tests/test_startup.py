"""A daemon stopped while it is still starting (connecting to ClearML) exits 0, like a running one."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.harness import fast_simulator
from tests.test_exactly_once import start_daemon, write_config

pytestmark = pytest.mark.process


def test_sigterm_during_start_up_exits_0(tmp_path: Path) -> None:
    with fast_simulator() as sim:
        # Start-up resolves the watched queues: make that call slow, and stop the daemon meanwhile.
        sim.faults.set(latency_s=4.0, endpoints=("queues.get_all",))
        daemon = start_daemon(sim, write_config(sim, tmp_path), tmp_path / "daemon.log")
        try:
            sim.wait_for(lambda: sim.calls.count("queues.get_all") >= 1, timeout=30)
            assert sim.calls.count("workers.get_all") == 0, "still starting: no cycle yet"
            stopped_at = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=15) == 0
            assert time.monotonic() - stopped_at < 10
        finally:
            if daemon.poll() is None:
                daemon.kill()
