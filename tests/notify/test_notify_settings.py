"""The `notify:` config section: what is accepted, what is refused (and how it says so), secrets masked."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from watchdog.config import build_config
from watchdog.errors import ConfigError
from watchdog.notify.build import build_channels
from watchdog.notify.notice import EventKind
from watchdog.notify.settings import ALL_EVENTS, NotifySettings

TOKEN = "123456789:AAHsecretsecretsecretsecret"
WEBHOOK = "https://hooks.slack.com/services/T000/B000/verysecretwebhookpart"
XOXB = "xoxb-1111-2222-secretsecret"

VALID: list[tuple[str, dict[str, Any]]] = [
    # (case, notify section)
    ("empty: console only", {}),
    ("slack webhook", {"slack": {"webhook_url": WEBHOOK}}),
    ("slack bot", {"slack": {"bot_token": XOXB, "channel": "#alerts"}}),
    ("telegram numeric chat id", {"telegram": {"bot_token": TOKEN, "chat_id": -1001234567890}}),
    ("telegram chat id from ${ENV} is a string", {"telegram": {"bot_token": TOKEN, "chat_id": "-100123"}}),
    ("telegram @channel", {"telegram": {"bot_token": TOKEN, "chat_id": "@alerts_channel"}}),
    ("telegram forum topic", {"telegram": {"bot_token": TOKEN, "chat_id": -100, "message_thread_id": 7}}),
    ("http on 127.0.0.1", {"telegram": {"bot_token": TOKEN, "chat_id": 1, "api_base": "http://127.0.0.1:8081"}}),
    ("http on 127.x", {"telegram": {"bot_token": TOKEN, "chat_id": 1, "api_base": "http://127.3.2.1:8081"}}),
    ("http on ::1", {"slack": {"bot_token": XOXB, "channel": "C1", "api_base": "http://[::1]:9000/api"}}),
    ("http on localhost", {"slack": {"webhook_url": "http://localhost:9000/services/a/b/c"}}),
    ("self-hosted Bot API over https", {"telegram": {"bot_token": TOKEN, "chat_id": 1, "api_base": "https://tg.corp"}}),
    (
        "switches and routing",
        {
            "events": {"user_aborted": False, "code_failed": False},
            "slack": {"webhook_url": WEBHOOK, "events": ["gave_up"]},
        },
    ),
    (
        "timings",
        {
            "group_wait_s": 0,
            "max_age_s": 60,
            "unhealthy_after_s": 120,
            "retry": {"first_delay_s": 1, "max_delay_s": 30, "max_attempts": 3},
        },
    ),
]


@pytest.mark.parametrize(("case", "section"), VALID, ids=[v[0] for v in VALID])
def test_valid(case: str, section: dict[str, Any]) -> None:
    NotifySettings.model_validate(section)


INVALID: list[tuple[str, dict[str, Any], str]] = [
    # (case, notify section, words the error must contain)
    (
        "plain http to a public host",
        {"telegram": {"bot_token": TOKEN, "chat_id": 1, "api_base": "http://api.telegram.org"}},
        "plain http:// on a non-loopback host",
    ),
    (
        "plain http webhook",
        {"slack": {"webhook_url": "http://hooks.slack.com/services/T/B/verysecretwebhookpart"}},
        "plain http:// on a non-loopback host",
    ),
    ("not a URL", {"slack": {"bot_token": XOXB, "channel": "C1", "api_base": "slack.com/api"}}, "https:// URL"),
    ("slack with nothing", {"slack": {"channel": "#alerts"}}, "needs either webhook_url, or bot_token and channel"),
    ("slack bot without channel", {"slack": {"bot_token": XOXB}}, "bot_token needs channel"),
    ("slack both modes", {"slack": {"bot_token": XOXB, "channel": "#a", "webhook_url": WEBHOOK}}, "not both"),
    ("telegram without chat", {"telegram": {"bot_token": TOKEN}}, "chat_id"),
    ("telegram bad chat id", {"telegram": {"bot_token": TOKEN, "chat_id": "my group"}}, "numeric chat id"),
    ("unknown event routed", {"telegram": {"bot_token": TOKEN, "chat_id": 1, "events": ["agent_lsot"]}}, "agent_lost"),
    ("unknown switch", {"events": {"user_abort": False}}, "user_aborted"),
    ("test cannot be routed", {"slack": {"webhook_url": WEBHOOK, "events": ["test"]}}, "notify-test only"),
    ("typo in a key", {"telegram": {"bot_token": TOKEN, "chatid": 1}}, "Extra inputs are not permitted"),
    ("negative wait", {"group_wait_s": -1}, "greater than or equal to 0"),
]


@pytest.mark.parametrize(("case", "section", "words"), INVALID, ids=[v[0] for v in INVALID])
def test_invalid_with_a_clear_message_and_no_secret(case: str, section: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        NotifySettings.model_validate(section)
    message = str(caught.value)
    assert words in message
    for secret in (TOKEN, XOXB, "verysecretwebhookpart"):
        assert secret not in message


def test_config_loader_names_the_key_and_hides_the_secret() -> None:
    data = {"notify": {"slack": {"webhook_url": "${HOOK}"}}}
    with pytest.raises(ConfigError) as caught:
        build_config(data, "config.yaml", environ={"HOOK": "http://hooks.example.com/services/verysecretwebhookpart"})
    assert "notify.slack.webhook_url" in str(caught.value)
    assert "verysecretwebhookpart" not in str(caught.value)


def test_secrets_masked_in_repr_dump_and_check_config() -> None:
    config = build_config(
        {
            "notify": {
                "slack": {"bot_token": "${XOXB}", "channel": "#a"},
                "telegram": {"bot_token": TOKEN, "chat_id": 1},
            }
        },
        "config.yaml",
        environ={"XOXB": XOXB},
    )
    shown = f"{config.notify!r} {config.notify} {config.masked()} {config.notify.model_dump()}"
    assert TOKEN not in shown and XOXB not in shown
    assert sorted(config.notify.secret_values()) == sorted([TOKEN, XOXB])  # for the log masker


CONSOLE = [
    # (console setting, chat configured, console channel built)
    ("auto", False, True),  # nothing else configured: alerts go to the terminal
    ("auto", True, False),
    (True, True, True),
    (False, False, False),
]


@pytest.mark.parametrize(("console", "chat", "expected"), CONSOLE)
def test_console_default(console: Any, chat: bool, expected: bool) -> None:
    section: dict[str, Any] = {"console": console}
    if chat:
        section["slack"] = {"webhook_url": WEBHOOK}
    settings = NotifySettings.model_validate(section)
    assert settings.console_enabled is expected
    assert ("console" in [c.name for c in build_channels(settings)]) is expected


def test_demo_can_force_the_console_on() -> None:
    settings = NotifySettings.model_validate({"slack": {"webhook_url": WEBHOOK}})
    assert [c.name for c in build_channels(settings, console=True)] == ["slack", "console"]


def test_events_for_applies_routing_then_switches() -> None:
    settings = NotifySettings.model_validate(
        {
            "events": {"code_failed": False},
            "slack": {"webhook_url": WEBHOOK, "events": ["gave_up", "code_failed"]},
            "telegram": {"bot_token": TOKEN, "chat_id": 1},
        }
    )
    assert settings.events_for("slack") == {EventKind.GAVE_UP}
    assert settings.events_for("telegram") == set(ALL_EVENTS) - {EventKind.CODE_FAILED}
    assert EventKind.TEST not in settings.events_for("console")
