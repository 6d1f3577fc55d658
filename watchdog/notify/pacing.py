"""Per-channel pacing: the service's rate limits as sliding windows, and a pause after a failure or 429.

Who calls it: the outbox, before and after each request. Time comes from the caller (the outbox's
injected clock), so nothing here sleeps: a channel that may not send yet is simply skipped until a later
delivery pass. Sliding windows rather than a token bucket, because the services state their limits that
way ("20 messages per minute into a group"), and a bucket's burst would overshoot them. Kept in memory:
after a restart the window starts empty, which at worst allows one window's worth early.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from watchdog.notify.channel import Traits


@dataclass
class _State:
    sent: deque[datetime] = field(default_factory=deque)
    paused_until: datetime | None = None
    pause_reason: str = ""


class Pacer:
    """Tells whether a channel may send now; remembers what it was sent and told."""

    def __init__(self) -> None:
        self._states: dict[str, _State] = {}

    def _state(self, channel: str) -> _State:
        return self._states.setdefault(channel, _State())

    def blocked(self, channel: str, traits: Traits, now: datetime) -> str:
        """Why `channel` may not send at `now` ("" if it may)."""
        state = self._state(channel)
        if state.paused_until is not None and now < state.paused_until:
            return f"paused until {state.paused_until.isoformat()} ({state.pause_reason})"
        longest = max((window for _, window in traits.limits), default=0.0)
        while state.sent and (now - state.sent[0]).total_seconds() >= longest:
            state.sent.popleft()
        for limit, window in traits.limits:
            recent = sum(1 for moment in state.sent if (now - moment).total_seconds() < window)
            if recent >= limit:
                return f"rate limit ({limit} per {window:g} s)"
        return ""

    def spend(self, channel: str, traits: Traits, now: datetime) -> None:
        if traits.limits:
            self._state(channel).sent.append(now)

    def pause(self, channel: str, traits: Traits, now: datetime, until: datetime, reason: str) -> None:
        """No sends on `channel` before `until` (a 429's retry_after, or the failed batch's next try)."""
        state = self._state(channel)
        if state.paused_until is None or until > state.paused_until:
            state.paused_until = until
            state.pause_reason = reason

    def resume(self, channel: str) -> None:
        """Forget a pause (after a success: the channel works again)."""
        state = self._states.get(channel)
        if state is not None:
            state.paused_until = None
            state.pause_reason = ""
