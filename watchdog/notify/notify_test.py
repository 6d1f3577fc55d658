"""`clearml-watchdog notify-test`: one test message per configured channel, and a plain verdict for each.

Who calls it: the CLI. It talks to the channels directly (not through the outbox): the point is to see,
right now, whether each channel works and, if not, what to fix ("telegram: 401 Unauthorized: check
bot_token"). Exit code 0 only if every channel succeeded.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TextIO

from watchdog.notify.channel import Channel, Message, Outcome, SendResult
from watchdog.notify.notice import EventKind, Notice
from watchdog.notify.redact import redact_known
from watchdog.notify.render import render
from watchdog.notify.settings import NotifySettings


@dataclass(frozen=True)
class ChannelCheck:
    """The outcome of one test message."""

    channel: str
    result: SendResult
    target: str

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def line(self) -> str:
        if self.result.ok:
            return f"{self.channel}: ok, test message sent to {self.target}"
        return f"{self.channel}: {self.result.describe()}"


def sample_notice(settings: NotifySettings, channel: str, now: datetime, hostname: str) -> Notice:
    events = sorted(e.value for e in settings.events_for(channel))
    routed = ", ".join(events) if events else "none (every event is switched off for this channel)"
    return Notice(
        incident_id=f"notify-test:{now.isoformat()}",
        event=EventKind.TEST,
        occurred_at=now,
        explanation=f"the watchdog on {hostname} can post here. Alerts this channel gets: {routed}.",
    )


def check_channels(
    channels: Sequence[Channel], settings: NotifySettings, *, now: datetime, hostname: str
) -> list[ChannelCheck]:
    """Send one test message to each channel; never raises for a channel failure."""
    checks = []
    for channel in channels:
        text = render([sample_notice(settings, channel.name, now, hostname)], channel.traits.format, now)
        try:
            result = channel.send(Message(text))
        except Exception as error:  # a channel bug: report it like any other failure
            result = SendResult(Outcome.RETRY, error=redact_known(f"{type(error).__name__}: {error}"))
        checks.append(ChannelCheck(channel.name, result, channel.describe_target()))
    return checks


def notify_test(
    settings: NotifySettings,
    *,
    channels: Sequence[Channel] | None = None,
    out: TextIO | None = None,
    now: datetime | None = None,
    hostname: str | None = None,
) -> int:
    """Run the test, print one line per channel to `out` (stdout); 0 if every channel worked, else 1."""
    stream = out or sys.stdout
    if channels is None:
        from watchdog.notify.build import build_channels

        channels = build_channels(settings, stream=stream)
    if not channels:
        stream.write("no channel is configured: set notify.slack or notify.telegram, or notify.console: true\n")
        return 1
    checks = check_channels(
        channels,
        settings,
        now=now or datetime.now(timezone.utc),
        hostname=hostname or socket.gethostname(),
    )
    for check in checks:
        stream.write(check.line + "\n")
    if not settings.chat_configured:
        stream.write("note: no chat channel is configured (notify.slack / notify.telegram): alerts go to the console\n")
    stream.flush()
    return 0 if all(check.ok for check in checks) else 1
