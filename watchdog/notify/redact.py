"""Keeping chat secrets out of error texts and logs.

Who calls it: every HTTP channel, on each error string before it leaves the channel (into a
`SendResult`, the outbox's `last_error` column, or a log line). A Telegram bot token is part of the URL
path and a Slack webhook URL is a secret as a whole, so anything that quotes a URL (a `requests`
exception, urllib3's debug log of the request line) would leak them. `redact` replaces each known
secret, raw and percent-encoded, with a mask; `install_log_filter` does the same for urllib3's log
records, so turning on debug logging never prints a token.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from urllib.parse import quote

MASK = "**********"
_MIN_SECRET_LEN = 6  # shorter strings are too likely to occur by chance to be replaced everywhere

_lock = threading.Lock()
_known: set[str] = set()
_filter_installed = False


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret, safe="/:")}


class Redactor:
    """Masks a fixed set of secrets in any text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= _MIN_SECRET_LEN:
                forms |= _forms(secret)
        # Longest first, so a secret that contains another is masked whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} forms)"


def register(secrets: Iterable[str]) -> Redactor:
    """A redactor for `secrets`, also applied from now on to urllib3's log records."""
    redactor = Redactor(secrets)
    with _lock:
        for secret in secrets:
            if secret and len(secret) >= _MIN_SECRET_LEN:
                _known.update(_forms(secret))
    install_log_filter()
    return redactor


def redact_known(text: str) -> str:
    """Mask every secret any channel registered (for texts that do not belong to one channel)."""
    with _lock:
        forms = sorted(_known, key=len, reverse=True)
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


class _RedactingFilter(logging.Filter):
    """Rewrites a record's message with secrets masked (urllib3 logs request lines, URL path included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to fix; let logging report it
            return True
        masked = redact_known(message)
        if masked != message:
            record.msg = masked
            record.args = None
        return True


def install_log_filter() -> None:
    """Attach the redacting filter to the loggers that may print request URLs (idempotent)."""
    global _filter_installed
    with _lock:
        if _filter_installed:
            return
        _filter_installed = True
    for name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3", "requests"):
        logging.getLogger(name).addFilter(_RedactingFilter())
