"""Idle cycle over N running tasks (1 worker per 4 tasks): API calls, watchdog CPU, wall time, peak RSS.

Run: `python -m benchmarks.bench_idle_cycle` (all sizes, both styles; `--sizes 100 1000`, `--no-monitor`).

The simulator runs in THIS process (`seed_running(N, N // 4)`: N//4 tasks on agents, the rest local
development runs, all in_progress, nothing to do); each measured watchdog is a child process
(`benchmarks/_cycle_probe.py`), so the server's CPU and memory are not counted. Figures per size:
import and login cost once, the first cycle (fresh journal), and the median of three steady idle cycles,
then the same cycle done the way ClearML's `Monitor` example works, as a ratio to ours.
Target (issue 5): over 10,000 running tasks at most 3 + ceil(N/500) calls, 0.5 s CPU, 150 MB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import SPOT, child_env, clearml_section, table, write_config
from watchdog.simulator import Simulator, SimulatorConfig

SIZES = (100, 1_000, 10_000, 50_000)
MONITOR_MAX = 10_000  # one get_by_id per task: 50,000 takes many minutes and says nothing new


def _probe(sim: Simulator, style: str, workdir: Path, timeout_s: float) -> dict[str, Any]:
    config = write_config(
        workdir / f"{style}.yaml",
        {
            "watch": {"queues": [SPOT]},
            "state_dir": str(workdir / f"state-{style}"),
            "clearml": clearml_section(sim, request_timeout_s=60, retries=1),
            "notify": {"console": False},
            "health": {"enabled": False},
        },
    )
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._cycle_probe", "--style", style, "--config", str(config)],
        env=child_env(sim),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{style} probe failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _steady(result: dict[str, Any], key: str) -> float:
    return float(statistics.median(c[key] for c in result["steady_cycles"]))


def run(sizes: list[int], monitor: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
            sim = Simulator(SimulatorConfig(training_progress=False, server_watchdog_enabled=False, tick_s=0.2))
            seeded = time.perf_counter()
            sim.seed_running(size, size // 4, queue=SPOT)
            sim.start()
            seed_s = time.perf_counter() - seeded
            try:
                ours = _probe(sim, "watchdog", Path(tmp), timeout_s=600)
                theirs = None
                if monitor and size <= MONITOR_MAX:
                    try:
                        theirs = _probe(sim, "monitor", Path(tmp), timeout_s=1800)
                    except (RuntimeError, subprocess.TimeoutExpired) as error:
                        print(f"N={size:,}: the Monitor-style probe failed: {str(error)[-600:]}", flush=True)
            finally:
                sim.stop()
        row = {"size": size, "seed_s": round(seed_s, 1), "watchdog": ours, "monitor": theirs}
        rows.append(row)
        print(_describe(row), flush=True)
    return rows


def _describe(row: dict[str, Any]) -> str:
    ours = row["watchdog"]
    size = row["size"]
    budget = 3 + math.ceil(size / 500)
    text = (
        f"N={size:,}: import {ours['import']['cpu_s']:.2f} s CPU, login {ours['login']['cpu_s']:.2f} s CPU; "
        f"first cycle {ours['first_cycle']['calls']} calls {ours['first_cycle']['cpu_s']:.3f} s CPU; "
        f"steady idle cycle {_steady(ours, 'calls'):.0f} calls (budget {budget}) "
        f"{_steady(ours, 'cpu_s'):.3f} s CPU {_steady(ours, 'wall_s'):.3f} s wall; peak RSS {ours['peak_rss_mb']} MB; "
        f"endpoints {ours['steady_cycles'][0]['by_endpoint']}"
    )
    theirs = row["monitor"]
    if theirs:
        text += (
            f"\n  Monitor style: {_steady(theirs, 'calls'):.0f} calls, {_steady(theirs, 'cpu_s'):.2f} s CPU, "
            f"{_steady(theirs, 'wall_s'):.2f} s wall, peak RSS {theirs['peak_rss_mb']} MB "
            f"(x{_steady(theirs, 'calls') / _steady(ours, 'calls'):.0f} calls, "
            f"x{_steady(theirs, 'cpu_s') / max(_steady(ours, 'cpu_s'), 1e-6):.0f} CPU, "
            f"x{_steady(theirs, 'wall_s') / max(_steady(ours, 'wall_s'), 1e-6):.0f} wall)"
        )
    return text


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = []
    body = []
    for row in rows:
        ours, size = row["watchdog"], row["size"]
        body.append(
            [
                f"{size:,}",
                f"{_steady(ours, 'calls'):.0f} / {3 + math.ceil(size / 500)}",
                f"{_steady(ours, 'cpu_s'):.3f}",
                f"{_steady(ours, 'wall_s'):.3f}",
                f"{ours['peak_rss_mb']:.0f}",
                f"{ours['first_cycle']['calls']} / {ours['first_cycle']['cpu_s']:.3f}",
                f"{ours['import']['cpu_s']:.2f} + {ours['login']['cpu_s']:.2f}",
            ]
        )
    lines.append(
        table(
            body,
            [
                "running tasks",
                "calls / budget",
                "CPU s",
                "wall s",
                "peak RSS MB",
                "first cycle calls / CPU s",
                "import + login CPU s",
            ],
        )
    )
    compared = [r for r in rows if r["monitor"]]
    if compared:
        body = []
        for row in compared:
            ours, theirs = row["watchdog"], row["monitor"]
            body.append(
                [
                    f"{row['size']:,}",
                    f"{_steady(theirs, 'calls'):.0f} (x{_steady(theirs, 'calls') / _steady(ours, 'calls'):.0f})",
                    f"{_steady(theirs, 'cpu_s'):.2f} (x{_steady(theirs, 'cpu_s') / _steady(ours, 'cpu_s'):.0f})",
                    f"{_steady(theirs, 'wall_s'):.2f} (x{_steady(theirs, 'wall_s') / _steady(ours, 'wall_s'):.0f})",
                    f"{theirs['peak_rss_mb']:.0f}",
                ]
            )
        lines.append("")
        lines.append(table(body, ["running tasks", "Monitor-style calls", "CPU s", "wall s", "peak RSS MB"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_idle_cycle", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--no-monitor", action="store_true", help="skip the Monitor-style comparison")
    args = parser.parse_args(argv)
    rows = run(args.sizes, not args.no_monitor)
    print()
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
