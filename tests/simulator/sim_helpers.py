"""Shared helpers of the simulator tests (a uniquely named module: tests/*/ have no packages)."""

from __future__ import annotations

from typing import Any

import requests

from watchdog.simulator import Simulator, SimulatorConfig

# Small intervals: an agent reports every 0.1 s and picks work up 0.05 s after it is queued.
FAST = SimulatorConfig(
    report_interval_s=0.1,
    pickup_delay_s=0.05,
    task_init_delay_s=0.1,
    task_ping_interval_s=0.2,
    iteration_period_s=0.05,
    checkpoint_every_iters=4,
    tick_s=0.01,
)



class RawClient:
    """Plain ``requests`` against the simulator, for asserting the wire format itself."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.http = requests.Session()
        login = self.http.get(f"{sim.url}/auth.login", auth=(sim.config.access_key, sim.config.secret_key))
        login.raise_for_status()
        self.token = login.json()["data"]["token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    def call(self, endpoint: str, version: str = "2.23", **body: Any) -> requests.Response:
        return self.http.get(f"{self.sim.url}/v{version}/{endpoint}", json=body, timeout=10)

    def ok(self, endpoint: str, **body: Any) -> dict[str, Any]:
        res = self.call(endpoint, **body)
        payload = res.json()
        assert res.status_code == 200, payload["meta"]
        data: dict[str, Any] = payload["data"]
        return data

    def error(self, endpoint: str, **body: Any) -> tuple[int, int, str]:
        res = self.call(endpoint, **body)
        meta = res.json()["meta"]
        assert res.status_code == meta["result_code"] != 200, meta
        return meta["result_code"], meta["result_subcode"], meta["result_msg"]
