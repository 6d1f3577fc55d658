"""Rendering: what a person reads, per format, valid and within each service's limits (pure, no I/O)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from notify_helpers import T0, notice

from watchdog.notify.notice import EventKind, Notice
from watchdog.notify.render import (
    SLACK_LIMIT,
    TELEGRAM_LIMIT,
    Format,
    duration,
    one_line,
    paragraph,
    render,
    safe_url,
    utf16_len,
)
from watchdog.simulator.chat import parse_telegram_html, slack_markup_problems

NOW = T0 + timedelta(seconds=40)


def visible(fmt: Format, text: str) -> str:
    """The text as the person sees it (Telegram after entity parsing; others as sent)."""
    return parse_telegram_html(text) if fmt is Format.TELEGRAM else text


def assert_valid(fmt: Format, text: str) -> None:
    if fmt is Format.TELEGRAM:
        shown = parse_telegram_html(text)  # raises where Telegram would answer "can't parse entities"
        assert 0 < utf16_len(shown) <= TELEGRAM_LIMIT
    elif fmt is Format.SLACK:
        assert slack_markup_problems(text) == []
        assert 0 < len(text) <= SLACK_LIMIT
    else:
        assert text.strip()


# --- content a person can act on ---------------------------------------------------------------------

LOSS_FACTS = [
    # (what, the words that must be there)
    ("task name", "train-inc-1"),
    ("project", "vision/imagenet"),
    ("verdict in plain words", "no report for 6 min and no live worker reports it"),
    ("worker/host", "gpu-spot-17:gpu0"),
    ("queue", "gpu-spot"),
    ("attempt n of max", "attempt 2 of 5"),
    ("checkpoint URI", "s3://models/run/ckpt_012000.pt"),
    ("iteration it resumes from", "iteration 12,000"),
    ("iterations lost", "800 iterations lost"),
    ("time since last heard from", "silent for 6 min"),
    ("what was done", "re-queued"),
]


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize(("what", "words"), LOSS_FACTS, ids=[c[0] for c in LOSS_FACTS])
def test_loss_message_carries_every_fact(fmt: Format, what: str, words: str) -> None:
    text = render([notice()], fmt, NOW)
    assert words in visible(fmt, text), what


@pytest.mark.parametrize("fmt", [Format.SLACK, Format.TELEGRAM])
def test_links_to_task_and_clone(fmt: Format) -> None:
    text = render([notice()], fmt, NOW)
    assert "https://app.clear.ml/projects/p1/experiments/task-inc-1" in text
    assert "https://app.clear.ml/projects/p1/experiments/clone-inc-1" in text
    if fmt is Format.TELEGRAM:
        assert '<a href="https://app.clear.ml/projects/p1/experiments/clone-inc-1">' in text
    else:
        assert "<https://app.clear.ml/projects/p1/experiments/clone-inc-1|clone clone-inc-1>" in text


EVENT_WORDS = [
    # (event, action, a phrase the headline or action line must contain)
    (EventKind.AGENT_LOST, "requeue", "Machine lost"),
    (EventKind.AGENT_STOPPED, "requeue", "Machine shut down"),
    (EventKind.SERVER_FORCED_STOP, "escalate", "moved off spot"),
    (EventKind.RECOVERED, "requeue", "Clone running"),
    (EventKind.GAVE_UP, "give_up", "the watchdog gave up"),
    (EventKind.USER_ABORTED, "notify_only", "Aborted by a person"),
    (EventKind.CODE_FAILED, "notify_only", "reported only"),
    (EventKind.WATCHDOG_UNHEALTHY, "", "Watchdog cannot reach ClearML"),
    (EventKind.WATCHDOG_HEALTHY, "", "reaches ClearML again"),
    (EventKind.TEST, "", "Test message"),
]


@pytest.mark.parametrize(("event", "action", "phrase"), EVENT_WORDS, ids=[c[0].value for c in EVENT_WORDS])
def test_each_event_reads_right(event: EventKind, action: str, phrase: str) -> None:
    for fmt in Format:
        text = render([notice(event=event, action=action)], fmt, NOW)
        assert phrase in visible(fmt, text)
        assert_valid(fmt, text)


def test_no_checkpoint_says_from_scratch() -> None:
    text = render([notice(checkpoint_uri="", resume_iteration=None, lost_iterations=None)], Format.PLAIN, NOW)
    assert "Resumes from: scratch, no usable checkpoint" in text


def test_unknown_facts_are_left_out_not_invented() -> None:
    bare = Notice(incident_id="x", event=EventKind.AGENT_LOST, occurred_at=T0, task_id="abc")
    text = render([bare], Format.PLAIN, NOW)
    assert "task abc" in text
    assert "None" not in text and "attempt" not in text and "Project" not in text
    assert "the machine or its agent vanished" in text  # the verdict's plain words stand in


def test_late_delivery_is_said() -> None:
    text = render([notice()], Format.PLAIN, T0 + timedelta(minutes=37))
    assert "37 min ago (delivery was delayed)" in text


# --- hostile text ------------------------------------------------------------------------------------

HOSTILE = [
    # (what, the string put in every user-supplied field)
    ("markup", "<b>bold</b> <script>alert(1)</script> <a href='x'>y</a>"),
    ("entities", "a & b &amp; &lt; &#x1F600; &unknown; &"),
    ("slack controls", "<!channel> <@U123> <#C42|general> <https://evil.example|click>"),
    ("markdown", "*bold* _italic_ ~strike~ `code` ```block``` > quote"),
    ("emoji", "🔥🚀 résumé ✅ 👩‍👩‍👧‍👦 🇺🇦"),
    ("newlines", "line one\nline two\r\n\tline three\n\n\n"),
    ("controls", "bell\x07 nul\x00 esc\x1b[31m"),
    ("lone surrogate", "broken \ud800 pair"),
    ("5000 chars", "<&>*_`🔥" * 625),
    ("5000 emoji", "🔥" * 5000),
]


def hostile_notice(value: str, incident: str = "inc-1", **fields: Any) -> Notice:
    return notice(
        incident,
        task_name=value,
        project_name=value,
        worker=value,
        queue_name=value,
        explanation=value,
        checkpoint_uri=value,
        task_id=value,
        clone_id=value,
        **fields,
    )


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize(("what", "value"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_text_single_message_is_valid(fmt: Format, what: str, value: str) -> None:
    text = render([hostile_notice(value)], fmt, NOW)
    assert_valid(fmt, text)
    if fmt is Format.TELEGRAM:
        assert "<script>" not in text and "<b>bold</b>" not in text
    if fmt is Format.SLACK:
        assert "<!channel>" not in text and "<@U123>" not in text  # no mentions smuggled in


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize(("what", "value"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_text_grouped_message_is_valid(fmt: Format, what: str, value: str) -> None:
    notices = [hostile_notice(value, f"inc-{i}") for i in range(60)]
    text = render(notices, fmt, NOW)
    assert_valid(fmt, text)


@pytest.mark.parametrize("fmt", [Format.TELEGRAM, Format.SLACK])
def test_hostile_text_is_shown_not_interpreted(fmt: Format) -> None:
    name = "<b>x</b> & *y* _z_"
    text = render([notice(task_name=name)], fmt, NOW)
    if fmt is Format.TELEGRAM:
        assert name in parse_telegram_html(text)  # the person sees the characters, not formatting
    else:
        assert "&lt;b&gt;x&lt;/b&gt; &amp; *y* _z_" in text


def test_five_thousand_character_name_is_capped_with_an_ellipsis() -> None:
    text = render([notice(task_name="n" * 5000)], Format.PLAIN, NOW)
    first_line = text.splitlines()[0]
    assert "n" * 99 + "…" in first_line and "n" * 101 not in first_line


def test_telegram_budget_counts_utf16_units() -> None:
    # Every emoji is 2 UTF-16 units: a renderer counting code points would overshoot 4096.
    notices = [notice(f"inc-{i}", task_name="🔥" * 60, worker="🔥" * 80) for i in range(80)]
    text = render(notices, Format.TELEGRAM, NOW)
    assert utf16_len(parse_telegram_html(text)) <= TELEGRAM_LIMIT


# --- grouped messages --------------------------------------------------------------------------------


def test_forty_losses_fit_in_one_telegram_message_listing_every_task() -> None:
    notices = [notice(f"inc-{i:02d}", at=T0 + timedelta(seconds=i)) for i in range(40)]
    text = render(notices, Format.TELEGRAM, NOW)
    shown = parse_telegram_html(text)
    assert "Machine lost: 40 tasks" in shown
    assert all(f"train-inc-{i:02d}" in shown for i in range(40))
    assert "more" not in shown


def test_too_many_for_one_message_ends_with_how_many_were_left_out() -> None:
    notices = [notice(f"inc-{i:03d}", task_name="x" * 60) for i in range(300)]
    for fmt in (Format.TELEGRAM, Format.SLACK):
        text = render(notices, fmt, NOW)
        assert_valid(fmt, text)
        shown = visible(fmt, text)
        listed = sum(1 for i in range(300) if f"task-inc-{i:03d}" in text)
        assert 0 < listed < 300
        assert f"… and {300 - listed} more" in shown


def test_group_names_what_all_share_once() -> None:
    notices = [notice(f"inc-{i}") for i in range(3)]
    text = render(notices, Format.PLAIN, NOW)
    assert text.count("vision/imagenet") == 1
    assert "Action: re-queued on gpu-spot" in text


def test_edit_of_a_group_marks_each_task() -> None:
    notices = [notice(f"inc-{i}") for i in range(3)]
    status = {
        "inc-0": notice("inc-0", EventKind.RECOVERED),
        "inc-2": notice("inc-2", EventKind.GAVE_UP, action="give_up"),
    }
    text = render(notices, Format.PLAIN, NOW, status=status)
    assert "Now: 1 recovered, 1 given up, 1 pending" in text
    lines = text.splitlines()
    assert any(line.startswith("✅ train-inc-0") for line in lines)
    assert any(line.startswith("• train-inc-1") for line in lines)
    assert any(line.startswith("⛔ train-inc-2") for line in lines)


def test_edit_of_a_single_message_adds_where_it_stands() -> None:
    text = render([notice()], Format.TELEGRAM, NOW, status={"inc-1": notice(event=EventKind.RECOVERED)})
    assert "✅ Now: recovered: the clone is running" in parse_telegram_html(text)


# --- small pieces ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "0 s"),  # just now
        (59.4, "59 s"),
        (60, "1 min"),
        (372, "6 min"),
        (3600, "1 h 00 min"),
        (3 * 86400 + 4 * 3600, "3 d 4 h"),
        (-5, "0 s"),  # clocks disagree: never negative
    ],
)
def test_duration(seconds: float, words: str) -> None:
    assert duration(seconds) == words


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://app.clear.ml/x?y=1", "https://app.clear.ml/x?y=1"),  # kept
        ("http://10.0.0.5:8080/projects/a/experiments/b", "http://10.0.0.5:8080/projects/a/experiments/b"),
        ("javascript:alert(1)", ""),  # not a web link: no link, label only
        ("https://x.example/a|b>c", "https://x.example/a%7Cb%3Ec"),  # would break <url|label>
        ('https://x.example/"><b>', "https://x.example/%22%3E%3Cb%3E"),  # would break href="..."
        ("", ""),
        ("https://x.example/" + "a" * 3000, ""),  # absurdly long: dropped
    ],
)
def test_safe_url(url: str, expected: str) -> None:
    assert safe_url(url) == expected


def test_one_line_and_paragraph() -> None:
    assert one_line("a\n b\t\tc ", 100) == "a b c"
    assert one_line("abcdef", 4) == "abc…"
    assert paragraph("one\r\ntwo\n\n\nthree", 100) == "one\ntwo\nthree"
    assert paragraph("\n".join(str(i) for i in range(20)), 100).count("\n") == 5


@pytest.mark.parametrize(
    "value",
    [
        "x" * 5000,  # plain long
        " " * 4000 + "tail",  # whitespace collapses after the pre-cut: still marked as cut
        "y" * 100 + " " * 5000,  # long only because of trailing blanks
    ],
)
def test_long_strings_are_capped_and_marked(value: str) -> None:
    for result in (one_line(value, 100), paragraph(value, 100)):
        assert len(result) <= 100
        assert result.endswith("…") or result == value.strip()


# --- any text at all -----------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402 - kept next to the one test that uses it
from hypothesis import strategies as st  # noqa: E402

ANY_TEXT = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), min_size=0, max_size=300
) | st.sampled_from([value for _, value in HOSTILE])


@settings(max_examples=150, deadline=None)
@given(name=ANY_TEXT, other=ANY_TEXT, count=st.integers(min_value=1, max_value=45))
def test_any_text_renders_valid_messages_within_limits(name: str, other: str, count: int) -> None:
    notices = [
        notice(
            f"inc-{i}",
            task_name=name,
            project_name=other,
            worker=other,
            queue_name=name,
            explanation=other,
            checkpoint_uri=name,
            task_url="https://app.clear.ml/projects/p/experiments/" + name[:20],
        )
        for i in range(count)
    ]
    for fmt in Format:
        assert_valid(fmt, render(notices, fmt, NOW))
