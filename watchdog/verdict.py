"""The vocabulary of decisions: why a task looks the way it does (`Reason`) and what to do (`ActionKind`).

Who uses it: detect (produces a Verdict), policy (turns it into an Action), config (validates
`recover.on`), journal and notify (store and render them). Pure data, no behaviour beyond meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Reason(str, Enum):
    """Why a task is in the state it is in, as far as the watchdog can tell."""

    AGENT_LOST = "agent_lost"  # machine vanished or agent killed: task stale, no live worker reports it
    AGENT_STOPPED = "agent_stopped"  # agent got SIGTERM (spot 2-minute notice, shutdown)
    SERVER_FORCED_STOP = "server_forced_stop"  # the server's non-responsive watchdog stopped it
    USER_ABORTED = "user_aborted"  # a human aborted it: reported, never undone
    CODE_FAILED = "code_failed"  # the training code failed: reported, re-run only on opt-in
    HEALTHY = "healthy"  # running and heard from, or quiet but its agent is alive
    IGNORED = "ignored"  # outside what the watchdog watches, or already handled

    @property
    def is_loss(self) -> bool:
        """A loss is an ending the task did not choose: the machine or the server ended it."""
        return self in (Reason.AGENT_LOST, Reason.AGENT_STOPPED, Reason.SERVER_FORCED_STOP)

    @property
    def is_recoverable(self) -> bool:
        """Reasons a user may list in `recover.on`."""
        return self.is_loss or self is Reason.CODE_FAILED

    @property
    def plain_words(self) -> str:
        return _PLAIN_WORDS[self]


_PLAIN_WORDS = {
    Reason.AGENT_LOST: "the machine or its agent vanished",
    Reason.AGENT_STOPPED: "the agent was shut down (spot notice or SIGTERM)",
    Reason.SERVER_FORCED_STOP: "the ClearML server force-stopped it as non-responsive",
    Reason.USER_ABORTED: "a person aborted it",
    Reason.CODE_FAILED: "the training code failed",
    Reason.HEALTHY: "running normally",
    Reason.IGNORED: "not watched",
}

RECOVERABLE_REASONS: tuple[Reason, ...] = tuple(r for r in Reason if r.is_recoverable)


@dataclass(frozen=True)
class Verdict:
    """The classifier's answer for one task: a reason and a sentence a person can read."""

    reason: Reason
    explanation: str


class ActionKind(str, Enum):
    """What the watchdog does about a verdict."""

    REQUEUE = "requeue"  # clone from the checkpoint, enqueue on the queue it ran on
    ESCALATE = "escalate"  # clone from the checkpoint, enqueue on the fallback queue
    GIVE_UP = "give_up"  # budget spent or no checkpoint with when_missing=give_up: report only
    NOTIFY_ONLY = "notify_only"  # report, never touch the task
    NOTHING = "nothing"  # healthy or ignored

    @property
    def clones(self) -> bool:
        return self in (ActionKind.REQUEUE, ActionKind.ESCALATE)
