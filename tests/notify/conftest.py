"""Fixtures for the notify tests: a clock that only moves when told, the chat stand-ins, a journal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from notify_helpers import CHAT_ID, TOPIC, FakeClock

from watchdog.journal import Journal
from watchdog.simulator.chat import SlackStandIn, TelegramChat, TelegramStandIn


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def slack(clock: FakeClock) -> Iterator[SlackStandIn]:
    with SlackStandIn(clock=clock.seconds) as standin:
        assert isinstance(standin, SlackStandIn)
        yield standin


@pytest.fixture
def telegram(clock: FakeClock) -> Iterator[TelegramStandIn]:
    chats = [TelegramChat(CHAT_ID, topics={TOPIC}), TelegramChat(555, title="private")]
    with TelegramStandIn(chats=chats, clock=clock.seconds) as standin:
        assert isinstance(standin, TelegramStandIn)
        yield standin


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path / "journal.sqlite3")
    yield opened
    opened.close()
