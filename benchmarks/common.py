"""What the soak and the benchmarks share: a watchdog config file pointing at a simulator, the watchdog as a
real child process, and small figure helpers.

Who calls it: `benchmarks/soak.py` and the `benchmarks/bench_*.py` scripts. Kept apart from `tests/harness.py`
on purpose: a benchmark must be runnable from a checkout without the test tree.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from watchdog.simulator import Simulator

WATCHDOG_CMD = [sys.executable, "-m", "watchdog"]
SPOT = "gpu-spot"


def clearml_section(sim: Simulator, *, request_timeout_s: float = 3, retries: int = 1) -> dict[str, Any]:
    return {
        "api_host": sim.url,
        "web_host": sim.url,
        "files_host": sim.url,
        "access_key": sim.config.access_key,
        "secret_key": sim.config.secret_key,
        "request_timeout_s": request_timeout_s,
        "retries": retries,
    }


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    """JSON is valid YAML 1.2, so the watchdog's own loader reads it as written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def child_env(sim: Simulator) -> dict[str, str]:
    """The environment of a watchdog child: the simulator's CLEARML_* variables and nobody's clearml.conf."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(sim.env())
    env["PYTHONUNBUFFERED"] = "1"
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class WatchdogProcess:
    """`clearml-watchdog run` as a real child process that can be SIGKILLed and started again.

    Its JSON log lines (stderr) are appended to one file across restarts, so the whole soak can be read back.
    """

    def __init__(self, name: str, config: Path, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.config = config
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._log: TextIO | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        if self._log is None:
            self._log = self.log_path.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            [*WATCHDOG_CMD, "run", "--config", str(self.config), "--log-format", "json"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last delivery pass, whatever step it was in."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.kills += 1

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM and wait (the daemon's graceful path); SIGKILL if it does not leave in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far (other lines, e.g. a traceback, as {"raw": text})."""
        lines: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return lines
        for text in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                item = json.loads(text)
            except ValueError:
                item = {"raw": text}
            lines.append(item if isinstance(item, dict) else {"raw": text})
        return lines


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """A Markdown table (what the docs paste)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    out.append("| " + " | ".join("-" * w for w in widths) + " |")
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return "\n".join(out)
