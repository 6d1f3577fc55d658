"""systemd's notify protocol, spoken by the daemon itself (stdlib only, no libsystemd).

Who calls it: `cli._observers` plugs `SystemdNotifier` into the service when `$NOTIFY_SOCKET` is set
(systemd sets it for `Type=notify` units); without it every call is a no-op, so the same code runs in a
terminal, a container and a ClearML agent.

What systemd hears and why:
- `READY=1` once the config is loaded and the first cycle ran: `systemctl start` returns only when the
  watchdog has really looked at ClearML once, and a broken config fails the start, not later.
- `WATCHDOG=1` after every cycle that came to its end, with `STATUS=` a one-line summary. A hung loop
  stops pinging and systemd restarts it (`WatchdogSec=`). A *blind* cycle (ClearML unreachable) still
  pings: it ended in bounded time, so the loop is alive, and a restart cannot bring ClearML back; it
  would only reset the outage clock that raises the `watchdog_unhealthy` alert. The health endpoint
  reports blindness instead.
- `STOPPING=1` on shutdown, so `systemctl stop` shows "deactivating" while the running step finishes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

from watchdog.logs import mask

if TYPE_CHECKING:
    from watchdog.recovery import CycleReport

log = structlog.get_logger(__name__)

STATUS_MAX_CHARS = 200
SEND_TIMEOUT_S = 1.0


def _socket_address(raw: str) -> str | bytes | None:
    """`$NOTIFY_SOCKET` as `sendto` wants it: a path, or an abstract name ('@' becomes a leading NUL)."""
    if not raw:
        return None
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # vsock:... and relative paths are not for us; stay silent rather than guess


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """The ping deadline systemd expects (`WatchdogSec=`), or None when no watchdog is armed for us.

    Follows sd_watchdog_enabled(): `$WATCHDOG_USEC` counts only when `$WATCHDOG_PID` is unset or ours.
    """
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000


def one_line(text: str) -> str:
    """A STATUS= value: one line (a newline would start a new notify field), short, secrets masked."""
    flat = " ".join(mask(text).split())
    return flat if len(flat) <= STATUS_MAX_CHARS else flat[: STATUS_MAX_CHARS - 3] + "..."


class Notifier:
    """Sends notify datagrams to `$NOTIFY_SOCKET`. Never raises: systemd being away must not stop the work."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._raw = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(self._raw)
        self._warned = False
        if self._raw and self._address is None:
            log.warning("notify_socket_unsupported", notify_socket=self._raw)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> bool:
        """One datagram with `fields` joined by newlines (e.g. "READY=1", "STATUS=..."). True if sent."""
        if self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # A datagram socket blocks when the reader's queue is full (10 datagrams on Linux): a
                # stalled reader must cost at most a moment, never a stuck cycle or shutdown.
                sock.settimeout(SEND_TIMEOUT_S)
                sock.sendto(payload, self._address)
            return True
        except OSError as error:
            if not self._warned:  # once: a missing socket would otherwise log every cycle
                log.warning("notify_failed", notify_socket=self._raw, problem=str(error))
                self._warned = True
            return False


class SystemdNotifier:
    """The service observer that tells systemd how the daemon is doing (see the module docstring)."""

    def __init__(self, notifier: Notifier | None = None, poll_interval_s: float | None = None) -> None:
        self.notifier = notifier or Notifier()
        self.cycles = 0
        self._last_status = "starting: first cycle"
        interval = watchdog_interval_s()
        too_short = interval is not None and poll_interval_s is not None and interval < 2 * poll_interval_s
        if self.notifier.enabled and too_short:
            log.warning(
                "watchdog_sec_too_short",
                watchdog_s=interval,
                poll_interval_s=poll_interval_s,
                advice="set WatchdogSec= to at least 4 poll intervals plus the longest cycle",
            )

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def starting(self) -> None:
        self.notifier.send("STATUS=" + self._last_status)

    def ready(self) -> None:
        self.notifier.send("READY=1", "STATUS=" + self._last_status)

    def cycle_done(self, report: CycleReport, duration_s: float) -> None:
        self.cycles += 1
        self._last_status = one_line(f"cycle {self.cycles} ({duration_s:.1f}s): {report.summary()}")
        self.notifier.send("WATCHDOG=1", "STATUS=" + self._last_status)

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=stopping: finishing the current step")
