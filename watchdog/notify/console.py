"""The console channel: alerts printed to the terminal, as they would read in chat.

Who uses it: the outbox when no chat channel is configured (`notify.console: auto`), `demo`, and anyone
who sets `notify.console: true`. Same interface as Slack and Telegram, so the pipeline (grouping,
expiry) is the same one a chat channel goes through. No threads or edits: each message stands alone.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from watchdog.notify.channel import Message, Outcome, SendResult, Traits
from watchdog.notify.render import Format


class ConsoleChannel:
    """Writes each message, framed, to a stream (stdout by default)."""

    name = "console"
    traits = Traits(format=Format.PLAIN, threads=False, edits=False, limits=())

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._count = 0

    def __repr__(self) -> str:
        return "ConsoleChannel()"

    def describe_target(self) -> str:
        return "this terminal"

    def send(self, message: Message) -> SendResult:
        if message.edit_ref:
            return SendResult(Outcome.REJECTED, error="the console cannot edit a printed message")
        stream = self._stream or sys.stdout
        body = "\n".join(f"│ {line}" for line in message.text.splitlines())
        with self._lock:
            self._count += 1
            ref = str(self._count)
            try:
                stream.write(f"┌─ alert {ref}\n{body}\n└─\n")
                stream.flush()
            except (OSError, ValueError) as error:  # closed or broken stdout
                return SendResult(Outcome.RETRY, error=f"cannot write to the terminal: {error}")
        return SendResult.sent(ref)
