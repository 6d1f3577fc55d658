"""Task lifecycle, the heart of the simulated server (tasks.* endpoints).

Create, clone, edit, query; the status endpoints under the transition table, as compare-and-set
on the status that was read; enqueue (auto-creating a queue given by name, refusing a duplicate
entry and reverting with "failed enqueueing"), dequeue, stop (the "stopping" rule), reset,
delete (children get ``__DELETED__<id>`` as parent), the server's forced stop of non-responsive
tasks, hyperparameters, configuration, tags, artifacts, pings. Semantics follow
apiserver/bll/task/* of clearml-server 2.0.0; docstrings say where the simulator simplifies.

``query_tasks`` keeps the full ordered match list of a filter until a task changes in a way the
filter could see (``_epoch``; liveness stamps count only for filters on them), so paging through
50,000 running tasks costs one scan plus a slice per page and answers exactly what a fresh scan
would."""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from . import dates, errors, query
from . import transitions as st
from .projects import ProjectOps
from .query import Doc, clone
from .queues import QueueOps
from .store import (
    ARCHIVED,
    DELETED_PREFIX,
    DEVELOPMENT,
    FORCED_STOP,
    SERVER_USER,
    STOPPING,
    UNSET,
    sorted_unique,
    str_list,
)

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


class TaskOps(ProjectOps, QueueOps):
    """Task operations (they use projects and queues)."""

    def get_task(self, task_id: str) -> Doc:
        """tasks.get_by_id (a copy)."""
        with self.lock:
            doc = self._tasks.get(task_id)
            if doc is None:
                raise errors.INVALID_TASK_ID(ids=[task_id])
            return clone(doc)

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

    def _validate_name(self, name: Any) -> str:
        if not isinstance(name, str) or len(name.strip()) < 3:
            raise errors.DATA_VALIDATION_ERROR(name="String value is too short")
        return name.strip()

    def _validate_refs(self, project: Any, parent: Any) -> None:
        if project and project not in self._projects:
            raise errors.INVALID_PROJECT_ID(id=project)
        if parent and not str(parent).startswith(DELETED_PREFIX) and parent not in self._tasks:
            raise errors.INVALID_TASK_ID("invalid parent", parent=parent)

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
            self._merge_fields(doc, fields)
            if "output_dest" in fields:
                doc["output"]["destination"] = fields["output_dest"]
            return self._insert_task(doc)

    def _merge_fields(self, doc: Doc, fields: Mapping[str, Any]) -> Doc:
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
                value = sorted_unique(str_list(value))
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
            if key in EMBEDDED_FIELDS and isinstance(value, dict):
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
                tags=sorted_unique(str_list(tags)) if tags else list(src.get("tags") or []),
                system_tags=(
                    sorted_unique(str_list(system_tags))
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
                self._apply_status(doc, before, "failed enqueueing", "", {"enqueue_status": UNSET}, user)
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
            fields = self._apply_status(doc, target, reason, message, {"enqueue_status": UNSET}, user)
            return {"dequeued": 1 if removed else 0, "updated": 1, "fields": fields}

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
                "enqueue_status": UNSET,
            }
            for key in ("last_worker", "last_worker_report", "started", "completed", "published", "active_duration"):
                extra[key] = UNSET
            if clear_all:
                extra["execution"] = {"parameters": {}, "artifacts": []}
                extra["script"] = UNSET
            else:
                extra["execution.queue"] = UNSET
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
            written = self._merge_fields(doc, fields)
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

    def set_requirements(self, task_id: str, requirements: Mapping[str, Any], user: str | None = None) -> Doc:
        """tasks.set_requirements: in any status (Task.init sends them while the task runs)."""
        with self.lock:
            doc = self._require_task(task_id)
            doc.setdefault("script", {})["requirements"] = clone(dict(requirements))
            self._touch(doc, user)
            return {"updated": 1, "fields": {"script.requirements": clone(dict(requirements))}}

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
