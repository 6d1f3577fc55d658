"""The Slack channel: an incoming webhook, or a bot token posting with `chat.postMessage`.

Who calls it: the outbox and notify-test, one `send` per message. Webhook mode posts where the webhook
was created and gets no message id back, so it cannot thread or edit. Bot mode posts to
`notify.slack.channel`, replies in the incident's thread (`thread_ts`) and edits the incident's first
message with `chat.update`; its `remote_ref` is "<channel id>:<ts>" because chat.update needs the id.

Slack's answers, sorted once here: the Web API says HTTP 200 with `{"ok": false, "error": "..."}` for
API errors and 429 with `Retry-After` when rate limited; a webhook answers plain text ("ok", or
"invalid_payload", "no_service", ...) with a 4xx status.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from watchdog.notify.channel import Message, Outcome, SendResult, Traits
from watchdog.notify.redact import register
from watchdog.notify.render import Format
from watchdog.notify.settings import SlackSettings
from watchdog.notify.transport import json_body, new_session, origin, post_json, retry_after, worst_case_s

# Slack: about one message per second per channel ("short bursts tolerated": we do not rely on that).
_LIMITS = ((1, 1.0),)
_DEFAULT_RETRY_AFTER_S = 30.0

_BAD_TOKEN = "check bot_token (a bot token starts with xoxb- and needs the chat:write scope)"
# Web API error codes -> (outcome, what to do). Unknown codes are retried until they expire.
_API_ERRORS: dict[str, tuple[Outcome, str]] = {
    "not_authed": (Outcome.CONFIG, _BAD_TOKEN),
    "invalid_auth": (Outcome.CONFIG, _BAD_TOKEN),
    "account_inactive": (Outcome.CONFIG, _BAD_TOKEN),
    "token_revoked": (Outcome.CONFIG, _BAD_TOKEN),
    "token_expired": (Outcome.CONFIG, _BAD_TOKEN),
    "missing_scope": (Outcome.CONFIG, "give the bot the chat:write scope and reinstall the app"),
    "no_permission": (Outcome.CONFIG, "the bot may not post there; check its scopes"),
    "channel_not_found": (Outcome.CONFIG, "check channel; a private channel needs the bot invited first"),
    "not_in_channel": (Outcome.CONFIG, "invite the bot to the channel (/invite @your-bot)"),
    "is_archived": (Outcome.CONFIG, "the channel is archived; pick another channel"),
    "restricted_action": (Outcome.CONFIG, "the workspace does not let the bot post in this channel"),
    "msg_too_long": (Outcome.REJECTED, "the message is too long (a rendering bug: please report it)"),
    "no_text": (Outcome.REJECTED, "the message is empty (a rendering bug: please report it)"),
    "invalid_arguments": (Outcome.REJECTED, "Slack refused the request's fields"),
    "invalid_blocks": (Outcome.REJECTED, "Slack refused the message layout"),
    "message_not_found": (Outcome.REJECTED, "the message to update is gone"),
    "cant_update_message": (Outcome.REJECTED, "only the bot's own messages can be updated"),
    "edit_window_closed": (Outcome.REJECTED, "the workspace does not allow editing this message any more"),
    "ratelimited": (Outcome.RETRY, "rate limited; will retry"),
    "internal_error": (Outcome.RETRY, "Slack had an internal error; will retry"),
    "fatal_error": (Outcome.RETRY, "Slack had an internal error; will retry"),
    "service_unavailable": (Outcome.RETRY, "Slack is unavailable; will retry"),
    "request_timeout": (Outcome.RETRY, "Slack timed out; will retry"),
}

# Incoming-webhook answers (status, body) -> what to do.
_WEBHOOK_ERRORS: dict[str, tuple[Outcome, str]] = {
    "invalid_payload": (Outcome.REJECTED, "Slack could not read the message (a rendering bug: please report it)"),
    "no_text": (Outcome.REJECTED, "the message is empty (a rendering bug: please report it)"),
    "msg_too_long": (Outcome.REJECTED, "the message is too long (a rendering bug: please report it)"),
    "invalid_token": (Outcome.CONFIG, "the webhook_url is wrong or was revoked: create a new incoming webhook"),
    "no_service": (Outcome.CONFIG, "the webhook_url is wrong or was revoked: create a new incoming webhook"),
    "no_team": (Outcome.CONFIG, "the webhook_url is wrong or was revoked: create a new incoming webhook"),
    "team_disabled": (Outcome.CONFIG, "the Slack workspace is disabled"),
    "action_prohibited": (Outcome.CONFIG, "a workspace admin restricted this webhook"),
    "channel_not_found": (Outcome.CONFIG, "the webhook's channel is gone: create a new incoming webhook"),
    "channel_is_archived": (Outcome.CONFIG, "the webhook's channel is archived"),
}


def split_ref(ref: str) -> tuple[str, str]:
    """'<channel id>:<ts>' -> (channel id, ts)."""
    channel, _, ts = ref.partition(":")
    return channel, ts


class SlackChannel:
    """Posts to Slack. One request per `send`; never retries or sleeps."""

    name = "slack"

    def __init__(self, settings: SlackSettings, session: requests.Session | None = None) -> None:
        self._settings = settings
        self._session = session or new_session()
        secrets = [s.get_secret_value() for s in (settings.webhook_url, settings.bot_token) if s is not None]
        if settings.webhook_url is not None:
            # urllib3's debug log prints the request line, i.e. the webhook's path without the host.
            secrets.append(urlsplit(settings.webhook_url.get_secret_value()).path)
        self._redact = register(secrets)
        webhook = settings.mode == "webhook"
        self.traits = Traits(
            format=Format.SLACK,
            threads=not webhook,
            edits=not webhook,
            limits=_LIMITS,
            timeout_s=worst_case_s(settings.timeout_s),
        )

    def __repr__(self) -> str:
        return f"SlackChannel(mode={self._settings.mode}, target={self.describe_target()!r})"

    def describe_target(self) -> str:
        if self._settings.webhook_url is not None:
            return f"incoming webhook at {origin(self._settings.webhook_url.get_secret_value())}"
        return f"{self._settings.channel} via {self._settings.api_base}"

    def send(self, message: Message) -> SendResult:
        if self._settings.webhook_url is not None:
            if message.edit_ref or message.thread_ref:
                return SendResult(Outcome.REJECTED, error="a webhook can neither edit nor reply in a thread")
            return self._webhook(self._settings.webhook_url.get_secret_value(), message.text)
        if message.edit_ref:
            channel_id, ts = split_ref(message.edit_ref)
            return self._api("chat.update", {"channel": channel_id, "ts": ts, "text": message.text}, message.edit_ref)
        payload: dict[str, object] = {
            "channel": self._settings.channel,
            "text": message.text,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if message.thread_ref:
            payload["thread_ts"] = split_ref(message.thread_ref)[1]
        return self._api("chat.postMessage", payload, "")

    def _webhook(self, url: str, text: str) -> SendResult:
        payload = {"text": text, "unfurl_links": False, "unfurl_media": False}
        answer = post_json(self._session, url, payload, timeout_s=self._settings.timeout_s, redact=self._redact)
        if isinstance(answer, SendResult):
            return answer
        body = self._redact(answer.text.strip()[:200])
        if answer.status_code == 200:
            return SendResult.sent()
        if answer.status_code == 429:
            return SendResult(
                Outcome.RETRY,
                retry_after_s=retry_after(answer.headers.get("Retry-After")) or _DEFAULT_RETRY_AFTER_S,
                error="429 rate limited",
                diagnosis="Slack asked to slow down; will retry after Retry-After",
            )
        if answer.status_code >= 500:
            return SendResult(Outcome.RETRY, error=f"HTTP {answer.status_code} {body}".strip(), diagnosis="will retry")
        outcome, diagnosis = _WEBHOOK_ERRORS.get(
            body,
            (Outcome.REJECTED, "Slack refused the message")
            if answer.status_code == 400
            else (Outcome.CONFIG, "the webhook_url is wrong or was revoked: create a new incoming webhook"),
        )
        return SendResult(outcome, error=f"{answer.status_code} {body}".strip(), diagnosis=diagnosis)

    def _api(self, method: str, payload: dict[str, object], ref: str) -> SendResult:
        assert self._settings.bot_token is not None
        answer = post_json(
            self._session,
            f"{self._settings.api_base}/{method}",
            payload,
            timeout_s=self._settings.timeout_s,
            redact=self._redact,
            headers={"Authorization": f"Bearer {self._settings.bot_token.get_secret_value()}"},
        )
        if isinstance(answer, SendResult):
            return answer
        if answer.status_code == 429:
            return SendResult(
                Outcome.RETRY,
                retry_after_s=retry_after(answer.headers.get("Retry-After")) or _DEFAULT_RETRY_AFTER_S,
                error="429 ratelimited",
                diagnosis="Slack asked to slow down; will retry after Retry-After",
            )
        if answer.status_code >= 500:
            return SendResult(Outcome.RETRY, error=f"HTTP {answer.status_code} from {method}", diagnosis="will retry")
        body = json_body(answer)
        if body is None:
            outcome = Outcome.CONFIG if answer.status_code in (401, 403, 404) else Outcome.RETRY
            return SendResult(
                outcome,
                error=f"HTTP {answer.status_code} from {method} without a Slack answer",
                diagnosis="check api_base (it should end in /api)",
            )
        if body.get("ok") is True:
            channel_id = str(body.get("channel") or split_ref(ref)[0])
            ts = str(body.get("ts") or split_ref(ref)[1])
            return SendResult.sent(f"{channel_id}:{ts}")
        code = self._redact(str(body.get("error") or "unknown_error"))[:100]
        outcome, diagnosis = _API_ERRORS.get(code, (Outcome.RETRY, "unexpected Slack error; will retry"))
        return SendResult(outcome, error=code, diagnosis=diagnosis)
