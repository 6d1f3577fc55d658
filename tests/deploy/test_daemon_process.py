"""The daemon as a real process against the simulator over HTTP: systemd notify on a real socket, the
health and metrics endpoint, clean shutdown on SIGTERM/SIGINT, and the second signal."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import (
    BIN,
    clones_of,
    env_without_clearml,
    free_port,
    http_get,
    lose_a_task,
    parse_prometheus,
    write_config,
)

from watchdog.journal import JOURNAL_FILENAME, SCHEMA_VERSION
from watchdog.simulator import Simulator

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]


def metrics_of(port: int) -> Any:
    status, content_type, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    return parse_prometheus(body)


def journal_ok(state_dir: Path) -> sqlite3.Connection:
    db = sqlite3.connect(state_dir / JOURNAL_FILENAME)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    return db


def test_notify_health_metrics_and_sigterm(tmp_path: Path, sim: Simulator, start_daemon: Any) -> None:
    port = free_port()
    daemon = start_daemon(write_config(tmp_path, health_port=port))

    # READY=1 only after the first cycle: its STATUS already carries that cycle's summary.
    fields = daemon.notify.wait_for("READY=1", timeout_s=30)
    ready_at = fields.index("READY=1")
    assert "WATCHDOG=1" in fields[:ready_at], "the first cycle pings before READY"
    assert fields[ready_at + 1].startswith("STATUS=cycle 1 (")
    status, _, body = http_get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    before = metrics_of(port)
    assert before.value("clearml_watchdog_ready") == 1

    # A lost task: the counters move.
    lost = lose_a_task(sim)
    sim.wait_for(lambda: clones_of(sim, lost), timeout=20)
    daemon.notify.wait_for("WATCHDOG=1", timeout_s=10, count=4)
    after = sim.wait_for(
        lambda: (m := metrics_of(port)).value("clearml_watchdog_recoveries_total", outcome="requeued") >= 1 and m,
        timeout=10,
    )
    assert after.total("clearml_watchdog_cycles_total") > before.total("clearml_watchdog_cycles_total")
    assert after.value("clearml_watchdog_verdicts_total", verdict="agent_lost") >= 1
    assert after.value("clearml_watchdog_cycle_duration_seconds_count") >= 3
    assert after.value("clearml_watchdog_clearml_requests_total", endpoint="tasks.clone") == 1
    assert after.value("clearml_watchdog_detection_delay_seconds_count") == 1
    assert "clearml_watchdog_outbox_depth" in after.names()
    statuses = [f for f in daemon.notify.fields() if f.startswith("STATUS=cycle")]
    assert any("1 requeued" in s for s in statuses), statuses

    # ClearML goes away: cycles go on (and still ping: the loop is alive), /healthz turns 503 once stale.
    sim.stop_listener()
    errors_before = after.value("clearml_watchdog_clearml_errors_total")
    deadline = time.monotonic() + 15
    while (status := http_get(f"http://127.0.0.1:{port}/healthz"))[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status[0] == 503, status
    reason = json.loads(status[2])["reason"]
    assert "stale after 3s" in reason and "ClearML unreachable" in reason
    blind = metrics_of(port)
    assert blind.value("clearml_watchdog_cycles_total", result="blind") >= 1
    assert blind.value("clearml_watchdog_clearml_errors_total") > errors_before
    assert blind.value("clearml_watchdog_up") == 0
    assert any(f.startswith("STATUS=") and "blind" in f for f in daemon.notify.fields())
    sim.start_listener()
    sim.wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, timeout=15)

    # SIGTERM: STOPPING=1, exit 0 quickly, journal intact with the incident in it.
    sent = daemon.signal(signal.SIGTERM)
    assert daemon.process.wait(10) == 0
    elapsed = time.monotonic() - sent
    assert elapsed < 10
    assert "STOPPING=1" in daemon.notify.fields()
    db = journal_ok(tmp_path / "state")
    assert db.execute("SELECT state FROM incidents WHERE task_id = ?", (lost,)).fetchone()[0] in (
        "requeued",
        "recovered",
    )


def test_sigint_exits_0_with_the_journal_intact(tmp_path: Path, sim: Simulator, start_daemon: Any) -> None:
    daemon = start_daemon(write_config(tmp_path))
    daemon.notify.wait_for("READY=1", timeout_s=30)
    sent = daemon.signal(signal.SIGINT)
    assert daemon.process.wait(10) == 0
    assert time.monotonic() - sent < 10
    daemon.wait_log("stopped")
    journal_ok(tmp_path / "state")


def test_a_recovery_in_progress_finishes_its_step(tmp_path: Path, sim: Simulator, start_daemon: Any) -> None:
    """SIGTERM while the clone request is in flight: the step completes, then the process exits 0."""
    daemon = start_daemon(write_config(tmp_path))
    daemon.notify.wait_for("READY=1", timeout_s=30)
    sim.faults.set(latency_s=2.0, endpoints=("tasks.clone",))
    lost = lose_a_task(sim)
    daemon.wait_log("decision", task_id=lost, verdict="agent_lost")
    time.sleep(0.5)  # inside the slow tasks.clone call
    sent = daemon.signal(signal.SIGTERM)
    assert daemon.process.wait(10) == 0
    assert time.monotonic() - sent < 10
    clones = clones_of(sim, lost)
    assert len(clones) == 1, "the clone step finished (and was not repeated)"
    journal_ok(tmp_path / "state")


def test_a_stuck_step_still_exits_0_within_10_s(tmp_path: Path, sim: Simulator, start_daemon: Any) -> None:
    daemon = start_daemon(write_config(tmp_path))
    daemon.notify.wait_for("READY=1", timeout_s=30)
    sim.faults.set(latency_s=30.0, endpoints=("workers.get_all",))  # the next cycle hangs in its first call
    time.sleep(1.5)
    sent = daemon.signal(signal.SIGTERM)
    assert daemon.process.wait(12) == 0
    elapsed = time.monotonic() - sent
    assert elapsed < 10, f"took {elapsed:.1f}s"
    daemon.wait_log("step_still_running")
    journal_ok(tmp_path / "state")


def test_a_second_signal_exits_at_once(tmp_path: Path, sim: Simulator, start_daemon: Any) -> None:
    daemon = start_daemon(write_config(tmp_path))
    daemon.notify.wait_for("READY=1", timeout_s=30)
    sim.faults.set(latency_s=30.0, endpoints=("workers.get_all",))
    time.sleep(1.5)
    daemon.signal(signal.SIGTERM)  # waits for the stuck step (grace period) ...
    daemon.wait_log("stopping")
    sent = daemon.signal(signal.SIGTERM)  # ... the second one does not
    code = daemon.process.wait(5)
    assert time.monotonic() - sent < 1.5
    assert code == 128 + signal.SIGTERM


def test_bad_config_fails_the_start_without_ready(tmp_path: Path, sim: Simulator, start_daemon: Any) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("recover: {on: [user_aborted]}\n")
    daemon = start_daemon(config)
    assert daemon.process.wait(30) == 2
    assert "READY=1" not in daemon.notify.fields()
    assert "user_aborted cannot be recovered" in daemon.log_path.read_text()


# --- journal schema: forward migration, and a newer file refused untouched -------------------------


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], cwd=cwd, env=env_without_clearml(), capture_output=True, text=True, timeout=60
    )


def test_an_old_journal_migrates_forward_on_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = state / JOURNAL_FILENAME
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE kept(note TEXT)")  # a version-0 file with something in it
    db.execute("INSERT INTO kept VALUES ('still here')")
    db.commit()
    db.close()
    (tmp_path / "config.yaml").write_text(f"state_dir: {state}\n")
    result = _run(["history", "--config", "config.yaml"], tmp_path)
    assert result.returncode == 0, result.stderr
    db = journal_ok(state)
    assert db.execute("SELECT note FROM kept").fetchone()[0] == "still here"
    assert db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0] == 0


def test_each_migration_step_runs_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file at the current version opened by a build with one more step: migrated, data kept."""
    from watchdog import journal as journal_module

    first = journal_module.Journal(tmp_path / JOURNAL_FILENAME)
    first.set_value("cursor", "2026-01-01T00:00:00+00:00")
    first.close()
    step = "ALTER TABLE incidents ADD COLUMN note TEXT NOT NULL DEFAULT ''"
    monkeypatch.setattr(journal_module, "MIGRATIONS", (*journal_module.MIGRATIONS, step))
    monkeypatch.setattr(journal_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    upgraded = journal_module.Journal(tmp_path / JOURNAL_FILENAME)
    try:
        assert upgraded.schema_version == SCHEMA_VERSION + 1
        assert upgraded.get_value("cursor") == "2026-01-01T00:00:00+00:00"
        assert "note" in {row[1] for row in upgraded.query("PRAGMA table_info(incidents)")}
    finally:
        upgraded.close()


@pytest.mark.parametrize("command", ["run", "history", "once"])
def test_a_newer_journal_is_refused_and_left_unchanged(tmp_path: Path, command: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = state / JOURNAL_FILENAME
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE incidents(id TEXT, future_column TEXT)")
    db.execute("INSERT INTO incidents VALUES ('i1', 'from the future')")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.commit()
    db.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "config.yaml").write_text(f"state_dir: {state}\nclearml: {{api_host: 'http://127.0.0.1:9'}}\n")
    result = _run([command, "--config", "config.yaml"], tmp_path)
    assert result.returncode == 2
    assert f"schema version {SCHEMA_VERSION + 5}, newer than this watchdog understands" in result.stderr
    assert "Traceback" not in result.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, "the refused file was modified"
    assert sorted(p.name for p in state.iterdir()) == [JOURNAL_FILENAME], "no -wal/-shm files left behind"
