"""Workers as the server lists them (workers.* endpoints).

An entry lives until ``timeout`` (600 s by default) after its last activity, like the Redis key
the server refreshes on every report; a status report naming a task sets that task's
last_worker and last_worker_report and bumps its last_update. ``workers.get_all`` resolves the
current task (id, name, running_time, last_iteration), the queue it came from and the queues
served; an idle worker has no ``task`` and no ``queue`` key."""

from __future__ import annotations

import re
from collections.abc import Sequence

from . import dates, errors
from .query import Doc, clone
from .store import Store, WorkerEntry


class WorkerOps(Store):
    """Worker operations."""

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
