"""Timestamps as the ClearML server writes and reads them.

Every date the simulator stores is a UTC ISO-8601 string with microseconds and ``+00:00``
(``2026-11-23T09:16:37.805433+00:00``), the shape a real server returns. One fixed shape means
two stored dates compare correctly as plain strings, so filters and the server watchdog never
parse stored values. Callers: state (stamps), query (date filters), server (Date header).
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import formatdate


def iso(ts: float) -> str:
    """Format epoch seconds the way the server sends dates (always microseconds, +00:00)."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds")


def parse(value: object) -> float | None:
    """Epoch seconds from an ISO-8601 string; None when it cannot be read.

    A naive value is UTC, as on the server. Epoch numbers are refused on purpose: the real server
    cannot parse them either and silently drops the filter.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or text[0] not in "0123456789":
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def normalize(value: object) -> str | None:
    """A client-supplied date in the stored shape, or None when it cannot be read (or shown)."""
    ts = parse(value)
    if ts is None:
        return None
    try:
        return iso(ts)
    except (OverflowError, OSError, ValueError):  # e.g. year 1 shifted to UTC falls before year 1
        return None


def http_date(ts: float) -> str:
    """RFC 7231 ``Date`` header value, read by clients that compare with the server clock."""
    return formatdate(ts, usegmt=True)
