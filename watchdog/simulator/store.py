"""The simulator's data and the rules every change obeys.

``Store`` owns every collection (tasks, queues, workers, models, projects, events) behind ONE
re-entrant lock, the id generator and the clock, and the primitives all operations share: the
status change with its stamps (status_changed, last_update, last_change, last_changed_by,
"development" dropped on enqueue), edit and liveness stamps, worker expiry, and the paging,
scrolling and projection of get_all answers. The operations themselves live in one mixin per
kind of entity (projects.py, queues.py, tasks.py, workers.py, models.py, events.py), assembled
into ``State`` in state.py.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from . import dates, errors, query
from . import transitions as st
from .clock import SimClock
from .config import SimulatorConfig
from .query import Doc, clone

DELETED_PREFIX: Final = "__DELETED__"
DEVELOPMENT: Final = "development"
ARCHIVED: Final = "archived"
STOPPING: Final = "stopping"
SERVER_USER: Final = "__apiserver__"
FORCED_STOP: Final = "Forced stop (non-responsive)"
MAX_SCROLLS: Final = 10_000
# Marks a field to remove in status-change extras (Mongo "unset").
UNSET: Final = object()


@dataclass(frozen=True)
class Identity:
    """Who a token speaks for (the server's Identity)."""

    company: str
    company_name: str
    user: str
    user_name: str
    role: str = "user"

    def to_dict(self) -> dict[str, str]:
        return {
            "company": self.company,
            "company_name": self.company_name,
            "user": self.user,
            "user_name": self.user_name,
            "role": self.role,
        }


@dataclass
class WorkerEntry:
    """A registered worker, as the server keeps it in Redis (expiring ``timeout`` after activity)."""

    id: str
    ip: str
    queues: list[str]
    register_time: float
    timeout: float
    last_activity_time: float
    last_report_time: float | None = None
    task: str | None = None
    queue: str | None = None
    project: str | None = None
    tags: list[str] = field(default_factory=list)
    system_tags: list[str] = field(default_factory=list)
    stamps: dict[str, str] = field(default_factory=dict)  # the same times, formatted once

    def __post_init__(self) -> None:
        self.stamps["register_time"] = dates.iso(self.register_time)
        self.stamps["last_activity_time"] = dates.iso(self.last_activity_time)

    def expires_at(self) -> float:
        return self.last_activity_time + self.timeout

    def touch(self, now: float, report: bool) -> None:
        """Record activity (and a status report) at ``now``."""
        stamp = dates.iso(now)
        self.last_activity_time = now
        self.stamps["last_activity_time"] = stamp
        if report:
            self.last_report_time = now
            self.stamps["last_report_time"] = stamp


def str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def sorted_unique(values: Iterable[str]) -> list[str]:
    return sorted(set(values))


def _set_path(doc: Doc, path: str, value: Any) -> None:
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            if value is UNSET:
                return
            child = node[part] = {}
        node = child
    if value is UNSET:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


class Store:
    """All the data, one lock, and the primitives every operation uses."""

    def __init__(self, config: SimulatorConfig | None = None, clock: SimClock | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.clock = clock or SimClock()
        self.lock = threading.RLock()
        c = self.config
        self.identity = Identity(c.company_id, c.company_name, c.user_id, c.user_name)
        self._rng = random.Random(c.seed)
        self._tasks: dict[str, Doc] = {}  # insertion order == creation order
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        self._status_members: dict[str, set[str]] = {s: set() for s in st.STATUSES}
        self._status_sorted: dict[str, list[str] | None] = {}
        self._children: dict[str, list[str]] = {}
        self._enqueue_status: dict[str, str] = {}
        self._queues: dict[str, Doc] = {}
        self._queue_by_name: dict[str, str] = {}
        self._workers: dict[str, WorkerEntry] = {}
        self._models: dict[str, Doc] = {}
        self._models_by_task: dict[str, list[str]] = {}
        self._projects: dict[str, Doc] = {}
        self._project_by_name: dict[str, str] = {}
        self._events: dict[str, list[Doc]] = {}
        self._scrolls: OrderedDict[str, int] = OrderedDict()
        # Bumped on every task change a filter could see / on liveness stamps (last_update & co).
        self._epoch = 0
        self._live_epoch = 0
        self._match_cache: OrderedDict[str, tuple[int, int, list[str]]] = OrderedDict()

    def new_id(self) -> str:
        """A 32-hex-digit id like the server's (reproducible for a given seed)."""
        with self.lock:
            return f"{self._rng.getrandbits(128):032x}"

    def now(self) -> float:
        return self.clock.now()

    def stamp(self) -> str:
        return dates.iso(self.clock.now())

    def _user(self, user: str | None) -> str:
        return user or self.identity.user

    def has_task(self, task_id: str) -> bool:
        with self.lock:
            return task_id in self._tasks

    def _require_task(self, task_id: Any) -> Doc:
        doc = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if doc is None:
            raise errors.INVALID_TASK_ID(id=task_id, company=self.identity.company)
        return doc

    def peek_task(self, task_id: str) -> Doc | None:
        """The live document, no copy: only for callers already holding ``lock``."""
        return self._tasks.get(task_id)

    def _changed(self) -> None:
        """A task changed in a way filters may see: cached query results are stale."""
        self._epoch += 1

    def _reindex_status(self, task_id: str, old: str, new: str) -> None:
        if old == new:
            return
        self._changed()
        self._status_members[old].discard(task_id)
        self._status_members[new].add(task_id)
        self._status_sorted[old] = None
        self._status_sorted[new] = None

    def _apply_status(
        self, doc: Doc, new: str, reason: str, message: str, extra: Mapping[str, Any] | None, user: str | None
    ) -> Doc:
        self._changed()
        now = self.stamp()
        fields: Doc = {
            "status": new,
            "status_reason": reason or "",
            "status_message": message or "",
            "status_changed": now,
            "last_update": now,
            "last_change": now,
            "last_changed_by": self._user(user),
        }
        old = doc["status"]
        doc.update(fields)
        if new == st.QUEUED and DEVELOPMENT in doc.get("system_tags", ()):
            doc["system_tags"] = [t for t in doc["system_tags"] if t != DEVELOPMENT]
        for key, value in (extra or {}).items():
            if key == "enqueue_status":
                if value is UNSET or value is None:
                    self._enqueue_status.pop(doc["id"], None)
                else:
                    self._enqueue_status[doc["id"]] = value
                    fields[key] = value
                continue
            _set_path(doc, key, value)
            if value is not UNSET:
                fields[key] = clone(value)
        self._reindex_status(doc["id"], old, new)
        return fields

    def _touch(self, doc: Doc, user: str | None, last_update: bool = True) -> None:
        """Stamp an edit (anything but liveness): last_change, and last_update unless told not to."""
        self._changed()
        self._live_epoch += 1
        now = self.stamp()
        doc["last_change"] = now
        doc["last_changed_by"] = self._user(user)
        if last_update:
            doc["last_update"] = now

    def _bump(self, doc: Doc, user: str | None) -> None:
        """Liveness stamp (ping, events, checkpoint): last_update, last_change, active_duration."""
        self._live_epoch += 1
        now = self.now()
        if doc["status"] == st.IN_PROGRESS and doc.get("started"):
            started = dates.parse(doc["started"])
            if started is not None:
                doc["active_duration"] = int(now - started)
        stamp = dates.iso(now)
        doc["last_update"] = stamp
        doc["last_change"] = stamp
        doc["last_changed_by"] = self._user(user)

    def _live_worker(self, worker_id: str, now: float) -> WorkerEntry | None:
        entry = self._workers.get(worker_id)
        if entry is not None and entry.expires_at() <= now:
            del self._workers[worker_id]
            return None
        return entry

    def _live_workers(self, now: float) -> Iterator[WorkerEntry]:
        expired = [w for w, e in self._workers.items() if e.expires_at() <= now]
        for worker_id in expired:
            del self._workers[worker_id]
        return iter(list(self._workers.values()))

    def _query(self, docs: Iterable[Doc], data: Mapping[str, Any], spec: query.QuerySpec) -> tuple[list[Doc], Doc]:
        """get_all for the small collections (projects, queues, models): a plain scan."""
        preds = query.compile_filter(data, spec)
        order = query.order_fields(data)
        return self._run_query(data, lambda start, size: query.select(docs, preds, order, start, size))

    def _run_query(self, data: Mapping[str, Any], pick: Callable[[int, int], list[Doc]]) -> tuple[list[Doc], Doc]:
        """Paging or scrolling over ``pick(start, size)``, then the ``only_fields`` projection."""
        extra: Doc = {}
        if "scroll_id" in data:
            size = query.scroll_size(data)
            scroll_id = data.get("scroll_id") or self.new_id()
            if data.get("scroll_id") and scroll_id not in self._scrolls:
                raise errors.INVALID_SCROLL_ID(scroll_id=scroll_id)
            start = self._scrolls.get(scroll_id, 0)
            if data.get("refresh_scroll"):
                size, start = max(start, size), 0
            page = pick(start, size)
            self._scrolls[scroll_id] = start + len(page)
            self._scrolls.move_to_end(scroll_id)
            while len(self._scrolls) > MAX_SCROLLS:
                self._scrolls.popitem(last=False)
            extra["scroll_id"] = scroll_id
        else:
            start, size = query.paging(data)
            page = pick(start, size)
        only = data.get("only_fields")
        projection = query.Projection(only if isinstance(only, list) else None)
        return [projection(d) for d in page], extra
