"""sd_notify against a real datagram socket: path and abstract addresses, the observer's messages."""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from deploy_helpers import NotifyListener

from watchdog.recovery import CycleReport
from watchdog.systemd import SEND_TIMEOUT_S, Notifier, SystemdNotifier, one_line, watchdog_interval_s


@pytest.fixture
def listener(tmp_path: Path) -> NotifyListener:
    sock = NotifyListener(path=tmp_path / "notify.sock")
    yield sock
    sock.close()


def finished_report(running: int = 3) -> CycleReport:
    return CycleReport(started_at=datetime.now(timezone.utc), finished=True, running_tasks=running, workers=2)


def test_path_socket_receives_fields(listener: NotifyListener) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": listener.address})
    assert notifier.enabled
    assert notifier.send("READY=1", "STATUS=hello")
    assert listener.drain() == [["READY=1", "STATUS=hello"]]


def test_abstract_socket_receives_fields() -> None:
    name = f"clearml-watchdog-test-{uuid.uuid4().hex}"
    listener = NotifyListener(abstract_name=name)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.send("WATCHDOG=1")
        assert listener.drain() == [["WATCHDOG=1"]]
    finally:
        listener.close()


@pytest.mark.parametrize(
    "environ",
    [
        {},  # not under systemd: a no-op
        {"NOTIFY_SOCKET": ""},  # set but empty
        {"NOTIFY_SOCKET": "vsock:2:1234"},  # a transport we do not speak: silent, not a crash
        {"NOTIFY_SOCKET": "relative/path"},  # not an absolute path: ignored
    ],
)
def test_no_socket_is_a_no_op(environ: dict[str, str]) -> None:
    notifier = Notifier(environ)
    assert not notifier.enabled
    assert notifier.send("READY=1") is False


def test_missing_socket_never_raises(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.send("WATCHDOG=1") is False  # systemd went away: the daemon goes on
    assert notifier.send("WATCHDOG=1") is False


def test_observer_sequence(listener: NotifyListener) -> None:
    observer = SystemdNotifier(Notifier({"NOTIFY_SOCKET": listener.address}))
    observer.cycle_done(finished_report(), 0.25)
    observer.ready()
    blind = CycleReport(started_at=datetime.now(timezone.utc), blind_reason="workers.get_all: ClearML unreachable")
    observer.cycle_done(blind, 1.0)
    observer.stopping()
    messages = listener.drain()
    assert messages[0][0] == "WATCHDOG=1" and messages[0][1].startswith("STATUS=cycle 1 (0.2s): 3 running")
    assert messages[1][0] == "READY=1" and messages[1][1] == messages[0][1]  # READY carries the first summary
    # A blind cycle ended in bounded time: the loop is alive, so it pings; STATUS says it is blind.
    assert messages[2][0] == "WATCHDOG=1" and "blind: workers.get_all" in messages[2][1]
    assert messages[3] == ["STOPPING=1", "STATUS=stopping: finishing the current step"]


def test_status_is_one_short_line() -> None:
    text = one_line("a\nb\rc  d" + "x" * 500)
    assert "\n" not in text and "\r" not in text
    assert text.startswith("a b c d") and len(text) <= 200


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),  # no watchdog armed
        ({"WATCHDOG_USEC": "30000000"}, 30.0),  # armed, no pid: for us
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),  # armed for us
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # armed for another process
        ({"WATCHDOG_USEC": "junk"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(environ) == expected


def test_a_reader_that_stopped_reading_costs_a_moment_not_a_hang(tmp_path: Path) -> None:
    """Linux queues ~10 datagrams per unix socket; past that a blocking send would wait for ever."""
    path = tmp_path / "stalled.sock"
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stalled.bind(str(path))
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        results = []
        started = time.monotonic()
        for _ in range(20):
            results.append(notifier.send("WATCHDOG=1"))
            if results[-1] is False:
                break
        assert results[-1] is False, "the queue never filled up"
        assert time.monotonic() - started < SEND_TIMEOUT_S + 1.0
    finally:
        stalled.close()
