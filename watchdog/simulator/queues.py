"""Queues and their entries (queues.* endpoints, and the queue side of enqueue/dequeue/stop).

A queue is an ordered list of ``{task, added}`` entries. Adding a task a queue already holds is
refused atomically (TaskAlreadyQueued), and ``get_next_task`` hands each entry to exactly one
caller, as in bll/queue/queue_bll.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import dates, errors, query
from . import transitions as st
from .query import Doc, clone
from .store import UNSET, Store, sorted_unique


class QueueOps(Store):
    """Queue operations."""

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
                "tags": sorted_unique(tags),
                "system_tags": sorted_unique(system_tags),
                "entries": [],
                "last_update": now,
                "metadata": {},
            }
            if display_name:
                doc["display_name"] = display_name
            self._queues[qid] = doc
            self._queue_by_name[name] = qid
            return qid

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

    def _dequeue_silently(self, doc: Doc) -> int:
        queue_id = doc.get("execution", {}).get("queue")
        if doc["status"] != st.QUEUED or not queue_id or queue_id not in self._queues:
            return 0
        queue = self._queues[queue_id]
        before = len(queue["entries"])
        queue["entries"] = [e for e in queue["entries"] if e["task"] != doc["id"]]
        return before - len(queue["entries"])

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
                        {"enqueue_status": UNSET, "execution.queue": UNSET},
                        None,
                    )
            del self._queues[queue_id]
            del self._queue_by_name[queue["name"]]

    def _default_queue(self) -> str:
        found: list[str] = [q["id"] for q in self._queues.values() if "default" in q.get("system_tags", ())]
        if not found:
            raise errors.NO_DEFAULT_QUEUE()
        return found[0]
