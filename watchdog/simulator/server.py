"""HTTP front of the simulator: the ClearML wire format over a stdlib threading server.

Paths are ``/v{ver}/{service}.{action}`` or ``/{service}.{action}``; any method (the SDK sends
GET with a JSON body) and HTTP/1.1 keep-alive, so the SDK's pooled connections work. Every
answer is the server's envelope ``{"meta": {...}, "data": {...}}`` with the HTTP status equal
to ``meta.result_code``, and carries a ``Date`` header from the simulated clock (twice when
``duplicate_date_header`` is set, like the stock Werkzeug server on gzipped replies).

Order per call, as on the server: route (404 for an unknown endpoint), injected faults, auth
(``auth.login`` takes HTTP Basic or a bearer token; everything else a bearer token), then the
handler from endpoints.py. Stopping the listener closes open keep-alive connections too, so a
client sees "connection refused"/reset rather than a half-alive server.
Caller: simulator.py.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import dates, errors
from .calls import CallCounter
from .endpoints import ENDPOINTS, Call
from .faults import FaultInjector
from .query import Doc
from .state import Identity, State
from .tokens import TokenIssuer

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/+(?:v(?P<version>\d+(?:\.\d+)?)/)?(?P<name>[A-Za-z_]\w*\.[A-Za-z_]\w*)/?$")


class ApiServer:
    """Decodes calls, applies faults and auth, runs the endpoint, encodes the envelope."""

    def __init__(
        self,
        state: State,
        tokens: TokenIssuer,
        faults: FaultInjector,
        calls: CallCounter,
    ) -> None:
        self.state = state
        self.config = state.config
        self.tokens = tokens
        self.faults = faults
        self.calls = calls
        # Called after an endpoint succeeded, before the reply leaves: (endpoint, request body, result).
        # The place to kill a client "between steps": the server did the work, the client never hears.
        self.after_success: list[Callable[[str, Doc, Doc], None]] = []
        self._port = self.config.port
        self._listener: _Listener | None = None
        self._thread: threading.Thread | None = None

    # ---- listener lifecycle ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._listener is not None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self._port}"

    def start(self) -> str:
        """Bind (the same port as before after a stop) and serve in a daemon thread."""
        if self._listener is not None:
            return self.url
        handler = type("BoundHandler", (_Handler,), {"api": self})
        listener = _Listener((self.config.host, self._port), handler)
        self._port = listener.server_address[1]
        self._listener = listener
        self._thread = threading.Thread(
            target=listener.serve_forever, kwargs={"poll_interval": 0.05}, name="clearml-sim-http", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Close the listening socket and every open connection: clients get refused/reset."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.shutdown()
        listener.server_close()
        listener.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ---- one call --------------------------------------------------------------------------

    def handle(self, path: str, headers: Mapping[str, str] | Message, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, encoded envelope) for one request. Never raises."""
        parts = urlsplit(path)
        match = _PATH.match(parts.path)
        name = match.group("name") if match else parts.path.strip("/") or "/"
        version = (match.group("version") if match else None) or self.config.api_version
        self.calls.record(name)
        try:
            if match is None or (name != "auth.login" and name not in ENDPOINTS):
                raise errors.endpoint_not_found(name, version)
            fault = self.faults.decide(name)
            if fault.delay_s > 0:
                time.sleep(fault.delay_s)
            if fault.error is not None:
                raise fault.error
            data, lines = _decode_body(body, headers.get("Content-Type") or "")
            _merge_query(data, parts.query)
            identity = self._authenticate(name, headers)
            if name == "auth.login":
                expiration = data.get("expiration_sec")
                result: Doc = {
                    "token": self.tokens.issue(
                        identity, float(expiration) if isinstance(expiration, (int, float)) else None
                    )
                }
            else:
                result = ENDPOINTS[name](self.state, Call(name, version, data, identity, lines))
            for hook in list(self.after_success):
                hook(name, data, result)
            return 200, self._envelope(name, version, 200, 0, "OK", result)
        except errors.ApiError as exc:
            return exc.code, self._envelope(name, version, exc.code, exc.subcode, exc.msg, {}, exc.data)
        except Exception as exc:  # a simulator bug must look like a server error, not a dead socket
            log.exception("simulator failed on %s", name)
            err = errors.INTERNAL_ERROR(str(exc))
            return 500, self._envelope(name, version, 500, 1, err.msg, {}, err.data, traceback.format_exc())

    def _authenticate(self, name: str, headers: Mapping[str, str] | Message) -> Identity:
        header = (headers.get("Authorization") or "").strip()
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if not header:
            raise errors.NO_CREDENTIALS()
        if scheme == "bearer":
            return self.tokens.verify(value.strip())
        if scheme != "basic" or name != "auth.login":
            raise errors.BAD_AUTH_TYPE()
        try:
            key, sep, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise errors.BAD_CREDENTIALS(str(exc)) from exc
        if not sep:
            raise errors.BAD_CREDENTIALS("missing secret")
        if key != self.config.access_key or secret != self.config.secret_key:
            raise errors.INVALID_CREDENTIALS("invalid credentials")
        return self.state.identity

    def _envelope(
        self,
        name: str,
        version: str,
        code: int,
        subcode: int,
        msg: str,
        data: Doc,
        error_data: Doc | None = None,
        stack: str | None = None,
    ) -> bytes:
        call_id = uuid.uuid4().hex
        envelope = {
            "meta": {
                "id": call_id,
                "trx": call_id,
                "endpoint": {"name": name, "requested_version": version, "actual_version": version},
                "result_code": code,
                "result_subcode": subcode,
                "result_msg": msg,
                "error_stack": stack,
                "error_data": error_data or {},
            },
            "data": data,
        }
        return json.dumps(envelope, separators=(",", ":")).encode("utf-8")


def _decode_body(body: bytes, content_type: str) -> tuple[Doc, tuple[Doc, ...]]:
    """The JSON object of a call, or the items of a batch (json-lines or a JSON list)."""
    try:
        text = body.decode("utf-8").strip() if body else ""
    except UnicodeDecodeError as exc:
        raise errors.VALIDATION_ERROR("Request body is not UTF-8", error=str(exc)) from None
    if not text:
        return {}, ()
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        if "\n" not in text and "json-lines" not in content_type:
            raise errors.VALIDATION_ERROR("Failed parsing request body as JSON") from None
        try:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise errors.VALIDATION_ERROR("Failed parsing json-lines request body", error=str(exc)) from None
        return {}, tuple(i for i in items if isinstance(i, dict))
    if isinstance(parsed, list):
        return {}, tuple(i for i in parsed if isinstance(i, dict))
    if not isinstance(parsed, dict):
        raise errors.VALIDATION_ERROR("Request body must be a JSON object")
    if "json-lines" in content_type:
        return {}, (parsed,)
    return parsed, ()


def _merge_query(data: Doc, query_string: str) -> None:
    """Query-string parameters join the body (the SDK sends ``expiration_sec`` that way)."""
    for key, values in parse_qs(query_string).items():
        if key in data:
            continue
        value: Any = values if len(values) > 1 else values[0]
        if isinstance(value, str):
            if value.lower() in ("true", "false"):
                value = value.lower() == "true"
            else:
                with contextlib.suppress(ValueError):
                    value = int(value)
        data[key] = value


class _Listener(ThreadingHTTPServer):
    """A threading HTTP server that remembers its open connections so stop() can cut them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Keep-alive request handler; all logic is in ``ApiServer.handle``."""

    protocol_version = "HTTP/1.1"
    server_version = "clearml-simulator"
    sys_version = ""
    timeout = 300
    # Headers and body leave in one segment: small separate writes on a keep-alive connection meet
    # the client's delayed ACK and cost ~40 ms per call.
    wbufsize = -1
    disable_nagle_algorithm = True
    api: ApiServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        body = self._read_body()
        status, payload = self.api.handle(self.path, self.headers, body)
        self.send_response(status)
        if self.api.config.duplicate_date_header:
            self.send_header("Date", self.date_time_string())
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def date_time_string(self, timestamp: float | None = None) -> str:
        return dates.http_date(self.api.state.clock.now() if timestamp is None else timestamp)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)
