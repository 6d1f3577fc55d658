"""The channel interface: one rendered message in, one `SendResult` out.

Who implements it: `slack`, `telegram`, `console` (one small file each). Who calls it: the outbox
(deliveries) and `notify_test`. A channel makes exactly one request per `send` with an explicit timeout;
it never sleeps, loops or retries, and never raises for a delivery problem: it sorts the failure once,
here at the edge, into "try again later" or "this message can never go", with a sentence a person can
act on. Dedup, grouping, retries and rate limits are the outbox's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from watchdog.notify.render import Format


class Outcome(str, Enum):
    """How one send ended, and therefore what the outbox does next."""

    SENT = "sent"
    RETRY = "retry"  # transient: network, timeout, 5xx, 429; try again after a backoff
    CONFIG = "config"  # misconfigured (401, unknown chat): retried slowly until fixed (restart) or expired
    REJECTED = "rejected"  # the service refuses this very message (400 bad request): never retried

    @property
    def retryable(self) -> bool:
        return self in (Outcome.RETRY, Outcome.CONFIG)


@dataclass(frozen=True)
class SendResult:
    """What happened to one request. `error` and `diagnosis` never contain a secret."""

    outcome: Outcome
    remote_ref: str = ""  # Slack "<channel id>:<ts>", Telegram message_id; "" when the service gives none
    retry_after_s: float | None = None  # the service said when to come back (429)
    error: str = ""  # what the service said, e.g. "400 Bad Request: chat not found"
    diagnosis: str = ""  # what to do about it, e.g. "check chat_id; has the bot been added to the chat?"

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SENT

    @property
    def retryable(self) -> bool:
        return self.outcome.retryable

    def describe(self) -> str:
        """One line for logs and notify-test: the error, then what to do about it."""
        if self.ok:
            return "ok"
        return f"{self.error}: {self.diagnosis}" if self.diagnosis else self.error

    @classmethod
    def sent(cls, remote_ref: str = "") -> SendResult:
        return cls(Outcome.SENT, remote_ref=remote_ref)


@dataclass(frozen=True)
class Message:
    """One request to a channel: a new message (maybe a reply in a thread) or an edit of an earlier one."""

    text: str  # already rendered in the channel's format and within its limits
    thread_ref: str = ""  # reply to this earlier message (the incident's first message)
    edit_ref: str = ""  # replace the text of this earlier message instead of posting


@dataclass(frozen=True)
class Traits:
    """What a channel can do and how much it may be sent; read by the outbox and the renderer."""

    format: Format
    threads: bool  # follow-ups can reply to the incident's first message
    edits: bool  # the first message can be edited as the incident moves on
    limits: tuple[tuple[int, float], ...]  # (at most n messages, per this many seconds), all must hold
    timeout_s: float = 0.0  # the longest one request can take (the outbox's time budget counts on it)


class Channel(Protocol):
    """A place alerts go. `name` is the routing key in config ("slack", "telegram", "console")."""

    @property
    def name(self) -> str: ...

    @property
    def traits(self) -> Traits: ...

    def send(self, message: Message) -> SendResult:
        """Make one request; never raise for a delivery failure, never sleep or retry."""
        ...

    def describe_target(self) -> str:
        """Where messages go, secret-free, for notify-test ("#alerts", "chat -100123 topic 7")."""
        ...
