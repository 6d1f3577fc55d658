"""Channels and the outbox from the `notify:` settings: the one place the CLI and the service wire notify.

Who calls it: `service` (run), `cli` (demo, notify-test). Which channels exist follows the settings:
Slack and Telegram when their sections are present, the console when `notify.console` is true, or
"auto" with no chat channel configured (or when the caller forces it, as `demo` does).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TextIO

import requests

from watchdog.journal import Journal
from watchdog.notify.channel import Channel
from watchdog.notify.console import ConsoleChannel
from watchdog.notify.outbox import Outbox
from watchdog.notify.settings import NotifySettings
from watchdog.notify.slack import SlackChannel
from watchdog.notify.telegram import TelegramChannel


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def build_channels(
    settings: NotifySettings,
    *,
    console: bool | None = None,
    stream: TextIO | None = None,
    session: requests.Session | None = None,
) -> list[Channel]:
    """The configured channels. `console=True/False` overrides `notify.console` (demo forces it on)."""
    channels: list[Channel] = []
    if settings.slack is not None:
        channels.append(SlackChannel(settings.slack, session))
    if settings.telegram is not None:
        channels.append(TelegramChannel(settings.telegram, session))
    wants_console = settings.console_enabled if console is None else console
    if wants_console:
        channels.append(ConsoleChannel(stream))
    return channels


def build_outbox(
    journal: Journal,
    settings: NotifySettings,
    *,
    channels: list[Channel] | None = None,
    clock: Callable[[], datetime] = _utcnow,
    monotonic: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    budget_s: float = 20.0,
) -> Outbox:
    """An outbox over the journal, delivering to `channels` (default: `build_channels(settings)`)."""
    return Outbox(
        journal,
        settings,
        build_channels(settings) if channels is None else channels,
        clock=clock,
        monotonic=monotonic,
        rng=rng,
        budget_s=budget_s,
    )
