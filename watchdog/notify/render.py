"""Notices into words: what a person reads on a phone, per channel format, within each service's limits.

Who calls it: the outbox (deliveries and edits of an incident's first message), `notify_test`. Pure: no
I/O, no clock (the caller passes `now`).

How: the content is built once as lines of typed spans (`Span`: text, bold, code, link), then written out
per format. Escaping happens only in that last step, so no user string can ever become markup:
- Slack mrkdwn: `&`, `<`, `>` escaped (all Slack requires); names, queues and URIs in code spans, where
  `*`, `_`, `~` do nothing (a backtick inside one becomes a look-alike so the span stays closed).
- Telegram HTML: every string html-escaped, only <b>, <i>, <code>, <a href> used, never nested, so each
  message is entity-valid by construction.
- Plain: for the console and `demo`, the text as it reads in chat.
Length: each user string is capped first (a 5,000-character task name becomes ~100), then lines are
added while the message fits its budget: Telegram counts UTF-16 units of the visible text (limit 4096
after entity parsing), Slack counts the raw text (hard limit 40,000; kept far shorter). A grouped
message that does not fit ends with "... and N more".
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from urllib.parse import quote, urlsplit

from watchdog.notify.notice import EventKind, Notice
from watchdog.verdict import Reason


class Format(str, Enum):
    SLACK = "slack"  # mrkdwn
    TELEGRAM = "telegram"  # parse_mode=HTML
    PLAIN = "plain"  # console


TELEGRAM_LIMIT = 4096  # UTF-16 units after entity parsing (Bot API sendMessage)
SLACK_LIMIT = 40_000  # characters; Slack truncates or refuses beyond this
# What we aim for: under the hard limits, and short enough to read on a phone.
BUDGET: dict[Format, int] = {Format.TELEGRAM: 4000, Format.SLACK: 12_000, Format.PLAIN: 12_000}

# Caps on single user-supplied strings (characters), applied before anything else.
CAP_NAME = 100
CAP_GROUP_NAME = 48
CAP_GROUP_WORKER = 32
CAP_SHORT = 80  # project, worker, queue
CAP_URI = 300
CAP_EXPLANATION = 500
CAP_GROUP_EXPLANATION = 100
MAX_URL = 2000  # a longer link is dropped (its label stays as text)
_BACKTICK_LOOKALIKE = "\u02cb"  # a backtick would close a Slack code span early


class Style(str, Enum):
    TEXT = "text"
    BOLD = "bold"
    ITALIC = "italic"
    CODE = "code"
    LINK = "link"


@dataclass(frozen=True)
class Span:
    """A run of text with one style. Spans never nest: that keeps every format valid by construction."""

    text: str
    style: Style = Style.TEXT
    url: str = ""
    plain_url: bool = True  # the console shows "(url)" after the label; off where the URL is repeated anyway


Line = tuple[Span, ...]


def text(value: str) -> Span:
    return Span(value)


def bold(value: str) -> Span:
    return Span(value, Style.BOLD)


def code(value: str) -> Span:
    return Span(value, Style.CODE)


def link(label: str, url: str, *, plain_url: bool = True) -> Span:
    """A link if `url` is a usable http(s) URL, else just the label."""
    safe = safe_url(url)
    return Span(label, Style.LINK, safe, plain_url) if safe else Span(label)


# --- cleaning user strings ---------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def _valid_unicode(value: str) -> str:
    # Lone surrogates (possible in JSON-decoded text) cannot be encoded as UTF-8: replace them.
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _drop_controls(value: str, keep_newlines: bool) -> str:
    return "".join(
        ch for ch in value if (keep_newlines and ch == "\n") or unicodedata.category(ch) != "Cc" or ch == "\t"
    )


def cap(value: str, limit: int) -> str:
    """At most `limit` characters, ending in an ellipsis when cut (never inside a surrogate pair)."""
    if len(value) <= limit:
        return value
    cut = value[: max(limit - 1, 0)].rstrip("\u200d\ufe0f ")
    return cut + "…"


def _head(value: str, limit: int) -> tuple[str, bool]:
    """Cheap pre-cut of a huge string before the per-character cleaning (a 5,000-character name costs)."""
    room = limit * 4 + 16
    return (value[:room], True) if len(value) > room else (value, False)


def one_line(value: str, limit: int) -> str:
    """A user string for a single-line field: whitespace (newlines too) collapsed, controls dropped, capped."""
    value, cut = _head(value, limit)
    cleaned = _WS.sub(" ", _drop_controls(_valid_unicode(value), keep_newlines=False)).strip()
    return _mark_cut(cap(cleaned, limit), limit, cut)


def paragraph(value: str, limit: int, max_lines: int = 6) -> str:
    """A user string that may keep a few line breaks (an explanation, an error message)."""
    value, cut = _head(value, limit)
    cleaned = _drop_controls(_valid_unicode(value).replace("\r\n", "\n").replace("\r", "\n"), keep_newlines=True)
    lines = [" ".join(part.split()) for part in cleaned.split("\n")]
    lines = [line for line in lines if line]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], "…"]
    return _mark_cut(cap("\n".join(lines), limit), limit, cut)


def _mark_cut(value: str, limit: int, cut: bool) -> str:
    """End with an ellipsis if the pre-cut dropped text, still within `limit`."""
    if not cut or value.endswith("…"):
        return value
    return (value[: limit - 1] if len(value) >= limit else value) + "…"


def safe_url(url: str) -> str:
    """`url` if it is http(s) and sane, with characters that would break link markup percent-encoded."""
    if not url or len(url) > MAX_URL:
        return ""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    return quote(_valid_unicode(url.strip()), safe="/:?#[]@!$&'()*+,;=%-._~")


# --- writing spans out per format -------------------------------------------------------------------


def _slack_escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _write_span(span: Span, fmt: Format) -> str:
    value = span.text
    if fmt is Format.PLAIN:
        if span.style is Style.LINK and span.plain_url:
            return f"{value} ({span.url})"
        return value
    if fmt is Format.TELEGRAM:
        escaped = html.escape(value, quote=False)
        if span.style is Style.BOLD:
            return f"<b>{escaped}</b>"
        if span.style is Style.ITALIC:
            return f"<i>{escaped}</i>"
        if span.style is Style.CODE:
            return f"<code>{escaped}</code>"
        if span.style is Style.LINK:
            return f'<a href="{html.escape(span.url, quote=True)}">{escaped}</a>'
        return escaped
    # Slack mrkdwn
    if span.style is Style.CODE:
        return f"`{_slack_escape(value.replace('`', _BACKTICK_LOOKALIKE))}`" if value else ""
    escaped = _slack_escape(value)
    if span.style is Style.BOLD:
        stripped = escaped.strip()
        return f"*{stripped}*" if stripped else escaped
    if span.style is Style.ITALIC:
        stripped = escaped.strip()
        return f"_{stripped}_" if stripped else escaped
    if span.style is Style.LINK:
        return f"<{span.url}|{escaped}>" if escaped else f"<{span.url}>"
    return escaped


def write_line(line: Line, fmt: Format) -> str:
    return "".join(_write_span(span, fmt) for span in line)


def utf16_len(value: str) -> int:
    return len(value.encode("utf-16-le")) // 2


def line_cost(line: Line, fmt: Format) -> int:
    """What a line counts against the budget: Telegram's visible UTF-16 length, else the raw text."""
    if fmt is Format.TELEGRAM:
        return sum(utf16_len(span.text) for span in line)
    return len(write_line(line, fmt))


def fit(
    head: Sequence[Line],
    items: Sequence[Line],
    tail: Sequence[Line],
    fmt: Format,
    budget: int,
    more: Callable[[int], Line] | None = None,
) -> list[Line]:
    """Head lines, as many items as fit, a line saying how many were left out, then tail lines if room.

    Every line is whole: cutting between lines never breaks markup. `more(n)` words the left-out line.
    """
    more_line = more or _truncated_line
    used = 0
    out: list[Line] = []

    def cost(line: Line) -> int:
        return line_cost(line, fmt) + 1  # the newline

    for line in head:
        if used + cost(line) > budget:
            out.append(_truncated_line(0))
            return out
        out.append(line)
        used += cost(line)
    tail_cost = sum(cost(line) for line in tail)
    for index, line in enumerate(items):
        remaining = len(items) - index - 1
        reserve = cost(more_line(remaining)) if remaining else 0
        if used + cost(line) + reserve + tail_cost > budget:
            out.append(more_line(len(items) - index))
            used += cost(out[-1])
            break
        out.append(line)
        used += cost(line)
    for line in tail:
        if used + cost(line) > budget:
            break
        out.append(line)
        used += cost(line)
    return out


def _truncated_line(_: int) -> Line:
    return (text("… (truncated)"),)


def _more_tasks_line(count: int) -> Line:
    return (text(f"… and {count} more ("), code("clearml-watchdog history"), text(" lists them all)"))


def write(lines: Sequence[Line], fmt: Format) -> str:
    return "\n".join(write_line(line, fmt) for line in lines)


# --- words ---------------------------------------------------------------------------------------------

_HEADLINES: dict[EventKind, tuple[str, str]] = {
    EventKind.AGENT_LOST: ("🔴", "Machine lost"),
    EventKind.AGENT_STOPPED: ("🟠", "Machine shut down"),
    EventKind.SERVER_FORCED_STOP: ("🟠", "Stopped by the ClearML server"),
    EventKind.RECOVERED: ("✅", "Recovered"),
    EventKind.GAVE_UP: ("⛔", "Gave up"),
    EventKind.USER_ABORTED: ("⏹️", "Aborted by a person"),
    EventKind.CODE_FAILED: ("💥", "Training code failed"),
    EventKind.WATCHDOG_UNHEALTHY: ("⚠️", "Watchdog cannot reach ClearML"),
    EventKind.WATCHDOG_HEALTHY: ("✅", "Watchdog reaches ClearML again"),
    EventKind.TEST: ("🧪", "Test message from clearml-watchdog"),
}

_STATUS_MARK: dict[EventKind, tuple[str, str]] = {
    EventKind.RECOVERED: ("✅", "recovered: the clone is running"),
    EventKind.GAVE_UP: ("⛔", "gave up"),
    EventKind.WATCHDOG_HEALTHY: ("✅", "resolved: ClearML answers again"),
}


_LOSSES = frozenset({EventKind.AGENT_LOST, EventKind.AGENT_STOPPED, EventKind.SERVER_FORCED_STOP})


def headline(event: EventKind) -> str:
    return _HEADLINES[event][1]


def duration(seconds: float) -> str:
    """'45 s', '4 min', '2 h 05 min', '3 d 4 h': rounded for a person, not a log."""
    total = max(round(seconds), 0)
    if total < 60:
        return f"{total} s"
    minutes = total // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def clock_time(moment: datetime, now: datetime) -> str:
    """'14:03 UTC' today, '23 Nov 14:03 UTC' another day."""
    utc_moment = moment.astimezone(now.tzinfo) if now.tzinfo else moment
    if utc_moment.date() == now.date():
        return utc_moment.strftime("%H:%M UTC")
    return utc_moment.strftime("%d %b %H:%M UTC")


def _count(value: int) -> str:
    return f"{value:,}"


def _attempt(notice: Notice) -> str:
    if notice.attempt is None:
        return ""
    if notice.max_attempts:
        return f"attempt {notice.attempt} of {notice.max_attempts}"
    return f"attempt {notice.attempt}"


def _short_attempt(notice: Notice) -> str:
    if notice.attempt is None:
        return ""
    return f"{notice.attempt}/{notice.max_attempts}" if notice.max_attempts else f"#{notice.attempt}"


def _task_label(notice: Notice, limit: int) -> str:
    name = one_line(notice.task_name, limit)
    if name:
        return name
    if notice.task_id:
        return f"task {one_line(notice.task_id, 40)}"
    return "(unnamed task)"


def _explanation(notice: Notice, limit: int) -> str:
    written = paragraph(notice.explanation, limit)
    if written:
        return written
    try:
        return Reason(notice.event.value).plain_words
    except ValueError:
        return ""


def _clones(notice: Notice) -> bool:
    return notice.action in ("requeue", "escalate") or notice.event is EventKind.RECOVERED


def _title(notice: Notice, count: int = 1) -> Line:
    emoji, words = _HEADLINES[notice.event]
    if count > 1:
        return (text(f"{emoji} "), bold(f"{words}: {count} tasks"))
    if notice.event in (EventKind.WATCHDOG_UNHEALTHY, EventKind.WATCHDOG_HEALTHY, EventKind.TEST):
        return (text(f"{emoji} "), bold(words))
    label = _task_label(notice, CAP_NAME)
    return (text(f"{emoji} "), bold(f"{words}:"), text(" "), link(label, notice.task_url, plain_url=False))


def _status_line(latest: Notice, now: datetime) -> Line:
    mark, words = _STATUS_MARK.get(latest.event, ("•", headline(latest.event).lower()))
    return (text(f"{mark} "), bold("Now:"), text(f" {words} ({clock_time(latest.occurred_at, now)})"))


def _action_line(notice: Notice) -> Line | None:
    queue = one_line(notice.queue_name, CAP_SHORT)
    attempt = _attempt(notice)
    where: list[Span] = [text(" on "), code(queue)] if queue else []
    as_attempt: list[Span] = [text(f" as {attempt}")] if attempt else []
    label = bold("Action:")
    if notice.event is EventKind.RECOVERED:
        spans: list[Span] = [bold("Clone running"), *where]
        if attempt:
            spans.append(text(f" ({attempt})"))
        return tuple(spans)
    if notice.action == "requeue":
        return (label, text(" re-queued"), *where, *as_attempt)
    if notice.action == "escalate":
        fallback: list[Span] = [text(" on the fallback queue "), code(queue)] if queue else []
        return (label, text(" moved off spot"), *fallback, *as_attempt)
    if notice.action == "give_up" or notice.event is EventKind.GAVE_UP:
        tried = f" after {attempt}" if attempt else ""
        return (label, text(f" none: the watchdog gave up{tried}; a person has to decide"))
    if notice.action == "notify_only":
        return (label, text(" none: reported only, the task was left as it is"))
    return None


def _checkpoint_line(notice: Notice) -> Line | None:
    uri = one_line(notice.checkpoint_uri, CAP_URI)
    lost = notice.lost_iterations
    if not _clones(notice):
        return (bold("Last checkpoint:"), text(" "), code(uri)) if uri else None
    if not uri:
        tail = f" ({_count(lost)} iterations lost)" if lost is not None else ""
        label = "Resumed from:" if notice.event is EventKind.RECOVERED else "Resumes from:"
        return (bold(label), text(f" scratch, no usable checkpoint{tail}"))
    label = "Resumed from:" if notice.event is EventKind.RECOVERED else "Resumes from:"
    spans: list[Span] = [bold(label), text(" "), code(uri)]
    if notice.resume_iteration is not None:
        spans.append(text(f" at iteration {_count(notice.resume_iteration)}"))
    if lost is not None:
        spans.append(text(f", about {_count(lost)} iterations lost"))
    return tuple(spans)


def _links_line(notice: Notice) -> Line | None:
    spans: list[Span] = []
    if notice.task_url or notice.task_id:
        task_label = f"task {one_line(notice.task_id, 12)}" if notice.task_id else "task"
        spans.append(link(task_label, notice.task_url) if notice.task_url else code(one_line(notice.task_id, 40)))
    if notice.clone_url or notice.clone_id:
        if spans:
            spans.append(text(" · "))
        clone_label = f"clone {one_line(notice.clone_id, 12)}" if notice.clone_id else "clone"
        spans.append(link(clone_label, notice.clone_url) if notice.clone_url else code(one_line(notice.clone_id, 40)))
    return (bold("Open:"), text(" "), *spans) if spans else None


def _when_line(notice: Notice, now: datetime) -> Line:
    verb = "Sent" if notice.event is EventKind.TEST else "Detected" if notice.event.opens_incident else "At"
    words = f"{verb} {clock_time(notice.occurred_at, now)}"
    late = (now - notice.occurred_at).total_seconds()
    if late >= 120 and notice.event is not EventKind.TEST:
        words += f", {duration(late)} ago (delivery was delayed)"
    return (Span(words, Style.ITALIC),)


def _single_lines(notice: Notice, now: datetime, latest: Notice | None) -> list[Line]:
    lines: list[Line] = [_title(notice)]
    if latest is not None:
        lines.append(_status_line(latest, now))
    project = one_line(notice.project_name, CAP_SHORT)
    if project:
        lines.append((bold("Project:"), text(" "), code(project)))
    why = _explanation(notice, CAP_EXPLANATION)
    machine: list[Span] = []
    worker = one_line(notice.worker, CAP_SHORT)
    if worker:
        machine += [text("worker "), code(worker)]
    if notice.silent_for_s is not None:
        if notice.event is EventKind.WATCHDOG_HEALTHY:
            heard = f"it was blind for {duration(notice.silent_for_s)}"
        elif notice.event is EventKind.WATCHDOG_UNHEALTHY:
            heard = f"no answer for {duration(notice.silent_for_s)}"
        elif notice.event in _LOSSES:
            heard = f"silent for {duration(notice.silent_for_s)}"
        else:
            heard = ""  # a person's abort or a crash: how long the machine was quiet says nothing
        if heard:
            machine.append(text(("; " if machine else "") + heard))
    if why or machine:
        noted = notice.event in (EventKind.TEST, EventKind.RECOVERED, EventKind.WATCHDOG_HEALTHY)
        spans: list[Span] = [bold("Note:" if noted else "Why:"), text(" ")]
        if why:
            spans.append(text(why))
        if why and machine:
            spans += [text(" ("), *machine, text(")")]
        elif machine:
            spans += machine
        lines.append(tuple(spans))
    for maybe in (_action_line(notice), _checkpoint_line(notice), _links_line(notice)):
        if maybe is not None:
            lines.append(maybe)
    if notice.event is EventKind.WATCHDOG_UNHEALTHY:
        lines.append(
            (text("Lost tasks are not recovered while the watchdog is blind; it catches up once ClearML answers."),)
        )
    lines.append(_when_line(notice, now))
    return lines


def _shared(values: Sequence[str]) -> str:
    first = values[0] if values else ""
    return first if first and all(v == first for v in values) else ""


_GROUP_ACTIONS = {"requeue": "re-queued", "escalate": "moved to the fallback queue"}


def _group_action(notices: Sequence[Notice]) -> str:
    """The action every listed task got, in words, if they all got the same clone-making one."""
    actions = {n.action for n in notices}
    if len(actions) != 1 or any(n.event is EventKind.RECOVERED for n in notices):
        return ""
    return _GROUP_ACTIONS.get(actions.pop(), "")


def _group_item(notice: Notice, latest: Notice | None, shared: Mapping[str, str]) -> Line:
    """One compact line per task (about 80 characters, so 40 fit one Telegram message)."""
    mark = _STATUS_MARK[latest.event][0] if latest is not None and latest.event in _STATUS_MARK else "•"
    spans: list[Span] = [text(f"{mark} "), link(_task_label(notice, CAP_GROUP_NAME), notice.task_url, plain_url=False)]
    project = one_line(notice.project_name, CAP_SHORT)
    if project and not shared["project"]:
        spans += [text(" "), code(project)]
    worker = one_line(notice.worker, CAP_GROUP_WORKER)
    if worker:
        spans += [text(" · "), code(worker)]
    if notice.silent_for_s is not None and notice.event in _LOSSES and not shared["silent"]:
        spans.append(text(f" · silent {duration(notice.silent_for_s)}"))
    if not _clones(notice):
        why = one_line(_explanation(notice, CAP_GROUP_EXPLANATION), CAP_GROUP_EXPLANATION)
        return (*spans, text(f" · {why}")) if why else tuple(spans)
    if not shared["action"]:
        words = "running" if notice.event is EventKind.RECOVERED else _GROUP_ACTIONS.get(notice.action, notice.action)
        spans.append(text(f" · {words}"))
    queue = one_line(notice.queue_name, CAP_SHORT)
    if queue and not shared["queue"]:
        spans += [text(" on "), code(queue)]
    attempt = _short_attempt(notice)
    if attempt:
        spans.append(text(f" · {attempt}"))
    if not notice.checkpoint_uri:
        spans.append(text(" · from scratch"))
    elif notice.resume_iteration is not None:
        spans.append(text(f" · from iter {_count(notice.resume_iteration)}"))
    else:
        spans.append(text(" · from checkpoint"))
    if notice.clone_url:
        spans += [text(" · "), link("clone", notice.clone_url)]
    return tuple(spans)


def _group_lines(
    notices: Sequence[Notice], now: datetime, status: Mapping[str, Notice]
) -> tuple[list[Line], list[Line], list[Line]]:
    first = notices[0]
    head: list[Line] = [_title(first, len(notices))]
    marks = [status[n.incident_id].event for n in notices if n.incident_id in status]
    if marks:
        done = sum(1 for m in marks if m is EventKind.RECOVERED)
        gave = sum(1 for m in marks if m is EventKind.GAVE_UP)
        head.append((bold("Now:"), text(f" {done} recovered, {gave} given up, {len(notices) - done - gave} pending")))
    clones = any(_clones(n) for n in notices)
    shared = {
        "project": _shared([one_line(n.project_name, CAP_SHORT) for n in notices]),
        "queue": _shared([one_line(n.queue_name, CAP_SHORT) for n in notices]) if clones else "",
        "action": _group_action(notices),
        "silent": _shared(
            [duration(n.silent_for_s) if n.silent_for_s is not None and n.event in _LOSSES else "" for n in notices]
        ),
    }
    if shared["project"]:
        head.append((bold("Project:"), text(" "), code(shared["project"])))
    if shared["silent"]:
        head.append((bold("Why:"), text(f" each machine was silent for {shared['silent']}")))
    if shared["action"]:
        where: list[Span] = [text(" on "), code(shared["queue"])] if shared["queue"] else []
        head.append((bold("Action:"), text(f" {shared['action']}"), *where, text(" (attempt n/max per task)")))
    elif shared["queue"]:
        head.append((bold("Queue:"), text(" "), code(shared["queue"])))
    items = [_group_item(n, status.get(n.incident_id), shared) for n in notices]
    tail = [_when_line(min(notices, key=lambda n: n.occurred_at), now)]
    return head, items, tail


def render(
    notices: Sequence[Notice],
    fmt: Format,
    now: datetime,
    *,
    status: Mapping[str, Notice] | None = None,
    budget: int | None = None,
) -> str:
    """One message for one notice (detailed) or several of the same event (a grouped list).

    `status` maps incident ids to their latest follow-up (recovered, gave up): given when re-rendering an
    incident's first message for an edit, it adds a "Now:" line (or a mark per listed task).
    """
    if not notices:
        raise ValueError("render() needs at least one notice")
    limit = BUDGET[fmt] if budget is None else budget
    ordered = sorted(notices, key=lambda n: (n.occurred_at, n.incident_id))
    status = status or {}
    if len(ordered) == 1:
        lines = _single_lines(ordered[0], now, status.get(ordered[0].incident_id))
        return write(fit(lines[:1], lines[1:], [], fmt, limit), fmt)
    head, items, tail = _group_lines(ordered, now, status)
    return write(fit(head, items, tail, fmt, limit, _more_tasks_line), fmt)
