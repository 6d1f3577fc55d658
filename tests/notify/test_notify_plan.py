"""The outbox's pure decisions: expire, wait (with the reason), group into batches; backoff; pacing."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
from notify_helpers import T0, notice

from watchdog.notify.channel import Traits
from watchdog.notify.notice import EventKind
from watchdog.notify.pacing import Pacer
from watchdog.notify.plan import (
    WAIT_BACKOFF,
    WAIT_CHANNEL,
    WAIT_FIRST,
    WAIT_GROUP,
    PendingRow,
    backoff_s,
    plan_delivery,
)
from watchdog.notify.render import Format
from watchdog.notify.settings import RetrySettings

THREADED = Traits(Format.TELEGRAM, threads=True, edits=True, limits=((1, 1.0),))
FLAT = Traits(Format.SLACK, threads=False, edits=False, limits=((1, 1.0),))
CHANNELS = {"telegram": THREADED, "slack": FLAT}
NOW = T0 + timedelta(seconds=100)


def row(
    incident: str,
    event: EventKind = EventKind.AGENT_LOST,
    *,
    channel: str = "telegram",
    age_s: float = 60,
    due_in_s: float = -1,
    attempts: int = 0,
) -> PendingRow:
    created = NOW - timedelta(seconds=age_s)
    return PendingRow(
        key=f"{incident}:{event.value}:{channel}",
        channel=channel,
        incident_id=incident,
        event=event,
        created_at=created,
        attempts=attempts,
        next_attempt_at=NOW + timedelta(seconds=due_in_s),
        notice=notice(incident, event),
    )


def plan(rows: list[PendingRow], threads: dict[tuple[str, str], str] | None = None, max_group: int = 50):  # type: ignore[no-untyped-def]
    return plan_delivery(rows, NOW, max_age_s=3600, channels=CHANNELS, threads=threads or {}, max_group=max_group)


def shape(rows: list[PendingRow], threads: dict[tuple[str, str], str] | None = None) -> dict[str, object]:
    """A comparable summary: which keys expire, which go together, why the others wait."""
    result = plan(rows, threads)
    return {
        "expire": sorted(r.incident_id for r in result.expire),
        "batches": [(b.channel, b.event.value, b.thread_ref, [r.incident_id for r in b.rows]) for b in result.batches],
        "waiting": sorted((r.incident_id, r.event.value, why) for r, why in result.waiting),
    }


CASES = [
    (
        "one due loss goes alone",
        [row("a")],
        {},
        {"expire": [], "batches": [("telegram", "agent_lost", "", ["a"])], "waiting": []},
    ),
    (
        "still inside group_wait: waits",
        [row("a", due_in_s=10)],
        {},
        {"expire": [], "batches": [], "waiting": [("a", "agent_lost", WAIT_GROUP)]},
    ),
    (
        "older than max_age expires, never sent",
        [row("a", age_s=3601, attempts=5)],
        {},
        {"expire": ["a"], "batches": [], "waiting": []},
    ),
    (
        "once the oldest is due, the fresh ones of the same kind join it",
        [row("a", age_s=30), row("b", age_s=20, due_in_s=10), row("c", age_s=1, due_in_s=29)],
        {},
        {"expire": [], "batches": [("telegram", "agent_lost", "", ["a", "b", "c"])], "waiting": []},
    ),
    (
        "different event kinds are different messages",
        [row("a"), row("b", EventKind.USER_ABORTED)],
        {},
        {
            "expire": [],
            "batches": [("telegram", "agent_lost", "", ["a"]), ("telegram", "user_aborted", "", ["b"])],
            "waiting": [],
        },
    ),
    (
        "each channel gets its own message",
        [row("a"), row("a", channel="slack")],
        {},
        {
            "expire": [],
            "batches": [("slack", "agent_lost", "", ["a"]), ("telegram", "agent_lost", "", ["a"])],
            "waiting": [],
        },
    ),
    (
        "a row in retry backoff does not join a due group early",
        [row("a"), row("b", attempts=2, due_in_s=30)],
        {},
        {
            "expire": [],
            "batches": [("telegram", "agent_lost", "", ["a"])],
            "waiting": [("b", "agent_lost", WAIT_BACKOFF)],
        },
    ),
    (
        "a follow-up waits while the incident's first message is pending",
        [row("a", attempts=1, due_in_s=20), row("a", EventKind.RECOVERED)],
        {},
        {
            "expire": [],
            "batches": [],
            "waiting": [("a", "agent_lost", WAIT_BACKOFF), ("a", "recovered", WAIT_FIRST)],
        },
    ),
    (
        "a follow-up replies in the first message's thread",
        [row("a", EventKind.RECOVERED)],
        {("a", "telegram"): "17"},
        {"expire": [], "batches": [("telegram", "recovered", "17", ["a"])], "waiting": []},
    ),
    (
        "follow-ups group per thread: two first messages, two replies",
        [row("a", EventKind.RECOVERED), row("b", EventKind.RECOVERED), row("c", EventKind.RECOVERED)],
        {("a", "telegram"): "17", ("b", "telegram"): "17", ("c", "telegram"): "18"},
        {
            "expire": [],
            "batches": [("telegram", "recovered", "17", ["a", "b"]), ("telegram", "recovered", "18", ["c"])],
            "waiting": [],
        },
    ),
    (
        "no thread remembered (first message expired): the follow-up stands alone",
        [row("a", EventKind.GAVE_UP)],
        {},
        {"expire": [], "batches": [("telegram", "gave_up", "", ["a"])], "waiting": []},
    ),
    (
        "a channel without threads never gets a thread ref",
        [row("a", EventKind.RECOVERED, channel="slack")],
        {("a", "slack"): "C1:1.2"},
        {"expire": [], "batches": [("slack", "recovered", "", ["a"])], "waiting": []},
    ),
    (
        "a channel no longer configured: rows wait (and expire in time)",
        [row("a", channel="discord")],
        {},
        {"expire": [], "batches": [], "waiting": [("a", "agent_lost", WAIT_CHANNEL)]},
    ),
]


@pytest.mark.parametrize(("name", "rows", "threads", "expected"), CASES, ids=[c[0] for c in CASES])
def test_plan(
    name: str, rows: list[PendingRow], threads: dict[tuple[str, str], str], expected: dict[str, object]
) -> None:
    assert shape(rows, threads) == expected


def test_big_groups_are_split_at_max_group() -> None:
    rows = [row(f"i{n:03d}", age_s=100 - n * 0.1) for n in range(120)]
    result = plan(rows, max_group=50)
    assert [len(b.rows) for b in result.batches] == [50, 50, 20]


BACKOFF = RetrySettings(first_delay_s=10, max_delay_s=600, multiplier=2, jitter=0.2, max_attempts=12)


@pytest.mark.parametrize(
    ("attempts", "rand", "retry_after", "expected"),
    [
        (1, 0.5, None, 10.0),  # first failure: first_delay, no jitter at rand=0.5
        (2, 0.5, None, 20.0),  # doubles
        (4, 0.5, None, 80.0),
        (20, 0.5, None, 600.0),  # capped at max_delay
        (1, 0.0, None, 8.0),  # jitter -20%
        (1, 0.9999999, None, 12.0),  # jitter +20%
        (1, 0.5, 45.0, 45.0),  # the service's retry_after is a floor
        (6, 0.5, 5.0, 320.0),  # ... never a ceiling
    ],
)
def test_backoff(attempts: int, rand: float, retry_after: float | None, expected: float) -> None:
    assert backoff_s(attempts, BACKOFF, rand, retry_after) == pytest.approx(expected, abs=1e-4)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_pacer_keeps_every_window() -> None:
    traits = Traits(Format.TELEGRAM, threads=True, edits=True, limits=((20, 60.0), (1, 1.0)))
    pacer = Pacer()
    sent = []
    moment = 0.0
    while moment < 180:  # try every 0.25 s for three minutes
        if not pacer.blocked("telegram", traits, at(moment)):
            pacer.spend("telegram", traits, at(moment))
            sent.append(moment)
        moment += 0.25
    assert len(sent) == 60  # 20 a minute, exactly
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(sent))  # never two within a second
    assert all(len([t for t in sent if s <= t < s + 60]) <= 20 for s in sent)


def test_pacer_pause_holds_until_the_time_given() -> None:
    traits = Traits(Format.SLACK, threads=False, edits=False, limits=((1, 1.0),))
    pacer = Pacer()
    pacer.pause("slack", traits, at(0), at(30), "429")
    assert pacer.blocked("slack", traits, at(29.9)).startswith("paused until")
    assert pacer.blocked("slack", traits, at(30)) == ""
    pacer.pause("slack", traits, at(40), at(50), "500")
    pacer.resume("slack")
    assert pacer.blocked("slack", traits, at(41)) == ""
