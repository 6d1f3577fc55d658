"""The gateway: the only module that talks to ClearML, and the only one that imports `clearml`.

Who calls it: recovery (reads and actions), the CLI (check-config, deploy-service), the service.
It uses the SDK for what the SDK is good at (finding credentials in clearml.conf / CLEARML_* variables,
logging in, refreshing the token, learning the server's API version) and sends raw JSON requests through
the SDK's session, reading responses straight into our snapshots (the SDK's typed responses cost ~40x
the CPU). The SDK's default retries (240 tries, forever on 503) are replaced by a small bounded budget,
so a dead server ends a cycle in bounded time.

Every failure leaves here as `ClearMLUnavailable` (temporary: the watchdog is blind) or
`ClearMLRejected` (permanent: the server refused this call). One malformed record is logged and skipped.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import requests
import structlog

from watchdog.config import ClearMLConfig
from watchdog.errors import ClearMLRejected, ClearMLUnavailable, ConfigError
from watchdog.servertime import parse_date_header, parse_timestamp, to_wire, utcnow
from watchdog.snapshots import (
    TASK_LIST_FIELDS,
    MalformedRecord,
    ModelSnapshot,
    TaskDetails,
    TaskSnapshot,
    WorkerSnapshot,
)

log = structlog.get_logger(__name__)

PAGE_SIZE = 500  # the server's maximum page
ENDED_STATUSES = ("stopped", "failed")
T = TypeVar("T")


@dataclass
class GatewayStats:
    """Counters the metrics endpoint reads."""

    calls: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    skipped_records: int = 0

    def count(self, endpoint: str) -> None:
        self.calls[endpoint] = self.calls.get(endpoint, 0) + 1


def _session_class(timeout_s: float) -> type[Any]:
    """The SDK session with our timeouts (the SDK's default read timeout is 300 s)."""
    from clearml.backend_api.session import Session

    class BoundedSession(Session):
        _session_initial_timeout = (min(timeout_s, 10.0), timeout_s)
        _session_timeout = (min(timeout_s, 10.0), timeout_s)
        _write_session_timeout = (timeout_s, timeout_s)

    return BoundedSession


def _login(settings: ClearMLConfig) -> Any:
    """Log in through the SDK with bounded retries. Raises the SDK's own errors; the caller translates."""
    from clearml.config import ConfigWrapper

    # Never wait forever on 503 "maintenance": the daemon must keep its own rhythm.
    ConfigWrapper.set_overrides({"api": {"http": {"wait_on_maintenance_forever": False}}})
    retries = settings.retries
    session_class = _session_class(settings.request_timeout_s)
    return session_class(
        api_key=settings.access_key,
        secret_key=settings.secret_key.get_secret_value() if settings.secret_key else None,
        host=settings.api_host,
        http_retries_config={
            "total": retries,
            "connect": retries,
            "read": retries,
            "redirect": 2,
            "status": retries,
            "backoff_factor": 0.5,
            "backoff_max": 4.0,
        },
    )


class Gateway:
    """ClearML as the watchdog sees it. Thread-safe enough for one cycle at a time plus the health thread."""

    def __init__(self, settings: ClearMLConfig, *, login: Callable[[ClearMLConfig], Any] = _login) -> None:
        self._settings = settings
        self._login = login
        self._session: Any = None
        self._lock = threading.Lock()
        self._clock_offset = timedelta(0)  # server clock minus local clock, from `Date` headers
        self._queue_names: dict[str, str] = {}
        self._project_names: dict[str, str] = {}
        self.stats = GatewayStats()

    # --- transport ---------------------------------------------------------------------------------

    def _ensure_session(self) -> Any:
        with self._lock:
            if self._session is not None:
                return self._session
            try:
                self._session = self._login(self._settings)
            except Exception as error:  # the SDK raises many types; translate all of them here
                raise self._translate_login_error(error) from None
            return self._session

    def _translate_login_error(self, error: Exception) -> Exception:
        name = type(error).__name__
        text = str(error)
        if name == "MissingConfigError":
            return ConfigError(
                "no ClearML credentials: set CLEARML_API_HOST, CLEARML_API_ACCESS_KEY and "
                "CLEARML_API_SECRET_KEY, run `clearml-init`, or fill the `clearml:` section of the config"
            )
        if "error 401" in text or "error 403" in text or "Unauthorized" in text:
            return ClearMLRejected("auth.login", 401, 0, "ClearML refused the credentials: check access/secret key")
        if isinstance(error, ValueError) and "host was not set" in text:
            return ConfigError("no ClearML API host: set CLEARML_API_HOST or clearml.api_host in the config")
        return ClearMLUnavailable(f"cannot log in to ClearML: {name}: {text[:300]}")

    @property
    def api_host(self) -> str:
        session = self._ensure_session()
        return str(session.host)

    @property
    def web_host(self) -> str:
        if self._settings.web_host:
            return self._settings.web_host.rstrip("/")
        from clearml.backend_api.session import Session

        try:
            return str(Session.get_app_server_host()).rstrip("/")
        except Exception:
            return ""

    def server_now(self) -> datetime:
        """The server's clock (from the last response's `Date` header), else ours."""
        return utcnow() + self._clock_offset

    def call(self, service: str, action: str, body: dict[str, Any], version: str | None = None) -> dict[str, Any]:
        """One API call. Returns `data`; raises ClearMLUnavailable / ClearMLRejected."""
        endpoint = f"{service}.{action}"
        session = self._ensure_session()
        self.stats.count(endpoint)
        try:
            response = session.send_request(service, action, version=version or self._api_version(), json=body)
        except (requests.RequestException, OSError) as error:
            self.stats.errors += 1
            raise ClearMLUnavailable(f"{endpoint}: ClearML unreachable: {_cause(error)}") from None
        except Exception as error:  # SDK internals (LoginError on token refresh, ...)
            self.stats.errors += 1
            raise ClearMLUnavailable(f"{endpoint}: {type(error).__name__}: {str(error)[:200]}") from None
        if response is None:
            raise ClearMLUnavailable(f"{endpoint}: the SDK is in offline mode")
        self._note_server_clock(response.headers.get("Date"))
        return self._unwrap(endpoint, response)

    def _api_version(self) -> str:
        from clearml.backend_api.session import Session

        return str(Session.api_version)

    def _note_server_clock(self, header: str | None) -> None:
        server = parse_date_header(header)
        if server is not None:
            # Date has 1 s resolution; keep the offset only when it is larger than that noise.
            offset = server - utcnow()
            self._clock_offset = offset if abs(offset) > timedelta(seconds=2) else timedelta(0)

    def _unwrap(self, endpoint: str, response: requests.Response) -> dict[str, Any]:
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            self.stats.errors += 1
            if status >= 500 or status == 429:
                raise ClearMLUnavailable(f"{endpoint}: HTTP {status}") from None
            raise ClearMLUnavailable(f"{endpoint}: HTTP {status}, not JSON: is api_host the API server?") from None
        meta = payload.get("meta") if isinstance(payload, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        code = meta.get("result_code", status)
        code = code if isinstance(code, int) else status
        if code == 200 and status == 200:
            data = payload.get("data")
            return data if isinstance(data, dict) else {}
        self.stats.errors += 1
        message = str(meta.get("result_msg") or response.reason or "")[:300]
        if code >= 500 or status >= 500 or code == 429 or status == 429:
            raise ClearMLUnavailable(f"{endpoint}: HTTP {status}: {message}")
        subcode = meta.get("result_subcode", 0)
        raise ClearMLRejected(endpoint, code, subcode if isinstance(subcode, int) else 0, message)

    # --- parsing -----------------------------------------------------------------------------------

    def _parse(self, records: object, parse: Callable[[object], T], kind: str) -> list[T]:
        if not isinstance(records, list):
            raise ClearMLUnavailable(f"{kind} list is not a list: the server answered something odd")
        parsed: list[T] = []
        for raw in records:
            try:
                parsed.append(parse(raw))
            except MalformedRecord as error:
                self.stats.skipped_records += 1
                log.warning("record_skipped", kind=error.kind, id=error.record_id, problem=error.problem)
        return parsed

    def _paged_tasks(self, body: dict[str, Any]) -> Iterator[list[Any]]:
        page = 0
        while True:
            data = self.call("tasks", "get_all", {**body, "page": page, "page_size": PAGE_SIZE})
            records = data.get("tasks")
            if not isinstance(records, list):
                raise ClearMLUnavailable("tasks.get_all: no task list in the answer")
            yield records
            if len(records) < PAGE_SIZE:
                return
            page += 1

    # --- reads -------------------------------------------------------------------------------------

    def list_workers(self) -> list[WorkerSnapshot]:
        data = self.call("workers", "get_all", {"last_seen": 3600})
        return self._parse(data.get("workers"), WorkerSnapshot.from_api, "worker")

    def _task_query(self, project_ids: Sequence[str] | None) -> dict[str, Any]:
        # Local development runs have no agent to lose; the server pulls the tag when a task is enqueued,
        # so no task an agent runs carries it. Not fetching them is most of an idle cycle's CPU.
        body: dict[str, Any] = {
            "only_fields": list(TASK_LIST_FIELDS),
            "order_by": ["id"],
            "system_tags": ["-development"],
        }
        if project_ids:
            body["project"] = list(project_ids)
        return body

    def list_running(self, project_ids: Sequence[str] | None = None) -> list[TaskSnapshot]:
        """Every in_progress task, one projected call per 500."""
        body = {**self._task_query(project_ids), "status": ["in_progress"]}
        tasks: list[TaskSnapshot] = []
        for page in self._paged_tasks(body):
            tasks.extend(self._parse(page, TaskSnapshot.from_api, "task"))
        return tasks

    def list_ended_since(
        self, since: datetime, project_ids: Sequence[str] | None = None, exclude_tags: Sequence[str] = ()
    ) -> list[TaskSnapshot]:
        """Tasks that stopped or failed after `since` (server time). ISO-8601: an epoch would be dropped silently."""
        body = {
            **self._task_query(project_ids),
            "status": list(ENDED_STATUSES),
            "status_changed": [f">{to_wire(since)}"],
        }
        if exclude_tags:
            body["tags"] = [f"-{tag}" for tag in exclude_tags]
        tasks: list[TaskSnapshot] = []
        for page in self._paged_tasks(body):
            tasks.extend(self._parse(page, TaskSnapshot.from_api, "task"))
        return tasks

    def get_tasks(self, task_ids: Iterable[str]) -> list[TaskSnapshot]:
        ids = sorted(set(task_ids))
        tasks: list[TaskSnapshot] = []
        for start in range(0, len(ids), PAGE_SIZE):
            body = {
                "only_fields": list(TASK_LIST_FIELDS),
                "id": ids[start : start + PAGE_SIZE],
                "page": 0,
                "page_size": PAGE_SIZE,
            }
            data = self.call("tasks", "get_all", body)
            tasks.extend(self._parse(data.get("tasks"), TaskSnapshot.from_api, "task"))
        return tasks

    def list_children(self, parent_id: str, tag: str) -> list[TaskSnapshot]:
        body = {**self._task_query(None), "parent": [parent_id], "tags": [tag], "page": 0, "page_size": PAGE_SIZE}
        data = self.call("tasks", "get_all", body)
        return self._parse(data.get("tasks"), TaskSnapshot.from_api, "task")

    def get_details(self, task_id: str) -> TaskDetails:
        data = self.call("tasks", "get_by_id", {"task": task_id})
        try:
            return TaskDetails.from_api(data.get("task"))
        except MalformedRecord as error:
            self.stats.skipped_records += 1
            raise ClearMLRejected("tasks.get_by_id", 200, 0, str(error)) from None

    def list_output_models(self, task_id: str) -> list[ModelSnapshot]:
        body = {
            "task": [task_id],
            "only_fields": ["id", "name", "uri", "last_update", "created", "last_iteration"],
            "order_by": ["-last_update"],
            "page": 0,
            "page_size": PAGE_SIZE,
        }
        data = self.call("models", "get_all", body)
        return self._parse(data.get("models"), ModelSnapshot.from_api, "model")

    def queue_names(self, refresh: bool = False) -> dict[str, str]:
        """Queue id -> name, cached (queues rarely change; refresh on demand)."""
        if refresh or not self._queue_names:
            data = self.call("queues", "get_all", {"only_fields": ["id", "name"]})
            queues = data.get("queues")
            if isinstance(queues, list):
                self._queue_names = {
                    q["id"]: str(q.get("name", ""))
                    for q in queues
                    if isinstance(q, dict) and isinstance(q.get("id"), str)
                }
        return dict(self._queue_names)

    def queue_id(self, name: str, refresh: bool = False) -> str | None:
        """The id of a queue by its exact name, or None. Never creates a queue (enqueue by name would)."""
        for queue_id, queue_name in self.queue_names(refresh).items():
            if queue_name == name:
                return queue_id
        return None if refresh else self.queue_id(name, refresh=True)

    def project_ids(self, names: Sequence[str]) -> dict[str, str]:
        """Project name -> id for the names that exist."""
        if not names:
            return {}
        # `name` is a regular expression on the server: anchor it, escape the names, one call for all.
        pattern = "^(" + "|".join(re.escape(name) for name in names) + ")$"
        data = self.call("projects", "get_all", {"name": pattern, "only_fields": ["id", "name"]})
        found = {
            str(p["name"]): p["id"]
            for p in data.get("projects") or []
            if isinstance(p, dict) and isinstance(p.get("id"), str) and p.get("name") in names
        }
        self._project_names.update({v: k for k, v in found.items()})
        return found

    def project_name(self, project_id: str) -> str:
        if not project_id:
            return ""
        if project_id not in self._project_names:
            try:
                data = self.call("projects", "get_all", {"id": [project_id], "only_fields": ["id", "name"]})
            except ClearMLRejected:
                return ""
            for project in data.get("projects") or []:
                if isinstance(project, dict) and project.get("id") == project_id:
                    self._project_names[project_id] = str(project.get("name", ""))
        return self._project_names.get(project_id, "")

    def task_url(self, task_id: str, project_id: str = "") -> str:
        web = self.web_host
        if not web or not task_id:
            return ""
        return f"{web}/projects/{project_id or '*'}/experiments/{task_id}/output/execution"

    # --- actions -----------------------------------------------------------------------------------

    def mark_stopped(self, task_id: str, reason: str, message: str) -> None:
        """`tasks.stopped`, forced: a plain `tasks.stop` on an orphan only says "stopping" and bumps last_update."""
        self.call(
            "tasks",
            "stopped",
            {"task": task_id, "force": True, "status_reason": reason, "status_message": message},
        )

    def clone(
        self,
        source_id: str,
        *,
        name: str,
        comment: str,
        tags: Sequence[str],
        hyperparams: dict[str, Any],
    ) -> str:
        """Clone with the source as parent. `hyperparams` REPLACES all of them: pass the full, merged set."""
        data = self.call(
            "tasks",
            "clone",
            {
                "task": source_id,
                "new_task_name": name,
                "new_task_comment": comment,
                "new_task_tags": list(tags),
                "new_task_parent": source_id,
                "new_task_hyperparams": hyperparams,
            },
        )
        clone_id = data.get("id")
        if not isinstance(clone_id, str) or not clone_id:
            raise ClearMLUnavailable("tasks.clone: no id in the answer")
        return clone_id

    def enqueue(self, task_id: str, queue_id: str, reason: str, message: str) -> None:
        """Enqueue by queue id (by name the server would create a misspelt queue)."""
        self.call(
            "tasks",
            "enqueue",
            {"task": task_id, "queue": queue_id, "status_reason": reason, "status_message": message},
        )

    def add_tags(self, task_id: str, tags: Sequence[str]) -> None:
        """Atomic `tasks.update_tags` (API 2.27+); older servers get a read-modify-write `tasks.edit`."""
        if self._api_at_least(2, 27):
            self.call("tasks", "update_tags", {"ids": [task_id], "add_tags": list(tags)}, version="2.27")
            return
        current = self.get_tasks([task_id])
        existing = list(current[0].tags) if current else []
        merged = existing + [t for t in tags if t not in existing]
        self.call("tasks", "edit", {"task": task_id, "tags": merged, "force": True})

    def delete_draft(self, task_id: str) -> None:
        """Delete a clone that never ran (a duplicate from a lost race). Only drafts: never work."""
        self.call("tasks", "delete", {"task": task_id, "force": False, "status_reason": "duplicate clone"})

    def _api_at_least(self, major: int, minor: int) -> bool:
        try:
            got = tuple(int(p) for p in self._api_version().split(".")[:2])
        except ValueError:
            return False
        return got >= (major, minor)


def _cause(error: BaseException) -> str:
    """A short reason from a requests/urllib3 error ("too many 503 error responses", "Connection refused")."""
    text = str(error)
    for marker in ("Caused by ", "] "):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = text.strip("()'\" ")
    return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__


def since_or_default(cursor: str | None, fallback: datetime) -> datetime:
    """Parse a stored cursor; a bad or missing one falls back (never an unparsed filter: the server drops it)."""
    parsed = parse_timestamp(cursor) if cursor else None
    return parsed if parsed is not None else fallback.astimezone(timezone.utc)
