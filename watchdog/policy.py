"""What to do about a verdict: requeue, escalate to the fallback queue, give up, or only report.

Who calls it: recovery, after detect. Pure: (verdict, lineage, recover config) -> Action, and a second
step once the checkpoint lookup is known. Table-tested in tests/test_policy.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from watchdog.config import CheckpointConfig, RecoverConfig
from watchdog.lineage import Lineage
from watchdog.verdict import ActionKind, Reason, Verdict


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    why: str
    attempt: int | None = None  # the attempt number the clone will carry
    fallback_queue: str | None = None  # set for ESCALATE: the queue name to use instead of the original


def decide(verdict: Verdict, lineage: Lineage, recover: RecoverConfig) -> Action:
    reason = verdict.reason
    if reason in (Reason.HEALTHY, Reason.IGNORED):
        return Action(ActionKind.NOTHING, verdict.explanation)
    if reason is Reason.USER_ABORTED:
        return Action(ActionKind.NOTIFY_ONLY, "a person's abort is never undone")
    if reason not in recover.on:
        return Action(ActionKind.NOTIFY_ONLY, f"{reason.value} is not in recover.on")
    attempt = lineage.next_attempt
    if attempt > recover.max_attempts:
        return Action(
            ActionKind.GIVE_UP,
            f"budget spent: {lineage.attempt} of {recover.max_attempts} recoveries already made in this lineage",
            attempt=lineage.attempt,
        )
    if recover.fallback_queue and attempt >= recover.fallback_after:
        return Action(
            ActionKind.ESCALATE,
            f"loss {attempt} in this lineage (fallback after {recover.fallback_after}): "
            f"moving to {recover.fallback_queue}",
            attempt=attempt,
            fallback_queue=recover.fallback_queue,
        )
    return Action(ActionKind.REQUEUE, f"recovery {attempt} of {recover.max_attempts}", attempt=attempt)


def confirm_with_checkpoint(action: Action, checkpoint_uri: str | None, checkpoint: CheckpointConfig) -> Action:
    """A clone action stands only if a checkpoint was found or `when_missing` says to start over."""
    if not action.kind.clones or checkpoint_uri:
        return action
    if checkpoint.when_missing == "give_up":
        return replace(
            action, kind=ActionKind.GIVE_UP, why="no usable checkpoint and checkpoint.when_missing is give_up"
        )
    return replace(action, why=f"{action.why}; no usable checkpoint: restarting from scratch")
