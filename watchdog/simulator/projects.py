"""Projects: create, look up by name or id, query (projects.* endpoints)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import errors, query
from .query import Doc, clone
from .store import Store, sorted_unique


class ProjectOps(Store):
    """Project operations; names are unique and at least 3 characters."""

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
                "tags": sorted_unique(tags),
                "system_tags": sorted_unique(system_tags),
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
