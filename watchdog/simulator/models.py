"""Models (models.* endpoints) and the checkpoints simulated training saves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import errors, query
from .query import Doc, clone
from .store import Store, sorted_unique, str_list


class ModelOps(Store):
    """Model operations."""

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
                "tags": sorted_unique(str_list(fields.get("tags"))),
                "system_tags": sorted_unique(str_list(fields.get("system_tags"))),
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
                        value = sorted_unique(str_list(value))
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
