"""One reconcile cycle: observe ClearML, classify, decide, act, and make every step safe to repeat.

Who calls it: the service (every poll interval) and `clearml-watchdog once`. This is the only module
that sequences side effects; detect, policy and checkpoint decide, the gateway does the I/O.

Exactly once per loss. For a lost task T, each step checks ClearML before acting, so a crash between
any two steps is repaired by the next cycle from what ClearML shows:
  1. agent_lost: mark T stopped with the watchdog's reason (the UI stops showing a zombie; the next
     cycle still recognises T as agent_lost from that reason).
  2. look for T's clones for this attempt (`parent == T`, resume + attempt tags); if there are none,
     clone T (full hyperparameters with the checkpoint injected) and look again.
  3. the OLDEST clone wins (by creation time, then id); other drafts are deleted. Every caller, even a
     second watchdog started by mistake, sees the oldest clone, so all agree on one.
  4. enqueue the winner by queue id, only while it is still a draft.
  5. journal + outbox (idempotent keys), then tag T `watchdog:handled`: handled tasks are never
     looked at again, and the notification was stored before the tag, so it cannot be lost.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from watchdog import lineage as tags
from watchdog.checkpoint import choose, inject
from watchdog.config import WatchdogConfig
from watchdog.detect import LiveWorkers, Scope, Thresholds, classify
from watchdog.errors import ClearMLRejected, ClearMLUnavailable
from watchdog.gateway import Gateway, since_or_default
from watchdog.journal import IncidentRow, Journal
from watchdog.notify.notice import EventKind, Notice
from watchdog.policy import Action, confirm_with_checkpoint, decide
from watchdog.servertime import to_wire
from watchdog.snapshots import TaskSnapshot
from watchdog.verdict import ActionKind, Reason, Verdict

log = structlog.get_logger(__name__)

CURSOR_KEY = "ended_cursor"
CURSOR_OVERLAP = timedelta(seconds=30)  # Date has 1 s resolution; servers may disagree a little
FIRST_LOOKBACK = timedelta(minutes=15)  # on a fresh journal, endings older than this are history
SCOPE_REFRESH = timedelta(minutes=10)
MAX_REFUSALS = 3  # ClearML refusing the same recovery this many cycles in a row: give up, report
RUNNING_CLONE_STATUSES = frozenset({"in_progress", "completed", "published", "publishing", "closed"})


class NoticeSink(Protocol):
    """Where notices go (the outbox). `add` must be idempotent by `notice.key`."""

    def add(self, notice: Notice) -> object: ...


@dataclass
class TaskOutcome:
    """What the cycle thought and did about one task (the rows of `once --json`)."""

    task_id: str
    name: str
    status: str
    verdict: str
    explanation: str
    action: str
    why: str
    incident_id: str = ""
    clone_id: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class CycleReport:
    started_at: datetime
    finished: bool = False  # False: ClearML unreachable (blind) or interrupted by shutdown
    blind_reason: str = ""
    outcomes: list[TaskOutcome] = field(default_factory=list)
    running_tasks: int = 0
    workers: int = 0
    recoveries: int = 0
    gave_up: int = 0
    reported: int = 0
    resolved: int = 0
    failures: int = 0  # actions ClearML refused (retried next cycle)
    detection_delays_s: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.finished and self.failures == 0

    def summary(self) -> str:
        if not self.finished:
            return f"blind: {self.blind_reason}" if self.blind_reason else "interrupted"
        return (
            f"{self.running_tasks} running, {self.workers} workers, {self.recoveries} requeued, "
            f"{self.gave_up} gave up, {self.reported} reported, {self.resolved} recovered, {self.failures} failed"
        )


@dataclass(frozen=True)
class ResolvedScope:
    scope: Scope
    project_ids: list[str] | None
    warnings: list[str]


def resolve_scope(gateway: Gateway, config: WatchdogConfig, self_task_id: str) -> ResolvedScope:
    """Watched queue and project names to ids. A name that doesn't exist is a warning, not an error:
    the queue may be created later (the next refresh picks it up)."""
    warnings: list[str] = []
    watch = config.watch
    queue_ids: frozenset[str] | None = None
    if watch.queues:
        names = list(watch.queues)
        if config.recover.fallback_queue:
            names.append(config.recover.fallback_queue)
        by_name = {name: qid for qid, name in gateway.queue_names(refresh=True).items()}
        for name in names:
            if name not in by_name:
                warnings.append(f"queue {name!r} does not exist on the ClearML server (yet): not watched")
        queue_ids = frozenset(by_name[n] for n in names if n in by_name)
    project_ids: frozenset[str] | None = None
    if watch.projects:
        found = gateway.project_ids(watch.projects)
        for name in watch.projects:
            if name not in found:
                warnings.append(f"project {name!r} does not exist on the ClearML server: not watched")
        project_ids = frozenset(found.values())
    scope = Scope(
        queue_ids=queue_ids,
        project_ids=project_ids,
        exclude_tags=frozenset(watch.exclude_tags),
        self_task_id=self_task_id,
    )
    return ResolvedScope(scope, sorted(project_ids) if project_ids is not None else None, warnings)


class Reconciler:
    """Runs cycles against one ClearML server with one journal."""

    def __init__(
        self,
        gateway: Gateway,
        journal: Journal,
        outbox: NoticeSink,
        config: WatchdogConfig,
        *,
        self_task_id: str | None = None,
        dry_run: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.gateway = gateway
        self.journal = journal
        self.outbox = outbox
        self.config = config
        self.dry_run = dry_run
        self.should_stop = should_stop
        self.self_task_id = os.environ.get("CLEARML_TASK_ID", "") if self_task_id is None else self_task_id
        self.thresholds = Thresholds(config.detect.task_stale_s, config.detect.worker_stale_s)
        self._scope: Scope | None = None
        self._scope_at: datetime | None = None
        self._project_ids: list[str] | None = None

    # --- scope ---------------------------------------------------------------------------------------

    def check_scope(self) -> list[str]:
        """Resolve watched names to ids (again); returns warnings for names that don't exist."""
        resolved = resolve_scope(self.gateway, self.config, self.self_task_id)
        self._scope, self._project_ids = resolved.scope, resolved.project_ids
        self._scope_at = self.gateway.server_now()
        for warning in resolved.warnings:
            log.warning("watch_scope", problem=warning)
        return resolved.warnings

    def _current_scope(self, now: datetime) -> Scope:
        if self._scope is None or self._scope_at is None or now - self._scope_at > SCOPE_REFRESH:
            self.check_scope()
        assert self._scope is not None
        return self._scope

    # --- the cycle -------------------------------------------------------------------------------------

    def run_cycle(self) -> CycleReport:
        report = CycleReport(started_at=self.gateway.server_now())
        try:
            self._observe_and_act(report)
        except ClearMLUnavailable as error:
            report.blind_reason = str(error)
            log.warning("clearml_unreachable", problem=str(error), next_try="next cycle")
        return report

    def _observe_and_act(self, report: CycleReport) -> None:
        workers = self.gateway.list_workers()
        now = self.gateway.server_now()  # the server's clock, read from the answer just received
        report.started_at = now
        scope = self._current_scope(now)
        live = LiveWorkers.from_workers(workers)
        running = self.gateway.list_running(self._project_ids)
        since = since_or_default(self.journal.get_value(CURSOR_KEY), now - FIRST_LOOKBACK) - CURSOR_OVERLAP
        ended = self.gateway.list_ended_since(since, self._project_ids, exclude_tags=[tags.HANDLED_TAG])
        open_incidents = [] if self.dry_run else self.journal.open_incidents()
        followed = self._refetch(open_incidents)
        report.running_tasks, report.workers = len(running), len(workers)

        candidates: dict[str, TaskSnapshot] = {}
        for task in [*running, *ended, *followed.values()]:
            candidates[task.id] = task  # later (fresher, by-id) snapshots win
        for task in candidates.values():
            if self.should_stop():
                log.info("cycle_interrupted", reason="shutting down", left=len(candidates))
                return
            self._consider(task, live, now, scope, report)
        if not self.dry_run:
            self._follow_up(open_incidents, followed, now, report)
            if not self.should_stop():
                self.journal.set_value(CURSOR_KEY, to_wire(now))
        report.finished = True

    def _refetch(self, incidents: list[IncidentRow]) -> dict[str, TaskSnapshot]:
        """Current snapshots of the originals and clones of open incidents (one call, none when idle)."""
        ids = {row.task_id for row in incidents} | {row.clone_id for row in incidents if row.clone_id}
        return {task.id: task for task in self.gateway.get_tasks(ids)} if ids else {}

    def _consider(
        self, task: TaskSnapshot, live: LiveWorkers, now: datetime, scope: Scope, report: CycleReport
    ) -> None:
        verdict = classify(task, live, now, scope, self.thresholds)
        action = decide(verdict, tags.lineage_of(task.id, task.tags), self.config.recover)
        outcome = TaskOutcome(
            task.id, task.name, task.status, verdict.reason.value, verdict.explanation, action.kind.value, action.why
        )
        report.outcomes.append(outcome)
        if action.kind is ActionKind.NOTHING:
            return
        log.info(
            "decision",
            task_id=task.id,
            task=task.name,
            verdict=verdict.reason.value,
            reason=verdict.explanation,
            action=action.kind.value,
            why=action.why,
            dry_run=self.dry_run,
        )
        if self.dry_run:
            return
        try:
            if action.kind is ActionKind.NOTIFY_ONLY:
                if self._report_only(task, verdict, action, now, outcome):
                    report.reported += 1
            else:
                self._recover(task, verdict, action, live, now, outcome, report)
        except ClearMLRejected as error:
            outcome.error = str(error)
            report.failures += 1
            self._note_refusal(task, verdict, action, now, error)

    # --- report-only endings ---------------------------------------------------------------------------

    def _report_only(
        self, task: TaskSnapshot, verdict: Verdict, action: Action, now: datetime, outcome: TaskOutcome
    ) -> bool:
        when = task.status_changed.isoformat() if task.status_changed else "unknown"
        incident_id = f"{task.id}:{verdict.reason.value}:{when}"
        outcome.incident_id = incident_id
        known = self.journal.get_incident(incident_id)
        if known is not None and known.closed_at:
            return False  # already reported (the cursor window overlaps on purpose)
        # Recorded but not closed: a crash came between the journal and the outbox; finish it (add is idempotent).
        notice = self._notice(EventKind(verdict.reason.value), incident_id, task, verdict, action, now)
        self.journal.open_incident(
            incident_id=incident_id,
            task_id=task.id,
            task_name=task.name,
            root_id=tags.lineage_of(task.id, task.tags).root_id,
            reason=verdict.reason.value,
            explanation=verdict.explanation,
            action=action.kind.value,
            state="reported",
            attempt=None,
            detail={"notice": notice.to_json()},
            now=now,
            note=action.why,
        )
        self.outbox.add(notice)
        self.journal.update_incident(incident_id, state="reported", now=now, note="reported", closed=True)
        return True

    # --- losses ------------------------------------------------------------------------------------

    def _recover(
        self,
        task: TaskSnapshot,
        verdict: Verdict,
        action: Action,
        live: LiveWorkers,
        now: datetime,
        outcome: TaskOutcome,
        report: CycleReport,
    ) -> None:
        incident_id = f"{task.id}:loss"
        outcome.incident_id = incident_id
        lineage = tags.lineage_of(task.id, task.tags)
        silent_for = (now - task.last_update).total_seconds() if task.last_update else None
        if (
            self.journal.open_incident(
                incident_id=incident_id,
                task_id=task.id,
                task_name=task.name,
                root_id=lineage.root_id,
                reason=verdict.reason.value,
                explanation=verdict.explanation,
                action=action.kind.value,
                state="open",
                attempt=action.attempt,
                detail={"silent_for_s": silent_for},
                now=now,
                note=f"{verdict.explanation}; {action.why}",
            )
            and silent_for is not None
        ):
            report.detection_delays_s.append(silent_for)
        self._stop_zombie(task, verdict)
        if action.kind is ActionKind.GIVE_UP:
            self._give_up(task, verdict, action, incident_id, now, report)
            return

        clone = self._winning_clone(task.id, action.attempt or 0)
        row = self.journal.get_incident(incident_id)
        checkpoint_uri = row.checkpoint_uri if row else ""
        resume_iteration = (row.detail.get("resume_iteration") if row else None) if row else None
        if clone is None:
            details = self.gateway.get_details(task.id)
            models = (
                self.gateway.list_output_models(task.id) if "output_model" in self.config.checkpoint.sources else []
            )
            choice = choose(details, models, self.config.checkpoint.sources, self.config.checkpoint.require_remote)
            for uri, why in choice.refused:
                log.warning("checkpoint_refused", task_id=task.id, task=task.name, uri=uri, why=why)
            checkpoint_uri = choice.checkpoint.uri if choice.checkpoint else ""
            resume_iteration = choice.checkpoint.iteration if choice.checkpoint else None
            action = confirm_with_checkpoint(action, checkpoint_uri or None, self.config.checkpoint)
            if action.kind is ActionKind.GIVE_UP:
                self._give_up(task, verdict, action, incident_id, now, report)
                return
            self.journal.update_incident(
                incident_id,
                state="open",
                now=now,
                note=f"checkpoint: {checkpoint_uri or 'none, from scratch'} ({action.why})",
                checkpoint_uri=checkpoint_uri,
                detail={"silent_for_s": silent_for, "resume_iteration": resume_iteration},
            )
            hyperparams = (
                inject(details.hyperparams, self.config.checkpoint.inject, checkpoint_uri)
                if checkpoint_uri
                else details.hyperparams
            )
            self.gateway.clone(
                task.id,
                name=details.snapshot.name or task.name,
                comment=self._clone_comment(details.comment, task, verdict, action, lineage, checkpoint_uri),
                tags=tags.clone_tags(task.tags, lineage),
                hyperparams=hyperparams,
            )
            clone = self._winning_clone(task.id, action.attempt or 0)
            if clone is None:
                raise ClearMLUnavailable("the clone just made is not listed yet")

        queue_id = self._target_queue(task, action)
        if clone.status == "created":
            self._enqueue(clone.id, queue_id, verdict, action)
        outcome.clone_id = clone.id
        notice = self._notice(
            EventKind(verdict.reason.value),
            incident_id,
            task,
            verdict,
            action,
            now,
            clone_id=clone.id,
            queue_id=queue_id,
            checkpoint_uri=checkpoint_uri,
            resume_iteration=resume_iteration,
            silent_for_s=silent_for,
        )
        self.journal.update_incident(
            incident_id,
            state="requeued",
            now=now,
            note=f"clone {clone.id} on queue {queue_id}",
            clone_id=clone.id,
            queue_id=queue_id,
            action=action.kind.value,
            detail={"notice": notice.to_json(), "silent_for_s": silent_for, "resume_iteration": resume_iteration},
        )
        self.outbox.add(notice)
        self.gateway.add_tags(task.id, [tags.HANDLED_TAG])
        report.recoveries += 1
        log.info("requeued", task_id=task.id, clone_id=clone.id, queue_id=queue_id, checkpoint=checkpoint_uri or None)

    def _stop_zombie(self, task: TaskSnapshot, verdict: Verdict) -> None:
        if verdict.reason is Reason.AGENT_LOST and task.status == "in_progress":
            self.gateway.mark_stopped(
                task.id, tags.STOP_REASON, f"Stopped by clearml-watchdog: {verdict.explanation}"[:250]
            )

    def _winning_clone(self, task_id: str, attempt: int) -> TaskSnapshot | None:
        """The oldest clone for this attempt; younger drafts (a lost race or a crash) are deleted."""
        clones = [
            c for c in self.gateway.list_children(task_id, tags.RESUMED_TAG) if tags.is_clone_for(c.tags, attempt)
        ]
        if not clones:
            return None
        clones.sort(key=lambda c: (c.created.isoformat() if c.created else "~", c.id))
        winner, losers = clones[0], clones[1:]
        for loser in losers:
            if loser.status == "created":
                try:
                    self.gateway.delete_draft(loser.id)
                    log.info("duplicate_clone_deleted", task_id=task_id, clone_id=loser.id, kept=winner.id)
                except ClearMLRejected as error:
                    log.warning("duplicate_clone_not_deleted", clone_id=loser.id, problem=str(error))
            else:
                log.error("duplicate_clone_running", task_id=task_id, clone_id=loser.id, kept=winner.id)
        return winner

    def _target_queue(self, task: TaskSnapshot, action: Action) -> str:
        if action.kind is ActionKind.ESCALATE and action.fallback_queue:
            queue_id = self.gateway.queue_id(action.fallback_queue)
            if queue_id is None:
                raise ClearMLRejected(
                    "queues.get_all", 400, 0, f"fallback queue {action.fallback_queue!r} does not exist"
                )
            return queue_id
        if not task.queue_id:
            raise ClearMLRejected("tasks.enqueue", 400, 0, "the lost task has no queue to go back to")
        return task.queue_id

    def _enqueue(self, clone_id: str, queue_id: str, verdict: Verdict, action: Action) -> None:
        try:
            self.gateway.enqueue(
                clone_id,
                queue_id,
                f"clearml-watchdog: resume after {verdict.reason.value}",
                f"attempt {action.attempt} of {self.config.recover.max_attempts}",
            )
        except ClearMLRejected as error:
            # Someone (a second watchdog, a person) enqueued it in between: fine if it left draft state.
            current = self.gateway.get_tasks([clone_id])
            if current and current[0].status != "created":
                log.info("clone_already_enqueued", clone_id=clone_id, status=current[0].status, detail=str(error))
                return
            raise

    def _give_up(
        self, task: TaskSnapshot, verdict: Verdict, action: Action, incident_id: str, now: datetime, report: CycleReport
    ) -> None:
        first = self._notice(EventKind(verdict.reason.value), incident_id, task, verdict, action, now)
        gave_up = self._notice(EventKind.GAVE_UP, incident_id, task, verdict, action, now)
        self.outbox.add(first)
        self.outbox.add(gave_up)
        self.journal.update_incident(
            incident_id, state="gave_up", now=now, note=action.why, action=action.kind.value, closed=True
        )
        self.gateway.add_tags(task.id, [tags.HANDLED_TAG])
        report.gave_up += 1
        log.warning("gave_up", task_id=task.id, task=task.name, why=action.why)

    def _note_refusal(
        self, task: TaskSnapshot, verdict: Verdict, action: Action, now: datetime, error: ClearMLRejected
    ) -> None:
        """ClearML refused a step. Retry on the next cycles; after MAX_REFUSALS, give up and say why."""
        log.warning("action_refused", task_id=task.id, task=task.name, problem=str(error))
        if not action.kind.clones and action.kind is not ActionKind.GIVE_UP:
            return
        incident_id = f"{task.id}:loss"
        row = self.journal.get_incident(incident_id)
        if row is None or row.closed_at:
            return
        refusals = int(row.detail.get("refusals", 0)) + 1
        detail = {**row.detail, "refusals": refusals, "last_refusal": str(error)}
        self.journal.update_incident(incident_id, state=row.state, now=now, note=f"refused: {error}", detail=detail)
        if refusals >= MAX_REFUSALS:
            why = f"ClearML refused the recovery {refusals} times: {error.message}"
            give_up = Action(ActionKind.GIVE_UP, why, attempt=action.attempt)
            try:
                self._give_up(task, verdict, give_up, incident_id, now, CycleReport(now))
            except ClearMLRejected as again:  # even the handled tag refused: the next cycle tries again
                log.warning("give_up_refused", task_id=task.id, problem=str(again))

    # --- follow-up of requeued incidents ------------------------------------------------------------

    def _follow_up(
        self, incidents: list[IncidentRow], current: dict[str, TaskSnapshot], now: datetime, report: CycleReport
    ) -> None:
        for row in incidents:
            if row.state == "open":
                self._settle_open(row, current.get(row.task_id), now)
                continue
            if row.state != "requeued" or not row.clone_id:
                continue
            clone = current.get(row.clone_id)
            if clone is None:
                self.journal.update_incident(
                    row.id, state="closed", now=now, note="the clone no longer exists", closed=True
                )
                continue
            if clone.status in RUNNING_CLONE_STATUSES:
                self._resolved(row, clone, now)
                report.resolved += 1
            elif clone.status not in ("created", "queued"):
                self.journal.update_incident(
                    row.id, state="closed", now=now, note=f"the clone ended {clone.status} before it ran", closed=True
                )

    def _settle_open(self, row: IncidentRow, original: TaskSnapshot | None, now: datetime) -> None:
        """An unfinished recovery whose task was since handled by someone else (a second watchdog: this one
        updates its journal before it tags) or deleted: close it quietly, instead of fetching the task every
        cycle forever. Whoever handled it sends the alerts; a follow-up from here would have no thread."""
        if original is None:
            self.journal.update_incident(row.id, state="closed", now=now, note="the task no longer exists", closed=True)
            return
        if tags.HANDLED_TAG not in original.tags or not row.id.endswith(":loss"):
            return  # still ours to finish: this cycle's _consider() did or will
        clone = self._winning_clone(row.task_id, row.attempt or 0)
        self.journal.update_incident(
            row.id,
            state="handled_elsewhere",
            now=now,
            note=f"handled by another watchdog; clone {clone.id if clone else 'not found'}",
            clone_id=clone.id if clone else "",
            closed=True,
        )

    def _resolved(self, row: IncidentRow, clone: TaskSnapshot, now: datetime) -> None:
        # A clone request that outlived its timeout can land AFTER the claim step (the SDK retried it
        # meanwhile): claim once more before closing, so that younger stray draft is deleted, not left behind.
        self._safe(lambda: self._winning_clone(row.task_id, row.attempt or 0), None)
        stored = row.detail.get("notice")
        base = Notice.from_json(stored) if isinstance(stored, str) else None
        notice = Notice(
            incident_id=row.id,
            event=EventKind.RECOVERED,
            occurred_at=now,
            task_id=row.task_id,
            task_name=row.task_name,
            project_name=base.project_name if base else "",
            task_url=base.task_url if base else "",
            clone_id=clone.id,
            clone_url=base.clone_url if base else "",
            worker=clone.last_worker,
            queue_name=base.queue_name if base else "",
            attempt=row.attempt,
            max_attempts=self.config.recover.max_attempts,
            action=row.action,
            explanation=f"the clone is running on {clone.last_worker or 'an agent'}",
            checkpoint_uri=row.checkpoint_uri,
            resume_iteration=base.resume_iteration if base else None,
        )
        self.outbox.add(notice)
        self.journal.update_incident(
            row.id, state="recovered", now=now, note=f"clone {clone.id} is {clone.status}", closed=True
        )
        log.info("recovered", task_id=row.task_id, clone_id=clone.id, worker=clone.last_worker)

    # --- wording -------------------------------------------------------------------------------------

    def _notice(
        self,
        event: EventKind,
        incident_id: str,
        task: TaskSnapshot,
        verdict: Verdict,
        action: Action,
        now: datetime,
        *,
        clone_id: str = "",
        queue_id: str = "",
        checkpoint_uri: str = "",
        resume_iteration: int | None = None,
        silent_for_s: float | None = None,
    ) -> Notice:
        queue_names = self._safe(lambda: self.gateway.queue_names(), {})
        project_name = self._safe(lambda: self.gateway.project_name(task.project_id), "")
        lost = None
        if resume_iteration is not None and task.last_iteration is not None:
            lost = max(0, task.last_iteration - resume_iteration)
        return Notice(
            incident_id=incident_id,
            event=event,
            occurred_at=now,
            task_id=task.id,
            task_name=task.name,
            project_name=project_name,
            task_url=self.gateway.task_url(task.id, task.project_id),
            clone_id=clone_id,
            clone_url=self.gateway.task_url(clone_id, task.project_id) if clone_id else "",
            worker=task.last_worker,
            queue_name=queue_names.get(queue_id or task.queue_id, queue_id or task.queue_id),
            attempt=action.attempt,
            max_attempts=self.config.recover.max_attempts if action.attempt is not None else None,
            action=action.kind.value,
            explanation=verdict.explanation if event is not EventKind.GAVE_UP else action.why,
            checkpoint_uri=checkpoint_uri,
            resume_iteration=resume_iteration,
            lost_iterations=lost,
            silent_for_s=silent_for_s,
        )

    @staticmethod
    def _safe(read: Callable[[], Any], default: Any) -> Any:
        """Names for a message are nice to have: never fail a recovery over them."""
        try:
            return read()
        except (ClearMLUnavailable, ClearMLRejected):
            return default

    def _clone_comment(
        self,
        original: str,
        task: TaskSnapshot,
        verdict: Verdict,
        action: Action,
        lineage: tags.Lineage,
        checkpoint_uri: str,
    ) -> str:
        note = (
            f"Resumed by clearml-watchdog: attempt {action.attempt} of {self.config.recover.max_attempts} "
            f"(root task {lineage.root_id}, previous run {task.id}) "
            f"after {verdict.reason.value}: {verdict.explanation}. "
            f"Checkpoint: {checkpoint_uri or 'none, starting from scratch'}."
        )
        return f"{original.rstrip()}\n\n{note}" if original.strip() else note
