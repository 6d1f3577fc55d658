"""The watchdog's error hierarchy: every third-party failure is translated into one of these at the edge.

Two families, decided once where the error happens (the gateway, a channel, the config loader):
- `TemporaryError`: try again later (server unreachable, 5xx, timeouts). Never evidence that a task died.
- `PermanentError`: retrying the same call will not help (bad request, unknown id, illegal transition).
"""

from __future__ import annotations


class WatchdogError(Exception):
    """Base of every error the watchdog raises on purpose."""


class ConfigError(WatchdogError):
    """The configuration is missing, malformed or invalid. Exit code 2."""


class TemporaryError(WatchdogError):
    """A failure that may go away by itself; the next cycle tries again."""


class PermanentError(WatchdogError):
    """A failure that will repeat if the same call is repeated."""


class ClearMLUnavailable(TemporaryError):
    """ClearML could not be reached or answered with a server error: the watchdog is blind, not the tasks dead."""


class ClearMLRejected(PermanentError):
    """ClearML understood the call and refused it (result_code 4xx)."""

    def __init__(self, endpoint: str, code: int, subcode: int, message: str) -> None:
        super().__init__(f"{endpoint} refused ({code}/{subcode}): {message}")
        self.endpoint = endpoint
        self.code = code
        self.subcode = subcode
        self.message = message


class StateError(PermanentError):
    """The state directory or journal cannot be used (permissions, unknown schema version)."""
