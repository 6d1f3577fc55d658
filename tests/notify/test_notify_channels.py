"""Each channel against its stand-in over real HTTP: one request per send, every answer sorted right."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from notify_helpers import CHAT_ID, TOPIC

from watchdog.notify.channel import Message, Outcome, SendResult
from watchdog.notify.console import ConsoleChannel
from watchdog.notify.settings import SlackSettings, TelegramSettings
from watchdog.notify.slack import SlackChannel
from watchdog.notify.telegram import TelegramChannel
from watchdog.simulator.chat import SlackStandIn, TelegramStandIn

HTML = "<b>Machine lost:</b> train &amp; eval"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def slack_bot(standin: SlackStandIn, **overrides: object) -> SlackChannel:
    values: dict[str, object] = {
        "bot_token": standin.bot_token,
        "channel": "#alerts",
        "api_base": standin.api_base,
        "timeout_s": 0.3,
    }
    values.update(overrides)
    return SlackChannel(SlackSettings.model_validate(values))


def slack_webhook(standin: SlackStandIn, url: str | None = None) -> SlackChannel:
    return SlackChannel(SlackSettings.model_validate({"webhook_url": url or standin.webhook_url, "timeout_s": 0.3}))


def telegram_bot(standin: TelegramStandIn, **overrides: object) -> TelegramChannel:
    values: dict[str, object] = {
        "bot_token": standin.token,
        "chat_id": CHAT_ID,
        "message_thread_id": TOPIC,
        "api_base": standin.api_base,
        "timeout_s": 0.3,
    }
    values.update(overrides)
    return TelegramChannel(TelegramSettings.model_validate(values))


# --- happy paths -------------------------------------------------------------------------------------


def test_slack_webhook_posts_text(slack: SlackStandIn) -> None:
    channel = slack_webhook(slack)
    result = channel.send(Message("*Machine lost:* train &amp; eval"))
    assert result.ok and result.remote_ref == ""
    [message] = slack.messages()
    assert message.via == "webhook" and message.text == "*Machine lost:* train &amp; eval"
    assert not channel.traits.threads and not channel.traits.edits
    assert slack.requests[0].body["unfurl_links"] is False


def test_slack_webhook_cannot_thread_or_edit_and_does_not_try(slack: SlackStandIn) -> None:
    channel = slack_webhook(slack)
    assert channel.send(Message("x", thread_ref="C1:1.0")).outcome is Outcome.REJECTED
    assert channel.send(Message("x", edit_ref="C1:1.0")).outcome is Outcome.REJECTED
    assert slack.requests == []


def test_slack_bot_posts_replies_in_thread_and_updates_the_first_message(slack: SlackStandIn) -> None:
    channel = slack_bot(slack)
    first = channel.send(Message("lost"))
    assert first.ok
    channel_id, ts = first.remote_ref.split(":")
    assert channel_id == "C0ALERTS"  # chat.update needs the id, not "#alerts"
    reply = channel.send(Message("recovered", thread_ref=first.remote_ref))
    assert reply.ok
    edited = channel.send(Message("lost, now recovered", edit_ref=first.remote_ref))
    assert edited.ok and edited.remote_ref == first.remote_ref
    top, answer = slack.messages()
    assert (top.text, top.edits) == ("lost, now recovered", ["lost"])
    assert answer.thread_ts == ts and answer.text == "recovered"
    assert slack.requests[0].headers["Authorization"] == f"Bearer {slack.bot_token}"
    assert slack.problems == []


def test_telegram_sends_html_into_the_forum_topic_replies_and_edits(telegram: TelegramStandIn) -> None:
    channel = telegram_bot(telegram)
    first = channel.send(Message(HTML))
    assert first.ok and first.remote_ref == "1"
    reply = channel.send(Message("<b>Recovered</b>", thread_ref=first.remote_ref))
    assert reply.ok and reply.remote_ref == "2"
    assert channel.send(Message(HTML + " ✅", edit_ref="1")).ok
    top, answer = telegram.messages(CHAT_ID)
    assert top.thread_id == TOPIC and answer.thread_id == TOPIC
    assert answer.reply_to == 1
    assert top.text == "Machine lost: train & eval ✅" and top.edits == ["Machine lost: train & eval"]
    body = telegram.requests[1].body
    assert body["parse_mode"] == "HTML"
    assert body["reply_parameters"] == {"message_id": 1, "allow_sending_without_reply": True}


def test_telegram_edit_with_the_same_text_counts_as_done(telegram: TelegramStandIn) -> None:
    channel = telegram_bot(telegram)
    channel.send(Message(HTML))
    again = channel.send(Message(HTML, edit_ref="1"))
    assert again.ok and again.remote_ref == "1"  # "message is not modified": nothing left to do


def test_telegram_reply_to_a_deleted_message_still_goes_out(telegram: TelegramStandIn) -> None:
    result = telegram_bot(telegram).send(Message("late follow-up", thread_ref="999"))
    assert result.ok
    assert telegram.messages()[0].reply_to is None


def test_console_prints_framed_text(capsys: pytest.CaptureFixture[str]) -> None:
    channel = ConsoleChannel()
    assert channel.send(Message("🔴 Machine lost: x\nWhy: y")).ok
    printed = capsys.readouterr().out
    assert "│ 🔴 Machine lost: x\n│ Why: y\n" in printed
    assert channel.send(Message("x", edit_ref="1")).outcome is Outcome.REJECTED


# --- failures, sorted and explained ------------------------------------------------------------------

Setup = Callable[[SlackStandIn, TelegramStandIn], tuple[Callable[[], SendResult], SlackStandIn | TelegramStandIn]]

FAILURES: list[tuple[str, str, Outcome, str, str, float | None]] = [
    # (case, how to break it, outcome, error contains, diagnosis contains, retry_after_s)
    ("telegram bad token", "tg-token", Outcome.CONFIG, "401 Unauthorized", "check bot_token", None),
    (
        "telegram unknown chat",
        "tg-chat",
        Outcome.CONFIG,
        "400 chat not found",
        "check chat_id; has the bot been added to the chat?",
        None,
    ),
    ("telegram unknown topic", "tg-topic", Outcome.CONFIG, "message thread not found", "message_thread_id", None),
    ("telegram 429", "tg-429", Outcome.RETRY, "429 Too Many Requests: retry after 5", "slow down", 5.0),
    ("telegram 500", "tg-500", Outcome.RETRY, "500", "will retry", None),
    ("telegram 502 html", "tg-502", Outcome.RETRY, "502", "will retry", None),
    ("telegram hangs", "tg-hang", Outcome.RETRY, "no answer from http://127.0.0.1", "will retry", None),
    ("telegram down", "tg-down", Outcome.RETRY, "cannot connect to http://127.0.0.1", "network", None),
    ("telegram bad html", "tg-html", Outcome.REJECTED, "can't parse entities", "rendering bug", None),
    ("telegram too long", "tg-long", Outcome.REJECTED, "message is too long", "rendering bug", None),
    ("slack bad token", "sl-token", Outcome.CONFIG, "invalid_auth", "check bot_token", None),
    ("slack unknown channel", "sl-channel", Outcome.CONFIG, "channel_not_found", "check channel", None),
    ("slack 429", "sl-429", Outcome.RETRY, "429", "Retry-After", 7.0),
    ("slack 500", "sl-500", Outcome.RETRY, "HTTP 500", "will retry", None),
    ("slack hangs", "sl-hang", Outcome.RETRY, "no answer", "will retry", None),
    ("slack too long", "sl-long", Outcome.REJECTED, "msg_too_long", "rendering bug", None),
    ("slack wrong api_base", "sl-base", Outcome.CONFIG, "HTTP 404", "api_base", None),
    ("webhook revoked", "wh-404", Outcome.CONFIG, "404 no_service", "webhook_url is wrong or was revoked", None),
    ("webhook 429", "wh-429", Outcome.RETRY, "429", "Retry-After", 3.0),
    ("webhook 500", "wh-500", Outcome.RETRY, "HTTP 500", "will retry", None),
]


def attempt(case: str, slack: SlackStandIn, telegram: TelegramStandIn) -> tuple[SendResult, str]:
    """Break things as `case` says, make one send; returns the result and the secret that must not leak."""
    if case.startswith("tg-"):
        secret = telegram.token
        channel: TelegramChannel | SlackChannel = telegram_bot(telegram)
        text = "<b>hello</b>"
        if case == "tg-token":
            channel = telegram_bot(telegram, bot_token="999:WrongTokenWrongToken")
            secret = "999:WrongTokenWrongToken"
        elif case == "tg-chat":
            channel = telegram_bot(telegram, chat_id=-100999, message_thread_id=None)
        elif case == "tg-topic":
            channel = telegram_bot(telegram, message_thread_id=7)
        elif case == "tg-429":
            telegram.fail_next(1, 429, retry_after=5)
        elif case == "tg-500":
            telegram.fail_next(1, 500)
        elif case == "tg-502":
            telegram.fail_next(1, 502)
        elif case == "tg-hang":
            telegram.hang_next(1, 5)
        elif case == "tg-down":
            channel = telegram_bot(telegram, api_base=f"http://127.0.0.1:{free_port()}")
        elif case == "tg-html":
            text = "<b>unclosed"
        elif case == "tg-long":
            text = "x" * 4097
        return channel.send(Message(text)), secret
    if case.startswith("sl-"):
        secret = slack.bot_token
        channel = slack_bot(slack)
        text = "hello"
        if case == "sl-token":
            channel = slack_bot(slack, bot_token="xoxb-wrong-wrong-wrong")
            secret = "xoxb-wrong-wrong-wrong"
        elif case == "sl-channel":
            channel = slack_bot(slack, channel="#nope")
        elif case == "sl-429":
            slack.fail_next(1, 429, retry_after=7)
        elif case == "sl-500":
            slack.fail_next(1, 500)
        elif case == "sl-hang":
            slack.hang_next(1, 5)
        elif case == "sl-long":
            text = "x" * 40_001
        elif case == "sl-base":
            channel = slack_bot(slack, api_base=slack.url + "/wrong")
        return channel.send(Message(text)), secret
    secret = slack.webhook_url
    channel = slack_webhook(slack)
    if case == "wh-404":
        secret = slack.url + "/services/T0/B0/revokedrevokedrevoked"
        channel = slack_webhook(slack, secret)
    elif case == "wh-429":
        slack.fail_next(1, 429, retry_after=3)
    elif case == "wh-500":
        slack.fail_next(1, 500)
    return channel.send(Message("hello")), secret


@pytest.mark.parametrize(
    ("case", "how", "outcome", "error", "diagnosis", "retry_after"), FAILURES, ids=[f[0] for f in FAILURES]
)
def test_failures_are_sorted_and_explained_without_secrets(
    slack: SlackStandIn,
    telegram: TelegramStandIn,
    case: str,
    how: str,
    outcome: Outcome,
    error: str,
    diagnosis: str,
    retry_after: float | None,
) -> None:
    result, secret = attempt(how, slack, telegram)
    assert result.outcome is outcome, result
    assert error in result.error
    assert diagnosis in result.diagnosis
    assert result.retry_after_s == retry_after
    everything = f"{result!r} {result.describe()}"
    assert secret not in everything
    assert secret.split("/")[-1] not in everything  # not even the last path segment of a webhook


def test_one_request_per_send_even_when_it_fails(telegram: TelegramStandIn) -> None:
    telegram.fail_next(5, 500)
    telegram_bot(telegram).send(Message("x"))
    assert len(telegram.requests) == 1  # no retry loop inside a channel


def test_reprs_never_show_secrets(slack: SlackStandIn, telegram: TelegramStandIn) -> None:
    for channel, secret in (
        (slack_bot(slack), slack.bot_token),
        (slack_webhook(slack), slack.webhook_url),
        (telegram_bot(telegram), telegram.token),
    ):
        assert secret not in repr(channel)
        assert secret not in channel.describe_target()
