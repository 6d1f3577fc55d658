"""Local stand-ins for Slack and Telegram: real HTTP servers that check requests the way the services do.

Who uses them: the notify tests, the chaos soak and `demo`. Each stand-in is a stdlib `ThreadingHTTPServer`
on 127.0.0.1 (ephemeral port) that
- answers like the real service: Slack's incoming webhook (plain-text answers) and Web API
  (`chat.postMessage`, `chat.update`, `auth.test`: HTTP 200 with `{"ok": false, "error": ...}`), Telegram's
  Bot API (`/bot<token>/sendMessage`, `editMessageText`, `getMe`: `{"ok": false, "error_code",
  "description"}`);
- checks what the real one checks: required fields, the token (`invalid_auth` / 401), a known channel or
  chat ("channel_not_found" / "chat not found"), a known forum topic, the text length (Slack 40,000
  characters; Telegram 4,096 UTF-16 units after entity parsing), and Telegram's HTML (only its tags,
  balanced, legal nesting, known entities: otherwise 400 "can't parse entities");
- records every request, and every message as the chat would show it (threads, replies, edits);
- can be told to fail: answer 429 (with retry_after / Retry-After), 500, 401, or hang past the client's
  timeout, for the next N requests or a fraction of them, and to enforce a rate limit by itself.

Slack never rejects malformed mrkdwn (it just shows it wrongly), so the Slack stand-in records such
problems in `problems` instead of refusing; tests assert the list stays empty.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

SLACK_TEXT_LIMIT = 40_000
TELEGRAM_TEXT_LIMIT = 4096

# --- faults ------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One kind of misbehaviour: an error status (429, 500, 401, ...) or a hang of `hang_s` seconds."""

    status: int = 500
    retry_after: float | None = None  # for 429
    hang_s: float = 0.0  # > 0: do not answer for this long (the client should time out first)
    remaining: int | None = None  # requests left to spoil; None: no count limit
    fraction: float = 1.0  # share of matching requests spoiled
    only: str = ""  # spoil only requests whose path contains this (e.g. "sendMessage")


@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in received it, and what it answered."""

    at: float  # the stand-in's clock
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON or form fields; None if unreadable
    raw: bytes
    status: int  # 0: the stand-in was told to hang and never answered in time
    answer: Any


@dataclass
class _RateLimit:
    limit: int
    window_s: float
    seen: dict[str, deque[float]] = field(default_factory=dict)

    def wait_s(self, key: str, now: float) -> float:
        """0 if one more request for `key` is allowed now (and counts it), else the seconds to wait."""
        times = self.seen.setdefault(key, deque())
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if len(times) >= self.limit:
            return max(self.window_s - (now - times[0]), 0.001)
        times.append(now)
        return 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: _StandIn


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `requests`, not stderr."""

    def do_POST(self) -> None:
        self.server.standin._handle(self)

    def do_GET(self) -> None:
        self.server.standin._handle(self)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # dict -> JSON, str -> text/plain
    headers: dict[str, str] = field(default_factory=dict)


class _StandIn:
    """What both stand-ins share: the server, the record, fault injection and rate limiting."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, seed: int = 0) -> None:
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self._requests: list[Recorded] = []
        self._rate: _RateLimit | None = None
        self._wake = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> _StandIn:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.standin = self
        self._server = server
        self._wake.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._wake.set()  # release hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> _StandIn:
        return self.start() if self._server is None else self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # inspection --------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget recorded requests, messages, faults and limits."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._rate = None
            self._reset_messages()

    def _reset_messages(self) -> None:
        raise NotImplementedError

    # fault injection ---------------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 500, *, retry_after: float | None = None, only: str = "") -> None:
        """Answer the next `count` requests with `status` (429 carries `retry_after` seconds)."""
        with self._lock:
            self._faults.append(Fault(status=status, retry_after=retry_after, remaining=count, only=only))

    def fail_fraction(
        self, fraction: float, status: int = 500, *, retry_after: float | None = None, only: str = ""
    ) -> None:
        """Answer about `fraction` of the requests with `status`, until `clear_faults()`."""
        with self._lock:
            self._faults.append(Fault(status=status, retry_after=retry_after, fraction=fraction, only=only))

    def hang_next(self, count: int, seconds: float = 30.0, *, only: str = "") -> None:
        """Do not answer the next `count` requests for `seconds` (released early by `stop()`)."""
        with self._lock:
            self._faults.append(Fault(hang_s=seconds, remaining=count, only=only))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def rate_limit(self, limit: int, window_s: float) -> None:
        """Answer 429 (with the time to wait) beyond `limit` messages per chat in any `window_s` seconds."""
        with self._lock:
            self._rate = _RateLimit(limit, window_s)

    def _pick_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.only and fault.only not in path:
                    continue
                if fault.remaining is not None and fault.remaining <= 0:
                    continue
                if fault.fraction < 1.0 and self._rng.random() >= fault.fraction:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    def _rate_wait(self, key: str) -> float:
        with self._lock:
            return self._rate.wait_s(key, self._clock()) if self._rate is not None else 0.0

    # the request cycle -------------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items()}
        body = _parse_body(raw, headers.get("Content-Type", ""))
        path = urlsplit(handler.path).path
        fault = self._pick_fault(path)
        if fault is not None and fault.hang_s > 0:
            # Recorded on arrival with status 0 ("never answered"), so tests see it while it hangs.
            with self._lock:
                self._requests.append(Recorded(self._clock(), handler.command, path, headers, body, raw, 0, None))
            self._wake.wait(fault.hang_s)
            _write(handler, Reply(504, "gateway timeout"))
            return
        if fault is not None:
            reply = self._fault_reply(path, fault)
        else:
            with self._lock:
                reply = self._route(handler.command, path, headers, body)
        with self._lock:
            self._requests.append(
                Recorded(self._clock(), handler.command, path, headers, body, raw, reply.status, reply.body)
            )
        _write(handler, reply)

    def _route(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        raise NotImplementedError

    def _fault_reply(self, path: str, fault: Fault) -> Reply:
        raise NotImplementedError


def _parse_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "json" in content_type:
        try:
            return json.loads(text)
        except ValueError:
            return None
    return dict(parse_qsl(text, keep_blank_values=True))


def _write(handler: _Handler, reply: Reply) -> None:
    if isinstance(reply.body, (dict, list)):
        data = json.dumps(reply.body).encode("utf-8")
        content_type = "application/json"
    else:
        data = str(reply.body).encode("utf-8")
        content_type = "text/plain; charset=utf-8"
    try:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (timed out): exactly what a hang is for


# --- Slack -------------------------------------------------------------------------------------------


@dataclass
class SlackMessage:
    """A message as the Slack channel would show it."""

    channel: str  # channel id
    ts: str
    text: str
    thread_ts: str = ""  # "" for a top-level message
    via: str = "api"  # "api" or "webhook"
    edits: list[str] = field(default_factory=list)  # earlier texts, oldest first


_SLACK_CONTROL = re.compile(r"<(?:(?:https?|mailto):[^|<>\s]+|[@#!][^|<>\s]+)(?:\|[^<>]*)?>")
_SLACK_ENTITY = re.compile(r"&(?:amp|lt|gt);")


def slack_markup_problems(text: str) -> list[str]:
    """Where `text` is not clean mrkdwn: a bare `&`, `<` or `>` outside a control sequence like <url|label>."""
    problems: list[str] = []
    stripped = _SLACK_CONTROL.sub("", text)
    stripped = _SLACK_ENTITY.sub("", stripped)
    for char in "&<>":
        if char in stripped:
            problems.append(f"unescaped {char!r} outside a <...> control sequence")
    return problems


class SlackStandIn(_StandIn):
    """Slack's incoming webhook at `webhook_url` and Web API at `api_base` (bot token `bot_token`)."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-0000-standin-token",
        channels: dict[str, str] | None = None,
        webhook_path: str = "/services/T0STANDIN/B0STANDIN/s3cr3tw3bh00kstandin",
        webhook_channel: str = "C0ALERTS",
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
    ) -> None:
        super().__init__(clock=clock, seed=seed)
        self.bot_token = bot_token
        self.channels = dict(channels or {"C0ALERTS": "alerts"})  # id -> name
        self.webhook_path = webhook_path
        self.webhook_channel = webhook_channel
        self._messages: list[SlackMessage] = []
        self.problems: list[str] = []
        self._ts = 1_700_000_000_000_000

    @property
    def api_base(self) -> str:
        return f"{self.url}/api"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{self.webhook_path}"

    def messages(self, channel: str | None = None) -> list[SlackMessage]:
        with self._lock:
            return [m for m in self._messages if channel is None or m.channel == channel]

    def top_level(self) -> list[SlackMessage]:
        return [m for m in self.messages() if not m.thread_ts]

    def replies(self, ts: str) -> list[SlackMessage]:
        return [m for m in self.messages() if m.thread_ts == ts]

    def _reset_messages(self) -> None:
        self._messages.clear()
        self.problems.clear()

    def _next_ts(self) -> str:
        self._ts += 100
        return f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"

    def _fault_reply(self, path: str, fault: Fault) -> Reply:
        webhook = path.startswith("/services/")
        if fault.status == 429:
            wait = str(int(fault.retry_after if fault.retry_after is not None else 1))
            body: Any = "rate_limited" if webhook else {"ok": False, "error": "ratelimited"}
            return Reply(429, body, {"Retry-After": wait})
        if fault.status == 401:
            return Reply(403, "invalid_token") if webhook else Reply(200, {"ok": False, "error": "invalid_auth"})
        return Reply(fault.status, "internal_error" if webhook else {"ok": False, "error": "internal_error"})

    def _check_text(self, text: Any) -> str:
        """'' if the text is acceptable, else the Slack error code."""
        if not isinstance(text, str) or not text.strip():
            return "no_text"
        if len(text) > SLACK_TEXT_LIMIT:
            return "msg_too_long"
        self.problems.extend(slack_markup_problems(text))
        return ""

    def _channel_id(self, given: Any, ids_only: bool = False) -> str:
        if not isinstance(given, str) or not given:
            return ""
        if given in self.channels:
            return given
        if ids_only:
            return ""
        name = given.removeprefix("#")
        for channel_id, channel_name in self.channels.items():
            if channel_name == name:
                return channel_id
        return ""

    def _route(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        if path.startswith("/services/"):
            return self._webhook(method, path, body)
        if not path.startswith("/api/"):
            return Reply(404, "not found")
        if method != "POST":
            return Reply(200, {"ok": False, "error": "invalid_request"})
        if body is None:
            return Reply(200, {"ok": False, "error": "invalid_json"})
        token = headers.get("Authorization", "").removeprefix("Bearer ").strip() or str(body.get("token", ""))
        if not token:
            return Reply(200, {"ok": False, "error": "not_authed"})
        if token != self.bot_token:
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        api = path.removeprefix("/api/")
        if api == "auth.test":
            return Reply(200, {"ok": True, "team": "standin", "user": "watchdog-bot"})
        if api == "chat.postMessage":
            return self._post(body)
        if api == "chat.update":
            return self._update(body)
        return Reply(200, {"ok": False, "error": "unknown_method"})

    def _webhook(self, method: str, path: str, body: Any) -> Reply:
        if path != self.webhook_path:
            return Reply(404, "no_service")
        if method != "POST":
            return Reply(405, "invalid_method")
        if body is None:
            return Reply(400, "invalid_payload")
        if "payload" in body and isinstance(body["payload"], str):  # form-encoded payload=<json>
            try:
                body = json.loads(body["payload"])
            except ValueError:
                return Reply(400, "invalid_payload")
        problem = self._check_text(body.get("text"))
        if problem:
            return Reply(400, problem)
        if rate := self._rate_wait(self.webhook_channel):
            return Reply(429, "rate_limited", {"Retry-After": str(max(int(rate + 0.999), 1))})
        self._messages.append(SlackMessage(self.webhook_channel, self._next_ts(), body["text"], via="webhook"))
        return Reply(200, "ok")

    def _post(self, body: dict[str, Any]) -> Reply:
        channel = self._channel_id(body.get("channel"))
        if not channel:
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        problem = self._check_text(body.get("text"))
        if problem:
            return Reply(200, {"ok": False, "error": problem})
        thread_ts = str(body.get("thread_ts") or "")
        if thread_ts and not any(m.ts == thread_ts and m.channel == channel for m in self._messages):
            self.problems.append(f"thread_ts {thread_ts} is not a message in {channel}")
        if rate := self._rate_wait(channel):
            return Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(max(int(rate + 0.999), 1))})
        message = SlackMessage(channel, self._next_ts(), body["text"], thread_ts=thread_ts)
        self._messages.append(message)
        return Reply(200, {"ok": True, "channel": channel, "ts": message.ts, "message": {"text": message.text}})

    def _update(self, body: dict[str, Any]) -> Reply:
        channel = self._channel_id(body.get("channel"), ids_only=True)
        if not channel:
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        ts = str(body.get("ts") or "")
        if not ts:
            return Reply(200, {"ok": False, "error": "invalid_arguments"})
        problem = self._check_text(body.get("text"))
        if problem:
            return Reply(200, {"ok": False, "error": problem})
        for message in self._messages:
            if message.channel == channel and message.ts == ts:
                if message.via == "webhook":
                    return Reply(200, {"ok": False, "error": "cant_update_message"})
                message.edits.append(message.text)
                message.text = body["text"]
                return Reply(200, {"ok": True, "channel": channel, "ts": ts, "text": message.text})
        return Reply(200, {"ok": False, "error": "message_not_found"})


# --- Telegram ----------------------------------------------------------------------------------------


class EntityError(ValueError):
    """Telegram's "can't parse entities" reason."""


_TG_TAGS = {
    "b": "b",
    "strong": "b",
    "i": "i",
    "em": "i",
    "u": "u",
    "ins": "u",
    "s": "s",
    "strike": "s",
    "del": "s",
    "a": "a",
    "code": "code",
    "pre": "pre",
    "tg-spoiler": "tg-spoiler",
    "span": "tg-spoiler",
    "blockquote": "blockquote",
    "tg-emoji": "tg-emoji",
}
_TG_ATTRS = {
    "a": {"href"},
    "span": {"class"},
    "tg-emoji": {"emoji-id"},
    "code": {"class"},
    "blockquote": {"expandable"},
}
_TG_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ATTR = re.compile(r"""\s*([a-zA-Z][a-zA-Z0-9-]*)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+))?""")
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]*);")


def _decode_entity(match: re.Match[str], offset: int) -> str:
    name = match.group(1)
    if name.startswith(("#x", "#X")):
        return chr(int(name[2:], 16))
    if name.startswith("#"):
        return chr(int(name[1:]))
    if name in _TG_NAMED:
        return _TG_NAMED[name]
    raise EntityError(f'Unsupported HTML entity "&{name};" at byte offset {offset}')


def parse_telegram_html(source: str) -> str:
    """The visible text of a parse_mode=HTML message, or `EntityError` where Telegram would refuse it.

    Stricter than Telegram where Telegram is lenient (a bare `&` is refused here too): the stand-in is
    there to catch rendering mistakes.
    """
    out: list[str] = []
    stack: list[str] = []
    i = 0
    n = len(source)

    def offset(index: int) -> int:
        return len(source[:index].encode("utf-8"))

    while i < n:
        char = source[i]
        if char == "<":
            end = source.find(">", i)
            if end == -1:
                raise EntityError(f"Can't find end of the tag starting at byte offset {offset(i)}")
            inner = source[i + 1 : end]
            if inner.startswith("/"):
                name = inner[1:].strip().lower()
                if not stack:
                    raise EntityError(f'Unexpected end tag "{name}" at byte offset {offset(i)}')
                opened = stack.pop()
                if _TG_TAGS.get(name) != _TG_TAGS.get(opened):
                    raise EntityError(
                        f'Can\'t find end tag corresponding to start tag "{opened}" at byte offset {offset(i)}'
                    )
            else:
                name_match = re.match(r"[a-zA-Z][a-zA-Z0-9-]*", inner)
                name = name_match.group(0).lower() if name_match else ""
                if name not in _TG_TAGS:
                    raise EntityError(f'Unsupported start tag "{name or inner[:10]}" at byte offset {offset(i)}')
                attrs = _parse_attrs(inner[len(name) :], name, offset(i))
                _check_tag(name, attrs, stack, offset(i))
                stack.append(name)
            i = end + 1
        elif char == "&":
            match = _ENTITY.match(source, i)
            if match is None:
                raise EntityError(f"Unescaped '&' at byte offset {offset(i)}")
            out.append(_decode_entity(match, offset(i)))
            i = match.end()
        else:
            out.append(char)
            i += 1
    if stack:
        raise EntityError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


def _parse_attrs(rest: str, tag: str, at: int) -> dict[str, str]:
    attrs: dict[str, str] = {}
    position = 0
    rest = rest.rstrip("/")
    while rest[position:].strip():
        match = _ATTR.match(rest, position)
        if match is None or match.end() == position:
            raise EntityError(f'Can\'t parse attributes of tag "{tag}" at byte offset {at}')
        name = match.group(1).lower()
        value = match.group(2) or ""
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        if "<" in value:
            raise EntityError(f"Unexpected '<' in an attribute at byte offset {at}")
        if name not in _TG_ATTRS.get(tag, set()):
            raise EntityError(f'Unsupported attribute "{name}" of tag "{tag}" at byte offset {at}')
        attrs[name] = _ENTITY.sub(lambda m: _decode_entity(m, at), value)
        position = match.end()
    return attrs


def _check_tag(name: str, attrs: dict[str, str], stack: list[str], at: int) -> None:
    canonical = _TG_TAGS[name]
    if name == "a" and not attrs.get("href"):
        raise EntityError(f'Tag "a" must have attribute "href" at byte offset {at}')
    if name == "span" and attrs.get("class") != "tg-spoiler":
        raise EntityError(f'Tag "span" must have class "tg-spoiler" at byte offset {at}')
    open_kinds = {_TG_TAGS[t] for t in stack}
    if "code" in open_kinds or ("pre" in open_kinds and canonical != "code"):
        raise EntityError(f'Entity "{canonical}" can\'t be nested in code or pre at byte offset {at}')
    if canonical in ("a", "code", "pre", "blockquote") and canonical in open_kinds:
        raise EntityError(f'Entity "{canonical}" can\'t be nested in itself at byte offset {at}')


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class TelegramChat:
    """A chat the bot is in. Forum chats have topics (message_thread_id)."""

    chat_id: int
    title: str = "alerts"
    topics: set[int] = field(default_factory=set)
    username: str = ""  # for "@channelname" addressing


@dataclass
class TelegramMessage:
    """A message as the chat would show it."""

    chat_id: int
    message_id: int
    html: str
    text: str  # after entity parsing
    thread_id: int | None = None
    reply_to: int | None = None
    edits: list[str] = field(default_factory=list)  # earlier texts (parsed), oldest first


class TelegramStandIn(_StandIn):
    """Telegram's Bot API for one bot (`token`) in the given chats, at `api_base`."""

    def __init__(
        self,
        *,
        token: str = "123456789:AAStandInTokenForTestsOnly_abcdefghij",
        chats: list[TelegramChat] | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
    ) -> None:
        super().__init__(clock=clock, seed=seed)
        self.token = token
        self.chats = {c.chat_id: c for c in (chats or [TelegramChat(-1001234567890, topics={42})])}
        self._messages: list[TelegramMessage] = []
        self._next_id: dict[int, int] = {}

    @property
    def api_base(self) -> str:
        return self.url

    def messages(self, chat_id: int | None = None) -> list[TelegramMessage]:
        with self._lock:
            return [m for m in self._messages if chat_id is None or m.chat_id == chat_id]

    def _reset_messages(self) -> None:
        self._messages.clear()
        self._next_id.clear()

    def _fault_reply(self, path: str, fault: Fault) -> Reply:
        if fault.status == 429:
            wait = int(fault.retry_after if fault.retry_after is not None else 1)
            return Reply(
                429,
                {
                    "ok": False,
                    "error_code": 429,
                    "description": f"Too Many Requests: retry after {wait}",
                    "parameters": {"retry_after": wait},
                },
                {"Retry-After": str(wait)},
            )
        if fault.status == 401:
            return Reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        if fault.status >= 500 and fault.status != 500:
            return Reply(fault.status, "<html><body>Bad Gateway</body></html>")
        return Reply(fault.status, {"ok": False, "error_code": fault.status, "description": "Internal Server Error"})

    @staticmethod
    def _error(code: int, description: str, parameters: dict[str, Any] | None = None) -> Reply:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if parameters:
            body["parameters"] = parameters
        return Reply(code, body)

    def _chat(self, given: Any) -> TelegramChat | None:
        if isinstance(given, str) and given.startswith("@"):
            return next((c for c in self.chats.values() if c.username and c.username == given[1:]), None)
        try:
            return self.chats.get(int(str(given)))
        except ValueError:
            return None

    def _route(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        match = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", path)
        if match is None:
            return self._error(404, "Not Found")
        if match.group(1) != self.token:
            return self._error(401, "Unauthorized")
        if body is None:
            return self._error(400, "Bad Request: can't parse JSON")
        api = match.group(2)
        if api == "getMe":
            return Reply(200, {"ok": True, "result": {"id": 123456789, "is_bot": True, "username": "standin_bot"}})
        if api == "sendMessage":
            return self._send(body)
        if api == "editMessageText":
            return self._edit(body)
        return self._error(404, "Not Found: method not found")

    def _parse_text(self, body: dict[str, Any]) -> tuple[str, Reply | None]:
        text = body.get("text")
        if not isinstance(text, str) or text == "":
            return "", self._error(400, "Bad Request: message text is empty")
        if body.get("parse_mode") == "HTML":
            try:
                visible = parse_telegram_html(text)
            except EntityError as error:
                return "", self._error(400, f"Bad Request: can't parse entities: {error}")
        elif body.get("parse_mode") in (None, ""):
            visible = text
        else:
            return "", self._error(400, "Bad Request: unsupported parse_mode in the stand-in")
        if not visible.strip():
            return "", self._error(400, "Bad Request: message text is empty")
        if utf16_len(visible) > TELEGRAM_TEXT_LIMIT:
            return "", self._error(400, "Bad Request: message is too long")
        return visible, None

    def _send(self, body: dict[str, Any]) -> Reply:
        if "chat_id" not in body:
            return self._error(400, "Bad Request: chat_id is empty")
        chat = self._chat(body["chat_id"])
        if chat is None:
            return self._error(400, "Bad Request: chat not found")
        thread_id = body.get("message_thread_id")
        if thread_id is not None and (not isinstance(thread_id, int) or thread_id not in chat.topics):
            return self._error(400, "Bad Request: message thread not found")
        visible, problem = self._parse_text(body)
        if problem is not None:
            return problem
        reply_to = _reply_target(body)
        if reply_to is not None and not any(
            m.chat_id == chat.chat_id and m.message_id == reply_to for m in self._messages
        ):
            allow = isinstance(body.get("reply_parameters"), dict) and body["reply_parameters"].get(
                "allow_sending_without_reply"
            )
            if not allow and not body.get("allow_sending_without_reply"):
                return self._error(400, "Bad Request: message to be replied not found")
            reply_to = None
        if wait := self._rate_wait(str(chat.chat_id)):
            seconds = max(int(wait + 0.999), 1)
            return self._error(429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds})
        message_id = self._next_id.get(chat.chat_id, 0) + 1
        self._next_id[chat.chat_id] = message_id
        message = TelegramMessage(chat.chat_id, message_id, body["text"], visible, thread_id, reply_to)
        self._messages.append(message)
        result: dict[str, Any] = {"message_id": message_id, "chat": {"id": chat.chat_id}, "text": visible}
        if thread_id is not None:
            result["message_thread_id"] = thread_id
        return Reply(200, {"ok": True, "result": result})

    def _edit(self, body: dict[str, Any]) -> Reply:
        chat = self._chat(body.get("chat_id"))
        if chat is None:
            return self._error(400, "Bad Request: chat not found")
        message_id = body.get("message_id")
        if not isinstance(message_id, int):
            return self._error(400, "Bad Request: message identifier is not specified")
        visible, problem = self._parse_text(body)
        if problem is not None:
            return problem
        for message in self._messages:
            if message.chat_id == chat.chat_id and message.message_id == message_id:
                if message.html == body["text"]:
                    return self._error(
                        400,
                        "Bad Request: message is not modified: specified new message content and reply markup"
                        " are exactly the same as a current content and reply markup of the message",
                    )
                message.edits.append(message.text)
                message.html = body["text"]
                message.text = visible
                return Reply(200, {"ok": True, "result": {"message_id": message_id, "text": visible}})
        return self._error(400, "Bad Request: message to edit not found")


def _reply_target(body: dict[str, Any]) -> int | None:
    parameters = body.get("reply_parameters")
    if isinstance(parameters, dict) and isinstance(parameters.get("message_id"), int):
        return int(parameters["message_id"])
    legacy = body.get("reply_to_message_id")
    return int(legacy) if isinstance(legacy, int) else None
