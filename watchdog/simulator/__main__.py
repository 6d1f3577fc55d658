"""Run a simulator by hand: ``python -m watchdog.simulator --port 8008 --tasks 20 --workers 5``.

Prints the environment that points the clearml SDK (or the watchdog) at it, then serves until
Ctrl-C. The seeded workers pick up the submitted tasks and train; ``--kill-after N`` loses one
busy worker (kill -9) after N seconds, so a watchdog pointed at it has something to find.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Sequence

from .config import SimulatorConfig
from .simulator import Simulator


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m watchdog.simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8008, help="0 picks a free port (default 8008)")
    parser.add_argument("--tasks", type=int, default=20, help="tasks submitted to the queue")
    parser.add_argument("--workers", type=int, default=5, help="agents serving the queue")
    parser.add_argument("--queue", default="default")
    parser.add_argument("--project", default="sim-project")
    parser.add_argument("--report-interval", type=float, default=30.0, help="seconds between worker reports")
    parser.add_argument("--worker-timeout", type=float, default=600.0, help="seconds a silent worker stays listed")
    parser.add_argument("--iteration-period", type=float, default=1.0)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--kill-after", type=float, default=None, help="kill -9 one busy agent after N seconds")
    parser.add_argument("--access-key", default="sim-access-key")
    parser.add_argument("--secret-key", default="sim-secret-key")
    return parser.parse_args(argv)


def _kill_one_later(sim: Simulator, delay: float, done: threading.Event) -> None:
    """kill -9 the first busy agent after ``delay`` seconds (waiting for one to be busy)."""

    def kill_one() -> None:
        while not done.is_set():
            busy = [a.worker_id for a in sim.fleet.agents() if a.alive and a.task_id]
            if busy:
                sim.kill_agent(busy[0])
                print(f"killed agent {busy[0]} (-9)", file=sys.stderr, flush=True)
                return
            done.wait(0.5)

    timer = threading.Timer(delay, kill_one)
    timer.daemon = True
    timer.start()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = SimulatorConfig(
        host=args.host,
        port=args.port,
        access_key=args.access_key,
        secret_key=args.secret_key,
        report_interval_s=args.report_interval,
        worker_timeout_s=args.worker_timeout,
        iteration_period_s=args.iteration_period,
        checkpoint_every_iters=args.checkpoint_every,
    )
    sim = Simulator(config)
    sim.start()
    sim.create_queue(args.queue, default=True)
    sim.start_agents(args.workers, queues=[args.queue])
    for i in range(args.tasks):
        sim.submit(
            f"train-{i:03d}",
            queue=args.queue,
            project=args.project,
            hyperparams={"Args": {"lr": 0.1, "epochs": 100, "resume_from": ""}},
        )
    print(f"ClearML simulator on {sim.url} ({args.workers} workers, {args.tasks} tasks)", file=sys.stderr)
    for key, value in sim.env().items():
        print(f"export {key}={shlex.quote(value)}")
    sys.stdout.flush()

    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    if args.kill_after is not None:
        _kill_one_later(sim, args.kill_after, done)
    done.wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
