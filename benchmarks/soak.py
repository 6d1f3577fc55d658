"""Chaos soak: many lineages, a hostile fleet, a flaky server, flaky chat, and a watchdog that keeps dying.

Run it: `python -m benchmarks.soak` (the long run documented in docs/reliability.md; `--help` for knobs),
`python -m benchmarks.soak --watchdogs 2` (two daemons on one server, issue 5 point 2). The short run in the
test suite (tests/soak/test_soak.py) calls `run_soak(short_config(...))` and asserts on the same checks.

What happens:
- an in-process ClearML simulator (real wire format) runs `lineages` training tasks on `workers` spot agents;
  it answers `error_rate` of the watchdog's calls with 5xx and delays `spike_rate` of them (some spikes are
  longer than the watchdog's request timeout, so a write can succeed on the server while the client retries);
- Slack and Telegram stand-ins (one pair per watchdog) take the alerts and answer bursts of 429 and 500;
- a driver thread, at random moments, kills agents (-9), restarts agents (same worker id, no task), SIGTERMs
  agents, aborts tasks as a user, makes training code fail, fires the server's forced stop, and makes some
  healthy tasks quiet (their agent reports them, their last_update freezes);
- every watchdog is `clearml-watchdog run` as a real child process, SIGKILLed and started again at random
  moments (at least `restarts` times each).
Then the chaos stops, the watchdogs get `settle_s` to catch up, idle for `idle_s`, and are stopped with
SIGTERM. The checks read ClearML's state (the simulator), the chat stand-ins' request logs, the journals
and the watchdogs' JSON logs; `SoakResult.failures()` lists every check that did not hold.

Definitions (also in docs/reliability.md):
- a loss is a driver event that takes a running task's agent away (kill -9, agent restart, SIGTERM) or has
  the server force-stop it; its task must end with exactly one clone if its lineage had budget left, or with
  none and a `gave_up` alert if not;
- a duplicate is a lost task with more than one clone left in ClearML (drafts deleted by the claim step
  never ran and are counted separately), or a clone of a task that had no loss at all (a false recovery);
- a miss is a loss whose task, after the settle period, has neither its clone nor the watchdog's
  `handled` tag (the watchdog should have acted on it within thresholds and did not).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import SPOT, WatchdogProcess, child_env, clearml_section, write_config
from watchdog.lineage import HANDLED_TAG, RESUMED_TAG, STOP_REASON, lineage_of
from watchdog.notify.notice import EventKind
from watchdog.notify.render import headline
from watchdog.servertime import parse_timestamp
from watchdog.simulator import Simulator, SimulatorConfig
from watchdog.simulator.chat import SlackStandIn, TelegramChat, TelegramStandIn
from watchdog.simulator.faults import Fault, FaultPlan, fault_error

# A private chat: about one message a second. A group allows only ~20 a minute, and the alert backlog, not
# the watchdog, would then set the pace of the run (the outbox groups and waits; see docs/reliability.md).
TELEGRAM_CHAT = 424242
SLACK_CHANNEL = "C0ALERTS"

KILL, RESTART_AGENT, SIGTERM, FORCE_STOP = "kill -9", "agent restart", "sigterm", "server forced stop"
USER_ABORT, CODE_FAILURE, QUIET = "user abort", "code failure", "quiet"
LOSS_EVENT = {
    KILL: EventKind.AGENT_LOST,
    RESTART_AGENT: EventKind.AGENT_LOST,
    SIGTERM: EventKind.AGENT_STOPPED,
    FORCE_STOP: EventKind.SERVER_FORCED_STOP,
}
REPORT_EVENT = {USER_ABORT: EventKind.USER_ABORTED, CODE_FAILURE: EventKind.CODE_FAILED}
IN_FLIGHT_S = 10.0  # a pending row this young at the final stop is in flight, not lost
EVENT_WEIGHTS = {
    KILL: 30,
    RESTART_AGENT: 5,
    SIGTERM: 15,
    FORCE_STOP: 10,
    USER_ABORT: 10,
    CODE_FAILURE: 10,
    QUIET: 5,
}


@dataclass(frozen=True)
class SoakConfig:
    """Every knob of one soak. Times are scaled: see `sim_config` and docs/reliability.md."""

    lineages: int = 200
    workers: int = 50
    watchdogs: int = 1
    restarts: int = 40  # SIGKILL + restart of each watchdog process, at least
    chaos_s: float = 600.0
    settle_s: float = 120.0  # at most; ends early once everything is handled and delivered
    idle_s: float = 15.0
    events_per_s: float = 0.5
    task_iters: int = 2000  # iterations until a task completes (x iteration_period_s)
    iteration_period_s: float = 0.1
    max_attempts: int = 3
    error_rate: float = 0.05
    spike_rate: float = 0.02
    spike_choices_s: tuple[float, ...] = (0.5, 1.5, 4.0)  # 4.0 > the 3 s request timeout
    post_commit_error_rate: float = 0.02  # writes answered 503 AFTER the server did the work
    chat_bursts_per_min: float = 6.0
    quiet_s: float = 15.0
    seed: int = 1
    workdir: Path | None = None
    # The watchdog's scaled thresholds (defaults 180 s / 90 s / 15 s in production).
    task_stale_s: float = 5.0
    worker_stale_s: float = 2.5
    poll_interval_s: float = 1.0


def short_config(workdir: Path | None = None, watchdogs: int = 1, seed: int = 7) -> SoakConfig:
    """The run inside the test suite: the same scenario, compressed to well under 3 minutes."""
    return SoakConfig(
        watchdogs=watchdogs,
        restarts=20 if watchdogs == 1 else 10,
        chaos_s=75.0 if watchdogs == 1 else 35.0,
        settle_s=45.0,
        idle_s=5.0,
        events_per_s=0.6,
        task_iters=120 if watchdogs == 1 else 100,
        lineages=200 if watchdogs == 1 else 100,
        seed=seed,
        workdir=workdir,
    )


def sim_config(config: SoakConfig) -> SimulatorConfig:
    """Agents report every 0.5 s (30 s on a real server): about 1/36 of real time for the thresholds."""
    return SimulatorConfig(
        report_interval_s=0.5,
        worker_timeout_s=20.0,
        pickup_delay_s=0.2,
        task_init_delay_s=0.2,
        task_ping_interval_s=0.5,
        iteration_period_s=config.iteration_period_s,
        checkpoint_every_iters=10,
        task_duration_iters=config.task_iters,
        server_watchdog_enabled=False,
        replace_dead_workers_after_s=2.0,
        tick_s=0.02,
        seed=config.seed,
        faults=FaultPlan(
            error_rate=config.error_rate,
            spike_rate=config.spike_rate,
            spike_s=config.spike_choices_s[0],
            seed=config.seed,
        ),
    )


@dataclass(frozen=True)
class DriverEvent:
    """One thing the driver did to the fleet: the ground truth the checks compare ClearML with."""

    at: float
    kind: str
    task_id: str
    worker_id: str
    attempt: int  # the task's attempt in its lineage (0 = original) when the event happened


@dataclass
class ChatRig:
    """One watchdog's Slack and Telegram stand-ins."""

    slack: SlackStandIn
    telegram: TelegramStandIn

    def start(self) -> None:
        self.slack.start()
        self.telegram.start()

    def stop(self) -> None:
        self.slack.stop()
        self.telegram.stop()

    def notify_section(self) -> dict[str, Any]:
        return {
            "slack": {
                "bot_token": self.slack.bot_token,
                "channel": SLACK_CHANNEL,
                "api_base": self.slack.api_base,
                "timeout_s": 3,
            },
            "telegram": {
                "bot_token": self.telegram.token,
                "chat_id": str(TELEGRAM_CHAT),
                "api_base": self.telegram.api_base,
                "timeout_s": 3,
            },
            "console": False,
            "group_wait_s": 2.0,
            "deliver_every_s": 0.5,
            "retry": {"first_delay_s": 0.5, "max_delay_s": 4, "max_attempts": 30},
        }


@dataclass
class SoakResult:
    """Everything measured; `failures()` names the checks that did not hold."""

    config: SoakConfig
    wall_s: float = 0.0
    events: Counter[str] = field(default_factory=Counter)
    losses: int = 0
    expected_clones: int = 0
    expected_give_ups: int = 0
    clones_found: int = 0
    duplicates: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    false_recoveries: list[str] = field(default_factory=list)
    reported_but_cloned: list[str] = field(default_factory=list)
    quiet_touched: list[str] = field(default_factory=list)
    over_budget: list[str] = field(default_factory=list)
    give_ups_unhandled: list[str] = field(default_factory=list)
    drafts_deleted: int = 0
    stray_drafts: list[str] = field(default_factory=list)  # a clone request that landed after its timeout
    running_duplicates_logged: int = 0
    watchdog_kills: int = 0
    watchdog_starts: int = 0
    kills_mid_recovery: int = 0
    crashes: list[str] = field(default_factory=list)
    final_exit_codes: list[int | None] = field(default_factory=list)
    cycles: int = 0
    blind_cycles: int = 0
    api_calls: int = 0
    api_faults_5xx: int = 0
    post_commit_errors: Counter[str] = field(default_factory=Counter)
    alerts_expected: int = 0
    alerts_missing: list[str] = field(default_factory=list)
    alert_duplicates: int = 0
    alert_duplicate_keys: list[str] = field(default_factory=list)
    alerts_delivered: int = 0
    chat_requests: int = 0
    chat_failures_answered: int = 0
    chat_statuses: Counter[str] = field(default_factory=Counter)
    in_flight_at_stop: list[int] = field(default_factory=list)  # pending rows younger than IN_FLIGHT_S
    truncated_groups: int = 0
    outbox_unfinished: dict[str, int] = field(default_factory=dict)
    journal_bytes: list[int] = field(default_factory=list)
    journal_rows: list[dict[str, int]] = field(default_factory=list)
    journal_idle_growth_bytes: list[tuple[int, int]] = field(default_factory=list)  # (main file, WAL)
    journal_idle_new_log_rows: list[int] = field(default_factory=list)
    idle_cycles: int = 0
    settled_after_s: float | None = None

    def failures(self) -> list[str]:
        bad: list[str] = []
        checks = [
            ("duplicate recoveries", self.duplicates),
            ("missed losses", self.misses),
            ("clones of tasks that were never lost", self.false_recoveries),
            ("user-aborted or code-failed tasks cloned", self.reported_but_cloned),
            ("quiet healthy tasks touched", self.quiet_touched),
            ("lineages over budget", self.over_budget),
            ("spent budgets not closed with gave_up", self.give_ups_unhandled),
            ("alerts never delivered", self.alerts_missing),
            ("daemon crashes", self.crashes),
        ]
        for name, items in checks:
            if items:
                bad.append(f"{name}: {len(items)} ({', '.join(items[:5])})")
        if self.running_duplicates_logged:
            bad.append(f"duplicate_clone_running logged {self.running_duplicates_logged} times")
        if any(v for v in self.outbox_unfinished.values()):
            bad.append(f"outbox rows not delivered at the end: {self.outbox_unfinished}")
        if self.watchdog_kills < self.config.restarts * self.config.watchdogs:
            wanted = self.config.restarts * self.config.watchdogs
            bad.append(f"only {self.watchdog_kills} watchdog kills (wanted {wanted})")
        if any(code != 0 for code in self.final_exit_codes):
            bad.append(f"final SIGTERM exit codes {self.final_exit_codes} (want 0)")
        if self.settled_after_s is None:
            bad.append(f"did not settle within {self.config.settle_s:.0f}s after the chaos")
        for rows in self.journal_rows:
            incidents = max(rows.get("incidents", 0), 1)
            if rows.get("incident_log", 0) > 12 * incidents or rows.get("kv", 0) > 5:
                bad.append(f"journal rows grow with something other than incidents: {rows}")
        return bad

    def render(self) -> str:
        c = self.config
        lines = [
            f"chaos soak: {c.lineages} lineages on {c.workers} spot workers, {c.watchdogs} watchdog(s), "
            f"chaos {c.chaos_s:.0f}s, seed {c.seed}; wall {self.wall_s:.0f}s",
            "driver events: " + ", ".join(f"{k} {v}" for k, v in sorted(self.events.items())),
            f"watchdog processes: {self.watchdog_kills} SIGKILLs, {self.watchdog_starts} starts, "
            f"{self.kills_mid_recovery} kills landed inside a recovery (decision logged, not yet requeued)",
            f"server: {self.api_calls} API calls, {self.api_faults_5xx} answered 5xx by the fault injector, "
            f"{sum(self.post_commit_errors.values())} writes answered 503 after they were done "
            f"{dict(sorted(self.post_commit_errors.items()))}; {self.cycles} cycles ({self.blind_cycles} blind)",
            f"losses {self.losses}: clones expected {self.expected_clones}, found {self.clones_found}; "
            f"give-ups expected {self.expected_give_ups}",
            f"  duplicates {len(self.duplicates)}, misses {len(self.misses)}, "
            f"false recoveries {len(self.false_recoveries)}; duplicate drafts deleted by the claim step "
            f"{self.drafts_deleted}, stray drafts left (never ran) {len(self.stray_drafts)}",
            f"  user-aborted/code-failed cloned {len(self.reported_but_cloned)}; quiet tasks touched "
            f"{len(self.quiet_touched)}; over budget {len(self.over_budget)}; "
            f"budget spent but no gave_up {len(self.give_ups_unhandled)}",
            f"alerts: {self.alerts_expected} (task, event, channel) expected, {self.alerts_delivered} delivered, "
            f"{len(self.alerts_missing)} missing, {self.alert_duplicates} delivered twice or more "
            f"(at-least-once across a SIGKILL); {self.chat_requests} chat requests, "
            f"{self.chat_failures_answered} answered 429/500; {self.truncated_groups} grouped messages truncated",
            f"chat answers: {dict(sorted(self.chat_statuses.items()))}",
            f"outbox at the end: undelivered {self.outbox_unfinished}, in flight at the stop "
            f"(created < {IN_FLIGHT_S:.0f}s before) {self.in_flight_at_stop}",
            f"journal after a clean stop: {', '.join(f'{b / 1024:.0f} KiB' for b in self.journal_bytes)}; rows "
            f"{self.journal_rows}",
            f"journal growth over the tail ({self.idle_cycles} cycles): (main file, WAL) bytes "
            f"{self.journal_idle_growth_bytes}, incident_log rows added {self.journal_idle_new_log_rows}",
            f"settled {self.settled_after_s:.1f}s after the chaos"
            if self.settled_after_s is not None
            else "NOT settled",
            f"daemon crashes {len(self.crashes)}; final SIGTERM exit codes {self.final_exit_codes}",
        ]
        failures = self.failures()
        lines.append("RESULT: " + ("all checks hold" if not failures else "FAILED: " + "; ".join(failures)))
        return "\n".join(lines)


# --- the driver ----------------------------------------------------------------------------------------


class Driver:
    """Random trouble for the fleet and the chat services; records what it did (the ground truth)."""

    def __init__(self, sim: Simulator, chats: list[ChatRig], config: SoakConfig, rng: random.Random) -> None:
        self.sim = sim
        self.chats = chats
        self.config = config
        self.rng = rng
        self.events: list[DriverEvent] = []
        self.touched: set[str] = set()  # tasks the driver already did something to
        self.quiet_until: dict[str, float] = {}
        self.burst_ends: list[tuple[float, SlackStandIn | TelegramStandIn]] = []

    def _busy_tasks(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(worker, task, doc) for live agents running a task that nothing has happened to yet."""
        found = []
        for agent in self.sim.fleet.agents():
            if not agent.alive or not agent.task_id or agent.task_id in self.touched:
                continue
            doc = self.sim.state.peek_task(agent.task_id)
            if doc is None or doc.get("status") != "in_progress" or doc.get("status_message") == "stopping":
                continue
            found.append((agent.worker_id, agent.task_id, doc))
        return found

    def fleet_event(self) -> None:
        kinds = list(EVENT_WEIGHTS)
        kind = self.rng.choices(kinds, weights=[EVENT_WEIGHTS[k] for k in kinds])[0]
        with self.sim.state.lock:  # the fleet thread cannot move between the choice and the event
            busy = self._busy_tasks()
            if not busy:
                return
            clones = [b for b in busy if RESUMED_TAG in (b[2].get("tags") or [])]
            if clones and kind in LOSS_EVENT and self.rng.random() < 0.5:
                # Half the losses hit clones, half of those the deepest one: lineages reach their budget.
                deepest = max(clones, key=lambda b: lineage_of(b[1], b[2].get("tags") or []).attempt)
                worker, task_id, doc = deepest if self.rng.random() < 0.5 else self.rng.choice(clones)
            else:
                worker, task_id, doc = self.rng.choice(busy)
            attempt = lineage_of(task_id, doc.get("tags") or []).attempt
            if kind == KILL:
                self.sim.kill_agent(worker)
            elif kind == RESTART_AGENT:
                self.sim.restart_agent(worker)
            elif kind == SIGTERM:
                self.sim.sigterm_agent(worker)
            elif kind == FORCE_STOP:
                self.sim.force_stop(task_id)
            elif kind == USER_ABORT:
                self.sim.user_abort(task_id)
            elif kind == CODE_FAILURE:
                self.sim.code_failure(task_id, exit_code=self.rng.choice([1, 2, 137]))
            elif kind == QUIET:
                self.sim.set_quiet(task_id, True)
                self.quiet_until[task_id] = time.monotonic() + self.config.quiet_s
            self.touched.add(task_id)
            self.events.append(DriverEvent(time.monotonic(), kind, task_id, worker, attempt))

    def end_quiet(self, force: bool = False) -> None:
        now = time.monotonic()
        for task_id, until in list(self.quiet_until.items()):
            if force or now >= until:
                self.sim.set_quiet(task_id, False)
                del self.quiet_until[task_id]

    def chat_burst(self) -> None:
        """A few seconds in which one chat service answers (most) requests with 429 or 500."""
        rig = self.rng.choice(self.chats)
        standins: list[SlackStandIn | TelegramStandIn] = [rig.slack, rig.telegram]
        standin = self.rng.choice(standins)
        share = self.rng.choice([1.0, 0.7])
        if self.rng.random() < 0.5:
            standin.fail_fraction(share, 429, retry_after=1)
        else:
            standin.fail_fraction(share, 500)
        self.burst_ends.append((time.monotonic() + self.rng.uniform(2.0, 8.0), standin))

    def end_bursts(self, force: bool = False) -> None:
        now = time.monotonic()
        for entry in list(self.burst_ends):
            if force or now >= entry[0]:
                entry[1].clear_faults()
                self.burst_ends.remove(entry)

    def latency_phase(self) -> None:
        self.sim.faults.set(spike_s=self.rng.choice(self.config.spike_choices_s))


# --- reading results -----------------------------------------------------------------------------------

_HEADLINES = sorted(((headline(e), e) for e in EventKind if e is not EventKind.TEST), key=lambda p: -len(p[0]))
_SLACK_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]*)>")
_TG_LINK = re.compile(r'<a href="([^"]+)">([^<]*)</a>')
_TASK_IN_URL = re.compile(r"/experiments/([0-9a-f]+)/")


def mentions(text: str, fmt: str) -> tuple[EventKind | None, set[str], bool]:
    """(event, task ids, truncated) of one chat message as the watchdog rendered it.

    The event comes from the headline; task ids from the task links (not the clone links)."""
    first = text.split("\n", 1)[0]
    event = next((e for words, e in _HEADLINES if words in first), None)
    pattern = _SLACK_LINK if fmt == "slack" else _TG_LINK
    tasks: set[str] = set()
    for url, label in pattern.findall(text):
        if label.strip().lower().startswith("clone"):
            continue
        match = _TASK_IN_URL.search(url)
        if match:
            tasks.add(match.group(1))
    return event, tasks, "more (" in text


def sent_messages(rig: ChatRig) -> Iterator[tuple[str, str]]:
    """(channel, text) of every message a stand-in accepted (new messages, not edits)."""
    for request in rig.slack.requests:
        answer = request.answer
        if request.path.endswith("chat.postMessage") and isinstance(answer, dict) and answer.get("ok"):
            yield "slack", str(request.body.get("text", ""))
    for request in rig.telegram.requests:
        answer = request.answer
        if request.path.endswith("/sendMessage") and isinstance(answer, dict) and answer.get("ok"):
            yield "telegram", str(request.body.get("text", ""))


def chat_statuses(rig: ChatRig) -> Counter[str]:
    """How the stand-ins answered, e.g. {"slack 200": 40, "slack 429": 5, "telegram 500": 3}."""
    counts: Counter[str] = Counter()
    for name, standin in (("slack", rig.slack), ("telegram", rig.telegram)):
        counts.update(f"{name} {r.status}" for r in standin.requests)
    return counts


def open_journal(state_dir: Path) -> sqlite3.Connection | None:
    path = state_dir / "journal.sqlite3"
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    db.row_factory = sqlite3.Row
    return db


def journal_bytes(state_dir: Path) -> int:
    return sum(p.stat().st_size for p in state_dir.glob("journal.sqlite3*") if p.is_file())


def journal_files(state_dir: Path) -> tuple[int, int]:
    """(main file, WAL) bytes. The WAL is bounded by SQLite's auto-checkpoint (1,000 pages), not by us."""
    main, wal = state_dir / "journal.sqlite3", state_dir / "journal.sqlite3-wal"
    return (main.stat().st_size if main.exists() else 0, wal.stat().st_size if wal.exists() else 0)


def journal_rows(state_dir: Path) -> dict[str, int]:
    db = open_journal(state_dir)
    if db is None:
        return {}
    try:
        return {
            table: int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("incidents", "incident_log", "outbox", "threads", "kv")
        }
    finally:
        db.close()


def outbox_states(state_dir: Path) -> Counter[str]:
    db = open_journal(state_dir)
    if db is None:
        return Counter()
    try:
        return Counter({r[0]: int(r[1]) for r in db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")})
    finally:
        db.close()


def pending_ages(state_dir: Path) -> list[float]:
    """Seconds since each pending outbox row was created."""
    db = open_journal(state_dir)
    if db is None:
        return []
    try:
        rows = db.execute("SELECT created_at FROM outbox WHERE state = 'pending'").fetchall()
    finally:
        db.close()
    now = datetime.now(timezone.utc)
    ages = []
    for (created,) in rows:
        when = parse_timestamp(created)
        ages.append((now - when).total_seconds() if when else 0.0)
    return ages


def journal_notices(state_dir: Path) -> list[tuple[str, str, str]]:
    """(channel, task id, event) of every sent outbox row that names a task."""
    db = open_journal(state_dir)
    if db is None:
        return []
    try:
        rows = db.execute("SELECT channel, event, payload FROM outbox WHERE state = 'sent'").fetchall()
    finally:
        db.close()
    found = []
    for row in rows:
        task_id = str(json.loads(row["payload"]).get("task_id") or "")
        if task_id:
            found.append((row["channel"], task_id, row["event"]))
    return found


# --- the run -------------------------------------------------------------------------------------------


def watchdog_config(sim: Simulator, rig: ChatRig, state_dir: Path, config: SoakConfig) -> dict[str, Any]:
    return {
        "poll_interval_s": config.poll_interval_s,
        "watch": {"queues": [SPOT]},
        "detect": {"task_stale_s": config.task_stale_s, "worker_stale_s": config.worker_stale_s},
        "recover": {"max_attempts": config.max_attempts},
        "state_dir": str(state_dir),
        "clearml": clearml_section(sim, request_timeout_s=3, retries=1),
        "health": {"enabled": False},
        "notify": rig.notify_section(),
    }


def run_soak(config: SoakConfig, *, progress: bool = False) -> SoakResult:
    """The whole scenario; returns the measured result (never raises for a failed check)."""
    with contextlib.ExitStack() as stack:
        workdir = config.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        return _run(config, workdir, progress)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _run(config: SoakConfig, workdir: Path, progress: bool) -> SoakResult:
    started = time.monotonic()
    rng = random.Random(config.seed)
    result = SoakResult(config)
    sim = Simulator(sim_config(config))
    faults_answered = _count_faults(sim)
    post_commit = _fail_after_success(sim, config.post_commit_error_rate, random.Random(config.seed + 1))
    sim.start()
    chats = [
        ChatRig(SlackStandIn(seed=config.seed + i), TelegramStandIn(chats=[TelegramChat(TELEGRAM_CHAT)], seed=i))
        for i in range(config.watchdogs)
    ]
    watchdogs: list[WatchdogProcess] = []
    try:
        for rig in chats:
            rig.start()
        sim.start_agents(config.workers, queues=[SPOT])
        for i in range(config.lineages):
            sim.submit(
                f"train-{i:03d}",
                queue=SPOT,
                hyperparams={"Args": {"lr": 0.1, "epochs": 90, "resume_from": ""}, "General": {"seed": i}},
            )
        env = child_env(sim)
        for i, rig in enumerate(chats):
            state_dir = workdir / f"watchdog-{i}"
            path = write_config(workdir / f"watchdog-{i}.yaml", watchdog_config(sim, rig, state_dir, config))
            watchdogs.append(WatchdogProcess(f"watchdog-{i}", path, env, workdir / f"watchdog-{i}.log"))
        for process in watchdogs:
            process.start()
        driver = Driver(sim, chats, config, rng)
        _chaos(sim, driver, watchdogs, config, rng, progress)
        result.settled_after_s = _settle(sim, driver, watchdogs, workdir, config, progress)
        sim.faults.clear()
        _idle_tail(watchdogs, workdir, config, result)
        _drain(workdir, len(watchdogs))
        result.in_flight_at_stop = [
            sum(1 for age in pending_ages(workdir / f"watchdog-{i}") if age <= IN_FLIGHT_S)
            for i in range(len(watchdogs))
        ]
        result.final_exit_codes = [p.stop() for p in watchdogs]
        _check(sim, driver, chats, watchdogs, workdir, config, result)
        result.api_faults_5xx = faults_answered[0]
        result.post_commit_errors = Counter(post_commit)
    finally:
        for process in watchdogs:
            with contextlib.suppress(Exception):
                process.stop(timeout=5)
        for rig in chats:
            rig.stop()
        sim.stop()
    result.wall_s = time.monotonic() - started
    return result


def _count_faults(sim: Simulator) -> list[int]:
    """Count the calls the fault injector answered with an error (it keeps no count of its own)."""
    answered = [0]
    decide = sim.faults.decide

    def counting(endpoint: str) -> Fault:
        fault = decide(endpoint)
        if fault.error is not None:
            answered[0] += 1
        return fault

    sim.faults.decide = counting  # type: ignore[method-assign]
    return answered


WRITES = ("tasks.clone", "tasks.enqueue", "tasks.stopped", "tasks.update_tags", "tasks.delete")


def _fail_after_success(sim: Simulator, rate: float, rng: random.Random) -> Counter[str]:
    """Answer `rate` of the watchdog's writes with 503 after the server did the work (a proxy timing out
    on the way back): the client sees a failure, and the SDK's retry may send the write again."""
    answered: Counter[str] = Counter()

    def hook(endpoint: str, _body: dict[str, Any], _result: dict[str, Any]) -> None:
        if endpoint in WRITES and rng.random() < rate:
            answered[endpoint] += 1
            raise fault_error(503, "answered after the work was done")

    sim.server.after_success.append(hook)
    return answered


def _chaos(
    sim: Simulator,
    driver: Driver,
    watchdogs: list[WatchdogProcess],
    config: SoakConfig,
    rng: random.Random,
    progress: bool,
) -> None:
    start = time.monotonic()
    end = start + config.chaos_s
    kills = config.restarts * len(watchdogs)
    # Kill moments spread over the chaos (jittered), so they land in startups, cycles and idle waits alike.
    slot = (config.chaos_s - 4.0) / kills
    kill_at = sorted(start + 2.0 + slot * (i + rng.random()) for i in range(kills))
    restart_at: dict[int, float] = {}
    next_event = start + rng.expovariate(config.events_per_s)
    next_burst = start + rng.expovariate(config.chat_bursts_per_min / 60)
    next_phase = start + 10.0
    last_report = start
    while (now := time.monotonic()) < end or kill_at:
        if now >= end and kill_at:  # never skip a planned kill
            kill_at = [now]
        if kill_at and now >= kill_at[0]:
            kill_at.pop(0)
            alive = [i for i, p in enumerate(watchdogs) if p.running]
            if alive:
                index = rng.choice(alive)
                watchdogs[index].kill()
                restart_at[index] = now + rng.uniform(0.0, 1.5)
            else:
                kill_at.insert(0, now + 0.5)
        for index, when in list(restart_at.items()):
            if now >= when:
                watchdogs[index].start()
                del restart_at[index]
        if now < end:
            if now >= next_event:
                driver.fleet_event()
                next_event = now + rng.expovariate(config.events_per_s)
            if now >= next_burst:
                driver.chat_burst()
                next_burst = now + rng.expovariate(config.chat_bursts_per_min / 60)
            if now >= next_phase:
                driver.latency_phase()
                next_phase = now + 10.0
        driver.end_quiet()
        driver.end_bursts()
        if progress and now - last_report >= 15:
            last_report = now
            kinds = Counter(e.kind for e in driver.events)
            _say(progress, f"chaos {now - start:.0f}s: {dict(kinds)}, kills {sum(p.kills for p in watchdogs)}")
        time.sleep(0.02)
    for index in list(restart_at):
        watchdogs[index].start()
    for process in watchdogs:
        process.start()


def _settled(sim: Simulator, driver: Driver, workdirs: list[Path]) -> bool:
    for event in driver.events:
        if event.kind in LOSS_EVENT and HANDLED_TAG not in (sim.task(event.task_id).get("tags") or []):
            return False
    return all(not outbox_states(state_dir).get("pending", 0) for state_dir in workdirs)


def _settle(
    sim: Simulator, driver: Driver, watchdogs: list[WatchdogProcess], workdir: Path, config: SoakConfig, progress: bool
) -> float | None:
    driver.end_quiet(force=True)
    driver.end_bursts(force=True)
    started = time.monotonic()
    dirs = [workdir / f"watchdog-{i}" for i in range(len(watchdogs))]
    _say(progress, "chaos over; waiting for the watchdog(s) to catch up")
    # Report-only endings must have been seen too: give the cycles a few polls before judging.
    time.sleep(min(config.settle_s, config.task_stale_s + 3 * config.poll_interval_s))
    while time.monotonic() - started < config.settle_s:
        for process in watchdogs:
            if not process.running:
                process.start()
        if _settled(sim, driver, dirs):
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def _idle_tail(watchdogs: list[WatchdogProcess], workdir: Path, config: SoakConfig, result: SoakResult) -> None:
    dirs = [workdir / f"watchdog-{i}" for i in range(len(watchdogs))]
    before = [journal_files(d) for d in dirs]
    rows_before = [journal_rows(d).get("incident_log", 0) for d in dirs]
    cycles_before = sum(_count(p, "cycle") for p in watchdogs)
    time.sleep(config.idle_s)
    after = [journal_files(d) for d in dirs]
    result.journal_idle_growth_bytes = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before, strict=True)]
    result.journal_idle_new_log_rows = [
        journal_rows(d).get("incident_log", 0) - r for d, r in zip(dirs, rows_before, strict=True)
    ]
    result.idle_cycles = sum(_count(p, "cycle") for p in watchdogs) - cycles_before


def _drain(workdir: Path, count: int, timeout_s: float = 20.0) -> None:
    """Give the outboxes a moment to send what the tail produced (clones that started meanwhile)."""
    deadline = time.monotonic() + timeout_s
    dirs = [workdir / f"watchdog-{i}" for i in range(count)]
    while time.monotonic() < deadline and any(pending_ages(d) for d in dirs):
        time.sleep(0.5)


def _count(process: WatchdogProcess, event: str) -> int:
    return sum(1 for line in process.log_lines() if line.get("event") == event)


def _check(
    sim: Simulator,
    driver: Driver,
    chats: list[ChatRig],
    watchdogs: list[WatchdogProcess],
    workdir: Path,
    config: SoakConfig,
    result: SoakResult,
) -> None:
    result.events = Counter(e.kind for e in driver.events)
    tasks = {t["id"]: t for t in sim.tasks()}
    children: dict[str, list[str]] = {}
    for task in tasks.values():
        if RESUMED_TAG in (task.get("tags") or []) and task.get("parent"):
            children.setdefault(task["parent"], []).append(task["id"])
    result.clones_found = sum(len(v) for v in children.values())  # stray drafts included
    by_task = {e.task_id: e for e in driver.events}

    # Recoveries: exactly once per loss with budget, none without; none for anything else.
    expected_alerts: set[tuple[str, str]] = set()
    for event in driver.events:
        task = tasks[event.task_id]
        kids = children.get(event.task_id, [])
        if event.kind in LOSS_EVENT:
            result.losses += 1
            expected_alerts.add((event.task_id, LOSS_EVENT[event.kind].value))
            handled = HANDLED_TAG in (task.get("tags") or [])
            if event.attempt + 1 > config.max_attempts:
                result.expected_give_ups += 1
                expected_alerts.add((event.task_id, EventKind.GAVE_UP.value))
                if kids:
                    result.over_budget.append(event.task_id)
                if not handled:
                    result.give_ups_unhandled.append(event.task_id)
            else:
                result.expected_clones += 1
                started = [k for k in kids if tasks[k].get("status") != "created"]
                if len(started) > 1:
                    result.duplicates.append(f"{event.task_id} ({len(started)} clones left draft state)")
                elif len(kids) > 1:
                    result.stray_drafts.append(f"{event.task_id} ({len(kids) - 1} drafts besides its clone)")
                elif not kids:
                    result.misses.append(f"{event.task_id} ({event.kind}, handled={handled})")
            if event.kind in (KILL, RESTART_AGENT) and task.get("status_reason") != STOP_REASON:
                result.misses.append(f"{event.task_id} (lost but not marked stopped by the watchdog)")
        elif event.kind in REPORT_EVENT:
            expected_alerts.add((event.task_id, REPORT_EVENT[event.kind].value))
            if kids:
                result.reported_but_cloned.append(event.task_id)
        elif event.kind == QUIET and (
            kids or task.get("status_reason") == STOP_REASON or HANDLED_TAG in (task.get("tags") or [])
        ):
            result.quiet_touched.append(event.task_id)
    for parent, kids in children.items():
        if parent not in by_task or by_task[parent].kind not in LOSS_EVENT:
            result.false_recoveries.append(f"{parent} -> {kids}")
    for task in tasks.values():
        if lineage_of(task["id"], task.get("tags") or []).attempt > config.max_attempts:
            result.over_budget.append(task["id"])

    # Logs: claim-step deletions, crashes, kills that interrupted a recovery, cycles.
    for process in watchdogs:
        lines = process.log_lines()
        result.drafts_deleted += sum(1 for line in lines if line.get("event") == "duplicate_clone_deleted")
        result.running_duplicates_logged += sum(1 for line in lines if line.get("event") == "duplicate_clone_running")
        result.cycles += sum(1 for line in lines if line.get("event") == "cycle")
        result.blind_cycles += sum(
            1 for line in lines if line.get("event") == "cycle" and str(line.get("summary", "")).startswith("blind")
        )
        for line in lines:
            if line.get("event") in ("cycle_crashed", "delivery_crashed", "notify.batch_failed") or (
                "Traceback" in str(line.get("raw", ""))
            ):
                result.crashes.append(f"{process.name}: {line.get('event') or line.get('raw')}")
        result.kills_mid_recovery += _interrupted_recoveries(lines)
        result.watchdog_kills += process.kills
        result.watchdog_starts += process.starts
    calls = sim.calls.snapshot()
    result.api_calls = sum(calls.values())

    # Alerts: every expected (task, event) reaches each channel (of at least one watchdog) at least once.
    delivered: list[Counter[tuple[str, str, str]]] = []
    for rig in chats:
        counts: Counter[tuple[str, str, str]] = Counter()
        for channel, text in sent_messages(rig):
            event_kind, task_ids, truncated = mentions(text, channel)
            result.truncated_groups += int(truncated)
            for task_id in task_ids:
                counts[(channel, task_id, event_kind.value if event_kind else "?")] += 1
        delivered.append(counts)
        statuses = chat_statuses(rig)
        result.chat_statuses.update(statuses)
        result.chat_requests += sum(statuses.values())
        result.chat_failures_answered += sum(v for k, v in statuses.items() if k.endswith((" 429", " 500")))
    channels = ("slack", "telegram")
    for task_id, event_value in sorted(expected_alerts):
        for channel in channels:
            result.alerts_expected += 1
            if not any(counts[(channel, task_id, event_value)] for counts in delivered):
                result.alerts_missing.append(f"{channel}:{task_id[:8]}:{event_value}")
    for i, counts in enumerate(delivered):
        state_dir = workdir / f"watchdog-{i}"
        for channel, task_id, event_value in journal_notices(state_dir):
            if not counts[(channel, task_id, event_value)] and (task_id, event_value) not in expected_alerts:
                result.alerts_missing.append(f"{channel}:{task_id[:8]}:{event_value} (journal)")
        for key, count in counts.items():
            result.alerts_delivered += 1
            if count > 1:
                result.alert_duplicates += 1
                result.alert_duplicate_keys.append(f"watchdog-{i}:{key[0]}:{key[1][:8]}:{key[2]} x{count}")
        states = outbox_states(state_dir)
        unfinished = sum(v for k, v in states.items() if k != "sent")
        result.outbox_unfinished[f"watchdog-{i}"] = unfinished - result.in_flight_at_stop[i]
        result.journal_bytes.append(journal_bytes(state_dir))
        result.journal_rows.append(journal_rows(state_dir))


def _interrupted_recoveries(lines: list[dict[str, Any]]) -> int:
    """Kills that came between a recovery's decision and its `requeued` line (seen as a process restart)."""
    interrupted = 0
    open_tasks: set[str] = set()
    for line in lines:
        event = line.get("event")
        if event == "decision" and line.get("action") in ("requeue", "escalate"):
            open_tasks.add(str(line.get("task_id")))
        elif event in ("requeued", "gave_up"):
            open_tasks.discard(str(line.get("task_id")))
        elif event == "started":  # a new process: whatever was open was cut short
            interrupted += int(bool(open_tasks))
            open_tasks.clear()
    return interrupted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the test suite's compressed run (< 3 min)")
    parser.add_argument("--watchdogs", type=int, default=1)
    parser.add_argument("--chaos-s", type=float, default=None, help="seconds of chaos (long run: 600)")
    parser.add_argument("--restarts", type=int, default=None, help="SIGKILLs per watchdog (default 20)")
    parser.add_argument("--lineages", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--post-commit-rate", type=float, default=None, help="writes answered 503 after success")
    parser.add_argument("--workdir", type=Path, default=None, help="keep configs, journals and logs here")
    args = parser.parse_args(argv)
    config = (
        short_config(args.workdir, args.watchdogs, args.seed)
        if args.short
        else SoakConfig(watchdogs=args.watchdogs, seed=args.seed, workdir=args.workdir)
    )
    overrides = {
        k: v
        for k, v in {
            "chaos_s": args.chaos_s,
            "restarts": args.restarts,
            "lineages": args.lineages,
            "workers": args.workers,
            "post_commit_error_rate": args.post_commit_rate,
        }.items()
        if v is not None
    }
    config = replace(config, **overrides)
    result = run_soak(config, progress=True)
    print(result.render())
    return 0 if not result.failures() else 1


if __name__ == "__main__":
    raise SystemExit(main())
