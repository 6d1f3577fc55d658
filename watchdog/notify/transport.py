"""One HTTP POST for a channel, with `requests` failures translated at the edge.

Who calls it: `slack` and `telegram`. One request, an explicit (connect, read) timeout, no retries (the
session mounts an adapter with `max_retries=0`), no redirects. A transport failure comes back as a
`SendResult` (always RETRY: the network is allowed to come back) whose text went through the channel's
redactor, because `requests` exceptions quote the URL and a Telegram token lives in the URL path.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from watchdog.notify.channel import Outcome, SendResult
from watchdog.notify.redact import Redactor

USER_AGENT = "clearml-spot-watchdog (notify)"


def new_session() -> requests.Session:
    """A session that never retries on its own: retries are the outbox's, with backoff and a time budget."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=0, pool_connections=2, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = True  # honour HTTPS_PROXY / NO_PROXY like every other tool
    session.headers["User-Agent"] = USER_AGENT
    return session


def connect_timeout_s(timeout_s: float) -> float:
    return min(timeout_s, 5.0)


def worst_case_s(timeout_s: float) -> float:
    """The longest one request can take: requests' timeouts are per phase (connect, then each read)."""
    return connect_timeout_s(timeout_s) + timeout_s


def origin(url: str) -> str:
    """scheme://host[:port] of a URL: safe to show (the secret parts are in the path)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def post_json(
    session: requests.Session,
    url: str,
    payload: dict[str, Any],
    *,
    timeout_s: float,
    redact: Redactor,
    headers: dict[str, str] | None = None,
) -> requests.Response | SendResult:
    """POST `payload` as JSON; the response, or a RETRY result saying what went wrong (secret-free)."""
    where = origin(url)
    try:
        return session.post(
            url,
            json=payload,
            headers=headers,
            timeout=(connect_timeout_s(timeout_s), timeout_s),
            allow_redirects=False,
        )
    except requests.Timeout:
        return SendResult(
            Outcome.RETRY,
            error=f"no answer from {where} within {timeout_s:g} s",
            diagnosis="the service is slow or unreachable; will retry",
        )
    except requests.ConnectionError as error:
        return SendResult(
            Outcome.RETRY,
            error=redact(f"cannot connect to {where}: {_reason(error)}"),
            diagnosis="check the network, proxy (HTTPS_PROXY) and api_base; will retry",
        )
    except requests.RequestException as error:
        return SendResult(Outcome.RETRY, error=redact(f"request to {where} failed: {type(error).__name__}"))


def _reason(error: Exception) -> str:
    """The innermost cause in a few words ('Connection refused'), not urllib3's URL-quoting essay."""
    text = str(error)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "Temporary failure in name resolution",
        "No route to host",
        "Network is unreachable",
        "CERTIFICATE_VERIFY_FAILED",
        "Connection reset by peer",
        "Remote end closed connection",
    ):
        if marker in text:
            return marker
    return type(error).__name__


def retry_after(value: object) -> float | None:
    """Seconds from a Retry-After header or Telegram's `parameters.retry_after`; None if absent or odd."""
    if value is None:
        return None
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def json_body(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
