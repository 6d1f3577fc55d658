"""The outbox end to end, over real HTTP to the stand-ins, with a clock that moves only when told.

Covers issue 3, points 1, 2, 4, 6 and 7: threads and edits, routing and switches, retries with backoff,
429s honoured, timeouts, restarts, idempotency, expiry, grouping under rate limits, and the rule that a
chat outage never blocks `add` (the recovery's side).
"""

from __future__ import annotations

import io
import itertools
import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from notify_helpers import CHAT_ID, T0, FakeClock, change, make_outbox, notice, settings_for

from watchdog.journal import Journal
from watchdog.notify.channel import Message, Outcome, SendResult, Traits
from watchdog.notify.console import ConsoleChannel
from watchdog.notify.notice import EventKind
from watchdog.notify.outbox import Outbox
from watchdog.notify.render import Format
from watchdog.notify.settings import NotifySettings
from watchdog.simulator.chat import SlackStandIn, TelegramStandIn


def states(journal: Journal) -> dict[str, str]:
    return {row["key"]: row["state"] for row in journal.query("SELECT key, state FROM outbox")}


def pump(outbox: Outbox, clock: FakeClock, seconds: float, step: float = 1.0) -> None:
    """What the service's delivery job does: a pass every `step` seconds, here without waiting."""
    end = clock.now + timedelta(seconds=seconds)
    while clock.now < end:
        clock.advance(step)
        outbox.deliver_due()


# --- delivery, routing, idempotency ------------------------------------------------------------------


def test_one_notice_reaches_every_routed_channel_once(
    journal: Journal, clock: FakeClock, slack: SlackStandIn, telegram: TelegramStandIn
) -> None:
    outbox = make_outbox(journal, settings_for(slack, telegram), clock)
    assert outbox.add(notice()) == ["slack", "telegram"]
    report = outbox.deliver_due()
    assert (report.messages, report.delivered) == (2, 2)
    assert "train-inc-1" in slack.messages()[0].text
    assert "train-inc-1" in telegram.messages()[0].text
    assert set(states(journal).values()) == {"sent"}
    stats = outbox.stats()
    assert stats.delivered == {"slack": 1, "telegram": 1} and stats.depth == {}


def test_adding_the_same_notice_twice_sends_it_once(
    journal: Journal, clock: FakeClock, slack: SlackStandIn, telegram: TelegramStandIn
) -> None:
    outbox = make_outbox(journal, settings_for(slack, telegram), clock)
    outbox.add(notice())
    assert outbox.add(notice()) == []  # same incident + event: already queued
    pump(outbox, clock, 5)
    outbox.add(notice())  # and after it was sent
    pump(outbox, clock, 5)
    assert len(slack.messages()) == 1 and len(telegram.messages()) == 1


def test_add_inside_the_callers_transaction_is_atomic_with_it(
    journal: Journal, clock: FakeClock, telegram: TelegramStandIn
) -> None:
    outbox = make_outbox(journal, settings_for(telegram=telegram), clock)
    with pytest.raises(RuntimeError), journal.transaction() as db:
        outbox.add(notice("rolled-back"), tx=db)
        raise RuntimeError("the recovery step failed")
    with journal.transaction() as db:
        outbox.add(notice("kept"), tx=db)
    assert list(states(journal)) == ["kept:agent_lost:telegram"]


def test_routing_and_per_event_switches(
    journal: Journal, clock: FakeClock, slack: SlackStandIn, telegram: TelegramStandIn
) -> None:
    settings = NotifySettings.model_validate(
        {
            "group_wait_s": 0,
            "events": {"user_aborted": False},
            "slack": {
                "bot_token": slack.bot_token,
                "channel": "#alerts",
                "api_base": slack.api_base,
                "events": ["gave_up", "code_failed", "user_aborted"],
            },
            "telegram": {"bot_token": telegram.token, "chat_id": CHAT_ID, "api_base": telegram.api_base},
        }
    )
    outbox = make_outbox(journal, settings, clock)
    assert outbox.add(notice("a")) == ["telegram"]  # agent_lost: not in Slack's list
    assert outbox.add(notice("b", EventKind.CODE_FAILED, action="notify_only")) == ["slack", "telegram"]
    assert outbox.add(notice("c", EventKind.USER_ABORTED, action="notify_only")) == []  # switched off
    assert outbox.add(notice("a", EventKind.GAVE_UP, action="give_up")) == ["slack", "telegram"]


# --- threads ------------------------------------------------------------------------------------------


def test_follow_ups_reply_in_the_incident_thread_and_update_its_first_message(
    journal: Journal, clock: FakeClock, slack: SlackStandIn, telegram: TelegramStandIn
) -> None:
    outbox = make_outbox(journal, settings_for(slack, telegram), clock)
    outbox.add(notice())
    pump(outbox, clock, 2)
    outbox.add(notice(event=EventKind.RECOVERED, at=clock.now))
    pump(outbox, clock, 2)

    first, reply = telegram.messages(CHAT_ID)
    assert reply.reply_to == first.message_id and reply.thread_id == first.thread_id == 42
    assert "Recovered" in reply.text
    assert "Now: recovered" in first.text and first.edits  # the first message shows where it stands

    top, answer = slack.messages()
    assert answer.thread_ts == top.ts
    assert "Now:* recovered" in top.text and top.edits
    assert outbox.stats().edits == {"slack": 1, "telegram": 1}


def test_a_follow_up_waits_for_its_first_message(journal: Journal, clock: FakeClock, telegram: TelegramStandIn) -> None:
    outbox = make_outbox(journal, settings_for(telegram=telegram), clock)
    outbox.add(notice())
    outbox.add(notice(event=EventKind.GAVE_UP, action="give_up"))
    outbox.deliver_due()
    assert [m.reply_to for m in telegram.messages()] == [None]
    pump(outbox, clock, 2)
    assert [m.reply_to for m in telegram.messages()] == [None, 1]


def test_webhook_follow_ups_stand_alone(journal: Journal, clock: FakeClock, slack: SlackStandIn) -> None:
    outbox = make_outbox(journal, settings_for(slack, slack_mode="webhook"), clock)
    outbox.add(notice())
    pump(outbox, clock, 2)
    outbox.add(notice(event=EventKind.RECOVERED))
    pump(outbox, clock, 2)
    lost, recovered = slack.messages()
    assert recovered.thread_ts == "" and "Recovered" in recovered.text and "train-inc-1" in recovered.text
    assert not lost.edits


# --- failures and retries ----------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["telegram", "slack"])
def test_429_is_honoured_no_retry_before_retry_after(
    journal: Journal, clock: FakeClock, slack: SlackStandIn, telegram: TelegramStandIn, service: str
) -> None:
    standin: SlackStandIn | TelegramStandIn = telegram if service == "telegram" else slack
    settings = settings_for(telegram=telegram) if service == "telegram" else settings_for(slack)
    outbox = make_outbox(journal, settings, clock)
    standin.fail_next(1, 429, retry_after=30)
    outbox.add(notice())
    outbox.deliver_due()
    asked_at = clock.now
    pump(outbox, clock, 29)
    assert len(standin.requests) == 1  # nothing at all before retry_after, not even another message
    pump(outbox, clock, 2)
    assert len(standin.requests) == 2 and standin.requests[1].status == 200
    assert datetime.fromtimestamp(standin.requests[1].at, asked_at.tzinfo) >= asked_at + timedelta(seconds=30)


def test_server_errors_are_retried_with_growing_backoff(
    journal: Journal, clock: FakeClock, telegram: TelegramStandIn
) -> None:
    outbox = make_outbox(journal, settings_for(telegram=telegram), clock)
    telegram.fail_next(4, 500)
    outbox.add(notice())
    outbox.deliver_due()
    pump(outbox, clock, 400)
    times = [r.at for r in telegram.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert [r.status for r in telegram.requests] == [500, 500, 500, 500, 200]
    # first_delay 10 s, doubling, +-20% jitter, seen through 1-second delivery passes
    for gap, base in zip(gaps, (10, 20, 40, 80), strict=False):
        assert base * 0.8 - 1 <= gap <= base * 1.2 + 1, gaps
    assert len(telegram.messages()) == 1
    assert outbox.stats().failed == {"telegram": 4}


def test_a_timeout_is_retried_and_delivered_once(journal: Journal, clock: FakeClock, telegram: TelegramStandIn) -> None:
    settings = change(settings_for(telegram=telegram), "telegram", timeout_s=0.3)
    outbox = make_outbox(journal, settings, clock)
    telegram.hang_next(1, 5)
    outbox.add(notice())
    started = time.monotonic()
    report = outbox.deliver_due()
    assert time.monotonic() - started < 2
    assert report.failed == 1
    row = journal.query("SELECT last_error FROM outbox")[0]
    assert "no answer" in row["last_error"]
    pump(outbox, clock, 15)
    assert len(telegram.messages()) == 1


def test_a_message_the_service_refuses_is_dead_at_once_with_a_log_line(journal: Journal, clock: FakeClock) -> None:
    class Refusing:
        name = "telegram"
        traits = Traits(Format.TELEGRAM, threads=True, edits=True, limits=())

        def send(self, message: Message) -> SendResult:
            return SendResult(Outcome.REJECTED, error="400 can't parse entities", diagnosis="a rendering bug")

        def describe_target(self) -> str:
            return "nowhere"

    outbox = Outbox(journal, NotifySettings(group_wait_s=0), [Refusing()], clock=clock)
    outbox.add(notice())
    with structlog.testing.capture_logs() as logs:
        report = outbox.deliver_due()
    assert report.dead == 1
    assert states(journal) == {"inc-1:agent_lost:telegram": "dead"}
    [line] = [entry for entry in logs if entry["event"] == "notify.dead"]
    assert "can't parse entities" in line["error"]


def test_retry_budget_spent_marks_dead_with_a_log_line(
    journal: Journal, clock: FakeClock, telegram: TelegramStandIn
) -> None:
    settings = settings_for(telegram=telegram, retry={"first_delay_s": 1, "max_attempts": 3})
    outbox = make_outbox(journal, settings, clock)
    telegram.fail_fraction(1.0, 500)
    outbox.add(notice())
    with structlog.testing.capture_logs() as logs:
        pump(outbox, clock, 60)
    assert len(telegram.requests) == 3
    assert states(journal) == {"inc-1:agent_lost:telegram": "dead"}
    assert any(entry["event"] == "notify.dead" and "3 attempts" in entry["reason"] for entry in logs)
    assert outbox.stats().dead == {"telegram": 1}


def test_too_old_to_matter_expires_with_a_log_line_instead_of_arriving_late(
    journal: Journal, clock: FakeClock, telegram: TelegramStandIn
) -> None:
    outbox = make_outbox(journal, settings_for(telegram=telegram, max_age_s=600), clock)
    telegram.fail_fraction(1.0, 500)
    outbox.add(notice())
    with structlog.testing.capture_logs() as logs:
        pump(outbox, clock, 601, step=5)
    telegram.clear_faults()
    pump(outbox, clock, 60, step=5)
    assert telegram.messages() == []
    assert states(journal) == {"inc-1:agent_lost:telegram": "expired"}
    [line] = [entry for entry in logs if entry["event"] == "notify.expired"]
    assert line["log_level"] == "warning" and line["max_age_s"] == 600 and "500" in line["last_error"]
    assert outbox.stats().expired == {"telegram": 1}


def test_restart_resends_what_was_not_delivered_and_nothing_that_was(
    tmp_path: Path, clock: FakeClock, telegram: TelegramStandIn
) -> None:
    path = tmp_path / "state" / "journal.sqlite3"
    settings = settings_for(telegram=telegram)
    first_life = Journal(path)
    outbox = make_outbox(first_life, settings, clock)
    outbox.add(notice("delivered"))
    outbox.deliver_due()
    telegram.fail_fraction(1.0, 503)
    outbox.add(notice("stuck"))
    pump(outbox, clock, 3)
    first_life.close()  # the process dies here

    telegram.clear_faults()
    second_life = Journal(path)
    restarted = make_outbox(second_life, settings, clock)
    assert [row.incident_id for row in restarted.pending()] == ["stuck"]
    pump(restarted, clock, 30)
    texts = [m.text for m in telegram.messages()]
    assert sum("train-delivered" in t for t in texts) == 1
    assert sum("train-stuck" in t for t in texts) == 1
    # threads survive too: a follow-up after the restart replies to the first message
    restarted.add(notice("delivered", EventKind.RECOVERED))
    pump(restarted, clock, 3)
    assert telegram.messages()[-1].reply_to == 1
    second_life.close()


# --- grouping and rate limits ------------------------------------------------------------------------


@pytest.mark.parametrize(("group_wait_s", "most_messages"), [(60, 1), (30, 2)])
def test_forty_losses_in_a_minute_become_one_grouped_message_per_channel(
    journal: Journal,
    clock: FakeClock,
    slack: SlackStandIn,
    telegram: TelegramStandIn,
    group_wait_s: float,
    most_messages: int,
) -> None:
    telegram.rate_limit(20, 60)  # the real limits: 20 a minute into a group ...
    slack.rate_limit(1, 1)  # ... about one a second into a Slack channel
    outbox = make_outbox(journal, settings_for(slack, telegram, group_wait_s=group_wait_s), clock)
    for i in range(40):  # a spot pool reclaimed: a loss every 1.5 s, the delivery job every second
        outbox.add(notice(f"inc-{i:02d}", at=clock.now, task_name=f"resnet50-sweep-{i:02d}"))
        pump(outbox, clock, 1.5, step=0.5)
    pump(outbox, clock, 120)

    for standin in (slack, telegram):
        assert all(r.status == 200 for r in standin.requests)  # never rate limited
    assert 1 <= len(telegram.messages()) <= most_messages
    assert 1 <= len(slack.messages()) <= most_messages
    shown = "\n".join(m.text for m in telegram.messages())
    assert all(f"resnet50-sweep-{i:02d}" in shown for i in range(40))
    assert "Machine lost: " in shown and " tasks" in shown
    assert outbox.stats().delivered == {"slack": 40, "telegram": 40}

    # ... and their recoveries: one reply per thread, and the first message edited to show it
    for i in range(40):
        outbox.add(notice(f"inc-{i:02d}", EventKind.RECOVERED, at=clock.now))
    pump(outbox, clock, group_wait_s + 10)
    replies = [m for m in telegram.messages() if m.reply_to is not None]
    assert 1 <= len(replies) <= most_messages
    if most_messages == 1:
        assert "Now: 40 recovered, 0 given up, 0 pending" in telegram.messages()[0].text
    assert all(r.status == 200 for r in telegram.requests)


def test_many_separate_messages_are_paced_within_the_rate_limit(
    journal: Journal, clock: FakeClock, telegram: TelegramStandIn
) -> None:
    telegram.rate_limit(20, 60)
    outbox = make_outbox(journal, settings_for(telegram=telegram), clock)
    for i in range(30):  # 30 incidents with first messages of their own (one every 2 minutes) ...
        outbox.add(notice(f"inc-{i:02d}", at=clock.now))
        pump(outbox, clock, 120, step=10)
    for i in range(30):  # ... whose recoveries all arrive at once: 30 replies in 30 threads, 30 edits
        outbox.add(notice(f"inc-{i:02d}", EventKind.RECOVERED, at=clock.now))
    pump(outbox, clock, 600)
    assert all(r.status == 200 for r in telegram.requests)
    assert sum(1 for m in telegram.messages() if m.reply_to) == 30
    sent_at = sorted(r.at for r in telegram.requests)
    for start in range(len(sent_at)):
        in_a_minute = [t for t in sent_at[start:] if t - sent_at[start] < 60]
        assert len(in_a_minute) <= 20


# --- never blocking the recovery ----------------------------------------------------------------------


def test_a_chat_outage_never_blocks_add_and_a_pass_is_bounded(
    journal: Journal, clock: FakeClock, slack: SlackStandIn, telegram: TelegramStandIn
) -> None:
    settings = change(change(settings_for(slack, telegram), "telegram", timeout_s=0.4), "slack", timeout_s=0.4)
    outbox = make_outbox(journal, settings, clock)
    for i in range(10):
        outbox.add(notice(f"inc-{i}", event=list(EventKind)[i % 5]))
    telegram.hang_next(100, 5)
    slack.hang_next(100, 5)
    passes: list[float] = []

    def deliver() -> None:
        started = time.monotonic()
        outbox.deliver_due()
        passes.append(time.monotonic() - started)

    worker = threading.Thread(target=deliver)
    worker.start()
    time.sleep(0.05)  # the pass is now waiting on a hanging chat service
    started = time.monotonic()
    outbox.add(notice("during-the-outage"))
    assert time.monotonic() - started < 0.1
    worker.join(5)
    assert passes and passes[0] < 1.2  # one timeout per channel, then that channel waits for the next pass
    assert len(telegram.requests) == 1 and len(slack.requests) == 1


def test_a_pass_never_starts_a_request_that_could_outlast_its_budget(
    journal: Journal, clock: FakeClock, slack: SlackStandIn, telegram: TelegramStandIn
) -> None:
    outbox = make_outbox(journal, settings_for(slack, telegram), clock)  # timeout_s 2 on both
    outbox.add(notice())
    report = outbox.deliver_due(budget_s=1.0)  # e.g. the last pass at shutdown
    assert report.out_of_time and report.messages == 0
    assert slack.requests == [] and telegram.requests == []
    assert outbox.deliver_due(budget_s=10).messages == 2


# --- console and counters -----------------------------------------------------------------------------


def test_console_is_the_default_without_chat_channels(journal: Journal, clock: FakeClock) -> None:
    stream = io.StringIO()
    settings = NotifySettings(group_wait_s=0)
    outbox = Outbox(journal, settings, [ConsoleChannel(stream)], clock=clock)
    assert [c for c in Outbox(journal, settings).channels] == ["console"]
    outbox.add(notice())
    outbox.deliver_due()
    assert "│ 🔴 Machine lost: train-inc-1" in stream.getvalue()


def test_stats_for_metrics(journal: Journal, clock: FakeClock, telegram: TelegramStandIn) -> None:
    outbox = make_outbox(journal, settings_for(telegram=telegram), clock)
    outbox.add(notice("a"))
    outbox.deliver_due()
    telegram.fail_fraction(1.0, 500)
    outbox.add(notice("b", EventKind.CODE_FAILED, action="notify_only"))
    clock.advance(1)
    outbox.deliver_due()
    clock.advance(4)
    stats = outbox.stats()
    assert stats.delivered == {"telegram": 1} and stats.messages == {"telegram": 1}
    assert stats.failed == {"telegram": 1}
    assert stats.depth == {"telegram": 1} and stats.oldest_pending_s == pytest.approx(5)


# --- secrets -------------------------------------------------------------------------------------------


def test_secrets_never_reach_logs_errors_or_reprs(
    journal: Journal, clock: FakeClock, slack: SlackStandIn, telegram: TelegramStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(slack, telegram)
    dead_end = change(settings, "telegram", api_base="http://127.0.0.1:9")
    webhook = NotifySettings.model_validate({"slack": {"webhook_url": slack.webhook_url}, "group_wait_s": 0})
    secrets = [telegram.token, slack.bot_token, slack.webhook_url, slack.webhook_path.rsplit("/", 1)[-1]]

    caplog.set_level(logging.DEBUG)  # urllib3 logs request lines (with the URL path) at DEBUG
    captured: list[Any] = []
    with structlog.testing.capture_logs() as logs:
        for config in (dead_end, settings, webhook):
            outbox = make_outbox(journal, config, clock)
            slack.fail_next(1, 500)
            outbox.add(notice(f"inc-{id(config)}"))
            pump(outbox, clock, 30)
            captured.append({"repr": repr(outbox), "stats": repr(outbox.stats())})
        captured.extend(logs)
    stored = [dict(row) for row in journal.query("SELECT * FROM outbox")]
    assert any("cannot connect" in row["last_error"] for row in stored) or any(
        "cannot connect" in str(entry) for entry in captured
    )
    haystack = "\n".join(
        [
            caplog.text,
            *map(str, captured),
            *map(str, stored),
            repr(settings),
            str(settings.model_dump()),
            str(settings.model_dump(mode="json")),
            repr(webhook),
        ]
    )
    assert "/sendMessage" in caplog.text and "/services/" not in caplog.text  # urllib3 logged request lines ...
    for secret in secrets:
        assert secret not in haystack  # ... with the token masked


def test_a_channel_that_raises_is_a_failed_send_not_a_crash(journal: Journal, clock: FakeClock) -> None:
    class Buggy:
        name = "telegram"
        traits = Traits(Format.TELEGRAM, threads=True, edits=True, limits=())

        def send(self, message: Message) -> SendResult:
            raise KeyError("bug")

        def describe_target(self) -> str:
            return "nowhere"

    outbox = Outbox(journal, NotifySettings(group_wait_s=0), [Buggy()], clock=clock)
    outbox.add(notice())
    assert outbox.deliver_due().failed == 1
    assert states(journal) == {"inc-1:agent_lost:telegram": "pending"}


def test_first_delivery_waits_for_group_wait(journal: Journal, clock: FakeClock, telegram: TelegramStandIn) -> None:
    outbox = make_outbox(journal, settings_for(telegram=telegram, group_wait_s=30), clock)
    outbox.add(notice())
    pump(outbox, clock, 29)
    assert telegram.requests == []
    assert outbox.next_due_at() == T0 + timedelta(seconds=30)
    pump(outbox, clock, 1)
    assert len(telegram.messages()) == 1
