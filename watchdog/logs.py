"""Logging: structlog, JSON when not on a terminal (or when asked), readable key=value on a terminal.

Who calls it: the CLI, once, before anything logs. The ClearML SDK's own stdlib log records go through
the same renderer. Every secret the config holds is registered here and replaced by a mask in every
line, whatever code path tries to log it (defence in depth: nothing should try).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]
MASK = "**********"
_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Values that must never appear in a log line (tokens, keys, webhook URLs)."""
    for value in values:
        if value and len(value) >= 6:
            _secrets.add(value)


def mask(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _mask_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _secrets:
        return event_dict
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = mask(value)
        elif value is not None and not isinstance(value, (int, float, bool)):
            text = str(value)
            masked = mask(text)
            if masked != text:
                event_dict[key] = masked
    return event_dict


def configure(log_format: LogFormat = "auto", level: str = "INFO") -> None:
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _mask_secrets,  # again: a traceback rendered just above may quote a secret
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The SDK and urllib3 are chatty at INFO; their warnings still come through.
    for noisy in ("clearml", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # APScheduler warns for every coalesced run; the service logs its own "cycle slower than the poll interval".
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
