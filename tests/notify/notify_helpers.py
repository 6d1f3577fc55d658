"""Helpers for the notify tests (imported by name: `from notify_helpers import ...`)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

from watchdog.journal import Journal
from watchdog.notify.notice import EventKind, Notice
from watchdog.notify.outbox import Outbox
from watchdog.notify.settings import NotifySettings
from watchdog.simulator.chat import SlackStandIn, TelegramStandIn

T0 = datetime(2026, 11, 23, 14, 0, 0, tzinfo=timezone.utc)
CHAT_ID = -1001234567890
TOPIC = 42


class FakeClock:
    """Time for the outbox and the stand-ins' rate limits: moves only when a test says so."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def seconds(self) -> float:
        return self.now.timestamp()


def notice(
    incident: str = "inc-1",
    event: EventKind = EventKind.AGENT_LOST,
    *,
    at: datetime = T0,
    **fields: Any,
) -> Notice:
    """A fully populated loss notice (override any field)."""
    values: dict[str, Any] = {
        "task_id": f"task-{incident}",
        "task_name": f"train-{incident}",
        "project_name": "vision/imagenet",
        "task_url": f"https://app.clear.ml/projects/p1/experiments/task-{incident}",
        "clone_id": f"clone-{incident}",
        "clone_url": f"https://app.clear.ml/projects/p1/experiments/clone-{incident}",
        "worker": "gpu-spot-17:gpu0",
        "queue_name": "gpu-spot",
        "attempt": 2,
        "max_attempts": 5,
        "action": "requeue",
        "explanation": "no report for 6 min and no live worker reports it",
        "checkpoint_uri": "s3://models/run/ckpt_012000.pt",
        "resume_iteration": 12000,
        "lost_iterations": 800,
        "silent_for_s": 372.0,
    }
    values.update(fields)
    return Notice(incident_id=incident, event=event, occurred_at=at, **values)


def settings_for(
    slack: SlackStandIn | None = None,
    telegram: TelegramStandIn | None = None,
    *,
    slack_mode: str = "bot",
    **extra: Any,
) -> NotifySettings:
    """Settings pointing at the stand-ins; `extra` overrides top-level notify keys."""
    data: dict[str, Any] = {"group_wait_s": 0}
    if slack is not None:
        if slack_mode == "webhook":
            data["slack"] = {"webhook_url": slack.webhook_url, "timeout_s": 2}
        else:
            data["slack"] = {
                "bot_token": slack.bot_token,
                "channel": "#alerts",
                "api_base": slack.api_base,
                "timeout_s": 2,
            }
    if telegram is not None:
        data["telegram"] = {
            "bot_token": telegram.token,
            "chat_id": CHAT_ID,
            "message_thread_id": TOPIC,
            "api_base": telegram.api_base,
            "timeout_s": 2,
        }
    data.update(extra)
    return NotifySettings.model_validate(data)


def make_outbox(journal: Journal, settings: NotifySettings, clock: FakeClock, **kwargs: Any) -> Outbox:
    return Outbox(journal, settings, clock=clock, rng=random.Random(7), **kwargs)


def change(settings: NotifySettings, section: str, **changes: Any) -> NotifySettings:
    """`settings` with some keys of one channel section changed, validated again like a config file."""
    data = settings.model_dump()
    data[section] = {**data[section], **changes}
    return NotifySettings.model_validate(data)
