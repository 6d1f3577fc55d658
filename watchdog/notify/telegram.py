"""The Telegram channel: a bot posting with `sendMessage` (HTML) and editing with `editMessageText`.

Who calls it: the outbox and notify-test, one `send` per message. Follow-ups reply to the incident's
first message (`reply_parameters`, allowed to go out as a plain message if that one was deleted); in a
forum, every message goes to `message_thread_id`. `remote_ref` is the message_id.

Telegram's answers, sorted once here: `{"ok": false, "error_code": N, "description": "..."}`; 429 carries
`parameters.retry_after`; a group upgraded to a supergroup carries `parameters.migrate_to_chat_id`.
The bot token is part of every URL path, so every error text goes through the redactor.
"""

from __future__ import annotations

from typing import Any

import requests

from watchdog.notify.channel import Message, Outcome, SendResult, Traits
from watchdog.notify.redact import register
from watchdog.notify.render import Format
from watchdog.notify.settings import TelegramSettings
from watchdog.notify.transport import json_body, new_session, post_json, retry_after, worst_case_s

_DEFAULT_RETRY_AFTER_S = 30.0
_CHECK_CHAT = "check chat_id; has the bot been added to the chat?"

# Phrases in a 400 description -> (outcome, what to do). First match wins.
_BAD_REQUESTS: tuple[tuple[str, Outcome, str], ...] = (
    ("chat not found", Outcome.CONFIG, _CHECK_CHAT),
    ("message thread not found", Outcome.CONFIG, "check message_thread_id (the forum topic's id)"),
    ("topic_closed", Outcome.CONFIG, "the forum topic is closed; reopen it or change message_thread_id"),
    ("topic_deleted", Outcome.CONFIG, "the forum topic was deleted; change message_thread_id"),
    ("not enough rights", Outcome.CONFIG, "allow the bot to send messages in this chat"),
    ("have no rights", Outcome.CONFIG, "allow the bot to send messages in this chat"),
    ("can't parse entities", Outcome.REJECTED, "the message markup is invalid (a rendering bug: please report it)"),
    ("message is too long", Outcome.REJECTED, "the message is too long (a rendering bug: please report it)"),
    ("message text is empty", Outcome.REJECTED, "the message is empty (a rendering bug: please report it)"),
    ("message to edit not found", Outcome.REJECTED, "the first message of the incident is gone"),
    ("message can't be edited", Outcome.REJECTED, "the first message can no longer be edited"),
)


class TelegramChannel:
    """Posts to one Telegram chat. One request per `send`; never retries or sleeps."""

    name = "telegram"

    def __init__(self, settings: TelegramSettings, session: requests.Session | None = None) -> None:
        self._settings = settings
        self._session = session or new_session()
        token = settings.bot_token.get_secret_value()
        self._redact = register([token, f"bot{token}"])
        self._base = f"{settings.api_base}/bot{token}"
        # Telegram: at most ~20 messages a minute into one group, about one a second into a private chat.
        group = settings.chat_id.startswith(("-", "@"))
        self.traits = Traits(
            format=Format.TELEGRAM,
            threads=True,
            edits=True,
            limits=((20, 60.0), (1, 1.0)) if group else ((1, 1.0),),
            timeout_s=worst_case_s(settings.timeout_s),
        )

    def __repr__(self) -> str:
        return f"TelegramChannel(target={self.describe_target()!r})"

    def describe_target(self) -> str:
        topic = f" topic {self._settings.message_thread_id}" if self._settings.message_thread_id else ""
        return f"chat {self._settings.chat_id}{topic} via {self._settings.api_base}"

    def send(self, message: Message) -> SendResult:
        payload: dict[str, Any] = {
            "chat_id": self._settings.chat_id,
            "text": message.text,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        if message.edit_ref:
            payload["message_id"] = int(message.edit_ref)
            return self._call("editMessageText", payload, message.edit_ref)
        if self._settings.message_thread_id is not None:
            payload["message_thread_id"] = self._settings.message_thread_id
        if message.thread_ref:
            payload["reply_parameters"] = {
                "message_id": int(message.thread_ref),
                "allow_sending_without_reply": True,
            }
        return self._call("sendMessage", payload, "")

    def _call(self, method: str, payload: dict[str, Any], ref: str) -> SendResult:
        answer = post_json(
            self._session, f"{self._base}/{method}", payload, timeout_s=self._settings.timeout_s, redact=self._redact
        )
        if isinstance(answer, SendResult):
            return answer
        body = json_body(answer) or {}
        if answer.status_code == 200 and body.get("ok") is True:
            result = body.get("result")
            message_id = result.get("message_id") if isinstance(result, dict) else None
            return SendResult.sent(str(message_id) if message_id is not None else ref)
        return self._failure(answer, body, ref)

    def _failure(self, answer: requests.Response, body: dict[str, Any], ref: str) -> SendResult:
        status = int(body.get("error_code") or answer.status_code)
        description = self._redact(str(body.get("description") or answer.reason or "no description"))[:300]
        short = description.removeprefix("Bad Request: ").removeprefix("Forbidden: ")
        parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        assert isinstance(parameters, dict)
        error = f"{status} {short}"
        if status == 429:
            wait = retry_after(parameters.get("retry_after")) or retry_after(answer.headers.get("Retry-After"))
            return SendResult(
                Outcome.RETRY,
                retry_after_s=wait if wait is not None else _DEFAULT_RETRY_AFTER_S,
                error=error,
                diagnosis="Telegram asked to slow down; will retry after retry_after",
            )
        if status >= 500:
            return SendResult(Outcome.RETRY, error=error, diagnosis="Telegram had a problem; will retry")
        if status == 401:
            return SendResult(Outcome.CONFIG, error=error, diagnosis="check bot_token")
        if status == 404:
            return SendResult(Outcome.CONFIG, error=error, diagnosis="check bot_token and api_base")
        if status == 403:
            return SendResult(
                Outcome.CONFIG, error=error, diagnosis="add the bot to the chat again (it was removed or blocked)"
            )
        lowered = short.lower()
        if "message is not modified" in lowered:
            return SendResult.sent(ref)  # the edit was already applied: nothing left to do
        migrated = parameters.get("migrate_to_chat_id")
        if migrated is not None:
            return SendResult(
                Outcome.CONFIG, error=error, diagnosis=f"the group became a supergroup: set chat_id to {migrated}"
            )
        for phrase, outcome, diagnosis in _BAD_REQUESTS:
            if phrase in lowered:
                return SendResult(outcome, error=error, diagnosis=diagnosis)
        return SendResult(Outcome.REJECTED, error=error, diagnosis="Telegram refused the message")
