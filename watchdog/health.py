"""The HTTP endpoint: `/healthz` for liveness probes and `/metrics` for Prometheus.

Who calls it: `cli._observers` starts it (when `health.enabled`) before the first cycle, on
`health.host:health.port` (127.0.0.1:9478 by default: it has no authentication, so it is loopback unless
you say otherwise). It serves from daemon threads and only reads `Metrics`, so a slow scraper can never
delay a cycle, and a port already taken is one error line, not a dead watchdog: recovering tasks
matters more than being observed.

`/healthz`: 200 while the last successful cycle is recent (`health.stale_after_s`), else 503; the JSON
body says why either way. The container's HEALTHCHECK and a Kubernetes probe use it.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import structlog

from watchdog.metrics import Metrics

if TYPE_CHECKING:
    from watchdog.recovery import CycleReport

log = structlog.get_logger(__name__)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT_S = 5.0


def default_stale_after_s(poll_interval_s: float, request_timeout_s: float) -> float:
    """Three poll intervals plus one request timeout: one slow or blind cycle is not yet unhealthy."""
    return 3 * poll_interval_s + request_timeout_s


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], metrics: Metrics) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.metrics = metrics
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S  # a client that sends nothing cannot hold a thread for ever
    server_version = "clearml-watchdog"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/healthz", "/health", "/"):
            health = self.server.metrics.health()
            age = health.last_success_age_s
            body = {
                "status": "ok" if health.ok else "unhealthy",
                "reason": health.reason,
                "last_success_age_s": None if age is None else round(age, 1),
                "cycles": health.cycles,
            }
            self._send(200 if health.ok else 503, "application/json", json.dumps(body) + "\n")
        elif path == "/metrics":
            self._send(200, METRICS_CONTENT_TYPE, self.server.metrics.render())
        else:
            self._send(404, "text/plain; charset=utf-8", "not found: try /healthz or /metrics\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(self, status: int, content_type: str, text: str) -> None:
        payload = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would drown the log; errors still go through `log_error`."""

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("health_request_error", detail=format % args)


class HealthServer:
    """Serves `Metrics` over HTTP in a daemon thread. Also an observer, so it stops with the service."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 9478) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) actually bound (port 0 picks a free one), or None when not serving."""
        if self._server is None:
            return None
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    def start(self) -> bool:
        """Bind and serve. False (with one error line) if the address cannot be bound."""
        try:
            self._server = _Server((self.host, self.port), self.metrics)
        except OSError as error:
            log.error("health_endpoint_not_started", host=self.host, port=self.port, problem=str(error))
            return False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="health-http", daemon=True
        )
        self._thread.start()
        host, port = self.address or (self.host, self.port)
        log.info("health_endpoint", url=f"http://{host}:{port}/healthz", metrics=f"http://{host}:{port}/metrics")
        return True

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # --- observer: the service's events ---------------------------------------------------------------

    def ready(self) -> None:
        """Nothing to do: `Metrics` (a separate observer) records readiness."""

    def cycle_done(self, report: CycleReport, duration_s: float) -> None:
        """Nothing to do: `Metrics` records cycles."""

    def stopping(self) -> None:
        """Keep answering (503 "shutting down") until the process exits: a probe sees the shutdown."""
