"""Injected faults: error rate, outage, latency, scripted failures, a closed port."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from sim_helpers import RawClient

from watchdog.simulator import FaultPlan, Simulator, SimulatorConfig


def _outcomes(sim: Simulator, n: int) -> list[int]:
    client = RawClient(sim)
    return [client.call("tasks.get_all").status_code for _ in range(n)]


def test_error_rate_is_seeded_and_clearml_shaped() -> None:
    plan = FaultPlan(error_rate=0.3, error_codes=(500, 502), seed=7)
    runs = []
    for _ in range(2):
        with Simulator(SimulatorConfig(faults=plan)) as sim:
            runs.append(_outcomes(sim, 200))
    assert runs[0] == runs[1]  # same seed, same failures
    failures = [c for c in runs[0] if c != 200]
    assert 35 <= len(failures) <= 85 and set(failures) == {500, 502}
    with Simulator(SimulatorConfig(faults=plan)) as sim:
        client = RawClient(sim)  # auth.login is spared by default
        bodies = [client.call("tasks.get_all") for _ in range(30)]
        failed = next(b for b in bodies if b.status_code != 200)
        meta = failed.json()["meta"]
        assert meta["result_code"] == failed.status_code and "simulated fault" in meta["result_msg"]


def test_auth_is_faulted_only_when_asked(sim: Simulator) -> None:
    sim.faults.set(error_rate=1.0, error_codes=(503,))
    RawClient(sim)  # logs in fine
    sim.faults.set(fault_auth=True)
    res = requests.get(f"{sim.url}/auth.login", auth=(sim.config.access_key, sim.config.secret_key))
    assert res.status_code == 503


def test_outage_answers_503_until_cleared(raw: RawClient, sim: Simulator) -> None:
    sim.faults.outage()
    res = raw.call("tasks.get_all")
    assert res.status_code == 503 and res.json()["meta"]["result_code"] == 503
    sim.faults.outage(False)
    assert raw.call("tasks.get_all").status_code == 200


def test_latency_and_spikes(raw: RawClient, sim: Simulator) -> None:
    sim.faults.set(latency_s=0.15)
    began = time.monotonic()
    raw.call("debug.ping")
    assert time.monotonic() - began >= 0.15
    sim.faults.set(latency_s=0.0, spike_rate=1.0, spike_s=0.2)
    began = time.monotonic()
    raw.call("debug.ping")
    assert time.monotonic() - began >= 0.2
    sim.faults.clear()
    began = time.monotonic()
    raw.call("debug.ping")
    assert time.monotonic() - began < 0.15


def test_scripted_and_endpoint_limited_failures(raw: RawClient, sim: Simulator) -> None:
    sim.faults.fail_next("tasks.enqueue", times=2, code=502)
    task_id = sim.create_task("flaky enqueue")
    assert raw.call("tasks.enqueue", task=task_id, queue_name="default").status_code == 502
    assert raw.call("tasks.enqueue", task=task_id, queue_name="default").status_code == 502
    assert sim.task(task_id)["status"] == "created"  # a faulted call changes nothing
    assert raw.call("tasks.enqueue", task=task_id, queue_name="default").status_code == 200
    sim.faults.set(error_rate=1.0, error_codes=(500,), endpoints=("workers.get_all",))
    assert raw.call("workers.get_all").status_code == 500
    assert raw.call("tasks.get_all").status_code == 200


def test_listener_down_means_connection_refused_then_back_on_the_same_port(raw: RawClient, sim: Simulator) -> None:
    port = sim.port
    assert raw.call("debug.ping").status_code == 200  # a pooled keep-alive connection exists now
    sim.stop_listener()
    with pytest.raises(requests.ConnectionError):
        raw.call("debug.ping")  # the pooled connection was cut, and a new one is refused
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sim.url}/debug.ping", timeout=2)
    assert sim.start_listener().endswith(f":{port}")
    assert raw.call("debug.ping").status_code == 200  # the old token is still good


def test_the_sdk_retries_a_transient_502(sdk_session: Any, sim: Simulator) -> None:
    sim.faults.fail_next("tasks.get_all", times=1, code=502)
    res = sdk_session.send_request("tasks", "get_all", json={"page_size": 1})
    assert res.status_code == 200
    assert sim.calls.count("tasks.get_all") == 2
