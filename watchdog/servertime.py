"""Parsing ClearML timestamps and the server's clock, defensively.

Who calls it: the gateway (response `Date` headers, record dates) and the simulator's clients in tests.
A value that cannot be parsed yields None; callers log and skip the record rather than fail the cycle.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


def parse_timestamp(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO-8601 string (naive means UTC), or None if it is not one."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 falls before year 1 once moved to UTC
        return None


def parse_date_header(value: str | None) -> datetime | None:
    """The server's clock from an HTTP `Date` header.

    The stock ClearML server (Werkzeug behind gzip) may send the header twice, which `requests` joins
    into "<date>, <date>": an HTTP date itself contains one comma, so take the first two comma parts.
    """
    if not value:
        return None
    parts = [p.strip() for p in value.split(",")]
    for candidate in (", ".join(parts[:2]), value):
        try:
            parsed = parsedate_to_datetime(candidate)
        except (TypeError, ValueError, IndexError):
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    return None


def to_wire(moment: datetime) -> str:
    """ISO-8601 UTC without offset, the form ClearML's date filters parse (`>2026-01-01T00:00:00.000000`)."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
