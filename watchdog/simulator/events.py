"""Reported events (events.add_batch): scalars move a task's last_iteration and last_metrics,
and every event bumps its last_update."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .query import Doc, clone
from .store import Store

MAX_EVENTS_PER_TASK: Final = 10_000


def _hash(name: str) -> str:
    return hashlib.md5(name.encode("utf-8")).hexdigest()


class EventOps(Store):
    """Event operations."""

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

    def events_page(
        self,
        task_id: str,
        event_type: str | None = None,
        *,
        order: str = "asc",
        scroll_id: str | None = None,
        batch_size: int = 500,
    ) -> Doc:
        """events.get_task_events / get_task_log: stored events of a task, in pages with a scroll id."""
        with self.lock:
            self._require_task(task_id)
            found = [e for e in self._events.get(task_id, []) if not event_type or e.get("type") == event_type]
            if order == "desc":
                found.reverse()
            scroll_id = scroll_id or self.new_id()
            start = self._scrolls.get(scroll_id, 0)
            page = found[start : start + max(1, batch_size)]
            self._scrolls[scroll_id] = start + len(page)
            return {"events": clone(page), "returned": len(page), "total": len(found), "scroll_id": scroll_id}

    def scalar_histogram(self, task_id: str) -> Doc:
        """events.scalar_metrics_iter_histogram: ``{metric: {variant: {name, x: iters, y: values}}}``."""
        with self.lock:
            self._require_task(task_id)
            out: Doc = {}
            for event in self._events.get(task_id, []):
                if event.get("type") != "training_stats_scalar" or "metric" not in event:
                    continue
                series = out.setdefault(str(event["metric"]), {}).setdefault(
                    str(event.get("variant", "")), {"name": str(event.get("variant", "")), "x": [], "y": []}
                )
                series["x"].append(event.get("iter", 0))
                series["y"].append(event.get("value"))
            return out
