"""The in-memory ClearML domain: tasks, queues, workers, models, projects and scalar events.

One ``State`` holds everything behind ONE re-entrant lock, so every operation (an HTTP call or a
step of a simulated agent) is atomic, like a single Mongo update on the real server. Status
changes are compare-and-set on the status that was read (``expected=``), with the server's
transition table (transitions.py) and its side effects (status_changed, last_update,
last_change, last_changed_by, "development" tag removal on enqueue).

Documents are stored in wire format (dates as ISO strings, hyperparameters as
section -> name -> item, artifacts as a list), so reads are a projection plus a copy. Tasks are
indexed by status, parent and creation order, so a page of running tasks out of 50,000 costs
milliseconds. Semantics follow clearml-server 2.0.0 (apiserver/bll/task/*, bll/queue/*,
bll/workers/*); where the simulator simplifies, the method docstring says so.
Callers: endpoints.py (one method per API call), agents.py, simulator.py (seeding, inspection).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
TASK_TYPES: Final = frozenset(
    {
        "training",
        "testing",
        "inference",
        "data_processing",
        "application",
        "monitor",
        "controller",
        "report",
        "optimizer",
        "service",
        "qc",
        "custom",
    }
)
# Editing only these keeps last_update still (Task.user_set_allowed on the server).
USER_SET_ALLOWED: Final = frozenset({"name", "status_message", "comment", "created", "project", "tags", "system_tags"})
# Keys a create/edit request may set; embedded documents are merged on edit, the rest replaced.
CREATE_FIELDS: Final = (
    "name",
    "tags",
    "system_tags",
    "type",
    "comment",
    "parent",
    "project",
    "models",
    "container",
    "execution",
    "hyperparams",
    "configuration",
    "script",
    "runtime",
    "output",
)
EMBEDDED_FIELDS: Final = frozenset({"execution", "script", "output", "models"})
MAX_EVENTS_PER_TASK: Final = 10_000
MAX_SCROLLS: Final = 10_000
MAX_CACHED_QUERIES: Final = 32
_PAGING_KEYS: Final = frozenset({"only_fields", "page", "page_size", "scroll_id", "size", "refresh_scroll"})
# Task fields that move without a status or edit (reports, pings, events): a query that filters or
# sorts on them cannot reuse an earlier answer once any of them moved.
_LIVE_FIELDS: Final = frozenset(
    {
        "last_update",
        "last_change",
        "last_changed_by",
        "last_worker",
        "last_worker_report",
        "active_duration",
        "last_iteration",
        "_any_",
        "_or_",
        "_all_",
        "_and_",
        "search_text",
    }
)


def _is_live(key: str) -> bool:
    return key in _LIVE_FIELDS or key.startswith("last_metrics")


_UNSET: Final = object()


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


def _str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _sorted_unique(values: Iterable[str]) -> list[str]:
    return sorted(set(values))


def _set_path(doc: Doc, path: str, value: Any) -> None:
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            if value is _UNSET:
                return
            child = node[part] = {}
        node = child
    if value is _UNSET:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def _hash(name: str) -> str:
    return hashlib.md5(name.encode("utf-8")).hexdigest()


def normalize_hyperparams(value: Any) -> dict[str, dict[str, Doc]]:
    """Sectioned hyperparameters in wire shape, values as strings (what the server stores)."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, dict[str, Doc]] = {}
    for section, params in value.items():
        if not isinstance(params, Mapping):
            continue
        sec: dict[str, Doc] = {}
        for name, item in params.items():
            sec[str(name)] = param_item(str(section), str(name), item)
        out[str(section)] = sec
    return out


def param_item(section: str, name: str, item: Any) -> Doc:
    """One hyperparameter item; a bare value becomes ``{"value": str(value)}``."""
    if isinstance(item, Mapping):
        doc: Doc = {k: v for k, v in item.items() if k in ("type", "description")}
        doc["section"] = str(item.get("section") or section)
        doc["name"] = str(item.get("name") or name)
        raw = item.get("value", "")
        doc["value"] = "" if raw is None else str(raw)
        return doc
    return {"section": section, "name": name, "value": "" if item is None else str(item)}


def normalize_configuration(value: Any) -> dict[str, Doc]:
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, Doc] = {}
    for name, item in value.items():
        if isinstance(item, Mapping):
            doc = {k: v for k, v in item.items() if k in ("type", "description", "value")}
            doc["name"] = str(item.get("name") or name)
            doc["value"] = "" if doc.get("value") is None else str(doc["value"])
        else:
            doc = {"name": str(name), "value": "" if item is None else str(item)}
        out[str(name)] = doc
    return out


class State:
    """Thread-safe store of the whole simulated server. All public methods take ``lock``."""

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

    # ---- basics --------------------------------------------------------------------------------

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

    # ---- projects ------------------------------------------------------------------------------

    def create_project(
        self,
        name: str,
        description: str = "",
        tags: Sequence[str] = (),
        system_tags: Sequence[str] = (),
        user: str | None = None,
    ) -> str:
        """projects.create: names are unique and at least 3 characters long."""
        with self.lock:
            name = (name or "").strip()
            if len(name) < 3:
                raise errors.INVALID_PROJECT_NAME("Project name should be at least 3 characters", name=name)
            if name in self._project_by_name:
                raise errors.EXPECTED_UNIQUE_DATA("Project with the same name already exists", name=name)
            pid = self.new_id()
            now = self.stamp()
            self._projects[pid] = {
                "id": pid,
                "name": name,
                "basename": name.rsplit("/", 1)[-1],
                "description": description,
                "user": self._user(user),
                "company": self.identity.company,
                "created": now,
                "last_update": now,
                "tags": _sorted_unique(tags),
                "system_tags": _sorted_unique(system_tags),
            }
            self._project_by_name[name] = pid
            return pid

    def ensure_project(self, name: str) -> str:
        """The id of the project with this name, creating it if needed (seeding helper)."""
        with self.lock:
            return self._project_by_name.get(name) or self.create_project(name)

    def project_id(self, name: str) -> str | None:
        with self.lock:
            return self._project_by_name.get(name)

    def get_project(self, project_id: str) -> Doc:
        with self.lock:
            doc = self._projects.get(project_id)
            if doc is None:
                raise errors.INVALID_PROJECT_ID(id=project_id)
            return clone(doc)

    def query_projects(self, data: Mapping[str, Any]) -> tuple[list[Doc], Doc]:
        with self.lock:
            return self._query(self._projects.values(), data, query.PROJECTS)

    # ---- queues --------------------------------------------------------------------------------

    def create_queue(
        self,
        name: str,
        tags: Sequence[str] = (),
        system_tags: Sequence[str] = (),
        display_name: str | None = None,
    ) -> str:
        """queues.create: names are unique and at least 3 characters long."""
        with self.lock:
            name = (name or "").strip()
            if len(name) < 3:
                raise errors.DATA_VALIDATION_ERROR(name="String value is too short")
            if name in self._queue_by_name:
                raise errors.EXPECTED_UNIQUE_DATA(name=name)
            qid = self.new_id()
            now = self.stamp()
            doc: Doc = {
                "id": qid,
                "name": name,
                "company": self.identity.company,
                "created": now,
                "tags": _sorted_unique(tags),
                "system_tags": _sorted_unique(system_tags),
                "entries": [],
                "last_update": now,
                "metadata": {},
            }
            if display_name:
                doc["display_name"] = display_name
            self._queues[qid] = doc
            self._queue_by_name[name] = qid
            return qid

    def ensure_queue(self, name: str) -> str:
        with self.lock:
            return self._queue_by_name.get(name) or self.create_queue(name)

    def queue_id(self, name: str) -> str | None:
        with self.lock:
            return self._queue_by_name.get(name)

    def _require_queue(self, queue_id: str) -> Doc:
        doc = self._queues.get(queue_id)
        if doc is None:
            raise errors.INVALID_QUEUE_ID(id=queue_id, company=self.identity.company)
        return doc

    def get_queue(self, queue_id: str, max_task_entries: int | None = None) -> Doc:
        with self.lock:
            doc = clone(self._require_queue(queue_id))
            if max_task_entries:
                doc["entries"] = doc["entries"][:max_task_entries]
            return doc

    def query_queues(self, data: Mapping[str, Any]) -> tuple[list[Doc], Doc]:
        with self.lock:
            found, extra = self._query(self._queues.values(), data, query.QUEUES)
            limit = data.get("max_task_entries")
            if isinstance(limit, int) and limit > 0:
                for doc in found:
                    if "entries" in doc:
                        doc["entries"] = doc["entries"][:limit]
            return found, extra

    def queue_entries(self, queue_id: str) -> list[str]:
        """Task ids waiting in a queue, first to be served first (inspection helper)."""
        with self.lock:
            return [e["task"] for e in self._require_queue(queue_id)["entries"]]

    def add_to_queue(self, queue_id: str, task_id: str, update_execution_queue: bool = False) -> int:
        """queues.add_task: refused atomically when the queue already holds the task."""
        with self.lock:
            queue = self._require_queue(queue_id)
            if any(e["task"] == task_id for e in queue["entries"]):
                raise errors.TASK_ALREADY_QUEUED(task=task_id)
            now = self.stamp()
            queue["entries"].append({"task": task_id, "added": now})
            queue["last_update"] = now
            task = self._tasks.get(task_id)
            if update_execution_queue and task is not None:
                task.setdefault("execution", {})["queue"] = queue_id
                self._changed()
            return 1

    def remove_from_queue(self, queue_id: str, task_id: str) -> int:
        with self.lock:
            queue = self._require_queue(queue_id)
            before = len(queue["entries"])
            queue["entries"] = [e for e in queue["entries"] if e["task"] != task_id]
            removed = before - len(queue["entries"])
            if not removed:
                raise errors.INVALID_QUEUE_OR_TASK_NOT_QUEUED(task=task_id, id=queue_id, company=self.identity.company)
            queue["last_update"] = self.stamp()
            return removed

    def _remove_from_all_queues(self, task_id: str, exclude: str | None = None) -> int:
        removed = 0
        for qid, queue in self._queues.items():
            if qid == exclude:
                continue
            kept = [e for e in queue["entries"] if e["task"] != task_id]
            if len(kept) != len(queue["entries"]):
                removed += 1
                queue["entries"] = kept
                queue["last_update"] = self.stamp()
        return removed

    def get_next_task(self, queue_id: str, task_id: str | None = None) -> Doc | None:
        """queues.get_next_task: pop the head entry; each entry goes to exactly one caller.

        Like the server, a popped task found ``stopped`` is put back to ``queued`` (a race fix).
        """
        with self.lock:
            queue = self._require_queue(queue_id)
            entries = queue["entries"]
            if not entries or (task_id and entries[0]["task"] != task_id):
                return None
            entry: Doc = entries.pop(0)
            queue["last_update"] = self.stamp()
            task = self._tasks.get(entry["task"])
            if task is not None and task["status"] == st.STOPPED:
                self._reindex_status(task["id"], task["status"], st.QUEUED)
                task["status"] = st.QUEUED
            return entry

    def head_added(self, queue_id: str) -> float | None:
        """When the first waiting entry of a queue was added (None if the queue is empty)."""
        with self.lock:
            queue = self._queues.get(queue_id)
            if not queue or not queue["entries"]:
                return None
            return dates.parse(queue["entries"][0]["added"])

    def queue_ids(self) -> list[str]:
        with self.lock:
            return list(self._queues)

    def delete_queue(self, queue_id: str, force: bool = False) -> None:
        with self.lock:
            queue = self._require_queue(queue_id)
            if queue["entries"] and not force:
                raise errors.QUEUE_NOT_EMPTY("use force=true to delete", id=queue_id)
            for entry in queue["entries"]:
                task = self._tasks.get(entry["task"])
                if task is not None and task.get("execution", {}).get("queue") == queue_id:
                    self._apply_status(
                        task,
                        self._enqueue_status.get(task["id"], st.CREATED),
                        f"Queue {queue_id} was deleted",
                        "",
                        {"enqueue_status": _UNSET, "execution.queue": _UNSET},
                        None,
                    )
            del self._queues[queue_id]
            del self._queue_by_name[queue["name"]]

    def _default_queue(self) -> str:
        found: list[str] = [q["id"] for q in self._queues.values() if "default" in q.get("system_tags", ())]
        if not found:
            raise errors.NO_DEFAULT_QUEUE()
        return found[0]

    # ---- tasks: reading ------------------------------------------------------------------------

    def has_task(self, task_id: str) -> bool:
        with self.lock:
            return task_id in self._tasks

    def _require_task(self, task_id: Any) -> Doc:
        doc = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if doc is None:
            raise errors.INVALID_TASK_ID(id=task_id, company=self.identity.company)
        return doc

    def get_task(self, task_id: str) -> Doc:
        """tasks.get_by_id (a copy)."""
        with self.lock:
            doc = self._tasks.get(task_id)
            if doc is None:
                raise errors.INVALID_TASK_ID(ids=[task_id])
            return clone(doc)

    def peek_task(self, task_id: str) -> Doc | None:
        """The live document, no copy: only for callers already holding ``lock``."""
        return self._tasks.get(task_id)

    def task_ids(self) -> list[str]:
        with self.lock:
            return list(self._tasks)

    def query_tasks(self, data: Mapping[str, Any]) -> tuple[list[Doc], Doc]:
        """tasks.get_all: filters, projection, order, page or scroll.

        The full ordered match list is cached per filter until a task changes in a way the filter
        could see (``_epoch``; liveness stamps count only for filters on them), so paging through
        50,000 running tasks costs one scan plus a slice per page, with the same results as
        re-running the query each time.
        """
        with self.lock:
            ids = self._task_matches(data)
            tasks = self._tasks
            return self._run_query(data, lambda start, size: [tasks[i] for i in ids[start : start + size]])

    def _task_matches(self, data: Mapping[str, Any]) -> list[str]:
        filters = {k: v for k, v in data.items() if k not in _PAGING_KEYS}
        order = query.order_fields(filters)
        live = any(_is_live(k) for k in filters) or any(_is_live(f.lstrip("-")) for f in order)
        key = json.dumps(filters, sort_keys=True, default=str)
        cached = self._match_cache.get(key)
        if cached is not None and cached[0] == self._epoch and (not live or cached[1] == self._live_epoch):
            self._match_cache.move_to_end(key)
            return cached[2]
        candidates, indexed = self._task_candidates(filters)
        rest = {k: v for k, v in filters.items() if k != indexed}
        if indexed == "id":
            rest["search_hidden"] = True  # as on the server, asking by id also finds hidden tasks
        preds = query.compile_filter(rest, query.TASKS)
        ids = [d["id"] for d in query.select(candidates, preds, order, 0, len(self._tasks))]
        self._match_cache[key] = (self._epoch, self._live_epoch, ids)
        while len(self._match_cache) > MAX_CACHED_QUERIES:
            self._match_cache.popitem(last=False)
        return ids

    def _task_candidates(self, data: Mapping[str, Any]) -> tuple[Iterable[Doc], str | None]:
        """Docs in creation order from the best index, and the filter key the index satisfied."""
        seq = self._seq.__getitem__
        ids = query.include_values(data, "id")
        if ids is not None:
            found = sorted((i for i in set(ids) if i in self._tasks), key=seq)
            return [self._tasks[i] for i in found], "id"
        statuses = query.include_values(data, "status")
        if statuses is not None:
            lists = [self._ids_with_status(s) for s in set(statuses) if s in self._status_members]
            if not lists:
                return [], "status"
            merged: Iterable[str] = lists[0] if len(lists) == 1 else heapq.merge(*lists, key=seq)
            return (self._tasks[i] for i in merged), "status"
        parents = query.include_values(data, "parent")
        if parents is not None:
            kids = {k for p in set(parents) for k in self._children.get(p, ())}
            return [self._tasks[i] for i in sorted(kids, key=seq)], "parent"
        return self._tasks.values(), None

    def _ids_with_status(self, status: str) -> list[str]:
        cached = self._status_sorted.get(status)
        if cached is None:
            cached = sorted(self._status_members[status], key=self._seq.__getitem__)
            self._status_sorted[status] = cached
        return cached

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

    # ---- tasks: creating -----------------------------------------------------------------------

    def _validate_name(self, name: Any) -> str:
        if not isinstance(name, str) or len(name.strip()) < 3:
            raise errors.DATA_VALIDATION_ERROR(name="String value is too short")
        return name.strip()

    def _validate_refs(self, project: Any, parent: Any) -> None:
        if project and project not in self._projects:
            raise errors.INVALID_PROJECT_ID(id=project)
        if parent and not str(parent).startswith(DELETED_PREFIX) and parent not in self._tasks:
            raise errors.INVALID_TASK_ID("invalid parent", parent=parent)

    def _changed(self) -> None:
        """A task changed in a way filters may see: cached query results are stale."""
        self._epoch += 1

    def _insert_task(self, doc: Doc) -> str:
        self._changed()
        task_id: str = doc["id"]
        self._tasks[task_id] = doc
        self._seq[task_id] = self._next_seq
        self._next_seq += 1
        self._status_members[doc["status"]].add(task_id)
        self._status_sorted[doc["status"]] = None
        parent = doc.get("parent")
        if parent:
            self._children.setdefault(parent, []).append(task_id)
        return task_id

    def _base_task(self, name: str, task_type: str, user: str | None) -> Doc:
        now = self.stamp()
        return {
            "id": self.new_id(),
            "name": name,
            "user": self._user(user),
            "company": self.identity.company,
            "type": task_type,
            "status": st.CREATED,
            "comment": "",
            "created": now,
            "last_update": now,
            "last_change": now,
            "last_changed_by": self._user(user),
            "tags": [],
            "system_tags": [],
            "script": {"binary": "python", "repository": "", "entry_point": ""},
            "execution": {"parameters": {}, "artifacts": []},
            "models": {"input": [], "output": []},
            "output": {},
            "container": {},
            "hyperparams": {},
            "configuration": {},
            "runtime": {},
            "last_iteration": 0,
            "last_metrics": {},
        }

    def create_task(self, fields: Mapping[str, Any], user: str | None = None) -> str:
        """tasks.create: ``name`` (3+ chars) and ``type`` are required; project/parent must exist."""
        with self.lock:
            for key in ("name", "type"):
                if key not in fields:
                    raise errors.required_property(key)
            name = self._validate_name(fields["name"])
            task_type = fields["type"]
            if task_type not in TASK_TYPES:
                raise errors.VALIDATION_ERROR(f"Invalid task type: {task_type}")
            self._validate_refs(fields.get("project"), fields.get("parent"))
            doc = self._base_task(name, task_type, user)
            self._merge_fields(doc, fields, merge_embedded=True)
            if "output_dest" in fields:
                doc["output"]["destination"] = fields["output_dest"]
            return self._insert_task(doc)

    def _merge_fields(self, doc: Doc, fields: Mapping[str, Any], merge_embedded: bool) -> Doc:
        """Write create/edit fields into ``doc`` in stored shape; returns what was written."""
        written: Doc = {}
        for key in CREATE_FIELDS:
            if key not in fields:
                continue
            value = fields[key]
            if key == "name":
                value = self._validate_name(value)
            elif key == "type":
                if value not in TASK_TYPES:
                    raise errors.VALIDATION_ERROR(f"Invalid task type: {value}")
            elif key in ("tags", "system_tags"):
                value = _sorted_unique(_str_list(value))
            elif key == "hyperparams":
                value = normalize_hyperparams(value)
            elif key == "configuration":
                value = normalize_configuration(value)
            elif key == "execution" and isinstance(value, Mapping):
                value = clone(dict(value))
                value.setdefault("artifacts", [])
                value.setdefault("parameters", {})
            elif isinstance(value, (dict, list)):
                value = clone(value)
            if key in EMBEDDED_FIELDS and merge_embedded and isinstance(value, dict):
                merged = dict(doc.get(key) or {})
                merged.update(value)
                value = merged
            if value is None and key in ("parent", "project", "comment"):
                doc.pop(key, None)
            else:
                doc[key] = value
            written[key] = clone(value)
        if "parent" in written:
            self._reindex_parent(doc["id"])
        if written:
            self._changed()
        return written

    def _reindex_parent(self, task_id: str) -> None:
        for kids in self._children.values():
            if task_id in kids:
                kids.remove(task_id)
        parent = self._tasks.get(task_id, {}).get("parent")
        if parent:
            kids = self._children.setdefault(parent, [])
            kids.append(task_id)
            kids.sort(key=self._seq.__getitem__)

    def clone_task(
        self,
        task_id: str,
        *,
        name: str | None = None,
        comment: str | None = None,
        parent: str | None = None,
        project: str | None = None,
        tags: Sequence[str] | None = None,
        system_tags: Sequence[str] | None = None,
        hyperparams: Mapping[str, Any] | None = None,
        configuration: Mapping[str, Any] | None = None,
        container: Mapping[str, Any] | None = None,
        execution_overrides: Mapping[str, Any] | None = None,
        input_models: Sequence[Mapping[str, Any]] | None = None,
        new_project_name: str | None = None,
        user: str | None = None,
    ) -> Doc:
        """tasks.clone (TaskBLL.clone_task): a ``created`` copy of script, hyperparameters,
        configuration, container and input models. Dropped: execution.queue, output models,
        runtime, output artifacts, status/worker fields. ``hyperparams`` REPLACES all sections.
        Without ``parent`` the clone's parent is the source's parent, else the source itself.
        """
        with self.lock:
            src = self._tasks.get(task_id)
            if src is None:
                raise errors.INVALID_TASK_ID(id=task_id)
            execution: Doc = clone(src.get("execution") or {})
            models_input = clone((src.get("models") or {}).get("input") or [])
            new_container = clone(container) if container else clone(src.get("container") or {})
            if execution_overrides:
                overrides = clone(dict(execution_overrides))
                model = overrides.pop("model", None)
                if model and not input_models:
                    models_input = [{"name": "Input Model", "model": model, "updated": self.stamp()}]
                docker_cmd = overrides.pop("docker_cmd", None)
                if docker_cmd and not container:
                    image, _, arguments = str(docker_cmd).partition(" ")
                    new_container = {"image": image, "arguments": arguments}
                overrides.pop("parameters", None)
                overrides.pop("configuration", None)
                execution.update(overrides)
            if input_models:
                models_input = [
                    {"name": m.get("name", "Input Model"), "model": m.get("model"), "updated": self.stamp()}
                    for m in input_models
                ]
            execution["artifacts"] = [
                a for a in execution.get("artifacts") or [] if a.get("mode", "output") != "output"
            ]
            execution.pop("queue", None)
            new_project = None
            if not project and new_project_name:
                project = self._project_by_name.get(new_project_name) or self.create_project(new_project_name)
                new_project = {"id": project, "name": new_project_name}
            src_parent = src.get("parent")
            default_parent = src_parent if src_parent and not src_parent.startswith(DELETED_PREFIX) else src["id"]
            self._validate_refs(project, parent)
            doc = self._base_task(self._validate_name(name or src["name"]), src["type"], user)
            doc.update(
                comment=comment or src.get("comment", ""),
                parent=parent or default_parent,
                tags=_sorted_unique(_str_list(tags)) if tags else list(src.get("tags") or []),
                system_tags=(
                    _sorted_unique(_str_list(system_tags))
                    if system_tags
                    else [t for t in src.get("system_tags") or [] if t not in (DEVELOPMENT, ARCHIVED)]
                ),
                script=clone(src.get("script") or {}),
                execution=execution,
                models={"input": models_input, "output": []},
                container=new_container,
                hyperparams=normalize_hyperparams(hyperparams) if hyperparams else clone(src.get("hyperparams") or {}),
                configuration=(
                    normalize_configuration(configuration) if configuration else clone(src.get("configuration") or {})
                ),
            )
            destination = (src.get("output") or {}).get("destination")
            doc["output"] = {"destination": destination} if destination else {}
            if project or src.get("project"):
                doc["project"] = project or src.get("project")
            new_id = self._insert_task(doc)
            result: Doc = {"id": new_id}
            if new_project:
                result["new_project"] = new_project
            return result

    def seed_running_task(
        self,
        name: str,
        *,
        project: str | None = None,
        queue_id: str | None = None,
        worker_id: str | None = None,
        development: bool = False,
        task_type: str = "training",
        hyperparams: Mapping[str, Any] | None = None,
    ) -> str:
        """Bulk-seeding fast path: a task already in_progress, as if an agent (or a local run
        when ``development``) had started it and Task.init had cleared the status reason."""
        with self.lock:
            doc = self._base_task(name, task_type, None)
            now = doc["created"]
            doc.update(status=st.IN_PROGRESS, status_reason="", status_message="", status_changed=now, started=now)
            if project:
                doc["project"] = project
            if queue_id:
                doc["execution"]["queue"] = queue_id
            if worker_id:
                doc["last_worker"] = worker_id
                doc["last_worker_report"] = now
            if development:
                doc["system_tags"] = [DEVELOPMENT]
            if hyperparams:
                doc["hyperparams"] = normalize_hyperparams(hyperparams)
            return self._insert_task(doc)

    # ---- tasks: status changes -----------------------------------------------------------------

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
                if value is _UNSET or value is None:
                    self._enqueue_status.pop(doc["id"], None)
                else:
                    self._enqueue_status[doc["id"]] = value
                    fields[key] = value
                continue
            _set_path(doc, key, value)
            if value is not _UNSET:
                fields[key] = clone(value)
        self._reindex_status(doc["id"], old, new)
        return fields

    def change_status(
        self,
        task_id: str,
        new_status: str,
        *,
        reason: str = "",
        message: str = "",
        force: bool = False,
        expected: str | None = None,
        extra: Mapping[str, Any] | None = None,
        user: str | None = None,
    ) -> Doc:
        """Compare-and-set status change (ChangeStatusRequest): fails with
        FailedChangingTaskStatus if the task is no longer in ``expected``.
        """
        with self.lock:
            doc = self._require_task(task_id)
            current = expected or doc["status"]
            st.check(current, new_status, force=force)
            if doc["status"] != current:
                raise errors.FAILED_CHANGING_TASK_STATUS(task_id=task_id, current_status=current, new_status=new_status)
            return {"updated": 1, "fields": self._apply_status(doc, new_status, reason, message, extra, user)}

    def set_status(
        self,
        task_id: str,
        new_status: str,
        reason: str = "",
        message: str = "",
        force: bool = False,
        user: str | None = None,
        expected: str | None = None,
    ) -> Doc:
        """tasks.started / stopped / failed / completed / close / publish, with their date fields."""
        with self.lock:
            doc = self._require_task(task_id)
            extra: Doc = {}
            now = self.stamp()
            if new_status == st.IN_PROGRESS:
                extra["started"] = doc.get("started") or now
            elif new_status in (st.STOPPED, st.COMPLETED):
                extra["completed"] = now
            elif new_status == st.PUBLISHED:
                extra["published"] = now
            return self.change_status(
                task_id,
                new_status,
                reason=reason,
                message=message,
                force=force,
                extra=extra,
                user=user,
                expected=expected,
            )

    def enqueue(
        self,
        task_id: str,
        queue_id: str | None = None,
        queue_name: str | None = None,
        *,
        reason: str = "",
        message: str = "",
        force: bool = False,
        update_execution_queue: bool = True,
        verify_watched_queue: bool = False,
        user: str | None = None,
    ) -> Doc:
        """tasks.enqueue: a missing ``queue_name`` is CREATED (as on the server); a queue that
        already holds the task refuses it (TaskAlreadyQueued) and the status is reverted with
        reason "failed enqueueing".
        """
        with self.lock:
            if queue_id and queue_name:
                raise errors.VALIDATION_ERROR("Either queue id or queue name should be provided")
            doc = self._require_task(task_id)
            if not update_execution_queue and not (
                doc["status"] == st.QUEUED and doc.get("execution", {}).get("queue")
            ):
                raise errors.VALIDATION_ERROR(
                    "Cannot skip setting execution queue for a task "
                    "that is not enqueued or does not have execution queue set"
                )
            if queue_name:
                queue_id = self._queue_by_name.get(queue_name) or self.create_queue(queue_name)
            if not queue_id:
                queue_id = self._default_queue()
            before = doc["status"]
            enqueue_status = self._enqueue_status.get(task_id, before) if before == st.QUEUED else before
            result = self.change_status(
                task_id,
                st.QUEUED,
                reason=reason,
                message=message,
                force=force,
                extra={"enqueue_status": enqueue_status},
                user=user,
            )
            try:
                self.add_to_queue(queue_id, task_id)
            except errors.ApiError:
                self._apply_status(doc, before, "failed enqueueing", "", {"enqueue_status": _UNSET}, user)
                raise
            if update_execution_queue:
                doc.setdefault("execution", {})["queue"] = queue_id
                self._changed()
                result["fields"]["execution.queue"] = queue_id
            self._remove_from_all_queues(task_id, exclude=queue_id)
            result["queued"] = 1
            if verify_watched_queue:
                result["queue_watched"] = any(queue_id in w.queues for w in self._live_workers(self.now()))
            return result

    def dequeue(
        self,
        task_id: str,
        *,
        reason: str = "",
        message: str = "",
        remove_from_all_queues: bool = False,
        new_status: str | None = None,
        user: str | None = None,
    ) -> Doc:
        """tasks.dequeue: out of its queue, back to the status it had before enqueue."""
        with self.lock:
            if new_status and new_status not in st.STATUSES:
                raise errors.VALIDATION_ERROR(f"Invalid task status: {new_status}")
            doc = self._require_task(task_id)
            removed = self._dequeue_silently(doc)
            if remove_from_all_queues:
                self._remove_from_all_queues(task_id)
            if doc["status"] not in (st.QUEUED, st.IN_PROGRESS):
                return {"dequeued": 1, "updated": 0}
            target = new_status or self._enqueue_status.get(task_id) or st.CREATED
            fields = self._apply_status(doc, target, reason, message, {"enqueue_status": _UNSET}, user)
            return {"dequeued": 1 if removed else 0, "updated": 1, "fields": fields}

    def _dequeue_silently(self, doc: Doc) -> int:
        queue_id = doc.get("execution", {}).get("queue")
        if doc["status"] != st.QUEUED or not queue_id or queue_id not in self._queues:
            return 0
        queue = self._queues[queue_id]
        before = len(queue["entries"])
        queue["entries"] = [e for e in queue["entries"] if e["task"] != doc["id"]]
        return before - len(queue["entries"])

    def is_run_by_worker(self, doc: Mapping[str, Any]) -> bool:
        """The server's test in tasks.stop: a last_worker and a last_update younger than
        ``task_update_timeout_s`` (600 s). It does not ask whether the worker is alive."""
        last_update = dates.parse(doc.get("last_update"))
        return bool(
            doc.get("last_worker")
            and last_update is not None
            and self.now() - last_update < self.config.task_update_timeout_s
        )

    def stop(
        self,
        task_id: str,
        *,
        reason: str = "",
        force: bool = False,
        user: str | None = None,
        user_name: str | None = None,
    ) -> Doc:
        """tasks.stop (bll stop_task): a queued, development or worker-less task is stopped at
        once ("Stopped by <user>"); otherwise only status_message becomes "stopping" (and
        last_update is bumped) for the agent to act on. With the agent dead but its last
        update recent, the task therefore stays in_progress with "stopping".
        """
        with self.lock:
            doc = self._require_task(task_id)
            is_queued = doc["status"] == st.QUEUED
            set_stopped = is_queued or DEVELOPMENT in doc.get("system_tags", ()) or not self.is_run_by_worker(doc)
            if set_stopped:
                if is_queued:
                    self._dequeue_silently(doc)
                new_status = st.STOPPED
                message = f"Stopped by {user_name or self.identity.user_name}"
            else:
                new_status = doc["status"]
                message = STOPPING
            return self.change_status(task_id, new_status, reason=reason, message=message, force=force, user=user)

    def reset(self, task_id: str, *, force: bool = False, clear_all: bool = False, user: str | None = None) -> Doc:
        """tasks.reset: back to ``created``, dropping run results (queue, output models, runtime,
        output artifacts, worker and timing fields)."""
        with self.lock:
            doc = self._require_task(task_id)
            if not force and doc["status"] == st.PUBLISHED:
                raise errors.INVALID_TASK_STATUS(task_id=task_id, status=doc["status"])
            dequeued = self._dequeue_silently(doc)
            self._remove_from_all_queues(task_id)
            extra: Doc = {
                "last_iteration": 0,
                "last_metrics": {},
                "models.output": [],
                "runtime": {},
                "enqueue_status": _UNSET,
            }
            for key in ("last_worker", "last_worker_report", "started", "completed", "published", "active_duration"):
                extra[key] = _UNSET
            if clear_all:
                extra["execution"] = {"parameters": {}, "artifacts": []}
                extra["script"] = _UNSET
            else:
                extra["execution.queue"] = _UNSET
                artifacts = doc.get("execution", {}).get("artifacts") or []
                extra["execution.artifacts"] = [a for a in artifacts if a.get("mode") == "input"]
            res = self.change_status(
                task_id, st.CREATED, reason="reset", message="reset", force=force, extra=extra, user=user
            )
            res["dequeued"] = {"removed": dequeued} if dequeued else {}
            return res

    def delete_task(self, task_id: str, *, force: bool = False, delete_output_models: bool = True) -> Doc:
        """tasks.delete: only drafts (or archived tasks) unless forced; children get the parent
        ``__DELETED__<id>`` like on the server."""
        with self.lock:
            doc = self._require_task(task_id)
            if doc["status"] != st.CREATED and ARCHIVED not in doc.get("system_tags", ()) and not force:
                raise errors.TASK_CANNOT_BE_DELETED(
                    "due to status, use force=True", task=task_id, expected=st.CREATED, current=doc["status"]
                )
            self._changed()
            self._remove_from_all_queues(task_id)
            updated_children = 0
            for kid in list(self._children.pop(task_id, [])):
                child = self._tasks.get(kid)
                if child is not None:
                    child["parent"] = DELETED_PREFIX + task_id
                    child["last_change"] = self.stamp()
                    self._children.setdefault(DELETED_PREFIX + task_id, []).append(kid)
                    updated_children += 1
            deleted_models = 0
            if delete_output_models:
                for model_id in self._models_by_task.pop(task_id, []):
                    if self._models.pop(model_id, None) is not None:
                        deleted_models += 1
            parent = doc.get("parent")
            if parent and task_id in self._children.get(parent, []):
                self._children[parent].remove(task_id)
            self._status_members[doc["status"]].discard(task_id)
            self._status_sorted[doc["status"]] = None
            self._enqueue_status.pop(task_id, None)
            self._events.pop(task_id, None)
            del self._tasks[task_id]
            del self._seq[task_id]
            return {"deleted": True, "updated_children": updated_children, "deleted_models": deleted_models}

    def force_stop_stale(self, threshold_s: float) -> list[str]:
        """The server's non-responsive watchdog pass: stop in_progress tasks whose last_update is
        older than the threshold, as ``__apiserver__``."""
        with self.lock:
            limit = dates.iso(self.now() - threshold_s)
            stale = [
                tid
                for tid in self._ids_with_status(st.IN_PROGRESS)
                if str(self._tasks[tid].get("last_update", "")) < limit
            ]
            for tid in stale:
                self.force_stop(tid)
            return stale

    def force_stop(self, task_id: str) -> Doc:
        """One task stopped the way the server watchdog does it (no transition check)."""
        with self.lock:
            doc = self._require_task(task_id)
            return self._apply_status(doc, st.STOPPED, FORCED_STOP, FORCED_STOP, None, SERVER_USER)

    # ---- tasks: edits --------------------------------------------------------------------------

    def edit_task(
        self, task_id: str, fields: Mapping[str, Any], *, force: bool = False, user: str | None = None
    ) -> Doc:
        """tasks.edit: drafts only unless forced; embedded documents (execution, script, output,
        models) are merged key by key, the rest replaced. Touching anything beyond name, comment,
        tags, project or status_message also bumps last_update."""
        with self.lock:
            doc = self._require_task(task_id)
            if not force and doc["status"] != st.CREATED:
                raise errors.INVALID_TASK_STATUS(expected=st.CREATED, status=doc["status"])
            self._validate_refs(fields.get("project"), fields.get("parent"))
            old_status = doc["status"]
            written = self._merge_fields(doc, fields, merge_embedded=True)
            for key in ("status", "status_reason", "status_message"):
                if key in fields and isinstance(fields[key], str):
                    if key == "status" and fields[key] not in st.STATUSES:
                        raise errors.VALIDATION_ERROR(f"Invalid task status: {fields[key]}")
                    doc[key] = written[key] = fields[key]
            if "output_dest" in fields:
                doc.setdefault("output", {})["destination"] = fields["output_dest"]
                written["output"] = clone(doc["output"])
            if not written:
                return {"updated": 0}
            self._changed()
            self._reindex_status(task_id, old_status, doc["status"])
            now = self.stamp()
            stamps: Doc = {"last_change": now, "last_changed_by": self._user(user)}
            if not set(written) <= USER_SET_ALLOWED:
                stamps["last_update"] = now
            doc.update(stamps)
            written.update(stamps)
            return {"updated": 1, "fields": written}

    def _task_for_update(self, task_id: str, force: bool, allow_all_statuses: bool = False) -> Doc:
        doc = self._require_task(task_id)
        allowed = (st.CREATED, st.IN_PROGRESS) if force else (st.CREATED,)
        if not allow_all_statuses and doc["status"] not in allowed:
            raise errors.INVALID_TASK_STATUS(expected=st.CREATED, status=doc["status"])
        return doc

    def _touch(self, doc: Doc, user: str | None, last_update: bool = True) -> None:
        """Stamp an edit (anything but liveness): last_change, and last_update unless told not to."""
        self._changed()
        self._live_epoch += 1
        now = self.stamp()
        doc["last_change"] = now
        doc["last_changed_by"] = self._user(user)
        if last_update:
            doc["last_update"] = now

    def edit_hyper_params(
        self,
        task_id: str,
        items: Sequence[Mapping[str, Any]],
        *,
        replace: str = "none",
        force: bool = False,
        user: str | None = None,
    ) -> int:
        """tasks.edit_hyper_params: replace "none" merges per parameter, "section" replaces the
        sections given, "all" replaces everything. Drafts only; ``force`` also allows running
        tasks. Only the "properties" section may be edited in any status."""
        with self.lock:
            props_only = bool(items) and all(str(i.get("section", "")).lower() == "properties" for i in items)
            doc = self._task_for_update(task_id, force, allow_all_statuses=props_only)
            incoming: dict[str, dict[str, Doc]] = {}
            for item in items:
                section, name = str(item.get("section", "")), str(item.get("name", ""))
                if section.lower() == "properties":
                    section = "properties"
                incoming.setdefault(section, {})[name] = param_item(section, name, item)
            current: dict[str, dict[str, Doc]] = doc.setdefault("hyperparams", {})
            if replace == "all":
                doc["hyperparams"] = incoming
            elif replace == "section":
                current.update(incoming)
            else:
                for section, params in incoming.items():
                    current.setdefault(section, {}).update(params)
            self._touch(doc, user, last_update=not props_only)
            return 1

    def delete_hyper_params(
        self, task_id: str, items: Sequence[Mapping[str, Any]], *, force: bool = False, user: str | None = None
    ) -> int:
        with self.lock:
            doc = self._task_for_update(task_id, force)
            params: dict[str, dict[str, Doc]] = doc.setdefault("hyperparams", {})
            for item in items:
                section, name = str(item.get("section", "")), item.get("name")
                if not name:
                    params.pop(section, None)
                elif section in params:
                    params[section].pop(str(name), None)
            self._touch(doc, user)
            return 1

    def get_hyper_params(self, task_ids: Sequence[str]) -> list[Doc]:
        with self.lock:
            out = []
            for tid in task_ids:
                doc = self._tasks.get(tid)
                if doc is None:
                    raise errors.INVALID_TASK_ID(ids=list(task_ids))
                items = [clone(p) for sec in (doc.get("hyperparams") or {}).values() for p in sec.values()]
                items.sort(key=lambda p: (p.get("section", ""), p.get("name", "")))
                out.append({"task": tid, "hyperparams": items})
            return out

    def edit_configuration(
        self,
        task_id: str,
        items: Sequence[Mapping[str, Any]],
        *,
        replace: bool = False,
        force: bool = False,
        user: str | None = None,
    ) -> int:
        with self.lock:
            doc = self._task_for_update(task_id, force)
            incoming = normalize_configuration({str(i.get("name", "")): i for i in items})
            if replace:
                doc["configuration"] = incoming
            else:
                doc.setdefault("configuration", {}).update(incoming)
            self._touch(doc, user)
            return 1

    def get_configurations(self, task_ids: Sequence[str], names: Sequence[str] | None = None) -> list[Doc]:
        with self.lock:
            out = []
            for tid in task_ids:
                doc = self._tasks.get(tid)
                if doc is None:
                    raise errors.INVALID_TASK_ID(ids=list(task_ids))
                conf = doc.get("configuration") or {}
                items = [clone(v) for k, v in sorted(conf.items()) if not names or k in names]
                out.append({"task": tid, "configuration": items})
            return out

    def update_tags(
        self, ids: Sequence[str], add: Sequence[str] = (), remove: Sequence[str] = (), user: str | None = None
    ) -> int:
        """tasks.update_tags (API 2.27): atomic add/remove over many tasks; last_update untouched."""
        with self.lock:
            if not ids:
                raise errors.VALIDATION_ERROR("No entity ids provided for editing tags")
            if not (add or remove):
                raise errors.VALIDATION_ERROR("Either add tags or remove tags should be provided")
            missing = [i for i in ids if i not in self._tasks]
            if missing:
                raise errors.INVALID_TASK_ID(ids=missing)
            updated = 0
            for tid in dict.fromkeys(ids):
                doc = self._tasks[tid]
                tags = set(doc.get("tags") or [])
                if add:
                    tags |= set(add)
                    updated += 1
                if remove:
                    tags -= set(remove)
                    updated += 1
                doc["tags"] = sorted(tags)
                self._touch(doc, user, last_update=False)
            return updated

    def ping(self, task_id: str, user: str | None = None) -> None:
        """tasks.ping: bumps last_update (and active_duration of a running task)."""
        with self.lock:
            self._bump(self._require_task(task_id), user)

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

    def add_or_update_artifacts(
        self, task_id: str, artifacts: Sequence[Mapping[str, Any]], *, force: bool = True, user: str | None = None
    ) -> int:
        """tasks.add_or_update_artifacts: keyed by (key, mode); drafts, or running tasks with force."""
        with self.lock:
            doc = self._task_for_update(task_id, force)
            current: list[Doc] = doc.setdefault("execution", {}).setdefault("artifacts", [])
            for art in artifacts:
                item = clone(dict(art))
                item.setdefault("mode", "output")
                current[:] = [a for a in current if (a.get("key"), a.get("mode")) != (item.get("key"), item["mode"])]
                current.append(item)
            current.sort(key=lambda a: str(a.get("key", "")))
            self._touch(doc, user)
            return 1

    def add_or_update_model(
        self,
        task_id: str,
        name: str,
        model_id: str,
        model_type: str = "output",
        iteration: int | None = None,
        user: str | None = None,
    ) -> int:
        """tasks.add_or_update_model: replace the entry with this name or append one."""
        with self.lock:
            doc = self._task_for_update(task_id, force=True)
            entries: list[Doc] = doc.setdefault("models", {}).setdefault(model_type, [])
            item = {"name": name, "model": model_id, "updated": self.stamp()}
            for i, entry in enumerate(entries):
                if entry.get("name") == name:
                    entries[i] = item
                    break
            else:
                entries.append(item)
            if iteration is not None and iteration > doc.get("last_iteration", 0):
                doc["last_iteration"] = iteration
            self._bump(doc, user)
            return 1

    # ---- workers -------------------------------------------------------------------------------

    def register_worker(
        self,
        worker_id: str,
        queues: Sequence[str] = (),
        timeout: float | None = None,
        ip: str = "127.0.0.1",
        tags: Sequence[str] = (),
        system_tags: Sequence[str] = (),
    ) -> None:
        """workers.register: (re)creates the entry; queues must exist."""
        with self.lock:
            timeout = timeout or self.config.worker_timeout_s
            if timeout <= 0:
                raise errors.WORKER_REGISTRATION_FAILED("invalid timeout", timeout=timeout, worker=worker_id)
            missing = [q for q in queues if q not in self._queues]
            if missing:
                raise errors.INVALID_QUEUE_ID(ids=missing)
            now = self.now()
            self._workers[worker_id] = WorkerEntry(
                id=worker_id,
                ip=ip,
                queues=list(queues),
                register_time=now,
                timeout=timeout,
                last_activity_time=now,
                tags=list(tags),
                system_tags=list(system_tags),
            )

    def unregister_worker(self, worker_id: str) -> None:
        with self.lock:
            entry = self._workers.pop(worker_id, None)
            if entry is None or entry.expires_at() <= self.now():
                raise errors.WORKER_NOT_REGISTERED(worker=worker_id)

    def status_report(
        self,
        worker_id: str,
        task_id: str | None = None,
        queue: str | None = None,
        queues: Sequence[str] | None = None,
        *,
        ip: str = "127.0.0.1",
        tags: Sequence[str] | None = None,
        touch_task: bool = True,
        user: str | None = None,
    ) -> None:
        """workers.status_report: refreshes the worker (registering it if unknown); naming a task
        sets its last_worker and last_worker_report and bumps last_update. ``touch_task=False``
        is a simulation knob (a quiet-but-healthy task) that leaves last_update alone."""
        with self.lock:
            now = self.now()
            entry = self._live_worker(worker_id, now)
            if entry is None:
                entry = WorkerEntry(
                    id=worker_id,
                    ip=ip,
                    queues=[],
                    register_time=now,
                    timeout=self.config.worker_timeout_s,
                    last_activity_time=now,
                )
                self._workers[worker_id] = entry
            entry.ip = ip
            entry.queue = queue
            if queues:
                entry.queues = list(queues)
            if tags is not None:
                entry.tags = list(tags)
            if not task_id:
                entry.task = entry.project = None
            else:
                doc = self._tasks.get(task_id)
                if doc is None:
                    raise errors.INVALID_TASK_ID(id=task_id, company=self.identity.company)
                stamp = dates.iso(now)
                self._live_epoch += 1
                doc["last_worker"] = worker_id
                doc["last_worker_report"] = stamp
                if touch_task:
                    doc["last_update"] = stamp
                    doc["last_change"] = stamp
                    doc["last_changed_by"] = self._user(user)
                entry.task = task_id
                entry.project = doc.get("project")
            entry.touch(now, report=True)

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

    def worker_ids(self) -> list[str]:
        """Ids of the workers the server still lists (inspection helper)."""
        with self.lock:
            return [w.id for w in self._live_workers(self.now())]

    def workers(
        self, last_seen: float | None = 3600, worker_pattern: str | None = None, tags: Sequence[str] | None = None
    ) -> list[Doc]:
        """workers.get_all: entries not yet expired (and active within ``last_seen`` seconds),
        with task, queue and queues resolved. An idle worker has no ``task`` and no ``queue``."""
        with self.lock:
            now = self.now()
            out = []
            briefs: dict[str, Doc] = {}
            for entry in self._live_workers(now):
                if last_seen and entry.last_activity_time < now - max(1.0, last_seen):
                    continue
                if worker_pattern and not re.search(worker_pattern.replace("*", ".*").replace("?", ".?"), entry.id):
                    continue
                if tags and not set(tags) & set(entry.tags):
                    continue
                out.append(self._worker_doc(entry, briefs))
            return out

    def _queue_brief(self, queue_id: str) -> Doc:
        queue = self._queues.get(queue_id)
        if queue is None:
            return {"id": queue_id}
        brief: Doc = {"id": queue_id, "name": queue["name"], "num_tasks": len(queue["entries"])}
        if queue.get("display_name"):
            brief["display_name"] = queue["display_name"]
        if queue["entries"]:
            head = queue["entries"][0]["task"]
            task = self._tasks.get(head)
            brief["next_task"] = {"id": head, **({"name": task["name"]} if task else {})}
        return brief

    def _cached_brief(self, queue_id: str, briefs: dict[str, Doc]) -> Doc:
        """A copy of the queue summary, computed once per workers() call."""
        if queue_id not in briefs:
            briefs[queue_id] = self._queue_brief(queue_id)
        return clone(briefs[queue_id])

    def _worker_doc(self, entry: WorkerEntry, briefs: dict[str, Doc]) -> Doc:
        ident = self.identity
        doc: Doc = {
            "key": f"worker_{ident.company}_{ident.user}_{entry.id}",
            "id": entry.id,
            "user": {"id": ident.user, "name": ident.user_name},
            "company": {"id": ident.company, "name": ident.company_name},
            "ip": entry.ip,
            "register_time": entry.stamps["register_time"],
            "register_timeout": int(entry.timeout),
            "last_activity_time": entry.stamps["last_activity_time"],
            "queues": [self._cached_brief(q, briefs) for q in entry.queues],
            "tags": list(entry.tags),
            "system_tags": list(entry.system_tags),
        }
        if "last_report_time" in entry.stamps:
            doc["last_report_time"] = entry.stamps["last_report_time"]
        if entry.task:
            task = self._tasks.get(entry.task)
            current: Doc = {"id": entry.task}
            if task is not None:
                current.update(
                    name=task["name"],
                    running_time=int(task.get("active_duration") or 0) * 1000,
                    last_iteration=task.get("last_iteration", 0),
                )
            doc["task"] = current
        if entry.project:
            project = self._projects.get(entry.project)
            doc["project"] = {"id": entry.project, **({"name": project["name"]} if project else {})}
        if entry.queue:
            doc["queue"] = self._cached_brief(entry.queue, briefs)
        return doc

    # ---- models --------------------------------------------------------------------------------

    def create_model(self, fields: Mapping[str, Any], user: str | None = None) -> str:
        """models.create: a model record (the simulator never stores weights)."""
        with self.lock:
            name = fields.get("name")
            if name is not None and len(str(name).strip()) < 3:
                raise errors.DATA_VALIDATION_ERROR(name="String value is too short")
            task_id = fields.get("task")
            if task_id and task_id not in self._tasks:
                raise errors.INVALID_TASK_ID(id=task_id)
            now = self.stamp()
            mid = self.new_id()
            doc: Doc = {
                "id": mid,
                "name": str(name or "Untitled model"),
                "user": self._user(user),
                "company": self.identity.company,
                "created": now,
                "last_update": now,
                "last_change": now,
                "uri": str(fields.get("uri") or ""),
                "ready": bool(fields.get("ready", False)),
                "tags": _sorted_unique(_str_list(fields.get("tags"))),
                "system_tags": _sorted_unique(_str_list(fields.get("system_tags"))),
                "last_iteration": int(fields.get("iteration") or fields.get("last_iteration") or 0),
                "comment": str(fields.get("comment") or ""),
            }
            for key in ("framework", "task", "project", "parent", "design", "labels"):
                if fields.get(key) is not None:
                    doc[key] = clone(fields[key])
            self._models[mid] = doc
            if task_id:
                self._models_by_task.setdefault(task_id, []).append(mid)
            return mid

    def update_model(self, model_id: str, fields: Mapping[str, Any], user: str | None = None) -> Doc:
        """models.update / models.edit: set the given fields and stamp last_update."""
        with self.lock:
            doc = self._models.get(model_id)
            if doc is None:
                raise errors.INVALID_MODEL_ID(id=model_id)
            written: Doc = {}
            for key in (
                "name",
                "comment",
                "tags",
                "system_tags",
                "ready",
                "framework",
                "uri",
                "design",
                "labels",
                "project",
                "task",
            ):
                if key in fields:
                    value = fields[key]
                    if key in ("tags", "system_tags"):
                        value = _sorted_unique(_str_list(value))
                    doc[key] = written[key] = clone(value)
            if "iteration" in fields and fields["iteration"] is not None:
                doc["last_iteration"] = written["last_iteration"] = int(fields["iteration"])
            if "task" in written:
                for mids in self._models_by_task.values():
                    if model_id in mids:
                        mids.remove(model_id)
                if written["task"]:
                    self._models_by_task.setdefault(written["task"], []).append(model_id)
            now = self.stamp()
            doc["last_update"] = doc["last_change"] = written["last_update"] = now
            doc["last_changed_by"] = self._user(user)
            return {"updated": 1, "fields": written}

    def get_model(self, model_id: str) -> Doc:
        with self.lock:
            doc = self._models.get(model_id)
            if doc is None:
                raise errors.INVALID_MODEL_ID(id=model_id)
            return clone(doc)

    def query_models(self, data: Mapping[str, Any]) -> tuple[list[Doc], Doc]:
        with self.lock:
            tasks = query.include_values(data, "task")
            docs: Iterable[Doc] = self._models.values()
            if tasks is not None:
                docs = [self._models[m] for t in dict.fromkeys(tasks) for m in self._models_by_task.get(t, [])]
            return self._query(docs, data, query.MODELS)

    def save_checkpoint(self, task_id: str, uri: str, name: str = "checkpoint", user: str | None = None) -> str:
        """A framework checkpoint as the SDK records it: ONE model per task (its uri and
        last_update change on every save, its last_iteration stays 0, as observed) while
        ``models.output`` on the task grows an entry per save, all pointing at that model."""
        with self.lock:
            doc = self._require_task(task_id)
            mids = self._models_by_task.get(task_id) or []
            model_id = next((m for m in mids if self._models[m].get("name") == name), None)
            if model_id is None:
                model_id = self.create_model(
                    {
                        "name": name,
                        "uri": uri,
                        "task": task_id,
                        "project": doc.get("project"),
                        "framework": "PyTorch",
                        "ready": False,
                    },
                    user=user,
                )
            else:
                self.update_model(model_id, {"uri": uri}, user=user)
            doc.setdefault("models", {}).setdefault("output", []).append(
                {"name": name, "model": model_id, "updated": self.stamp()}
            )
            self._bump(doc, user)
            return model_id

    # ---- events --------------------------------------------------------------------------------

    def add_events(self, events: Sequence[Mapping[str, Any]], user: str | None = None) -> Doc:
        """events.add_batch: scalars update last_iteration/last_metrics; every event bumps the
        task's last_update (as update_statistics does)."""
        with self.lock:
            added, errs = 0, 0
            info: dict[str, int] = {}
            touched: dict[str, Doc] = {}
            for event in events:
                task_id = event.get("task")
                doc = self._tasks.get(task_id) if isinstance(task_id, str) else None
                if doc is None:
                    errs += 1
                    key = f"Invalid task id {task_id}"
                    info[key] = info.get(key, 0) + 1
                    continue
                stored = self._events.setdefault(doc["id"], [])
                stored.append(clone(dict(event)))
                if len(stored) > MAX_EVENTS_PER_TASK:
                    del stored[: len(stored) - MAX_EVENTS_PER_TASK]
                iteration = event.get("iter")
                if isinstance(iteration, int) and iteration > doc.get("last_iteration", 0):
                    doc["last_iteration"] = iteration
                if event.get("type") == "training_stats_scalar" and "metric" in event and "variant" in event:
                    self._record_metric(doc, event)
                touched[doc["id"]] = doc
                added += 1
            for doc in touched.values():
                self._bump(doc, user)
            return {"added": added, "errors": errs, "errors_info": info}

    def _record_metric(self, doc: Doc, event: Mapping[str, Any]) -> None:
        metric, variant = str(event["metric"]), str(event["variant"])
        value = event.get("value")
        metrics = doc.setdefault("last_metrics", {}).setdefault(_hash(metric), {})
        prev = metrics.get(_hash(variant), {})
        entry: Doc = {"metric": metric, "variant": variant, "value": value}
        if isinstance(value, (int, float)):
            entry["min_value"] = min(value, prev.get("min_value", value))
            entry["max_value"] = max(value, prev.get("max_value", value))
        if "iter" in event:
            entry["iter"] = event["iter"]
        metrics[_hash(variant)] = entry

    def task_events(self, task_id: str) -> list[Doc]:
        """Events stored for a task (inspection helper)."""
        with self.lock:
            return clone(self._events.get(task_id, []))
