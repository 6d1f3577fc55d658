"""Helpers for the deploy tests: a real NOTIFY_SOCKET listener and a strict Prometheus text parser."""

from __future__ import annotations

import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class NotifyListener:
    """A datagram socket bound where systemd would bind it; collects every notify field received."""

    def __init__(self, path: Path | None = None, abstract_name: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract_name is not None:
            self.sock.bind(b"\0" + abstract_name.encode())
            self.address = "@" + abstract_name
        else:
            assert path is not None
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.2)
        self.messages: list[list[str]] = []

    def drain(self) -> list[list[str]]:
        while True:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return self.messages
            self.messages.append(data.decode().split("\n"))

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
        self.sock.close()


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, str, str]:
    """(status, content type, body) for a GET, 5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()


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
