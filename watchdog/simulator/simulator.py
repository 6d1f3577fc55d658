"""``Simulator``: one simulated ClearML server with its agents, ready for tests, demo and benchmarks.

It owns the state, the HTTP listener, the agent fleet, the fault injector and the call counter,
and offers three kinds of helpers: seeding (projects, queues, tasks, agents, bulk running
fleets), events (kill -9, SIGTERM, restart, user abort, code failure, forced stop, completion,
quiet-but-healthy) and inspection (tasks, queues, workers, models as the server holds them).
Seeding and events act on the state directly; only real clients go through HTTP and get counted.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from . import transitions as st
from .agents import Agent, Fleet
from .calls import CallCounter
from .clock import SimClock
from .config import SimulatorConfig
from .faults import FaultInjector
from .query import Doc
from .server import ApiServer
from .state import State
from .tokens import TokenIssuer

T = TypeVar("T")


def _typed_params(hyperparams: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Doc]]:
    """``{"Args": {"lr": 0.1}}`` -> wire items with string values and the Python type as ``type``."""
    out: dict[str, dict[str, Doc]] = {}
    for section, params in (hyperparams or {}).items():
        sec: dict[str, Doc] = {}
        for name, value in params.items():
            if isinstance(value, Mapping):
                sec[name] = {"section": section, "name": name, **value}
                continue
            kind = type(value).__name__ if value is not None else "str"
            sec[name] = {
                "section": section,
                "name": name,
                "value": "" if value is None else str(value),
                "type": kind,
                "description": "",
            }
        out[section] = sec
    return out


class Simulator:
    """A ClearML API server simulator speaking the real wire format on 127.0.0.1."""

    def __init__(self, config: SimulatorConfig | None = None, *, clock: SimClock | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.clock = clock or SimClock()
        self.state = State(self.config, self.clock)
        self.faults = FaultInjector(self.config.faults)
        self.calls = CallCounter()
        self.tokens = TokenIssuer(self.config, self.clock)
        self.fleet = Fleet(self.state, self.config)
        self.server = ApiServer(self.state, self.tokens, self.faults, self.calls)
        self._started = False
        self._froze_gc = False

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        """Start the HTTP listener and the agent thread; returns the base URL."""
        url = self.server.start()
        if not self._started:
            self.fleet.start()
            self._started = True
        return url

    def stop(self) -> None:
        self.fleet.stop()
        self.server.stop()
        self._started = False
        if self._froze_gc:
            gc.unfreeze()
            self._froze_gc = False

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def env(self) -> dict[str, str]:
        """Environment variables that point the clearml SDK (or the watchdog) at this simulator."""
        return {
            "CLEARML_API_HOST": self.url,
            "CLEARML_WEB_HOST": self.url,
            "CLEARML_FILES_HOST": self.url,
            "CLEARML_API_ACCESS_KEY": self.config.access_key,
            "CLEARML_API_SECRET_KEY": self.config.secret_key,
            "CLEARML_CONFIG_FILE": "/nonexistent",
        }

    def watchdog_clearml_section(self) -> dict[str, str]:
        """The `clearml:` section of a watchdog config that points it at this simulator."""
        return {
            "api_host": self.url,
            "web_host": self.url,
            "files_host": self.url,
            "access_key": self.config.access_key,
            "secret_key": self.config.secret_key,
        }

    def stop_listener(self) -> None:
        """Close the port (and open connections): clients get "connection refused". State and
        agents keep running, like a server behind a dead proxy."""
        self.server.stop()

    def start_listener(self) -> str:
        """Listen again on the same port."""
        return self.server.start()

    def advance(self, seconds: float) -> None:
        """Move the simulated clock forward and let the agents catch up at once."""
        self.clock.advance(seconds)
        self.fleet.tick()

    def tick(self) -> None:
        """Run one fleet step now (the thread also does this every ``tick_s``)."""
        self.fleet.tick()

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
        """Poll ``predicate`` until it returns something truthy; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(interval)

    # ---- seeding ---------------------------------------------------------------------------

    def create_project(self, name: str) -> str:
        """Project id for ``name`` (created if missing)."""
        return self.state.ensure_project(name)

    def create_queue(self, name: str, *, default: bool = False) -> str:
        """Queue id for ``name`` (created if missing); ``default`` tags it as the default queue."""
        with self.state.lock:
            existing = self.state.queue_id(name)
            if existing:
                return existing
            return self.state.create_queue(name, system_tags=["default"] if default else [])

    def _queue_ids(self, queues: Iterable[str]) -> list[str]:
        """Queue ids for names (created if missing); ids pass through."""
        known = set(self.state.queue_ids())
        return [q if q in known else self.create_queue(q) for q in queues]

    def create_task(
        self,
        name: str = "train resnet",
        *,
        project: str | None = "sim-project",
        task_type: str = "training",
        hyperparams: Mapping[str, Mapping[str, Any]] | None = None,
        configuration: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        system_tags: Sequence[str] = (),
        parent: str | None = None,
        comment: str = "",
        script: Mapping[str, Any] | None = None,
        container: Mapping[str, Any] | None = None,
        output_uri: str | None = None,
    ) -> str:
        """A draft task as the SDK would create it (hyperparameter values become strings)."""
        fields: Doc = {
            "name": name,
            "type": task_type,
            "comment": comment,
            "tags": list(tags),
            "system_tags": list(system_tags),
            "hyperparams": _typed_params(hyperparams),
            "script": dict(
                script
                or {
                    "repository": "https://github.com/example/train.git",
                    "entry_point": "train.py",
                    "working_dir": ".",
                    "branch": "main",
                }
            ),
        }
        if project:
            fields["project"] = self.create_project(project)
        if configuration:
            fields["configuration"] = dict(configuration)
        if parent:
            fields["parent"] = parent
        if container:
            fields["container"] = dict(container)
        if output_uri:
            fields["output_dest"] = output_uri
        return self.state.create_task(fields)

    def enqueue(self, task_id: str, queue: str = "default") -> Doc:
        """tasks.enqueue by queue name (created if missing)."""
        return self.state.enqueue(task_id, self.create_queue(queue))

    def submit(self, name: str = "train resnet", queue: str = "default", **fields: Any) -> str:
        """Create and enqueue a task; an idle agent on ``queue`` picks it up after pickup_delay_s."""
        task_id = self.create_task(name, **fields)
        self.enqueue(task_id, queue)
        return task_id

    def spawn_worker(self, worker_id: str | None = None, queues: Sequence[str] = ("default",)) -> str:
        """One live idle agent serving ``queues`` (by name); returns its worker id."""
        worker_id = worker_id or self.fleet.next_worker_id()
        self.fleet.spawn(worker_id, self._queue_ids(queues))
        return worker_id

    def start_agents(self, count: int = 1, queues: Sequence[str] = ("default",), prefix: str = "spot") -> list[str]:
        """``count`` idle agents with ids like ``spot-07:gpu0``."""
        queue_ids = self._queue_ids(queues)
        ids = [self.fleet.next_worker_id(prefix) for _ in range(count)]
        for worker_id in ids:
            self.fleet.spawn(worker_id, queue_ids)
        return ids

    def seed_running(
        self,
        tasks: int,
        workers: int,
        *,
        queue: str = "default",
        project: str = "benchmark",
        name_prefix: str = "bench",
        prefix: str = "bench",
    ) -> list[str]:
        """Bulk fleet for benchmarks: ``workers`` agents each already running one task, and the
        remaining ``tasks - workers`` tasks running as local development runs (no agent, the
        "development" system tag, kept fresh by pings). Reports are spread over one interval.
        50,000 tasks on 12,500 workers take a few seconds."""
        queue_id = self.create_queue(queue)
        project_id = self.create_project(project)
        now = self.state.now()
        interval = self.config.report_interval_s
        ids: list[str] = []
        for i in range(tasks):
            name = f"{name_prefix}-{i:05d}"
            if i < workers:
                worker_id = f"{prefix}-{i:05d}:gpu0"
                task_id = self.state.seed_running_task(name, project=project_id, queue_id=queue_id, worker_id=worker_id)
                self.fleet.adopt_running(
                    worker_id, [queue_id], task_id, queue_id, now + interval * (i + 1) / max(workers, 1)
                )
            else:
                task_id = self.state.seed_running_task(name, project=project_id, development=True)
                self.fleet.track_local_run(task_id)
            ids.append(task_id)
        for i in range(tasks, workers):
            self.fleet.spawn(f"{prefix}-{i:05d}:gpu0", [queue_id], now + interval * (i + 1) / workers)
        # Keep the seeded documents out of the cyclic GC until stop(): otherwise every full
        # collection, triggered by anyone's allocations in this process (a watchdog under
        # benchmark included), rescans them and makes a workers.get_all 3-4x slower.
        gc.collect()
        gc.freeze()
        self._froze_gc = True
        return ids

    # ---- events ----------------------------------------------------------------------------

    def kill_agent(self, worker_id: str) -> None:
        """kill -9 / spot VM reclaimed: the task stays in_progress and stops moving; the worker
        stays listed (with the task) until last report + worker_timeout_s."""
        self.fleet.kill(worker_id)

    def sigterm_agent(self, worker_id: str) -> None:
        """SIGTERM: task stopped, "user abort", "Changed by clearml-agent <w>"; worker unregistered."""
        self.fleet.sigterm(worker_id)

    def restart_agent(self, worker_id: str) -> None:
        """Same worker id back, reporting no task; its old task stays in_progress and goes stale."""
        self.fleet.restart(worker_id)

    def user_abort(self, task_id: str) -> Doc:
        """The UI's Abort (tasks.stop): "stopping" for a live agent, which then stops the task."""
        result = self.state.stop(task_id)
        self.fleet.poke(task_id)
        return result

    def code_failure(self, task_id: str, exit_code: int = 1) -> None:
        """The script raised: failed, "worker execution exit code N"; the agent goes idle."""
        self.fleet.fail(task_id, exit_code)

    def complete(self, task_id: str) -> None:
        """Clean exit: completed, "worker execution done"."""
        self.fleet.complete(task_id)

    def force_stop(self, task_id: str) -> Doc:
        """What the server's non-responsive watchdog does, on demand."""
        result = self.state.force_stop(task_id)
        self.fleet.poke(task_id)
        return result

    def set_quiet(self, task_id: str, quiet: bool = True) -> None:
        """Quiet-but-healthy task: reported by its live agent, last_update frozen."""
        self.fleet.set_quiet(task_id, quiet)

    # ---- inspection ------------------------------------------------------------------------

    def task(self, task_id: str) -> Doc:
        """The task as tasks.get_by_id would return it."""
        return self.state.get_task(task_id)

    def tasks(
        self,
        *,
        status: str | Sequence[str] | None = None,
        parent: str | None = None,
        tag: str | None = None,
        system_tag: str | None = None,
        project: str | None = None,
        name: str | None = None,
    ) -> list[Doc]:
        """All tasks matching the given filters (no paging limit), in creation order."""
        data: Doc = {"search_hidden": True}
        if status:
            data["status"] = [status] if isinstance(status, str) else list(status)
        if parent:
            data["parent"] = [parent]
        if tag:
            data["tags"] = [tag]
        if system_tag:
            data["system_tags"] = [system_tag]
        if project:
            data["project"] = [self.state.project_id(project) or project]
        if name:
            data["name"] = name
        out: list[Doc] = []
        scroll: str | None = ""
        while True:
            page, extra = self.state.query_tasks({**data, "scroll_id": scroll, "size": 5000})
            out.extend(page)
            scroll = extra.get("scroll_id")
            if len(page) < 5000:
                return out

    def running_task_of(self, worker_id: str) -> str | None:
        """What a live agent is running now (None if idle, dead or unknown)."""
        try:
            agent = self.fleet.agent(worker_id)
        except KeyError:
            return None
        return agent.task_id if agent.alive else None

    def agent(self, worker_id: str) -> Agent:
        return self.fleet.agent(worker_id)

    def worker_of(self, task_id: str) -> str | None:
        """The live simulated agent running ``task_id``, if any."""
        agent = self.fleet.runner_of(task_id)
        return agent.worker_id if agent else None

    def queue_entries(self, queue: str) -> list[str]:
        """Task ids waiting in a queue (by name or id)."""
        queue_id = self.state.queue_id(queue) or queue
        return self.state.queue_entries(queue_id)

    def workers(self, last_seen: float | None = None) -> list[Doc]:
        """What workers.get_all would list now."""
        return self.state.workers(last_seen=last_seen)

    def models(self, task_id: str) -> list[Doc]:
        """Models recorded for a task (models.get_all(task=[id]))."""
        models, _ = self.state.query_models({"task": [task_id]})
        return models

    def wait_running(self, task_id: str, timeout: float = 10.0) -> Doc:
        """Wait until an agent has the task in_progress with Task.init done (reason cleared)."""

        def running() -> Doc | None:
            doc = self.task(task_id)
            return doc if doc["status"] == st.IN_PROGRESS and not doc.get("status_reason") else None

        found = self.wait_for(running, timeout)
        assert found is not None
        return found
