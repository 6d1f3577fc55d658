"""`clearml-watchdog notify-test`: one test message per channel, a plain line each, exit 0 only if all worked."""

from __future__ import annotations

import io
from typing import Any

import pytest
from notify_helpers import CHAT_ID, T0, change, settings_for

from watchdog.notify.notify_test import notify_test
from watchdog.notify.settings import NotifySettings
from watchdog.simulator.chat import SlackStandIn, TelegramStandIn


def run(settings: NotifySettings) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = notify_test(settings, out=out, now=T0, hostname="gpu-gateway-1")
    return code, [line for line in out.getvalue().splitlines() if not line.startswith(("┌", "│", "└"))]


def test_all_channels_work(slack: SlackStandIn, telegram: TelegramStandIn) -> None:
    code, lines = run(settings_for(slack, telegram))
    assert code == 0
    assert lines == [
        f"slack: ok, test message sent to #alerts via {slack.api_base}",
        f"telegram: ok, test message sent to chat {CHAT_ID} topic 42 via {telegram.api_base}",
    ]
    assert "Test message from clearml-watchdog" in telegram.messages()[0].text
    assert "gpu-gateway-1" in slack.messages()[0].text  # says which watchdog is talking


BROKEN: list[tuple[str, dict[str, Any], str]] = [
    # (case, telegram overrides, the line printed)
    ("wrong token", {"bot_token": "42:NotTheTokenNotTheToken"}, "telegram: 401 Unauthorized: check bot_token"),
    (
        "wrong chat",
        {"chat_id": -100777, "message_thread_id": None},
        "telegram: 400 chat not found: check chat_id; has the bot been added to the chat?",
    ),
    (
        "wrong topic",
        {"message_thread_id": 9},
        "telegram: 400 message thread not found: check message_thread_id (the forum topic's id)",
    ),
]


@pytest.mark.parametrize(("case", "overrides", "line"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_channel_is_diagnosed_and_fails_the_command(
    slack: SlackStandIn, telegram: TelegramStandIn, case: str, overrides: dict[str, Any], line: str
) -> None:
    broken = change(settings_for(slack, telegram), "telegram", **overrides)
    code, lines = run(broken)
    assert code == 1
    assert lines[0].startswith("slack: ok")  # the other channel is still tested and reported
    assert lines[1] == line


def test_slack_failures_read_plainly(slack: SlackStandIn) -> None:
    settings = NotifySettings.model_validate(
        {"slack": {"bot_token": "xoxb-not-valid-here", "channel": "#alerts", "api_base": slack.api_base}}
    )
    assert run(settings) == (
        1,
        ["slack: invalid_auth: check bot_token (a bot token starts with xoxb- and needs the chat:write scope)"],
    )
    revoked = NotifySettings.model_validate({"slack": {"webhook_url": slack.url + "/services/T/B/gone-gone-gone"}})
    code, lines = run(revoked)
    assert code == 1 and lines[0].startswith("slack: 404 no_service: the webhook_url is wrong or was revoked")


def test_an_unreachable_service_is_said_so(telegram: TelegramStandIn) -> None:
    telegram.hang_next(1, 5)
    fast = change(settings_for(telegram=telegram), "telegram", timeout_s=0.2)
    code, lines = run(fast)
    assert code == 1
    assert lines == [
        f"telegram: no answer from {telegram.api_base} within 0.2 s: the service is slow or unreachable; will retry"
    ]


def test_console_only_says_no_chat_is_configured() -> None:
    code, lines = run(NotifySettings())
    assert code == 0
    assert lines[0] == "console: ok, test message sent to this terminal"
    assert "no chat channel is configured" in lines[1]


def test_nothing_configured_at_all_fails() -> None:
    code, lines = run(NotifySettings(console=False))
    assert code == 1 and "no channel is configured" in lines[0]
