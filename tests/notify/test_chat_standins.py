"""The Slack and Telegram stand-ins check requests the way the real services do, so a green test means something."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from notify_helpers import CHAT_ID, TOPIC, FakeClock

from watchdog.simulator.chat import (
    EntityError,
    SlackStandIn,
    TelegramStandIn,
    parse_telegram_html,
    slack_markup_problems,
)

HTML_OK = [
    # (markup, visible text)
    ("plain", "plain"),
    ("<b>bold</b> <i>it</i> <u>u</u> <s>s</s>", "bold it u s"),
    ("<strong>x</strong><em>y</em><ins>z</ins><del>w</del>", "xyzw"),
    ('<a href="https://e.x/?a=1&amp;b=2">link</a>', "link"),
    ("<code>&lt;tag&gt; &amp; &quot;</code>", '<tag> & "'),
    ('<pre><code class="language-python">x = 1</code></pre>', "x = 1"),
    ("<b>bold <i>and italic</i></b>", "bold and italic"),
    ('<span class="tg-spoiler">hidden</span><tg-spoiler>too</tg-spoiler>', "hiddentoo"),
    ("&#128293; &#x1F525;", "🔥 🔥"),
    ("a > b", "a > b"),  # Telegram accepts a bare '>'
]


@pytest.mark.parametrize(("markup", "shown"), HTML_OK)
def test_telegram_html_that_telegram_accepts(markup: str, shown: str) -> None:
    assert parse_telegram_html(markup) == shown


HTML_BAD = [
    # (markup, what Telegram would say)
    ("<b>unclosed", "Can't find end tag"),
    ("<b><i>crossed</b></i>", "Can't find end tag"),
    ("</b>", "Unexpected end tag"),
    ("<script>x</script>", 'Unsupported start tag "script"'),
    ("<br>", 'Unsupported start tag "br"'),
    ("a < b", "Can't find end of the tag"),
    ("a < b > c", "Unsupported start tag"),
    ("<b", "Can't find end of the tag"),
    ("AT&T", "Unescaped '&'"),
    ("&nbsp;", "Unsupported HTML entity"),
    ("<a>no href</a>", 'must have attribute "href"'),
    ('<b class="x">x</b>', "Unsupported attribute"),
    ("<code><b>x</b></code>", "can't be nested"),
    ('<a href="https://a"><a href="https://b">x</a></a>', "can't be nested"),
    ('<span class="other">x</span>', "tg-spoiler"),
]


@pytest.mark.parametrize(("markup", "reason"), HTML_BAD)
def test_telegram_html_that_telegram_refuses(markup: str, reason: str) -> None:
    with pytest.raises(EntityError) as caught:
        parse_telegram_html(markup)
    assert reason in str(caught.value)


SLACK_TEXT = [
    # (text, clean?)
    ("*bold* _it_ `code` ~s~", True),
    ("&lt;b&gt; &amp;", True),
    ("<https://e.x/a|label> <@U123> <#C1|general> <!here>", True),
    ("a & b", False),  # must be &amp;
    ("<b>html</b>", False),
    ("x > y", False),
]


@pytest.mark.parametrize(("text", "clean"), SLACK_TEXT)
def test_slack_markup_problems(text: str, clean: bool) -> None:
    assert (slack_markup_problems(text) == []) is clean


def post(url: str, body: dict[str, Any], **headers: str) -> requests.Response:
    return requests.post(url, json=body, headers=headers, timeout=2)


def test_telegram_checks_like_telegram(telegram: TelegramStandIn) -> None:
    base = f"{telegram.api_base}/bot{telegram.token}"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"text": "x"}, 400, "chat_id is empty"),
        ({"chat_id": 1, "text": "x"}, 400, "chat not found"),
        ({"chat_id": CHAT_ID}, 400, "message text is empty"),
        ({"chat_id": CHAT_ID, "text": "x", "message_thread_id": 999}, 400, "message thread not found"),
        ({"chat_id": CHAT_ID, "text": "<b>x", "parse_mode": "HTML"}, 400, "can't parse entities"),
        ({"chat_id": CHAT_ID, "text": "x" * 4097}, 400, "message is too long"),
        ({"chat_id": CHAT_ID, "text": "🔥" * 2049}, 400, "message is too long"),  # 4098 UTF-16 units
        ({"chat_id": CHAT_ID, "text": "<b>" + "x" * 4096 + "</b>", "parse_mode": "HTML"}, 200, ""),  # tags are free
        ({"chat_id": str(CHAT_ID), "text": "ok", "message_thread_id": TOPIC}, 200, ""),
        ({"chat_id": CHAT_ID, "text": "re", "reply_parameters": {"message_id": 99}}, 400, "replied not found"),
    ]
    for body, status, words in cases:
        answer = post(f"{base}/sendMessage", body)
        assert answer.status_code == status, (body, answer.text)
        assert words in answer.json().get("description", ""), body
    assert post(f"{telegram.api_base}/bot1:wrong/sendMessage", {"chat_id": CHAT_ID, "text": "x"}).status_code == 401
    assert len(telegram.requests) == len(cases) + 1  # everything is recorded, refused requests too


def test_slack_checks_like_slack(slack: SlackStandIn) -> None:
    api = slack.api_base
    auth = {"Authorization": f"Bearer {slack.bot_token}"}
    assert post(f"{api}/chat.postMessage", {"channel": "#alerts", "text": "x"}).json()["error"] == "not_authed"
    assert (
        post(f"{api}/chat.postMessage", {"channel": "#alerts", "text": "x"}, Authorization="Bearer xoxb-nope").json()[
            "error"
        ]
        == "invalid_auth"
    )
    assert (
        post(f"{api}/chat.postMessage", {"channel": "#nope", "text": "x"}, **auth).json()["error"]
        == "channel_not_found"
    )
    assert post(f"{api}/chat.postMessage", {"channel": "#alerts"}, **auth).json()["error"] == "no_text"
    assert (
        post(f"{api}/chat.postMessage", {"channel": "#alerts", "text": "x" * 40_001}, **auth).json()["error"]
        == "msg_too_long"
    )
    posted = post(f"{api}/chat.postMessage", {"channel": "#alerts", "text": "x"}, **auth).json()
    assert posted["ok"] and posted["channel"] == "C0ALERTS"
    update = {"channel": "#alerts", "ts": posted["ts"], "text": "y"}
    assert post(f"{api}/chat.update", update, **auth).json()["error"] == "channel_not_found"  # needs the id
    assert post(f"{api}/chat.update", {**update, "channel": "C0ALERTS"}, **auth).json()["ok"]
    assert post(slack.webhook_url, {"text": "hi"}).text == "ok"
    assert post(slack.url + "/services/T/B/other", {"text": "hi"}).text == "no_service"
    assert post(slack.webhook_url, {}).text == "no_text"


def test_fault_injection_counts_and_fractions(telegram: TelegramStandIn) -> None:
    url = f"{telegram.api_base}/bot{telegram.token}/sendMessage"
    body = {"chat_id": CHAT_ID, "text": "x"}
    telegram.fail_next(2, 429, retry_after=9)
    first = post(url, body)
    assert first.status_code == 429 and first.json()["parameters"]["retry_after"] == 9
    assert first.headers["Retry-After"] == "9"
    assert post(url, body).status_code == 429
    assert post(url, body).status_code == 200
    telegram.fail_fraction(0.5, 500)
    statuses = [post(url, body).status_code for _ in range(40)]
    assert 8 <= statuses.count(500) <= 32 and statuses.count(200) >= 8
    telegram.clear_faults()
    assert post(url, body).status_code == 200
    telegram.fail_next(1, 401)
    assert post(url, body).json()["description"] == "Unauthorized"


def test_hang_outlasts_the_client_timeout(slack: SlackStandIn) -> None:
    slack.hang_next(1, 5)
    with pytest.raises(requests.Timeout):
        requests.post(slack.webhook_url, json={"text": "x"}, timeout=0.2)
    assert slack.requests[0].status == 0  # recorded as never answered
    assert post(slack.webhook_url, {"text": "x"}).text == "ok"


def test_rate_limit_answers_429_with_the_wait(clock: FakeClock, telegram: TelegramStandIn) -> None:
    telegram.rate_limit(2, 60)
    url = f"{telegram.api_base}/bot{telegram.token}/sendMessage"
    body = {"chat_id": CHAT_ID, "text": "x"}
    assert [post(url, body).status_code for _ in range(2)] == [200, 200]
    clock.advance(10)
    limited = post(url, body).json()
    assert limited["error_code"] == 429 and limited["parameters"]["retry_after"] == 50
    clock.advance(50)
    assert post(url, body).status_code == 200
