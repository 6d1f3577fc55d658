"""The classifier, one row per situation of CLEARML_FACTS.md "what each kind of ending looks like"."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from watchdog.detect import LiveWorkers, Scope, Thresholds, classify
from watchdog.lineage import HANDLED_TAG, STOP_REASON
from watchdog.snapshots import TaskSnapshot, WorkerSnapshot
from watchdog.verdict import Reason

NOW = datetime(2026, 11, 23, 3, 0, 0, tzinfo=timezone.utc)
Q_SPOT = "q-spot"
THRESHOLDS = Thresholds(task_stale_s=180, worker_stale_s=90)
SCOPE = Scope(queue_ids=frozenset({Q_SPOT}), exclude_tags=frozenset({"no-watchdog"}), self_task_id="self")


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def task(**overrides: object) -> TaskSnapshot:
    values: dict[str, object] = {
        "id": "t1",
        "name": "train",
        "status": "in_progress",
        "last_update": ago(10),
        "last_worker": "spot-1:gpu0",
        "queue_id": Q_SPOT,
    }
    values.update(overrides)
    return TaskSnapshot(**values)  # type: ignore[arg-type]


def workers(*pairs: tuple[str, str, float]) -> LiveWorkers:
    """(worker id, task id it reports, seconds since its last report)."""
    return LiveWorkers.from_workers(WorkerSnapshot(w, t, ago(s)) for w, t, s in pairs)


NO_WORKERS = workers()
AGENT = "Changed by clearml-agent spot-1:gpu0"

CASES = [
    # (id, task, workers, expected reason, words the explanation must contain)
    ("running and reported", task(), workers(("spot-1:gpu0", "t1", 5)), Reason.HEALTHY, "reported"),
    # Quiet for an hour (long epoch, no logging) but its agent still reports it: never touched.
    ("quiet but agent alive", task(last_update=ago(3600)), workers(("spot-1:gpu0", "t1", 20)), Reason.HEALTHY, ""),
    # Agent gone but the task updated recently: one clock alone is not enough.
    ("worker gone, task fresh", task(last_update=ago(60)), NO_WORKERS, Reason.HEALTHY, "180"),
    # Machine vanished: task stale and no live worker reports it.
    ("machine vanished", task(last_update=ago(600)), NO_WORKERS, Reason.AGENT_LOST, "no update for 600s"),
    # Killed agent is still listed for 600 s, still showing the task, but its report is old.
    (
        "dead worker still listed",
        task(last_update=ago(400)),
        workers(("spot-1:gpu0", "t1", 400)),
        Reason.AGENT_LOST,
        "last reported 400s ago",
    ),
    # A restarted agent keeps its worker id but reports no task.
    (
        "restarted agent reports no task",
        task(last_update=ago(400)),
        workers(("spot-1:gpu0", "", 2)),
        Reason.AGENT_LOST,
        "gone or restarted",
    ),
    # ... or reports another task.
    (
        "restarted agent runs another task",
        task(last_update=ago(400)),
        workers(("spot-1:gpu0", "t2", 2)),
        Reason.AGENT_LOST,
        "",
    ),
    # User clicked Abort while the agent was dead: "stopping" forever. A human decision.
    (
        "stopping with dead agent",
        task(last_update=ago(400), status_message="stopping"),
        NO_WORKERS,
        Reason.USER_ABORTED,
        "asked to stop",
    ),
    (
        "stopping with live agent",
        task(status_message="stopping"),
        workers(("spot-1:gpu0", "t1", 3)),
        Reason.HEALTHY,
        "",
    ),
    # User Abort, agent alive: the agent writes this reason.
    (
        "user abort, agent alive",
        task(status="stopped", status_reason="task was stopped by tasks.stop", status_message=AGENT),
        NO_WORKERS,
        Reason.USER_ABORTED,
        "tasks.stop",
    ),
    # User Abort with no live agent: empty reason.
    (
        "user abort, no agent",
        task(status="stopped", status_reason="", status_message="Stopped by alice"),
        NO_WORKERS,
        Reason.USER_ABORTED,
        "alice",
    ),
    # Agent SIGTERMed (spot 2-minute notice): the agent writes "user abort", despite the words.
    (
        "agent SIGTERM",
        task(status="stopped", status_reason="user abort", status_message=AGENT),
        NO_WORKERS,
        Reason.AGENT_STOPPED,
        "spot-1:gpu0",
    ),
    # "user abort" NOT written by an agent is a person.
    (
        "user abort reason without agent",
        task(status="stopped", status_reason="user abort", status_message="Stopped by bob"),
        NO_WORKERS,
        Reason.USER_ABORTED,
        "",
    ),
    (
        "server forced stop",
        task(
            status="stopped",
            status_reason="Forced stop (non-responsive)",
            status_message="Forced stop (non-responsive)",
        ),
        NO_WORKERS,
        Reason.SERVER_FORCED_STOP,
        "server",
    ),
    # The watchdog's own stop of a lost task: the recovery continues after a crash.
    (
        "stopped by the watchdog",
        task(status="stopped", status_reason=STOP_REASON, status_message="x"),
        NO_WORKERS,
        Reason.AGENT_LOST,
        "resuming",
    ),
    (
        "script raised under agent",
        task(status="failed", status_reason="worker execution exit code 1", status_message=AGENT),
        NO_WORKERS,
        Reason.CODE_FAILED,
        "code 1",
    ),
    (
        "process got SIGTERM",
        task(status="failed", status_reason="worker execution exit code -15"),
        NO_WORKERS,
        Reason.AGENT_STOPPED,
        "SIGTERM",
    ),
    (
        "process exit 143",
        task(status="failed", status_reason="worker execution exit code 143"),
        NO_WORKERS,
        Reason.AGENT_STOPPED,
        "",
    ),
    # SIGKILL with the agent alive to report it is the OOM killer far more often than a spot loss.
    (
        "process killed -9",
        task(status="failed", status_reason="worker execution exit code -9"),
        NO_WORKERS,
        Reason.CODE_FAILED,
        "out of memory",
    ),
    (
        "local exception",
        task(status="failed", status_reason="Exception ValueError('x')"),
        NO_WORKERS,
        Reason.CODE_FAILED,
        "ValueError",
    ),
    (
        "clean exit",
        task(status="completed", status_reason="worker execution done"),
        NO_WORKERS,
        Reason.IGNORED,
        "finished",
    ),
    ("queued", task(status="queued"), NO_WORKERS, Reason.HEALTHY, "waiting"),
    # Out of scope.
    (
        "development run",
        task(last_update=ago(9999), system_tags=("development",)),
        NO_WORKERS,
        Reason.IGNORED,
        "development",
    ),
    ("own task", task(id="self", last_update=ago(9999)), NO_WORKERS, Reason.IGNORED, "own task"),
    (
        "excluded tag",
        task(last_update=ago(9999), tags=("no-watchdog",)),
        NO_WORKERS,
        Reason.IGNORED,
        "no-watchdog",
    ),
    ("already handled", task(status="stopped", tags=(HANDLED_TAG,)), NO_WORKERS, Reason.IGNORED, "handled"),
    ("other queue", task(last_update=ago(9999), queue_id="q-cpu"), NO_WORKERS, Reason.IGNORED, "queue"),
    ("never enqueued", task(last_update=ago(9999), queue_id=""), NO_WORKERS, Reason.IGNORED, "never enqueued"),
    (
        "no dates at all",
        task(last_update=None, started=None, status_changed=None),
        NO_WORKERS,
        Reason.IGNORED,
        "no last_update",
    ),
]


@pytest.mark.parametrize(("name", "snapshot", "live", "expected", "words"), CASES, ids=[c[0] for c in CASES])
def test_classify(name: str, snapshot: TaskSnapshot, live: LiveWorkers, expected: Reason, words: str) -> None:
    verdict = classify(snapshot, live, NOW, SCOPE, THRESHOLDS)
    assert verdict.reason is expected, verdict.explanation
    assert words in verdict.explanation


def test_project_scope() -> None:
    scope = Scope(project_ids=frozenset({"p1"}))
    assert classify(task(project_id="p2"), NO_WORKERS, NOW, scope, THRESHOLDS).reason is Reason.IGNORED
    assert classify(task(project_id="p1"), NO_WORKERS, NOW, scope, THRESHOLDS).reason is Reason.HEALTHY


def test_newest_report_wins_when_two_workers_claim_a_task() -> None:
    live = workers(("old:gpu0", "t1", 500), ("new:gpu0", "t1", 3))
    verdict = classify(task(last_update=ago(500)), live, NOW, SCOPE, THRESHOLDS)
    assert verdict.reason is Reason.HEALTHY
    assert "new:gpu0" in verdict.explanation


@pytest.mark.parametrize(
    ("task_age", "report_age", "expected"),
    [
        (180, None, Reason.HEALTHY),  # exactly at the threshold: not yet
        (181, None, Reason.AGENT_LOST),
        (181, 90, Reason.HEALTHY),  # worker report exactly at its threshold still counts
        (181, 91, Reason.AGENT_LOST),
    ],
)
def test_threshold_edges(task_age: float, report_age: float | None, expected: Reason) -> None:
    live = workers(("w", "t1", report_age)) if report_age is not None else NO_WORKERS
    assert classify(task(last_update=ago(task_age)), live, NOW, SCOPE, THRESHOLDS).reason is expected
