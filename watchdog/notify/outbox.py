"""The durable notification pipeline: notices in, chat messages out, nothing lost and nothing twice.

Who calls it: recovery and the service call `add(notice)` (a SQLite insert: never blocked by a chat
outage); the service's own scheduler job calls `deliver_due()` every few seconds; `/metrics` reads
`stats()`. Restart means resume: everything lives in the journal's `outbox` and `threads` tables, so a
new `Outbox` over the same file sends what was not delivered and nothing that was.

The stages, each its own piece (Alertmanager's shape):
- dedup: `add` inserts one row per routed channel keyed "<incident>:<event>:<channel>"; a repeat is
  ignored (and logged with that reason);
- plan (`plan.plan_delivery`, pure): expire, wait, or group into batches;
- pace (`pacing.Pacer`): the service's rate limit and any pause it asked for;
- send (a `Channel`): one request, a `SendResult`;
- record: rows become `sent` (conditional UPDATE ... WHERE state='pending') only after a success; a
  failure schedules the next try with backoff + jitter (never before a 429's retry_after), or marks the
  row `dead` when the message can never go or the retry budget is spent; both with a log line.
Threads: the first message of an incident on a channel is remembered in `threads`; follow-ups reply to
it and, where the channel can, the first message is then edited to show where the incident stands. Edits
go after a pass's messages, within the same rate limits, a few tries each; they are kept in memory only
(cosmetic: the reply in the thread already carries the news).

Delivery is at-least-once: a crash between a successful request and the UPDATE resends that message.
`deliver_due` bounds its own time (`budget_s`) and stops trying a channel after its first failure in a
pass, so a dead chat service costs at most one timeout per channel per pass.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import structlog

from watchdog.journal import Journal
from watchdog.notify.channel import Channel, Message, Outcome, SendResult
from watchdog.notify.notice import EventKind, Notice
from watchdog.notify.pacing import Pacer
from watchdog.notify.plan import Batch, PendingRow, backoff_s, first_attempt_at, plan_delivery
from watchdog.notify.redact import redact_known
from watchdog.notify.render import render
from watchdog.notify.settings import NotifySettings
from watchdog.servertime import parse_timestamp

log = structlog.get_logger(__name__)

_FOLLOW_UPS = tuple(e.value for e in EventKind if not e.opens_incident and e is not EventKind.TEST)
_OPENERS = tuple(e.value for e in EventKind if e.opens_incident)
_MAX_ROWS_PER_PASS = 5000
_CHUNK = 400  # ids per IN (...) list, under SQLite's variable limit
_EDIT_TRIES = 3


class SqlExecutor(Protocol):
    """What `add` needs from a journal transaction (`Journal.transaction()` yields one)."""

    def execute(self, sql: str, params: tuple[Any, ...] = ...) -> int: ...


def _iso(moment: datetime) -> str:
    """Fixed-width UTC ISO-8601, so SQLite's text comparisons (ORDER BY, MIN) order by time."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _time(value: object, fallback: datetime) -> datetime:
    parsed = parse_timestamp(value)
    return parsed if parsed is not None else fallback


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class DeliveryReport:
    """What one `deliver_due` pass did (for logs, tests and the service's status line)."""

    messages: int = 0  # chat messages sent (a grouped message counts once)
    delivered: int = 0  # notices delivered
    failed: int = 0  # notices whose send failed this pass (retried later or dead)
    expired: int = 0
    dead: int = 0
    edits: int = 0
    skipped: int = 0  # batches left for a later pass: rate limit, pause, time budget
    out_of_time: bool = False


@dataclass(frozen=True)
class OutboxStats:
    """Counters since start (per channel) plus the journal's current backlog, for /metrics."""

    delivered: Mapping[str, int]  # notices delivered
    messages: Mapping[str, int]  # chat messages sent
    failed: Mapping[str, int]  # failed send attempts (counted per notice)
    expired: Mapping[str, int]
    dead: Mapping[str, int]
    edits: Mapping[str, int]  # successful edits of an incident's first message
    edit_failures: Mapping[str, int]
    depth: Mapping[str, int]  # pending rows per channel right now
    oldest_pending_s: float | None  # age of the oldest pending row, None when the outbox is empty


@dataclass
class _Counters:
    delivered: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    expired: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    edits: Counter[str] = field(default_factory=Counter)
    edit_failures: Counter[str] = field(default_factory=Counter)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Outbox:
    """Routes notices to channels, persists them, and delivers them when due."""

    def __init__(
        self,
        journal: Journal,
        settings: NotifySettings,
        channels: Iterable[Channel] | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        budget_s: float = 20.0,
        max_group: int = 50,
    ) -> None:
        self._journal = journal
        if channels is None:
            from watchdog.notify.build import build_channels  # late: build imports this module

            channels = build_channels(settings)
        self._channels: dict[str, Channel] = {c.name: c for c in channels}
        self._settings = settings
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._budget_s = budget_s
        self._max_group = max_group
        self._routes = {name: settings.events_for(name) for name in self._channels}
        self._pacer = Pacer()
        self._counters = _Counters()
        self._counter_lock = threading.Lock()
        self._pass_lock = threading.Lock()
        self._pass_started = 0.0
        # First messages to edit because their incidents moved on: (channel, remote_ref) -> failed tries.
        # In memory on purpose: the edit is cosmetic (the thread reply carries the news).
        self._dirty_heads: dict[tuple[str, str], int] = {}
        self._pass_budget_s = budget_s

    def __repr__(self) -> str:
        return f"Outbox(channels={sorted(self._channels)})"

    @property
    def channels(self) -> Mapping[str, Channel]:
        return dict(self._channels)

    def routes_for(self, event: EventKind) -> list[str]:
        """The channels that take `event`, in a stable order."""
        return sorted(name for name, events in self._routes.items() if event in events)

    # --- dedup / enqueue ----------------------------------------------------------------------------

    def add(self, notice: Notice, *, tx: SqlExecutor | None = None) -> list[str]:
        """Queue `notice` for every channel that takes its event; returns the channels newly queued.

        Idempotent: the same notice (same incident and event) is queued once per channel, however often
        it is added. Pass `tx` to write inside the caller's journal transaction (atomic with the incident).
        """
        targets = self.routes_for(notice.event)
        if not targets:
            log.debug("notify.not_routed", key=notice.key, notify_event=notice.event.value)
            return []
        created = self._clock()
        due = first_attempt_at(created, self._settings.group_wait_s)
        payload = notice.to_json()

        def insert(db: SqlExecutor) -> list[str]:
            queued = []
            for channel in targets:
                inserted = db.execute(
                    "INSERT OR IGNORE INTO outbox(key, channel, incident_id, event, payload, created_at, state,"
                    " attempts, next_attempt_at) VALUES(?,?,?,?,?,?,'pending',0,?)",
                    (
                        f"{notice.key}:{channel}",
                        channel,
                        notice.incident_id,
                        notice.event.value,
                        payload,
                        _iso(created),
                        _iso(due),
                    ),
                )
                if inserted:
                    queued.append(channel)
            return queued

        if tx is not None:
            queued = insert(tx)
        else:
            with self._journal.transaction() as db:
                queued = insert(db)
        repeated = sorted(set(targets) - set(queued))
        if repeated:
            log.debug("notify.duplicate_ignored", key=notice.key, channels=repeated, reason="already in the outbox")
        if queued:
            log.debug("notify.queued", key=notice.key, channels=queued, due=_iso(due))
        return queued

    # --- reading ------------------------------------------------------------------------------------

    def pending(self) -> list[PendingRow]:
        """Every undelivered row, oldest first (also what a restarted watchdog resumes from)."""
        rows = self._journal.query(
            "SELECT * FROM outbox WHERE state = 'pending' ORDER BY created_at, key LIMIT ?", (_MAX_ROWS_PER_PASS,)
        )
        result: list[PendingRow] = []
        for row in rows:
            try:
                notice = Notice.from_json(row["payload"])
                event = EventKind(row["event"])
            except (ValueError, KeyError, TypeError) as error:
                log.error("notify.bad_row", key=row["key"], error=str(error))
                self._finish([row["key"]], "dead", f"unreadable row: {error}", self._clock())
                continue
            created = _time(row["created_at"], self._clock())
            result.append(
                PendingRow(
                    key=row["key"],
                    channel=row["channel"],
                    incident_id=row["incident_id"],
                    event=event,
                    created_at=created,
                    attempts=int(row["attempts"]),
                    next_attempt_at=_time(row["next_attempt_at"], created),
                    notice=notice,
                    last_error=row["last_error"] or "",
                )
            )
        return result

    def _threads(self, rows: Sequence[PendingRow]) -> dict[tuple[str, str], str]:
        incidents = sorted({r.incident_id for r in rows if not r.event.opens_incident})
        found: dict[tuple[str, str], str] = {}
        for chunk in _chunks(incidents):
            marks = ",".join("?" * len(chunk))
            for row in self._journal.query(
                f"SELECT incident_id, channel, remote_ref FROM threads WHERE incident_id IN ({marks})", tuple(chunk)
            ):
                found[(row["incident_id"], row["channel"])] = row["remote_ref"]
        return found

    def thread_of(self, incident_id: str, channel: str) -> str:
        """The remembered first message of an incident on a channel ("" if none)."""
        rows = self._journal.query(
            "SELECT remote_ref FROM threads WHERE incident_id = ? AND channel = ?", (incident_id, channel)
        )
        return str(rows[0]["remote_ref"]) if rows else ""

    def next_due_at(self) -> datetime | None:
        rows = self._journal.query("SELECT MIN(next_attempt_at) AS due FROM outbox WHERE state = 'pending'")
        return parse_timestamp(rows[0]["due"]) if rows and rows[0]["due"] else None

    def stats(self) -> OutboxStats:
        depth_rows = self._journal.query(
            "SELECT channel, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox"
            " WHERE state = 'pending' GROUP BY channel"
        )
        depth = {str(r["channel"]): int(r["n"]) for r in depth_rows}
        oldest = [t for t in (parse_timestamp(r["oldest"]) for r in depth_rows) if t is not None]
        age = (self._clock() - min(oldest)).total_seconds() if oldest else None
        with self._counter_lock:
            c = self._counters
            return OutboxStats(
                delivered=dict(c.delivered),
                messages=dict(c.messages),
                failed=dict(c.failed),
                expired=dict(c.expired),
                dead=dict(c.dead),
                edits=dict(c.edits),
                edit_failures=dict(c.edit_failures),
                depth=depth,
                oldest_pending_s=age,
            )

    def _count(self, name: str, channel: str, amount: int = 1) -> None:
        with self._counter_lock:
            counter: Counter[str] = getattr(self._counters, name)
            counter[channel] += amount

    # --- delivery -----------------------------------------------------------------------------------

    def deliver_due(self, now: datetime | None = None, *, budget_s: float | None = None) -> DeliveryReport:
        """One delivery pass: expire what is too old, send what is due, record every outcome.

        Never raises for a chat problem and never sleeps. Takes at most `budget_s` (default: the
        outbox's): a request is started only if its timeout still fits, so a pass at shutdown can be
        given a small budget. Returns at once if another pass is running.
        """
        if not self._pass_lock.acquire(blocking=False):
            log.debug("notify.pass_busy")
            return DeliveryReport()
        try:
            return self._deliver(now or self._clock(), self._budget_s if budget_s is None else budget_s)
        finally:
            self._pass_lock.release()

    def _fits(self, channel: Channel) -> bool:
        """Whether one more request on `channel`, at its full timeout, still ends within this pass's budget."""
        return self._monotonic() - self._pass_started + channel.traits.timeout_s <= self._pass_budget_s

    def _deliver(self, now: datetime, budget_s: float) -> DeliveryReport:
        self._pass_started = self._monotonic()
        self._pass_budget_s = budget_s
        rows = self.pending()
        plan = plan_delivery(
            rows,
            now,
            max_age_s=self._settings.max_age_s,
            channels={name: ch.traits for name, ch in self._channels.items()},
            threads=self._threads(rows),
            max_group=self._max_group,
        )
        report: Counter[str] = Counter()
        for row in plan.expire:
            if self._finish([row.key], "expired", f"older than max_age_s={self._settings.max_age_s:g}", now):
                self._count("expired", row.channel)
                report["expired"] += 1
                log.warning(
                    "notify.expired",
                    key=row.key,
                    channel=row.channel,
                    notify_event=row.event.value,
                    age_s=round((now - row.created_at).total_seconds()),
                    max_age_s=self._settings.max_age_s,
                    attempts=row.attempts,
                    last_error=row.last_error,
                    note="too old to matter; dropped instead of arriving late",
                )
        failed_channels: set[str] = set()
        out_of_time = False
        for batch in plan.batches:
            channel = self._channels[batch.channel]
            if batch.channel in failed_channels:
                report["skipped"] += 1
                continue
            if not self._fits(channel):
                out_of_time = True
                report["skipped"] += 1
                continue
            why = self._pacer.blocked(batch.channel, channel.traits, now)
            if why:
                log.debug("notify.deferred", channel=batch.channel, reason=why, size=len(batch.rows))
                report["skipped"] += 1
                continue
            try:
                self._send_batch(channel, batch, now, report, failed_channels)
            except Exception:  # a bug in rendering or recording must not stop the other batches
                log.exception("notify.batch_failed", channel=batch.channel, keys=[r.key for r in batch.rows][:10])
                failed_channels.add(batch.channel)
        self._edit_pending_heads(now, failed_channels, report)
        if out_of_time:
            log.info("notify.pass_out_of_time", budget_s=budget_s, note="the rest goes in the next pass")
        return DeliveryReport(
            messages=report["messages"],
            delivered=report["delivered"],
            failed=report["failed"],
            expired=report["expired"],
            dead=report["dead"],
            edits=report["edits"],
            skipped=report["skipped"],
            out_of_time=out_of_time,
        )

    def _send_batch(
        self, channel: Channel, batch: Batch, now: datetime, report: Counter[str], failed: set[str]
    ) -> None:
        traits = channel.traits
        text = render(batch.notices, traits.format, now)
        self._pacer.spend(channel.name, traits, now)
        result = self._safe_send(channel, Message(text, thread_ref=batch.thread_ref))
        keys = [row.key for row in batch.rows]
        if result.ok:
            self._pacer.resume(channel.name)
            marked = self._mark_sent(batch, result.remote_ref, now, traits.threads)
            self._count("delivered", channel.name, marked)
            self._count("messages", channel.name)
            report["messages"] += 1
            report["delivered"] += marked
            log.info(
                "notify.delivered",
                channel=channel.name,
                notify_event=batch.event.value,
                notices=len(keys),
                incidents=sorted({r.incident_id for r in batch.rows})[:10],
                in_thread=bool(batch.thread_ref),
                remote_ref=result.remote_ref,
            )
            if batch.thread_ref and traits.edits and not batch.event.opens_incident:
                self._dirty_heads.setdefault((channel.name, batch.thread_ref), 0)
            return
        self._count("failed", channel.name, len(keys))
        report["failed"] += len(keys)
        attempts = max(row.attempts for row in batch.rows) + 1
        delay = backoff_s(attempts, self._settings.retry, self._rng.random(), result.retry_after_s)
        retry_at = now + timedelta(seconds=delay)
        give_up = result.outcome is Outcome.REJECTED
        dead_keys = [r.key for r in batch.rows if give_up or r.attempts + 1 >= self._settings.retry.max_attempts]
        retry_keys = [k for k in keys if k not in dead_keys]
        error = redact_known(result.describe())[:500]
        if retry_keys:
            self._record_failure(retry_keys, error, retry_at)
        if dead_keys and self._finish(dead_keys, "dead", error, now, count_attempt=True):
            self._count("dead", channel.name, len(dead_keys))
            report["dead"] += len(dead_keys)
            log.error(
                "notify.dead",
                channel=channel.name,
                notify_event=batch.event.value,
                keys=dead_keys[:10],
                notices=len(dead_keys),
                error=error,
                reason="the service refused this message"
                if give_up
                else f"no success after {self._settings.retry.max_attempts} attempts",
            )
        if retry_keys:
            log.warning(
                "notify.send_failed",
                channel=channel.name,
                notify_event=batch.event.value,
                notices=len(retry_keys),
                attempt=attempts,
                error=error,
                retry_at=_iso(retry_at),
                retry_after_s=result.retry_after_s,
            )
        if result.retryable:
            failed.add(channel.name)
            self._pacer.pause(channel.name, traits, now, retry_at, result.error or result.outcome.value)

    def _safe_send(self, channel: Channel, message: Message) -> SendResult:
        """A channel must not raise; if one does (a bug), treat it as a transient failure, not a crash."""
        try:
            return channel.send(message)
        except Exception as error:
            log.exception("notify.channel_raised", channel=channel.name)
            return SendResult(Outcome.RETRY, error=redact_known(f"{type(error).__name__}: {error}"))

    # --- recording ----------------------------------------------------------------------------------

    def _mark_sent(self, batch: Batch, remote_ref: str, now: datetime, threads: bool) -> int:
        marked = 0
        with self._journal.transaction() as db:
            for row in batch.rows:
                marked += db.execute(
                    "UPDATE outbox SET state = 'sent', sent_at = ?, remote_ref = ?, attempts = attempts + 1,"
                    " last_error = '' WHERE key = ? AND state = 'pending'",
                    (_iso(now), remote_ref, row.key),
                )
                if threads and remote_ref and row.event.opens_incident:
                    db.execute(
                        "INSERT OR IGNORE INTO threads(incident_id, channel, remote_ref) VALUES(?,?,?)",
                        (row.incident_id, row.channel, remote_ref),
                    )
        return marked

    def _record_failure(self, keys: Sequence[str], error: str, retry_at: datetime) -> None:
        with self._journal.transaction() as db:
            for key in keys:
                db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
                    " WHERE key = ? AND state = 'pending'",
                    (error, _iso(retry_at), key),
                )

    def _finish(self, keys: Sequence[str], state: str, note: str, now: datetime, count_attempt: bool = False) -> int:
        bump = ", attempts = attempts + 1" if count_attempt else ""
        changed = 0
        with self._journal.transaction() as db:
            for key in keys:
                changed += db.execute(
                    f"UPDATE outbox SET state = ?, last_error = ?, next_attempt_at = ?{bump}"
                    " WHERE key = ? AND state = 'pending'",
                    (state, note, _iso(now), key),
                )
        return changed

    # --- the first message, kept current ------------------------------------------------------------

    def _edit_pending_heads(self, now: datetime, failed: set[str], report: Counter[str]) -> None:
        """Edit first messages whose incidents moved on, after this pass's messages (edits matter less)."""
        for (name, head_ref), tries in list(self._dirty_heads.items()):
            channel = self._channels.get(name)
            if channel is None:
                del self._dirty_heads[(name, head_ref)]
                continue
            if name in failed or self._pacer.blocked(name, channel.traits, now) or not self._fits(channel):
                continue  # a later pass
            try:
                result = self._edit_first_message(channel, head_ref, now)
            except Exception:  # a bug here must not stop deliveries
                log.exception("notify.edit_crashed", channel=name, remote_ref=head_ref)
                result = SendResult(Outcome.REJECTED, error="internal error")
            if result is None or result.ok:
                del self._dirty_heads[(name, head_ref)]
                if result is not None:
                    report["edits"] += 1
                continue
            self._count("edit_failures", name)
            gives_up = not result.retryable or tries + 1 >= _EDIT_TRIES
            log.warning(
                "notify.edit_failed",
                channel=name,
                remote_ref=head_ref,
                error=redact_known(result.describe()),
                will_retry=not gives_up,
                note="the reply in the thread carries the news; only the first message's status is stale",
            )
            if gives_up:
                del self._dirty_heads[(name, head_ref)]
            else:
                self._dirty_heads[(name, head_ref)] = tries + 1
            if result.retryable:
                failed.add(name)
                pause = result.retry_after_s or self._settings.retry.first_delay_s
                self._pacer.pause(name, channel.traits, now, now + timedelta(seconds=pause), result.error)

    def _edit_first_message(self, channel: Channel, head_ref: str, now: datetime) -> SendResult | None:
        """Re-render an incident's first message with where each incident stands now (None: nothing to do)."""
        marks = ",".join("?" * len(_OPENERS))
        heads = self._journal.query(
            f"SELECT payload, sent_at FROM outbox WHERE channel = ? AND remote_ref = ? AND state = 'sent'"
            f" AND event IN ({marks}) ORDER BY created_at, key",
            (channel.name, head_ref, *_OPENERS),
        )
        if not heads:
            return None
        openers = [Notice.from_json(r["payload"]) for r in heads]
        sent_at = _time(heads[0]["sent_at"], now)
        incidents = sorted({n.incident_id for n in openers})
        status: dict[str, Notice] = {}
        follow_marks = ",".join("?" * len(_FOLLOW_UPS))
        for chunk in _chunks(incidents):
            id_marks = ",".join("?" * len(chunk))
            for row in self._journal.query(
                f"SELECT payload FROM outbox WHERE channel = ? AND state = 'sent' AND incident_id IN ({id_marks})"
                f" AND event IN ({follow_marks})",
                (channel.name, *chunk, *_FOLLOW_UPS),
            ):
                notice = Notice.from_json(row["payload"])
                known = status.get(notice.incident_id)
                if known is None or notice.occurred_at >= known.occurred_at:
                    status[notice.incident_id] = notice
        if not status:
            return None
        # Rendered as of when it was first sent (so it does not suddenly read "delivery was delayed").
        text = render(openers, channel.traits.format, sent_at, status=status)
        self._pacer.spend(channel.name, channel.traits, now)
        result = self._safe_send(channel, Message(text, edit_ref=head_ref))
        if result.ok:
            self._count("edits", channel.name)
            log.info("notify.first_message_updated", channel=channel.name, remote_ref=head_ref)
        return result
