"""The wire format itself: envelope, auth, headers, keep-alive, routing, call counting."""

from __future__ import annotations

import base64
import http.client
import json
from email.utils import parsedate_to_datetime

import jwt
import pytest
import requests
from sim_helpers import FAST, RawClient

from watchdog.simulator import Simulator, SimulatorConfig


def test_envelope_has_every_meta_field(raw: RawClient) -> None:
    body = raw.call("tasks.get_all", status=["created"]).json()
    meta = body["meta"]
    assert set(meta) == {
        "id", "trx", "endpoint", "result_code", "result_subcode", "result_msg", "error_stack", "error_data",
    }
    assert meta["endpoint"] == {"name": "tasks.get_all", "requested_version": "2.23", "actual_version": "2.23"}
    assert (meta["result_code"], meta["result_subcode"], meta["result_msg"]) == (200, 0, "OK")
    assert body["data"] == {"tasks": []}


def test_login_token_is_a_jwt_the_sdk_can_read(sim: Simulator) -> None:
    res = requests.get(f"{sim.url}/auth.login", auth=(sim.config.access_key, sim.config.secret_key))
    token = res.json()["data"]["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["api_version"] == "2.31"
    assert claims["server_version"] == "2.0.0"
    assert claims["feature_set"] == "basic"
    assert claims["exp"] > claims["iat"]
    assert claims["identity"]["user_name"] == "sim-user"
    assert {"company", "user", "user_name"} <= set(claims["identity"])


@pytest.mark.parametrize(
    ("endpoint", "headers", "subcode"),
    [
        ("tasks.get_all", {}, 20),  # no Authorization header at all
        ("tasks.get_all", {"Authorization": "Bearer not.a.token"}, 30),  # garbage token
        ("auth.login", {"Authorization": "Basic " + base64.b64encode(b"sim-access-key:wrong").decode()}, 22),
        ("auth.login", {"Authorization": "Basic !!!"}, 21),  # undecodable credentials
        # Basic credentials are only for auth.login here; other calls need the bearer token.
        ("tasks.get_all", {"Authorization": "Basic " + base64.b64encode(b"sim-access-key:sim-secret-key").decode()},
         10),
    ],
)
def test_unauthorized_calls_get_a_clearml_401(sim: Simulator, endpoint: str, headers: dict[str, str],
                                              subcode: int) -> None:
    res = requests.get(f"{sim.url}/v2.23/{endpoint}", headers=headers, json={})
    assert res.status_code == 401
    meta = res.json()["meta"]
    assert (meta["result_code"], meta["result_subcode"]) == (401, subcode)


def test_expired_token_is_refused_and_a_new_login_works(sim: Simulator) -> None:
    short = Simulator(SimulatorConfig(token_ttl_s=60), clock=sim.clock)
    with short:
        client = RawClient(short)
        assert client.call("tasks.get_all").status_code == 200
        short.clock.advance(61)
        meta = client.call("tasks.get_all").json()["meta"]
        assert (meta["result_code"], meta["result_subcode"]) == (401, 30)
        assert RawClient(short).call("tasks.get_all").status_code == 200


def test_unknown_endpoint_is_a_clearml_404(raw: RawClient) -> None:
    res = raw.call("tasks.no_such_action")
    assert res.status_code == 404
    assert res.json()["meta"]["result_msg"] == "Unable to find endpoint for name tasks.no_such_action and version 2.23"
    res = raw.http.get(f"{raw.sim.url}/no_such.endpoint", json={})
    assert res.status_code == 404


def test_paths_with_and_without_version_and_any_method(raw: RawClient, sim: Simulator) -> None:
    task_id = sim.create_task("routing")
    for method, url in [
        ("GET", f"{sim.url}/tasks.get_by_id"),
        ("POST", f"{sim.url}/v2.31/tasks.get_by_id"),
        ("PUT", f"{sim.url}/v2.9/tasks.get_by_id/"),
    ]:
        res = raw.http.request(method, url, json={"task": task_id})
        assert res.status_code == 200, res.text
        assert res.json()["data"]["task"]["id"] == task_id


def test_unknown_body_keys_and_sdk_headers_are_ignored(raw: RawClient, sim: Simulator) -> None:
    task_id = sim.create_task("ignore extras")
    res = raw.http.get(
        f"{sim.url}/v2.23/tasks.get_all",
        json={"id": [task_id], "method": "get", "search_hidden": False, "whatever": {"x": 1}},
        headers={"X-ClearML-Worker": "me", "X-Trains-Worker": "me", "X-ClearML-Client": "clearml-2.1.12",
                 "X-ClearML-Async": "0"},
    )
    assert [t["id"] for t in res.json()["data"]["tasks"]] == [task_id]


def test_missing_required_field_is_a_validation_error(raw: RawClient) -> None:
    code, subcode, msg = raw.error("tasks.get_by_id")
    assert (code, subcode) == (400, 12)
    assert "'task' is a required property" in msg


def test_date_header_uses_the_simulated_clock(sim: Simulator, raw: RawClient) -> None:
    sim.clock.advance(3600)
    res = raw.call("debug.ping")
    served = parsedate_to_datetime(res.headers["Date"]).timestamp()
    assert abs(served - sim.clock.now()) < 2


def test_duplicate_date_header_like_the_stock_server() -> None:
    with Simulator(SimulatorConfig(duplicate_date_header=True)) as sim:
        res = RawClient(sim).call("debug.ping")
        first, _, second = res.headers["Date"].partition("GMT, ")
        assert second and parsedate_to_datetime(first + "GMT") == parsedate_to_datetime(second)


def test_keep_alive_serves_many_calls_on_one_connection(sim: Simulator, raw: RawClient) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    for _ in range(5):
        conn.request("GET", "/v2.23/tasks.get_all", body=json.dumps({"page_size": 1}),
                     headers={"Authorization": f"Bearer {raw.token}", "Content-Type": "application/json"})
        res = conn.getresponse()
        assert res.status == 200
        assert json.loads(res.read())["meta"]["result_code"] == 200
        assert res.getheader("Connection") != "close"
    conn.close()


def test_batch_body_as_json_lines(raw: RawClient, sim: Simulator) -> None:
    task_id = sim.create_task("events")
    lines = "\n".join(
        json.dumps({"task": task_id, "type": "training_stats_scalar", "metric": "loss", "variant": "total",
                    "value": 1.0 / i, "iter": i})
        for i in range(1, 4)
    )
    res = raw.http.get(f"{sim.url}/v2.23/events.add_batch", data=lines,
                       headers={"Content-Type": "application/json-lines"})
    assert res.json()["data"]["added"] == 3
    assert sim.task(task_id)["last_iteration"] == 3


def test_call_counter_counts_per_endpoint_and_resets(raw: RawClient, sim: Simulator) -> None:
    sim.calls.reset()
    raw.call("tasks.get_all")
    raw.call("tasks.get_all")
    raw.call("workers.get_all")
    raw.call("tasks.no_such_action")
    assert sim.calls.snapshot() == {"tasks.get_all": 2, "workers.get_all": 1, "tasks.no_such_action": 1}
    assert sim.calls.total() == 4
    assert sim.calls.reset()["tasks.get_all"] == 2
    assert sim.calls.snapshot() == {}


def test_agents_act_in_process_and_are_not_counted() -> None:
    with Simulator(FAST) as sim:
        sim.start_agents(1)
        sim.wait_running(sim.submit("uncounted"))
        assert sim.calls.snapshot() == {}


def test_after_success_hooks_see_each_successful_call(raw: RawClient, sim: Simulator) -> None:
    seen: list[tuple[str, object, object]] = []
    sim.server.after_success.append(lambda name, body, result: seen.append((name, body.get("task"), result)))
    task_id = sim.create_task("hooked")
    raw.ok("tasks.enqueue", task=task_id, queue_name="default")
    raw.call("tasks.get_by_id", task="0" * 32)  # failed calls are not reported
    assert [(name, task) for name, task, _ in seen] == [("tasks.enqueue", task_id)]
    assert seen[0][2]["queued"] == 1  # type: ignore[index]


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe not utf-8", b"{not json", b"[1, 2, 3]", b'"just a string"', b"{}\n{\"broken"],
)
def test_unreadable_bodies_are_a_400_not_a_crash(raw: RawClient, sim: Simulator, body: bytes) -> None:
    res = raw.http.get(f"{sim.url}/v2.23/tasks.get_by_id", data=body, headers={"Content-Type": "application/json"})
    assert res.status_code == 400 and res.json()["meta"]["result_code"] == 400
