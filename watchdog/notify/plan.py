"""The outbox's decisions, as pure functions: which pending rows expire, wait, or go out together.

Who calls it: `outbox.Outbox.deliver_due`, with the pending rows it read from the journal, the channels'
traits, the incident threads it knows and the time. Nothing here does I/O, so every rule is a table test.

The rules, in order:
1. Expire: a row older than `max_age_s` is never sent (an alert hours late misleads more than it helps).
2. Wait for a channel that is not configured any more (it expires in time, or goes out after a restart
   with the channel back).
3. Order: a follow-up (recovered, gave up) waits while its incident's first message on that channel is
   still pending, so it can reply in that message's thread.
4. Group: rows of one channel, one event kind and one thread go out as one message once the oldest of
   them is due (`next_attempt_at`: created + group_wait, or the retry time after a failure). Rows still
   inside their group_wait join that message; rows in retry backoff keep waiting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from watchdog.notify.channel import Traits
from watchdog.notify.notice import EventKind, Notice
from watchdog.notify.settings import RetrySettings


@dataclass(frozen=True)
class PendingRow:
    """One undelivered outbox row (one notice for one channel), as read from the journal."""

    key: str
    channel: str
    incident_id: str
    event: EventKind
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    notice: Notice
    last_error: str = ""


@dataclass(frozen=True)
class Batch:
    """Rows that go out as one message: one channel, one event kind, one thread ("" = a new message)."""

    channel: str
    event: EventKind
    thread_ref: str
    rows: tuple[PendingRow, ...]

    @property
    def notices(self) -> list[Notice]:
        return [row.notice for row in self.rows]


@dataclass(frozen=True)
class Plan:
    expire: tuple[PendingRow, ...]
    batches: tuple[Batch, ...]
    waiting: tuple[tuple[PendingRow, str], ...]  # rows not sent now, each with the reason (for debug logs)


WAIT_CHANNEL = "its channel is not configured"
WAIT_FIRST = "waits for the incident's first message"
WAIT_GROUP = "inside group_wait"
WAIT_BACKOFF = "retry backoff"


def plan_delivery(
    rows: Sequence[PendingRow],
    now: datetime,
    *,
    max_age_s: float,
    channels: Mapping[str, Traits],
    threads: Mapping[tuple[str, str], str],
    max_group: int = 50,
) -> Plan:
    """Decide, for every pending row, whether it expires, waits (and why) or goes out in which batch."""
    expire: list[PendingRow] = []
    waiting: list[tuple[PendingRow, str]] = []
    live: list[PendingRow] = []
    for row in rows:
        if (now - row.created_at).total_seconds() > max_age_s:
            expire.append(row)
        elif row.channel not in channels:
            waiting.append((row, WAIT_CHANNEL))
        else:
            live.append(row)

    open_firsts = {(r.incident_id, r.channel) for r in live if r.event.opens_incident}
    groups: dict[tuple[str, EventKind, str], list[PendingRow]] = {}
    for row in live:
        if not row.event.opens_incident and (row.incident_id, row.channel) in open_firsts:
            waiting.append((row, WAIT_FIRST))
            continue
        thread = ""
        if not row.event.opens_incident and channels[row.channel].threads:
            thread = threads.get((row.incident_id, row.channel), "")
        groups.setdefault((row.channel, row.event, thread), []).append(row)

    batches: list[Batch] = []
    for (channel, event, thread), members in groups.items():
        members.sort(key=lambda r: (r.created_at, r.key))
        if not any(r.next_attempt_at <= now for r in members):
            waiting.extend((r, WAIT_GROUP if r.attempts == 0 else WAIT_BACKOFF) for r in members)
            continue
        going = [r for r in members if r.next_attempt_at <= now or r.attempts == 0]
        waiting.extend((r, WAIT_BACKOFF) for r in members if r not in going)
        for start in range(0, len(going), max(max_group, 1)):
            batches.append(Batch(channel, event, thread, tuple(going[start : start + max_group])))
    batches.sort(key=lambda b: (b.rows[0].created_at, b.channel, b.event.value))
    return Plan(tuple(expire), tuple(batches), tuple(waiting))


def backoff_s(attempts: int, retry: RetrySettings, rand: float, retry_after_s: float | None = None) -> float:
    """Seconds until the next try after `attempts` failed ones: exponential, capped, jittered.

    `rand` is in [0, 1) (injected, so tests are exact). A service's retry_after is a floor: the next
    try is never earlier than the service asked.
    """
    exponent = max(attempts - 1, 0)
    base = min(retry.max_delay_s, retry.first_delay_s * retry.multiplier**exponent)
    jittered = base * (1.0 + retry.jitter * (2.0 * rand - 1.0))
    return max(jittered, retry_after_s or 0.0)


def first_attempt_at(created_at: datetime, group_wait_s: float) -> datetime:
    return created_at + timedelta(seconds=group_wait_s)
