"""Per-channel pacing: a token bucket for the service's rate limit, and a pause after a failure or 429.

Who calls it: the outbox, before and after each request. Time comes from the caller (the outbox's
injected clock), so nothing here sleeps: a channel that may not send yet is simply skipped until a later
delivery pass. Kept in memory: after a restart the first messages may go out at burst speed, which every
service tolerates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from watchdog.notify.channel import Traits


@dataclass
class _Bucket:
    rate_per_s: float
    burst: float
    tokens: float
    updated: datetime | None = None
    paused_until: datetime | None = None
    pause_reason: str = ""


class Pacer:
    """Tells whether a channel may send now; remembers what it was sent and told."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, channel: str, traits: Traits, now: datetime) -> _Bucket:
        bucket = self._buckets.get(channel)
        if bucket is None:
            bucket = _Bucket(traits.rate_per_s, float(traits.burst), float(traits.burst), now)
            self._buckets[channel] = bucket
        if bucket.updated is not None and now > bucket.updated:
            elapsed = (now - bucket.updated).total_seconds()
            bucket.tokens = min(bucket.burst, bucket.tokens + elapsed * bucket.rate_per_s)
        bucket.updated = max(now, bucket.updated) if bucket.updated else now
        return bucket

    def blocked(self, channel: str, traits: Traits, now: datetime) -> str:
        """Why `channel` may not send at `now` ("" if it may)."""
        bucket = self._bucket(channel, traits, now)
        if bucket.paused_until is not None and now < bucket.paused_until:
            return f"paused until {bucket.paused_until.isoformat()} ({bucket.pause_reason})"
        if bucket.tokens < 1.0:
            return "rate limit"
        return ""

    def spend(self, channel: str, traits: Traits, now: datetime) -> None:
        bucket = self._bucket(channel, traits, now)
        bucket.tokens = max(bucket.tokens - 1.0, -bucket.burst)

    def pause(self, channel: str, traits: Traits, now: datetime, until: datetime, reason: str) -> None:
        """No sends on `channel` before `until` (a 429's retry_after, or the failed batch's next try)."""
        bucket = self._bucket(channel, traits, now)
        if bucket.paused_until is None or until > bucket.paused_until:
            bucket.paused_until = until
            bucket.pause_reason = reason

    def resume(self, channel: str) -> None:
        """Forget a pause (after a success: the channel works again)."""
        bucket = self._buckets.get(channel)
        if bucket is not None:
            bucket.paused_until = None
            bucket.pause_reason = ""
