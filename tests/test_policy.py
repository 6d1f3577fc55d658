"""Policy: verdict + lineage + config -> action."""

from __future__ import annotations

import pytest

from watchdog.config import CheckpointConfig, RecoverConfig
from watchdog.lineage import Lineage
from watchdog.policy import Action, confirm_with_checkpoint, decide
from watchdog.verdict import ActionKind, Reason, Verdict

DEFAULT = RecoverConfig()
WITH_FALLBACK = RecoverConfig(fallback_queue="gpu-ondemand", fallback_after=3, max_attempts=5)
CODE_OPT_IN = RecoverConfig(on=[Reason.AGENT_LOST, Reason.CODE_FAILED])


def lineage(attempt: int) -> Lineage:
    return Lineage(root_id="root", attempt=attempt)


CASES = [
    # (id, reason, attempt of the lost task, config, expected kind, expected clone attempt)
    ("healthy does nothing", Reason.HEALTHY, 0, DEFAULT, ActionKind.NOTHING, None),
    ("ignored does nothing", Reason.IGNORED, 0, DEFAULT, ActionKind.NOTHING, None),
    ("user abort only reported", Reason.USER_ABORTED, 0, DEFAULT, ActionKind.NOTIFY_ONLY, None),
    ("code failure reported by default", Reason.CODE_FAILED, 0, DEFAULT, ActionKind.NOTIFY_ONLY, None),
    ("code failure re-run on opt-in", Reason.CODE_FAILED, 0, CODE_OPT_IN, ActionKind.REQUEUE, 1),
    ("loss not opted in", Reason.AGENT_STOPPED, 0, CODE_OPT_IN, ActionKind.NOTIFY_ONLY, None),
    ("first loss requeued", Reason.AGENT_LOST, 0, DEFAULT, ActionKind.REQUEUE, 1),
    ("sigterm requeued", Reason.AGENT_STOPPED, 2, DEFAULT, ActionKind.REQUEUE, 3),
    ("forced stop requeued", Reason.SERVER_FORCED_STOP, 0, DEFAULT, ActionKind.REQUEUE, 1),
    ("last attempt allowed", Reason.AGENT_LOST, 4, DEFAULT, ActionKind.REQUEUE, 5),
    ("budget spent", Reason.AGENT_LOST, 5, DEFAULT, ActionKind.GIVE_UP, 5),
    # fallback_after=3: losses 1 and 2 stay on spot, the 3rd loss moves the lineage to on-demand.
    ("second loss stays on spot", Reason.AGENT_LOST, 1, WITH_FALLBACK, ActionKind.REQUEUE, 2),
    ("third loss escalates", Reason.AGENT_LOST, 2, WITH_FALLBACK, ActionKind.ESCALATE, 3),
    ("later losses stay escalated", Reason.AGENT_LOST, 3, WITH_FALLBACK, ActionKind.ESCALATE, 4),
    ("budget beats fallback", Reason.AGENT_LOST, 5, WITH_FALLBACK, ActionKind.GIVE_UP, 5),
]


@pytest.mark.parametrize(
    ("name", "reason", "attempt", "config", "kind", "clone_attempt"), CASES, ids=[c[0] for c in CASES]
)
def test_decide(
    name: str, reason: Reason, attempt: int, config: RecoverConfig, kind: ActionKind, clone_attempt: int | None
) -> None:
    action = decide(Verdict(reason, "because"), lineage(attempt), config)
    assert action.kind is kind, action.why
    assert action.attempt == clone_attempt
    if kind is ActionKind.ESCALATE:
        assert action.fallback_queue == "gpu-ondemand"


@pytest.mark.parametrize(
    ("kind", "uri", "when_missing", "expected", "words"),
    [
        (ActionKind.REQUEUE, "s3://b/ckpt", "give_up", ActionKind.REQUEUE, "recovery"),  # found: unchanged
        (ActionKind.REQUEUE, None, "requeue", ActionKind.REQUEUE, "from scratch"),
        (ActionKind.REQUEUE, None, "give_up", ActionKind.GIVE_UP, "when_missing"),
        (ActionKind.ESCALATE, None, "give_up", ActionKind.GIVE_UP, "no usable checkpoint"),
        (ActionKind.NOTIFY_ONLY, None, "give_up", ActionKind.NOTIFY_ONLY, "x"),  # not a clone: untouched
    ],
)
def test_confirm_with_checkpoint(
    kind: ActionKind, uri: str | None, when_missing: str, expected: ActionKind, words: str
) -> None:
    action = Action(kind, "x recovery", attempt=1)
    confirmed = confirm_with_checkpoint(action, uri, CheckpointConfig(when_missing=when_missing))  # type: ignore[arg-type]
    assert confirmed.kind is expected
    assert words in confirmed.why
