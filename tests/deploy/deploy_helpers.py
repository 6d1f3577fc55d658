"""Helpers for the deploy tests: a NOTIFY_SOCKET listener, a strict Prometheus text parser, the daemon
as a child process, and small simulator scenarios."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.simulator import Simulator

REPO = Path(__file__).resolve().parents[2]


class NotifyListener:
    """A datagram socket bound where systemd would bind it; a thread reads it at once (as systemd
    does), so the sender never meets a full queue, and the test reads the fields received so far."""

    def __init__(self, path: Path | None = None, abstract_name: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract_name is not None:
            self.sock.bind(b"\0" + abstract_name.encode())
            self.address = "@" + abstract_name
        else:
            assert path is not None
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.1)
        self.messages: list[list[str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(data.decode().split("\n"))

    def drain(self) -> list[list[str]]:
        """Every message so far (after a moment for datagrams already sent to be read)."""
        time.sleep(0.05)
        with self._lock:
            return list(self.messages)

    def fields(self) -> list[str]:
        return [f for message in self.drain() for f in message]

    def wait_for(self, wanted: str, timeout_s: float, count: int = 1) -> list[str]:
        """Wait until `wanted` (an exact field, or a prefix ending in '=') was received `count` times."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.fields()
            hits = [f for f in got if f == wanted or (wanted.endswith("=") and f.startswith(wanted))]
            if len(hits) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{wanted!r} x{count} not received in {timeout_s}s; got {got}")
            time.sleep(0.05)

    def close(self) -> None:
        self._closed.set()
        self._reader.join(2)
        self.sock.close()


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, str, str]:
    """(status, content type, body) for a GET, 5xx included; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()
    except OSError as error:  # nothing listening (yet): status 0
        return 0, "", str(error)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Prometheus text format 0.0.4 -------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\n"])*"'
_SAMPLE = re.compile(
    rf"^(?P<name>{_NAME})(?:\{{(?P<labels>(?:{_LABEL})(?:,{_LABEL})*)?,?\}})?"
    r" (?P<value>[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))(?: -?[0-9]+)?$"
)
_LABEL_ITEM = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\n"])*)"')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


@dataclass
class Exposition:
    types: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def names(self) -> set[str]:
        return {n for n, _ in self.samples}


def parse_prometheus(text: str) -> Exposition:
    """Parse and check the line grammar; raise AssertionError naming the first bad line."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    result = Exposition()
    helped: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] == "HELP":
                assert re.fullmatch(_NAME, parts[2]), f"line {number}: bad HELP name: {line}"
                assert parts[2] not in helped, f"line {number}: HELP twice for {parts[2]}"
                helped.add(parts[2])
            elif len(parts) >= 3 and parts[1] == "TYPE":
                assert len(parts) == 4 and parts[3] in _TYPES, f"line {number}: bad TYPE: {line}"
                assert parts[2] not in result.types, f"line {number}: TYPE twice for {parts[2]}"
                seen = {re.sub(r"_(bucket|sum|count)$", "", n) for n in result.names()} | result.names()
                assert parts[2] not in seen, f"line {number}: TYPE after samples of {parts[2]}"
                result.types[parts[2]] = parts[3]
            continue
        match = _SAMPLE.match(line)
        assert match, f"line {number}: not a valid sample line: {line!r}"
        name = match.group("name")
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in result.types or family in result.types, f"line {number}: sample before its TYPE: {line}"
        labels = frozenset(_LABEL_ITEM.findall(match.group("labels") or ""))
        key = (name, labels)
        assert key not in result.samples, f"line {number}: duplicate sample {line}"
        raw = match.group("value")
        result.samples[key] = float(raw.replace("Inf", "inf"))
        if result.types.get(family) == "counter" or name.endswith("_total"):
            assert result.samples[key] >= 0, f"line {number}: negative counter"
    return result


def env_without_clearml() -> dict[str, str]:
    """The test's environment minus anything that could point a child at a real ClearML or systemd."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }


# --- the daemon as a process --------------------------------------------------------------------

BIN = Path(sys.executable).parent / "clearml-watchdog"


def write_config(directory: Path, *, health_port: int | None = None, extra: str = "") -> Path:
    """A config for fast tests: 1 s cycles, short staleness, bounded ClearML requests."""
    port = health_port if health_port is not None else free_port()
    path = directory / "config.yaml"
    path.write_text(
        f"""\
poll_interval_s: 1
watch: {{queues: [gpu-spot], projects: [], exclude_tags: [no-watchdog]}}
detect: {{task_stale_s: 1, worker_stale_s: 1}}
state_dir: {directory / "state"}
clearml: {{request_timeout_s: 20, retries: 0}}
health: {{enabled: true, host: 127.0.0.1, port: {port}, stale_after_s: 3}}
{extra}""",
        encoding="utf-8",
    )
    return path


class Daemon:
    """`clearml-watchdog run` as a child process, with a real NOTIFY_SOCKET and a JSON log file."""

    def __init__(self, directory: Path, sim: Simulator, config: Path | None, env: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.notify = NotifyListener(path=directory / "notify.sock")
        self.log_path = directory / "daemon.log"
        environment = env_without_clearml()
        environment.update(sim.env())
        environment["NOTIFY_SOCKET"] = self.notify.address
        environment.update(env or {})
        command = [str(BIN), "run", "--log-format", "json", "--log-level", "INFO"]
        if config is not None:
            command += ["--config", str(config)]
        self._log = self.log_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            command, env=environment, stdout=subprocess.DEVNULL, stderr=self._log, cwd=directory
        )

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def wait_log(self, event: str, timeout_s: float = 20.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for item in self.events():
                if item.get("event") == event and all(item.get(k) == v for k, v in fields.items()):
                    return item
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event} {fields} in the log:\n{self.log_path.read_text()[-3000:]}")

    def signal(self, signum: int) -> float:
        self.process.send_signal(signum)
        return time.monotonic()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.notify.close()
        self._log.close()


def lose_a_task(sim: Simulator, name: str = "train-lost") -> str:
    """A task running on a spot agent that is then killed -9 (agent_lost after the thresholds)."""
    worker = sim.start_agents(1, queues=["gpu-spot"])[0]
    task_id = sim.submit(name, queue="gpu-spot", hyperparams={"Args": {"lr": 0.1, "resume_from": ""}})
    sim.wait_running(task_id, timeout=10)
    sim.wait_for(lambda: sim.models(task_id), timeout=10)  # a checkpoint to resume from
    sim.kill_agent(worker)
    return task_id


def clones_of(sim: Simulator, task_id: str) -> list[dict[str, Any]]:
    return [t for t in sim.tasks(parent=task_id)]
