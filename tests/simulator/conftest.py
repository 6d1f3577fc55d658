"""Fixtures for the simulator tests: fast simulators, raw HTTP clients and real SDK sessions.

The clearml SDK keeps process-wide state (its config, ``Session`` class attributes and the
default session used by ``Task``), so SDK sessions are built explicitly with ``host``/keys and
installed as the default session only for the test that needs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from sim_helpers import FAST, RawClient

from watchdog.simulator import Simulator
from watchdog.simulator.endpoints import ENDPOINTS

# Endpoints some tests call on purpose to see the 404.
DELIBERATELY_UNKNOWN = {"no_such.endpoint", "tasks.no_such_action"}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A started simulator with a default queue and fast agents (none running yet).

    Afterwards it checks that no client called an endpoint the simulator lacks: a real SDK
    flow that hits a 404 here would silently test less than it seems to.
    """
    with Simulator(FAST) as simulator:
        simulator.create_queue("default", default=True)
        yield simulator
        unknown = set(simulator.calls.snapshot()) - set(ENDPOINTS) - {"auth.login"} - DELIBERATELY_UNKNOWN
        assert not unknown, f"a client called endpoints the simulator lacks: {sorted(unknown)}"


@pytest.fixture
def raw(sim: Simulator) -> RawClient:
    return RawClient(sim)


@pytest.fixture
def sdk_env(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    """Point the SDK at ``sim`` through the environment, as a user would."""
    for key, value in sim.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CLEARML_LOG_LEVEL", os.environ.get("CLEARML_LOG_LEVEL", "WARNING"))
    return sim


@pytest.fixture
def sdk_session(sdk_env: Simulator) -> Iterator[Any]:
    """A real clearml Session logged into the simulator, installed as the SDK's default session."""
    from clearml.backend_api.session import Session
    from clearml.backend_interface.base import InterfaceBase

    session = Session(host=sdk_env.url, api_key=sdk_env.config.access_key, secret_key=sdk_env.config.secret_key)
    previous = InterfaceBase._default_session
    InterfaceBase._set_default_session(session)
    try:
        yield session
    finally:
        InterfaceBase._default_session = previous

