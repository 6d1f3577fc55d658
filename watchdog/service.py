"""The long-running daemon: APScheduler drives the reconcile cycle and the outbox delivery, signals stop it.

Who calls it: `clearml-watchdog run` (and `demo`). Two interval jobs, each `max_instances=1` and
`coalesce=True`: a slow ClearML never stacks cycles, missed runs collapse into one. Delivery has its
own job so a chat outage never delays a recovery. Observers (systemd notify, health endpoint, ClearML
scalars) get `ready`, `cycle_done` and `stopping` events and never affect the cycle if they fail.

Shutdown: the first SIGTERM/SIGINT lets the running step finish (the cycle checks between tasks), waits
at most `SHUTDOWN_GRACE_S`, closes the journal and returns 0; a second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import FrameType
from typing import Protocol

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from watchdog.journal import Journal
from watchdog.notify.notice import EventKind, Notice
from watchdog.recovery import CycleReport, NoticeSink, Reconciler
from watchdog.servertime import utcnow

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 8.0
SHUTDOWN_DELIVERY_BUDGET_S = 2.0  # what is left of the 10 s promised to systemd/docker
PRUNE_AFTER_DAYS = 30


class Observer(Protocol):
    """Something that wants to know how the daemon is doing (systemd, health endpoint, ClearML scalars)."""

    def ready(self) -> None: ...

    def cycle_done(self, report: CycleReport, duration_s: float) -> None: ...

    def stopping(self) -> None: ...


class Deliverer(Protocol):
    def deliver_due(self, now: datetime | None = None, *, budget_s: float | None = None) -> object: ...


class Service:
    def __init__(
        self,
        reconciler: Reconciler,
        journal: Journal,
        outbox: NoticeSink,
        deliverer: Deliverer | None,
        *,
        poll_interval_s: float,
        unhealthy_after_s: float,
        deliver_every_s: float = 2.0,
        observers: list[Observer] | None = None,
        clock: Callable[[], datetime] = utcnow,
        stop_requested: threading.Event | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.journal = journal
        self.outbox = outbox
        self.deliverer = deliverer
        self.poll_interval_s = poll_interval_s
        self.unhealthy_after_s = unhealthy_after_s
        self.deliver_every_s = deliver_every_s
        self.observers = observers or []
        self.clock = clock
        self.stop_requested = stop_requested or threading.Event()
        self._cycle_lock = threading.Lock()
        self._first_cycle_done = False
        self._last_success: datetime | None = None
        self._blind_since: datetime | None = None
        self._unhealthy_incident: str | None = None
        self.cycles = 0
        reconciler.should_stop = self.stop_requested.is_set

    # --- jobs ----------------------------------------------------------------------------------------

    def run_cycle(self) -> CycleReport | None:
        if self.stop_requested.is_set():
            return None
        with self._cycle_lock:
            started = time.monotonic()
            try:
                report = self.reconciler.run_cycle()
            except Exception:  # a bug must not kill the daemon: log it, try again next cycle
                log.exception("cycle_crashed")
                report = CycleReport(started_at=self.clock(), blind_reason="internal error (see the traceback above)")
            duration = time.monotonic() - started
            self.cycles += 1
            self._track_health(report)
            log.info("cycle", summary=report.summary(), duration_s=round(duration, 3))
            if duration > self.poll_interval_s and self._first_cycle_done:
                log.warning(
                    "cycle_slower_than_poll_interval",
                    duration_s=round(duration, 1),
                    poll_interval_s=self.poll_interval_s,
                    note="runs are coalesced, none overlap; raise poll_interval_s if this persists",
                )
            for observer in self.observers:
                self._tell(observer.cycle_done, report, duration)
            if not self._first_cycle_done:
                self._first_cycle_done = True
                for observer in self.observers:
                    self._tell(observer.ready)
            return report

    def deliver(self, budget_s: float | None = None) -> None:
        if self.deliverer is None:
            return
        try:
            self.deliverer.deliver_due(self.clock(), budget_s=budget_s)
        except Exception:
            log.exception("delivery_crashed")

    def prune(self) -> None:
        try:
            removed = self.journal.prune(self.clock() - timedelta(days=PRUNE_AFTER_DAYS))
            if removed:
                log.info("journal_pruned", incidents=removed)
        except Exception:
            log.exception("prune_failed")

    def _track_health(self, report: CycleReport) -> None:
        now = self.clock()
        if report.finished:
            self._last_success = now
            self._blind_since = None
            if self._unhealthy_incident:
                self._announce(EventKind.WATCHDOG_HEALTHY, self._unhealthy_incident, "ClearML is reachable again")
                self._unhealthy_incident = None
            return
        if self._blind_since is None:
            self._blind_since = now
        blind_for = (now - self._blind_since).total_seconds()
        if self._unhealthy_incident is None and blind_for >= self.unhealthy_after_s:
            self._unhealthy_incident = f"watchdog-unhealthy:{self._blind_since.isoformat()}"
            self._announce(
                EventKind.WATCHDOG_UNHEALTHY,
                self._unhealthy_incident,
                f"the watchdog cannot reach ClearML for {blind_for:.0f}s: {report.blind_reason}",
            )

    def _announce(self, event: EventKind, incident_id: str, explanation: str) -> None:
        try:
            self.outbox.add(
                Notice(incident_id=incident_id, event=event, occurred_at=self.clock(), explanation=explanation)
            )
        except Exception:
            log.exception("announce_failed", notice_event=event.value)

    @staticmethod
    def _tell(callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("observer_failed")

    @property
    def last_success(self) -> datetime | None:
        return self._last_success

    # --- the daemon ----------------------------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        if install_signals:
            install_signal_handlers(self.stop_requested)
        scheduler = BackgroundScheduler(timezone=timezone.utc, job_defaults={"max_instances": 1, "coalesce": True})
        now = datetime.now(timezone.utc)
        scheduler.add_job(self.run_cycle, "interval", seconds=self.poll_interval_s, next_run_time=now, id="cycle")
        scheduler.add_job(self.deliver, "interval", seconds=self.deliver_every_s, next_run_time=now, id="deliver")
        scheduler.add_job(self.prune, "interval", hours=6, next_run_time=now, id="prune")
        scheduler.start()
        log.info("started", poll_interval_s=self.poll_interval_s, pid=os.getpid())
        try:
            self.stop_requested.wait()
        finally:
            self._shutdown(scheduler)
        if install_signals:
            # This process is ours (we installed the signal handlers) and the journal is closed. A step
            # still stuck past the grace period, or a chat send in flight, runs in the scheduler's worker
            # threads, which are not daemon threads: the interpreter would wait for them at exit, past
            # the 10 s promised to systemd/docker. Leave now, with success.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return 0

    def _shutdown(self, scheduler: BackgroundScheduler) -> bool:
        """Stop the jobs, wait up to the grace period for the running step; True if it finished."""
        log.info("stopping", grace_s=SHUTDOWN_GRACE_S)
        for observer in self.observers:
            self._tell(observer.stopping)
        scheduler.shutdown(wait=False)
        finished = self._cycle_lock.acquire(timeout=SHUTDOWN_GRACE_S)
        if not finished:
            log.warning("step_still_running", note="exiting anyway; the next start repairs it from ClearML")
        if finished:  # one last short try; what is not sent stays pending for the next start
            self.deliver(budget_s=SHUTDOWN_DELIVERY_BUDGET_S)
        self.journal.close()
        log.info("stopped")
        return finished


def install_signal_handlers(stop_requested: threading.Event) -> None:
    """SIGTERM/SIGINT set `stop_requested`; a second one exits at once.

    The CLI installs them before it loads the config and logs in, so a stop during start-up (systemd
    stopping a unit that is still connecting) also ends with exit 0 once start-up is done.
    """

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop_requested.is_set():
            os._exit(128 + signum)  # second signal: at once
        log.info("signal", signal=signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
