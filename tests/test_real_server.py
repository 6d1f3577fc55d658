"""Read-only checks against a REAL ClearML server, when one is named in the environment.

    CLEARML_API_HOST=https://api.clear.ml CLEARML_API_ACCESS_KEY=... CLEARML_API_SECRET_KEY=... \\
        [WATCHDOG_TEST_QUEUES=gpu-spot] .venv/bin/python -m pytest tests/test_real_server.py

Nothing here writes to the server: the gateway's reads and `once --dry-run`. Skipped without
CLEARML_API_HOST (CI has no server); everything that changes state is tested on the simulator.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.harness import WATCHDOG_CMD
from watchdog.config import ClearMLConfig, WatchdogConfig, build_config
from watchdog.gateway import Gateway
from watchdog.recovery import resolve_scope

pytestmark = pytest.mark.skipif(
    not os.environ.get("CLEARML_API_HOST"), reason="no real ClearML server named (set CLEARML_API_HOST and keys)"
)
QUEUES = [q for q in os.environ.get("WATCHDOG_TEST_QUEUES", "").split(",") if q]


def real_config(tmp_path: Path) -> WatchdogConfig:
    return build_config({"watch": {"queues": QUEUES}, "state_dir": str(tmp_path / "state")}, "real-server test")


def test_gateway_reads_the_real_server() -> None:
    gateway = Gateway(ClearMLConfig())  # credentials the way every ClearML tool finds them
    workers = gateway.list_workers()
    now = gateway.server_now()
    running = gateway.list_running()
    ended = gateway.list_ended_since(now - timedelta(hours=1))
    queues = gateway.queue_names(refresh=True)
    assert all(w.id for w in workers)
    assert all(t.status == "in_progress" for t in running)
    assert all(t.status in ("stopped", "failed") for t in ended)
    assert all(queue_id and isinstance(name, str) for queue_id, name in queues.items())
    assert gateway.stats.errors == 0


def test_scope_names_resolve_on_the_real_server(tmp_path: Path) -> None:
    config = real_config(tmp_path)
    resolved = resolve_scope(Gateway(config.clearml), config, self_task_id="")
    missing = [q for q in QUEUES if any(repr(q) in w for w in resolved.warnings)]
    assert missing == [], resolved.warnings


def test_once_dry_run_against_the_real_server_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with path.open("w") as stream:
        YAML(typ="safe", pure=True).dump({"watch": {"queues": QUEUES}, "state_dir": str(tmp_path / "s")}, stream)
    result = subprocess.run(
        [*WATCHDOG_CMD, "once", "--dry-run", "--json", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["finished"] and report["dry_run"]
    assert {t["verdict"] for t in report["tasks"]} <= {
        "agent_lost",
        "agent_stopped",
        "server_forced_stop",
        "user_aborted",
        "code_failed",
        "healthy",
        "ignored",
    }
