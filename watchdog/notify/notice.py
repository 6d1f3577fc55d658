"""`Notice`: one thing worth telling people, as the recovery core produces it.

Who makes them: recovery (incidents, `recovered`, `gave_up`) and the service (`watchdog_unhealthy`).
Who reads them: the outbox (stores them as JSON), the renderers and channels. A notice carries plain
facts; wording, escaping and length limits belong to the renderers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from enum import Enum
from typing import Any

from watchdog.servertime import parse_timestamp


class EventKind(str, Enum):
    AGENT_LOST = "agent_lost"
    AGENT_STOPPED = "agent_stopped"
    SERVER_FORCED_STOP = "server_forced_stop"
    RECOVERED = "recovered"  # the clone reached in_progress: the incident is resolved
    GAVE_UP = "gave_up"  # budget spent, no checkpoint with when_missing=give_up, or recovery refused
    USER_ABORTED = "user_aborted"
    CODE_FAILED = "code_failed"
    WATCHDOG_UNHEALTHY = "watchdog_unhealthy"  # ClearML unreachable for longer than a threshold
    WATCHDOG_HEALTHY = "watchdog_healthy"  # ... and reachable again
    TEST = "test"  # notify-test

    @property
    def opens_incident(self) -> bool:
        return self in (
            EventKind.AGENT_LOST,
            EventKind.AGENT_STOPPED,
            EventKind.SERVER_FORCED_STOP,
            EventKind.USER_ABORTED,
            EventKind.CODE_FAILED,
            EventKind.WATCHDOG_UNHEALTHY,
        )


@dataclass(frozen=True)
class Notice:
    """Facts about one event of one incident. `key` is stable: the same event is never sent twice."""

    incident_id: str
    event: EventKind
    occurred_at: datetime
    task_id: str = ""
    task_name: str = ""
    project_name: str = ""
    task_url: str = ""
    clone_id: str = ""
    clone_url: str = ""
    worker: str = ""
    queue_name: str = ""
    attempt: int | None = None  # this recovery is attempt n of max_attempts in the lineage
    max_attempts: int | None = None
    action: str = ""  # ActionKind value: requeue | escalate | give_up | notify_only
    explanation: str = ""  # the verdict in a sentence, or why the watchdog gave up
    checkpoint_uri: str = ""  # empty: the clone starts from scratch
    resume_iteration: int | None = None
    lost_iterations: int | None = None
    silent_for_s: float | None = None  # time since the machine was last heard from

    @property
    def key(self) -> str:
        return f"{self.incident_id}:{self.event.value}"

    def to_json(self) -> str:
        data = asdict(self)
        data["event"] = self.event.value
        data["occurred_at"] = self.occurred_at.isoformat()
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Notice:
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["event"] = EventKind(data["event"])
        occurred = parse_timestamp(data["occurred_at"])
        if occurred is None:
            raise ValueError(f"bad occurred_at in stored notice: {data['occurred_at']!r}")
        data["occurred_at"] = occurred
        return cls(**data)
