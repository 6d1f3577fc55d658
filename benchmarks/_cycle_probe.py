"""The measured side of the idle-cycle benchmark: one child process, one way of doing an idle cycle.

Who runs it: `benchmarks/bench_idle_cycle.py`, as `python -m benchmarks._cycle_probe --style watchdog|monitor
--config PATH`, with the simulator in the parent process (so the server's CPU and memory are not counted
here). It prints one JSON object: what importing and logging in cost, then what each cycle cost in API
calls (counted at the SDK session, every request this process sent), CPU seconds of this process, wall
seconds, and the process's peak RSS.

Styles:
- `watchdog`: the real Reconciler (gateway, journal, no chat channel), first cycle then steady cycles;
- `monitor`: ClearML's own `automation.Monitor` way: `Task.get_tasks(...)` page by page with the same
  filter as ours (the SDK builds one Task per row with a `tasks.get_by_id` each) plus a typed
  `APIClient().workers.get_all()`: the same information our classifier needs, fetched the SDK's way.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

CALLS: Counter[str] = Counter()
FAILED_PAGES: list[int] = []
# The running tasks our gateway asks for (in_progress, no local development runs), asked the SDK's way.
QUERY = {"status": ["in_progress"], "system_tags": ["-development"]}


def _count_calls() -> None:
    """Count every request the SDK session sends (ours and the SDK's own), by endpoint."""
    from clearml.backend_api.session import Session

    send_request = Session.send_request

    def counting(self: Any, service: str, action: str, *args: Any, **kwargs: Any) -> Any:
        CALLS[f"{service}.{action}"] += 1
        return send_request(self, service, action, *args, **kwargs)

    Session.send_request = counting  # type: ignore[method-assign]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _measure(step: Callable[[], object]) -> dict[str, Any]:
    CALLS.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    outcome = step()
    return {
        "cpu_s": round(time.process_time() - cpu, 4),
        "wall_s": round(time.perf_counter() - wall, 4),
        "calls": sum(CALLS.values()),
        "by_endpoint": dict(sorted(CALLS.items())),
        "rss_mb": round(_current_rss_mb(), 1),
        "outcome": outcome,
    }


def watchdog_style(config_path: Path, steady: int) -> dict[str, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    from watchdog.config import load_config
    from watchdog.gateway import Gateway
    from watchdog.journal import Journal
    from watchdog.notify.build import build_outbox
    from watchdog.recovery import Reconciler

    _count_calls()
    imported = {"cpu_s": round(time.process_time() - cpu, 3), "wall_s": round(time.perf_counter() - wall, 3)}
    config = load_config(config_path)
    journal = Journal.open_in(config.state_dir)
    outbox = build_outbox(journal, config.notify, channels=[])
    reconciler = Reconciler(Gateway(config.clearml), journal, outbox, config, self_task_id="")
    login = _measure(reconciler.check_scope)  # logs in, resolves the watched queue

    def cycle() -> str:
        report = reconciler.run_cycle()
        assert report.finished, report.blind_reason
        return report.summary()

    first = _measure(cycle)
    steady_cycles = [_measure(cycle) for _ in range(steady)]
    return {"import": imported, "login": login, "first_cycle": first, "steady_cycles": steady_cycles}


def monitor_style(steady: int) -> dict[str, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    from clearml import Task
    from clearml.backend_api.session.client import APIClient

    _count_calls()
    imported = {"cpu_s": round(time.process_time() - cpu, 3), "wall_s": round(time.perf_counter() - wall, 3)}
    client = APIClient()
    login = _measure(lambda: len(client.queues.get_all(only_fields=["id"])))

    def step() -> str:
        workers = client.workers.get_all(last_seen=3600)
        running = 0
        page = 0
        while True:
            batch: list[Any] = []
            for attempt in range(3):  # the SDK gives up a whole page when one get_by_id fails
                try:
                    batch = Task.get_tasks(task_filter={**QUERY, "page": page, "page_size": 500})
                    break
                except ValueError:
                    FAILED_PAGES.append(page)
                    if attempt == 2:
                        raise
            running += len(batch)
            # Like Monitor.monitor_step(): the Task objects live for one page only. Each holds
            # multiprocessing semaphores (a memory mapping each): 10,000 alive fail here with ENOMEM.
            done = len(batch) < 500
            del batch
            gc.collect()
            if done:
                break
            page += 1
        return f"{running} running, {len(workers)} workers"

    cycles = [_measure(step) for _ in range(1 + steady)]
    return {"import": imported, "login": login, "first_cycle": cycles[0], "steady_cycles": cycles[1:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", choices=["watchdog", "monitor"], required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--steady", type=int, default=3)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)  # the SDK warns about result sizes; the figures are what matter
    result = watchdog_style(args.config, args.steady) if args.style == "watchdog" else monitor_style(args.steady)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    result["failed_pages"] = FAILED_PAGES
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
