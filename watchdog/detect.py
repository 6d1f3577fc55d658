"""The classifier: why does this task look the way it does?

Who calls it: recovery, once per task per cycle. A pure function of (task snapshot, live workers, now,
scope, thresholds): no I/O, no clock of its own, table-tested in tests/test_detect.py. The rules follow
CLEARML_FACTS.md ("what each kind of ending looks like"). When in doubt it says `user_aborted` or
`healthy`: a false alarm restarts somebody's run, a missed loss only costs a report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from watchdog.lineage import HANDLED_TAG, STOP_REASON
from watchdog.snapshots import TaskSnapshot, WorkerSnapshot
from watchdog.verdict import Reason, Verdict

FORCED_STOP_REASON = "Forced stop (non-responsive)"
AGENT_MESSAGE_PREFIX = "Changed by clearml-agent"
AGENT_SIGTERM_REASON = "user abort"  # what the agent writes when it is SIGTERMed, despite the words
EXIT_CODE = re.compile(r"worker execution exit code (-?\d+)")
SIGTERM_CODES = frozenset({-15, 143})
SIGKILL_CODES = frozenset({-9, 137})
FINISHED_STATUSES = frozenset({"completed", "published", "publishing", "closed"})
WAITING_STATUSES = frozenset({"created", "queued"})


@dataclass(frozen=True)
class Thresholds:
    task_stale_s: float
    worker_stale_s: float


@dataclass(frozen=True)
class Scope:
    """Which tasks are the watchdog's business. None means "any"."""

    queue_ids: frozenset[str] | None = None
    project_ids: frozenset[str] | None = None
    exclude_tags: frozenset[str] = field(default_factory=frozenset)
    self_task_id: str = ""


@dataclass(frozen=True)
class LiveWorkers:
    """For each task id, the newest report of a worker that says it runs that task."""

    last_report_by_task: Mapping[str, tuple[str, datetime]]

    @classmethod
    def from_workers(cls, workers: Iterable[WorkerSnapshot]) -> LiveWorkers:
        latest: dict[str, tuple[str, datetime]] = {}
        for worker in workers:
            if not worker.task_id or worker.last_report_time is None:
                continue
            known = latest.get(worker.task_id)
            if known is None or worker.last_report_time > known[1]:
                latest[worker.task_id] = (worker.id, worker.last_report_time)
        return cls(latest)

    def reporter(self, task_id: str) -> tuple[str, datetime] | None:
        return self.last_report_by_task.get(task_id)


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


def _out_of_scope(task: TaskSnapshot, scope: Scope) -> str | None:
    if scope.self_task_id and task.id == scope.self_task_id:
        return "this is the watchdog's own task"
    if "development" in task.system_tags:
        return "a local development run: there is no agent to lose"
    if HANDLED_TAG in task.tags:
        return "already handled by the watchdog"
    excluded = scope.exclude_tags.intersection(task.tags)
    if excluded:
        return f"tagged {sorted(excluded)[0]!r}, which the watchdog is told to leave alone"
    if scope.queue_ids is not None and task.queue_id not in scope.queue_ids:
        return "ran on a queue the watchdog does not watch" if task.queue_id else "was never enqueued"
    if scope.project_ids is not None and task.project_id not in scope.project_ids:
        return "belongs to a project the watchdog does not watch"
    return None


def classify(task: TaskSnapshot, workers: LiveWorkers, now: datetime, scope: Scope, thresholds: Thresholds) -> Verdict:
    """The verdict for one task at `now` (server time)."""
    why_not = _out_of_scope(task, scope)
    if why_not is not None:
        return Verdict(Reason.IGNORED, why_not)
    if task.status == "in_progress":
        return _running(task, workers, now, thresholds)
    if task.status == "stopped":
        return _stopped(task)
    if task.status == "failed":
        return _failed(task)
    if task.status in WAITING_STATUSES:
        return Verdict(Reason.HEALTHY, f"{task.status}: waiting for an agent")
    if task.status in FINISHED_STATUSES:
        return Verdict(Reason.IGNORED, f"finished normally ({task.status})")
    return Verdict(Reason.IGNORED, f"status {task.status!r} is not one the watchdog acts on")


def _running(task: TaskSnapshot, workers: LiveWorkers, now: datetime, thresholds: Thresholds) -> Verdict:
    reporter = workers.reporter(task.id)
    report_age = _age(now, reporter[1]) if reporter else None
    if reporter and report_age is not None and report_age <= thresholds.worker_stale_s:
        return Verdict(Reason.HEALTHY, f"running on {reporter[0]}, which reported {report_age:.0f}s ago")
    heard = task.last_update or task.started or task.status_changed
    silent = _age(now, heard)
    if silent is None:
        return Verdict(Reason.IGNORED, "running but has no last_update/started date to judge by")
    if silent <= thresholds.task_stale_s:
        return Verdict(
            Reason.HEALTHY, f"last update {silent:.0f}s ago (lost only after {thresholds.task_stale_s:.0f}s)"
        )
    if task.status_message == "stopping":
        return Verdict(
            Reason.USER_ABORTED,
            f"a person asked to stop it, and its agent has been gone for {silent:.0f}s",
        )
    if reporter:
        agent = f"its worker {reporter[0]} last reported {report_age:.0f}s ago"
    elif task.last_worker:
        agent = f"no live worker reports it (last ran on {task.last_worker}, which is gone or restarted)"
    else:
        agent = "no live worker reports it"
    return Verdict(Reason.AGENT_LOST, f"no update for {silent:.0f}s and {agent}")


def _stopped(task: TaskSnapshot) -> Verdict:
    reason, message = task.status_reason, task.status_message
    if reason.startswith(STOP_REASON):
        return Verdict(Reason.AGENT_LOST, "the watchdog stopped it after its agent was lost; resuming")
    if reason == FORCED_STOP_REASON or message == FORCED_STOP_REASON:
        return Verdict(Reason.SERVER_FORCED_STOP, "the server stopped it after it stopped reporting")
    if reason == AGENT_SIGTERM_REASON and message.startswith(AGENT_MESSAGE_PREFIX):
        worker = message[len(AGENT_MESSAGE_PREFIX) :].strip()
        return Verdict(
            Reason.AGENT_STOPPED, f"its agent {worker or ''} was shut down (SIGTERM or spot notice)".replace("  ", " ")
        )
    if message.startswith("Stopped by"):
        return Verdict(Reason.USER_ABORTED, f"{message.strip()}")
    return Verdict(Reason.USER_ABORTED, f"stopped: {reason or message or 'by a person'}")


def _failed(task: TaskSnapshot) -> Verdict:
    match = EXIT_CODE.search(task.status_reason)
    if match:
        code = int(match.group(1))
        if code in SIGTERM_CODES:
            return Verdict(Reason.AGENT_STOPPED, f"the training process got SIGTERM (exit code {code}): a shutdown")
        if code in SIGKILL_CODES:
            return Verdict(
                Reason.CODE_FAILED, f"the training process was killed (exit code {code}), often out of memory"
            )
        return Verdict(Reason.CODE_FAILED, f"the training code exited with code {code}")
    return Verdict(Reason.CODE_FAILED, f"failed: {task.status_reason or task.status_message or 'no reason given'}")
