"""The chaos soak, compressed to fit the test suite (the long run: `python -m benchmarks.soak`).

Real processes and real HTTP: the watchdog daemon is SIGKILLed 20 times while a driver kills, restarts and
SIGTERMs agents, aborts tasks, fails training code and force-stops tasks, the server answers 5% of calls
with 5xx and delays others past the request timeout, and the chat stand-ins answer bursts of 429 and 500.
Every check of `SoakResult.failures()` must hold; the minimums below make sure the chaos really happened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import CODE_FAILURE, KILL, SIGTERM, USER_ABORT, run_soak, short_config

pytestmark = [pytest.mark.process, pytest.mark.slow]


def test_chaos_soak_recovers_every_loss_exactly_once(tmp_path: Path) -> None:
    result = run_soak(short_config(tmp_path, watchdogs=1, seed=7))
    print(result.render())
    assert result.failures() == []
    assert result.watchdog_kills >= 20
    assert result.losses >= 10 and result.clones_found >= result.expected_clones >= 10
    assert result.events[KILL] and result.events[SIGTERM] and result.events[USER_ABORT] and result.events[CODE_FAILURE]
    assert result.api_faults_5xx > 0 and result.chat_failures_answered > 0
    assert result.alerts_expected >= 2 * result.losses


def test_two_watchdogs_through_the_chaos_never_clone_twice(tmp_path: Path) -> None:
    result = run_soak(short_config(tmp_path, watchdogs=2, seed=11))
    print(result.render())
    assert result.failures() == []
    assert result.watchdog_kills >= 20 and result.losses >= 5
