"""Small frozen records of what ClearML showed at one moment, parsed from raw API JSON.

Who calls it: the gateway, right after each response. Everything downstream (detect, policy,
checkpoint, recovery, notify) works on these records and never on raw JSON. A record that cannot be
read raises `MalformedRecord`; the gateway logs it and skips that one record, never the cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from watchdog.servertime import parse_timestamp

# The fields a task list query projects: enough to classify without a call per task.
TASK_LIST_FIELDS: tuple[str, ...] = (
    "id",
    "name",
    "status",
    "status_reason",
    "status_message",
    "status_changed",
    "last_update",
    "last_worker",
    "last_worker_report",
    "last_iteration",
    "execution.queue",
    "project",
    "parent",
    "tags",
    "system_tags",
    "type",
    "created",
    "started",
)


class MalformedRecord(ValueError):
    """One API record could not be understood. Carries the record's id when it has one."""

    def __init__(self, kind: str, record_id: str | None, problem: str) -> None:
        super().__init__(f"malformed {kind} record {record_id or '<no id>'}: {problem}")
        self.kind = kind
        self.record_id = record_id
        self.problem = problem


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise MalformedRecord("task", _id_or_none(raw), f"{key} is {type(value).__name__}, not text")


def _id_or_none(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("id")
    return value if isinstance(value, str) and value else None


def _required_id(raw: object, kind: str) -> str:
    if not isinstance(raw, Mapping):
        raise MalformedRecord(kind, None, f"expected an object, got {type(raw).__name__}")
    record_id = _id_or_none(raw)
    if record_id is None:
        raise MalformedRecord(kind, None, "missing id")
    return record_id


def _when(raw: Mapping[str, Any], key: str, kind: str) -> datetime | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    parsed = parse_timestamp(value)
    if parsed is None:
        raise MalformedRecord(kind, _id_or_none(raw), f"{key} is not a date: {value!r:.60}")
    return parsed


def _strings(raw: Mapping[str, Any], key: str, kind: str) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedRecord(kind, _id_or_none(raw), f"{key} is not a list of strings")
    return tuple(value)


def _int_or_none(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


@dataclass(frozen=True)
class TaskSnapshot:
    """One task as a list query showed it."""

    id: str
    name: str
    status: str
    status_reason: str = ""
    status_message: str = ""
    status_changed: datetime | None = None
    last_update: datetime | None = None
    last_worker: str = ""
    last_worker_report: datetime | None = None
    last_iteration: int | None = None
    queue_id: str = ""
    project_id: str = ""
    parent_id: str = ""
    tags: tuple[str, ...] = ()
    system_tags: tuple[str, ...] = ()
    type: str = ""
    created: datetime | None = None
    started: datetime | None = None

    @classmethod
    def from_api(cls, raw: object) -> TaskSnapshot:
        task_id = _required_id(raw, "task")
        assert isinstance(raw, Mapping)
        status = raw.get("status")
        if not isinstance(status, str) or not status:
            raise MalformedRecord("task", task_id, "missing status")
        execution = raw.get("execution") or {}
        if not isinstance(execution, Mapping):
            raise MalformedRecord("task", task_id, "execution is not an object")
        queue = execution.get("queue")
        return cls(
            id=task_id,
            name=_text(raw, "name"),
            status=status,
            status_reason=_text(raw, "status_reason"),
            status_message=_text(raw, "status_message"),
            status_changed=_when(raw, "status_changed", "task"),
            last_update=_when(raw, "last_update", "task"),
            last_worker=_text(raw, "last_worker"),
            last_worker_report=_when(raw, "last_worker_report", "task"),
            last_iteration=_int_or_none(raw, "last_iteration"),
            queue_id=queue if isinstance(queue, str) else "",
            project_id=_text(raw, "project"),
            parent_id=_text(raw, "parent"),
            tags=_strings(raw, "tags", "task"),
            system_tags=_strings(raw, "system_tags", "task"),
            type=_text(raw, "type"),
            created=_when(raw, "created", "task"),
            started=_when(raw, "started", "task"),
        )


@dataclass(frozen=True)
class WorkerSnapshot:
    """One worker (agent) from `workers.get_all`. `task_id` is empty when the worker reports no task."""

    id: str
    task_id: str = ""
    last_report_time: datetime | None = None
    queue_ids: tuple[str, ...] = ()

    @classmethod
    def from_api(cls, raw: object) -> WorkerSnapshot:
        worker_id = _required_id(raw, "worker")
        assert isinstance(raw, Mapping)
        task = raw.get("task")
        task_id = ""
        if isinstance(task, Mapping) and isinstance(task.get("id"), str):
            task_id = task["id"]
        queues = raw.get("queues") or []
        queue_ids = (
            tuple(q["id"] for q in queues if isinstance(q, Mapping) and isinstance(q.get("id"), str))
            if isinstance(queues, list)
            else ()
        )
        return cls(
            id=worker_id,
            task_id=task_id,
            last_report_time=_when(raw, "last_report_time", "worker"),
            queue_ids=queue_ids,
        )


@dataclass(frozen=True)
class ModelSnapshot:
    """An output model of a task: where a checkpoint may be."""

    id: str
    name: str = ""
    uri: str = ""
    last_update: datetime | None = None
    last_iteration: int | None = None

    @classmethod
    def from_api(cls, raw: object) -> ModelSnapshot:
        model_id = _required_id(raw, "model")
        assert isinstance(raw, Mapping)
        uri = raw.get("uri")
        return cls(
            id=model_id,
            name=_text(raw, "name"),
            uri=uri if isinstance(uri, str) else "",
            last_update=_when(raw, "last_update", "model") or _when(raw, "created", "model"),
            last_iteration=_int_or_none(raw, "last_iteration"),
        )


# Hyperparameters as ClearML sends them: section -> name -> {section, name, value, type, description}.
HyperParams = dict[str, dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class TaskDetails:
    """The full record of one task, read before cloning it: what the clone must carry over."""

    snapshot: TaskSnapshot
    hyperparams: HyperParams = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # artifact key -> uri
    comment: str = ""

    @classmethod
    def from_api(cls, raw: object) -> TaskDetails:
        snapshot = TaskSnapshot.from_api(raw)
        assert isinstance(raw, Mapping)
        hyperparams_raw = raw.get("hyperparams") or {}
        if not isinstance(hyperparams_raw, Mapping):
            raise MalformedRecord("task", snapshot.id, "hyperparams is not an object")
        hyperparams: HyperParams = {}
        for section, params in hyperparams_raw.items():
            if not isinstance(params, Mapping):
                raise MalformedRecord("task", snapshot.id, f"hyperparams section {section!r} is not an object")
            hyperparams[str(section)] = {
                str(name): dict(param) if isinstance(param, Mapping) else {"value": param}
                for name, param in params.items()
            }
        execution = raw.get("execution") or {}
        artifacts: dict[str, str] = {}
        if isinstance(execution, Mapping):
            for item in execution.get("artifacts") or []:
                if isinstance(item, Mapping) and isinstance(item.get("key"), str):
                    uri = item.get("uri")
                    if isinstance(uri, str) and uri:
                        artifacts[item["key"]] = uri
        comment = raw.get("comment")
        return cls(
            snapshot=snapshot,
            hyperparams=hyperparams,
            artifacts=artifacts,
            comment=comment if isinstance(comment, str) else "",
        )

    def parameter(self, path: str) -> str | None:
        """The value of `Section/name`, or None when the task has no such parameter."""
        section, _, name = path.partition("/")
        value = self.hyperparams.get(section, {}).get(name, {}).get("value")
        return None if value is None else str(value)
