"""Simulated clearml-agent workers (and local runs), all driven by ONE ticker thread.

An agent registers, reports every ``report_interval_s`` (workers.status_report), takes a queued
task ``pickup_delay_s`` after it was queued, marks it in_progress ("worker starting task
execution", then cleared by Task.init), pings it, advances its iterations, saves checkpoints and
finally completes it, or fails/stops it when told to. Each ending writes exactly the status,
reason and message of the endings table in CLEARML_FACTS.md. A killed agent simply stops
acting: its task stays in_progress and its worker stays listed until the server expires it.

Scheduling is a heap of due times, so 12,500 idle workers cost only their reports. Every step
runs under the state's lock, which is also the fleet's lock. The server's non-responsive
watchdog and the delayed replacement of lost spot workers are scheduled on the same heap.
Caller: simulator.py.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import errors
from . import transitions as st
from .config import SimulatorConfig
from .state import STOPPING, State

log = logging.getLogger(__name__)

WORKER_STARTING = "worker starting task execution"
STOPPED_BY_STOP = "task was stopped by tasks.stop"
USER_ABORT = "user abort"
EXECUTION_DONE = "worker execution done"

Step = Callable[[float], "float | None"]


def agent_message(worker_id: str) -> str:
    """The status_message an agent writes on every status it sets."""
    return f"Changed by clearml-agent {worker_id}"


def exit_code_reason(code: int) -> str:
    return f"worker execution exit code {code}"


@dataclass
class Agent:
    """One clearml-agent daemon: a worker id serving some queues, maybe running one task."""

    worker_id: str
    queues: list[str]  # queue ids, in priority order
    alive: bool = True
    generation: int = 0  # bumped to invalidate its pending heap entry
    task_id: str | None = None
    queue_id: str | None = None
    run_start: float = 0.0
    iteration: int = 0
    next_report: float = 0.0
    next_ping: float = math.inf
    next_iter: float = math.inf
    init_clear_at: float | None = None
    history: list[str] = field(default_factory=list)  # task ids it ran, oldest first


class Fleet:
    """All simulated agents plus the periodic server-side jobs, on one thread."""

    def __init__(self, state: State, config: SimulatorConfig) -> None:
        self.state = state
        self.config = config
        self._agents: dict[str, Agent] = {}
        self._heap: list[tuple[float, int, Step]] = []
        self._seq = itertools.count()
        self._hosts = itertools.count(1)
        self._quiet: set[str] = set()
        self._watchdog_scheduled = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- thread ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start ticking; the server watchdog's first pass comes one interval later, as on the server."""
        if self._thread is not None:
            return
        if self.config.server_watchdog_enabled and not self._watchdog_scheduled:
            self._watchdog_scheduled = True
            self._schedule(self.state.now() + self.config.server_watchdog_interval_s, self._server_watchdog)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="clearml-sim-fleet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.config.tick_s):
            try:
                self.tick()
            except Exception:  # keep the fleet alive whatever one step did
                log.exception("simulator fleet tick failed")

    def tick(self) -> None:
        """Hand queued tasks to idle agents, then run every step that is due."""
        now = self.state.now()
        with self.state.lock:
            self._dispatch(now)
        while True:
            with self.state.lock:
                if not self._heap or self._heap[0][0] > now:
                    return
                _, _, step = heapq.heappop(self._heap)
                try:
                    due = step(now)
                except Exception:
                    log.exception("simulator step failed and was dropped")
                    due = None
                if due is not None:
                    self._schedule(max(due, now + self.config.tick_s / 2), step)

    def _schedule(self, due: float, step: Step) -> None:
        with self.state.lock:
            heapq.heappush(self._heap, (due, next(self._seq), step))

    # ---- agents: lifecycle -----------------------------------------------------------------

    def agent(self, worker_id: str) -> Agent:
        with self.state.lock:
            found = self._agents.get(worker_id)
            if found is None:
                raise KeyError(f"no simulated agent {worker_id!r}")
            return found

    def agents(self) -> list[Agent]:
        with self.state.lock:
            return list(self._agents.values())

    def next_worker_id(self, prefix: str = "spot", gpu: int = 0) -> str:
        """A fresh ``<prefix>-NN:gpuK`` id, never used before by this fleet."""
        with self.state.lock:
            while True:
                worker_id = f"{prefix}-{next(self._hosts):02d}:gpu{gpu}"
                if worker_id not in self._agents:
                    return worker_id

    def spawn(self, worker_id: str, queue_ids: Sequence[str], first_report_at: float | None = None) -> Agent:
        """Register a live idle agent (an existing one with this id is replaced)."""
        with self.state.lock:
            old = self._agents.get(worker_id)
            if old is not None:
                old.alive = False
            self.state.register_worker(worker_id, list(queue_ids))
            self.state.status_report(worker_id, None, None, list(queue_ids))
            now = self.state.now()
            agent = Agent(worker_id, list(queue_ids))
            agent.next_report = first_report_at if first_report_at is not None else now + self.config.report_interval_s
            self._agents[worker_id] = agent
            self._schedule_agent(agent, agent.next_report)
            return agent

    def adopt_running(
        self, worker_id: str, queue_ids: Sequence[str], task_id: str, queue_id: str | None, first_report_at: float
    ) -> Agent:
        """An agent that is already running ``task_id`` (bulk seeding, no status calls)."""
        with self.state.lock:
            now = self.state.now()
            self.state.register_worker(worker_id, list(queue_ids))
            self.state.status_report(worker_id, task_id, queue_id, list(queue_ids))
            agent = Agent(worker_id, list(queue_ids), task_id=task_id, queue_id=queue_id, run_start=now)
            agent.history.append(task_id)
            agent.next_report = first_report_at
            agent.next_ping = first_report_at + self.config.task_ping_interval_s
            if self.config.training_progress:
                agent.next_iter = now + self.config.iteration_period_s
            self._agents[worker_id] = agent
            self._schedule_agent(agent, first_report_at)
            return agent

    def kill(self, worker_id: str) -> None:
        """kill -9 / the spot VM vanished: no more reports, no status change, nothing."""
        with self.state.lock:
            agent = self.agent(worker_id)
            if agent.alive:
                agent.alive = False
                self._schedule_replacement(agent)

    def sigterm(self, worker_id: str) -> None:
        """SIGTERM (spot notice, shutdown): the task becomes stopped/"user abort" and the worker
        unregisters at once."""
        with self.state.lock:
            agent = self.agent(worker_id)
            if not agent.alive:
                raise ValueError(f"agent {worker_id!r} is not running")
            if agent.task_id:
                self._set_task_status(agent, st.STOPPED, USER_ABORT, agent_message(worker_id))
            agent.alive = False
            with contextlib.suppress(errors.ApiError):
                self.state.unregister_worker(worker_id)
            self._schedule_replacement(agent)

    def restart(self, worker_id: str) -> Agent:
        """The same worker id comes back (agent restarted) and reports NO task; whatever it ran
        stays in_progress and goes stale."""
        with self.state.lock:
            old = self.agent(worker_id)
            old.alive = False
            agent = self.spawn(worker_id, old.queues)
            agent.history = list(old.history)
            return agent

    def _schedule_replacement(self, agent: Agent) -> None:
        delay = self.config.replace_dead_workers_after_s
        if delay is None:
            return
        queues = list(agent.queues)

        def replace(now: float) -> None:
            self.spawn(self.next_worker_id(), queues)

        self._schedule(self.state.now() + delay, replace)

    # ---- agents: task endings --------------------------------------------------------------

    def runner_of(self, task_id: str) -> Agent | None:
        """The live agent currently running ``task_id``, if any."""
        with self.state.lock:
            for agent in self._agents.values():
                if agent.alive and agent.task_id == task_id:
                    return agent
            return None

    def _live_runner(self, task_id: str) -> Agent:
        agent = self.runner_of(task_id)
        if agent is None:
            raise ValueError(f"no live simulated agent is running task {task_id}")
        return agent

    def fail(self, task_id: str, exit_code: int = 1) -> None:
        """The script raised under the agent: failed, "worker execution exit code N"."""
        with self.state.lock:
            agent = self._live_runner(task_id)
            self._finish(agent, st.FAILED, exit_code_reason(exit_code), agent_message(agent.worker_id))

    def complete(self, task_id: str) -> None:
        """Clean exit: completed, "worker execution done"."""
        with self.state.lock:
            self._finish(self._live_runner(task_id), st.COMPLETED, EXECUTION_DONE, "")

    def poke(self, task_id: str) -> None:
        """Make the agent running ``task_id`` look at it on the next tick (after a stop request)."""
        with self.state.lock:
            agent = self.runner_of(task_id)
            if agent is not None:
                self._schedule_agent(agent, self.state.now())

    def set_quiet(self, task_id: str, quiet: bool = True) -> None:
        """Quiet-but-healthy: the agent keeps reporting the task, but nothing bumps the task's
        last_update (no pings, events or checkpoints). A simulation device: on a real server
        every status report naming the task bumps it."""
        with self.state.lock:
            if quiet:
                self._quiet.add(task_id)
            else:
                self._quiet.discard(task_id)

    def track_local_run(self, task_id: str) -> None:
        """A development run (no agent) that keeps its task's last_update fresh by pinging."""
        interval = self.config.report_interval_s

        def step(now: float) -> float | None:
            doc = self.state.peek_task(task_id)
            if doc is None or doc["status"] != st.IN_PROGRESS:
                return None
            if task_id not in self._quiet:
                self.state.ping(task_id)
            return now + interval

        self._schedule(self.state.now() + interval * (int(task_id[:4], 16) / 0x10000), step)

    def _set_task_status(self, agent: Agent, status: str, reason: str, message: str) -> None:
        if agent.task_id is None:
            return
        try:
            self.state.set_status(agent.task_id, status, reason, message, expected=st.IN_PROGRESS)
        except errors.ApiError as exc:
            log.debug("agent %s could not set %s on %s: %s", agent.worker_id, status, agent.task_id, exc.msg)

    def _finish(self, agent: Agent, status: str, reason: str, message: str) -> None:
        self._set_task_status(agent, status, reason, message)
        self._become_idle(agent, self.state.now())

    def _become_idle(self, agent: Agent, now: float) -> None:
        agent.task_id = agent.queue_id = None
        agent.init_clear_at = None
        agent.next_iter = agent.next_ping = math.inf
        self.state.status_report(agent.worker_id, None, None, agent.queues)
        agent.next_report = now + self.config.report_interval_s
        self._schedule_agent(agent, agent.next_report)

    # ---- agents: the periodic step ---------------------------------------------------------

    def _schedule_agent(self, agent: Agent, due: float) -> None:
        agent.generation += 1
        generation = agent.generation

        def step(now: float) -> float | None:
            if not agent.alive or agent.generation != generation or self._agents.get(agent.worker_id) is not agent:
                return None
            try:
                return self._step_agent(agent, now)
            except Exception:  # a bug or a refused call must not silence the agent for good
                log.exception("simulated agent %s failed a step; it drops its task", agent.worker_id)
                self._become_idle(agent, now)
                return None

        self._schedule(due, step)

    def _step_agent(self, agent: Agent, now: float) -> float:
        if agent.task_id is not None:
            doc = self.state.peek_task(agent.task_id)
            if doc is None or doc["status"] != st.IN_PROGRESS:
                self._become_idle(agent, now)  # stopped, reset or deleted behind its back
                return agent.next_report
            if doc.get("status_message") == STOPPING:
                self._finish(agent, st.STOPPED, STOPPED_BY_STOP, agent_message(agent.worker_id))
                return agent.next_report
            if not self._progress(agent, now):
                return agent.next_report
        if now >= agent.next_report:
            quiet = agent.task_id in self._quiet
            self.state.status_report(agent.worker_id, agent.task_id, agent.queue_id, agent.queues, touch_task=not quiet)
            agent.next_report = now + self.config.report_interval_s
        return min(agent.next_report, agent.next_ping, agent.next_iter, agent.init_clear_at or math.inf)

    def _progress(self, agent: Agent, now: float) -> bool:
        """Advance a running task; False if it just ended."""
        task_id = agent.task_id
        assert task_id is not None
        quiet = task_id in self._quiet
        if agent.init_clear_at is not None and now >= agent.init_clear_at:
            agent.init_clear_at = None
            doc = self.state.peek_task(task_id)
            if doc is not None and doc.get("status_reason") == WORKER_STARTING:
                self.state.set_status(task_id, st.IN_PROGRESS, expected=st.IN_PROGRESS)  # Task.init -> started
        if quiet:
            agent.next_iter = agent.next_ping = math.inf
            return True
        cfg = self.config
        if cfg.training_progress and cfg.iteration_period_s > 0:
            target = int((now - agent.run_start) / cfg.iteration_period_s)
            if target > agent.iteration:
                self._train_to(agent, task_id, target)
                if cfg.task_duration_iters is not None and target >= cfg.task_duration_iters:
                    self._finish(agent, st.COMPLETED, EXECUTION_DONE, "")
                    return False
            agent.next_iter = agent.run_start + (agent.iteration + 1) * cfg.iteration_period_s
        if now >= agent.next_ping:
            self.state.ping(task_id)
            agent.next_ping = now + cfg.task_ping_interval_s
        elif agent.next_ping == math.inf:
            agent.next_ping = now + cfg.task_ping_interval_s
        return True

    def _train_to(self, agent: Agent, task_id: str, target: int) -> None:
        every = self.config.checkpoint_every_iters
        if self.config.task_duration_iters is not None:
            target = min(target, self.config.task_duration_iters)
        self.state.add_events(
            [
                {
                    "task": task_id,
                    "type": "training_stats_scalar",
                    "timestamp": int(self.state.now() * 1000),
                    "iter": target,
                    "metric": "loss",
                    "variant": "total",
                    "value": round(1.0 / (1 + target), 6),
                }
            ]
        )
        if every > 0 and target // every > agent.iteration // every:
            self.state.save_checkpoint(task_id, self.checkpoint_uri(task_id, target - target % every))
        agent.iteration = target

    def checkpoint_uri(self, task_id: str, iteration: int) -> str:
        """Where the simulated training saved a checkpoint (remote unless local_checkpoints)."""
        if self.config.local_checkpoints:
            return f"file:///tmp/clearml-sim/{task_id}/checkpoint_{iteration}.pt"
        doc = self.state.peek_task(task_id) or {}
        project = "no-project"
        if doc.get("project"):
            with contextlib.suppress(errors.ApiError):
                project = self.state.get_project(doc["project"])["name"].replace(" ", "_")
        return f"{self.config.checkpoint_bucket}/{project}/{task_id}/checkpoint_{iteration}.pt"

    # ---- queued work -----------------------------------------------------------------------

    def _dispatch(self, now: float) -> None:
        cutoff = now - self.config.pickup_delay_s

        def ready(queue_id: str) -> bool:
            added = self.state.head_added(queue_id)
            return added is not None and added <= cutoff

        if not any(ready(q) for q in self.state.queue_ids()):
            return
        for agent in list(self._agents.values()):
            if not agent.alive or agent.task_id is not None:
                continue
            for queue_id in agent.queues:
                if ready(queue_id):
                    entry = self.state.get_next_task(queue_id)
                    if entry is not None:
                        self._start(agent, entry["task"], queue_id, now)
                        break

    def _start(self, agent: Agent, task_id: str, queue_id: str, now: float) -> None:
        doc = self.state.peek_task(task_id)
        if doc is None:
            return
        w = agent.worker_id
        try:
            self.state.change_status(
                task_id,
                st.IN_PROGRESS,
                reason=WORKER_STARTING,
                message=agent_message(w),
                extra={"started": doc.get("started") or self.state.stamp(), "last_worker": w},
            )
        except errors.ApiError as exc:
            log.debug("agent %s could not start %s: %s", w, task_id, exc.msg)
            return
        self.state.status_report(w, task_id, queue_id, agent.queues)
        agent.task_id, agent.queue_id = task_id, queue_id
        agent.history.append(task_id)
        agent.iteration = int(doc.get("last_iteration") or 0)
        agent.run_start = now - agent.iteration * self.config.iteration_period_s
        agent.init_clear_at = now + self.config.task_init_delay_s
        agent.next_report = now + self.config.report_interval_s
        agent.next_ping = now + self.config.task_ping_interval_s
        agent.next_iter = (
            agent.run_start + (agent.iteration + 1) * self.config.iteration_period_s
            if self.config.training_progress
            else math.inf
        )
        self._schedule_agent(agent, min(agent.init_clear_at, agent.next_iter, agent.next_report))

    # ---- server-side periodic jobs ---------------------------------------------------------

    def _server_watchdog(self, now: float) -> float | None:
        if not self.config.server_watchdog_enabled:
            return None
        stopped = self.state.force_stop_stale(self.config.server_watchdog_threshold_s)
        if stopped:
            log.info("server watchdog stopped %d non-responsive task(s)", len(stopped))
        return now + self.config.server_watchdog_interval_s
