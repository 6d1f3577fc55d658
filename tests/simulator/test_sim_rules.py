"""Server rules the watchdog depends on: status transitions, clone, enqueue, stop, edits, names."""

from __future__ import annotations

import pytest
from sim_helpers import RawClient

from watchdog.simulator import ApiError, Simulator
from watchdog.simulator import transitions as st


def _task_in(sim: Simulator, status: str) -> str:
    task_id = sim.create_task("status probe")
    if status != st.CREATED:
        sim.state.change_status(task_id, status, force=True)
    return task_id


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("created", "queued", True),
        ("created", "in_progress", True),  # a local run (Task.init) starts a draft
        ("created", "stopped", False),
        ("created", "completed", False),
        ("queued", "in_progress", True),  # an agent pulled it
        ("queued", "created", True),  # dequeued
        ("queued", "stopped", True),  # aborted while waiting (server 2.0)
        ("in_progress", "stopped", True),
        ("in_progress", "failed", True),
        ("in_progress", "completed", True),
        ("in_progress", "queued", False),  # a running task cannot be re-enqueued
        ("stopped", "queued", True),  # re-enqueue an aborted task
        ("stopped", "in_progress", True),
        ("stopped", "completed", True),
        ("failed", "queued", True),  # re-enqueue a failed task
        ("failed", "in_progress", False),
        ("completed", "queued", False),  # a finished task must be cloned or reset first
        ("completed", "in_progress", True),
        ("completed", "stopped", False),
        ("published", "created", False),  # published is final
        ("stopped", "stopped", True),  # same-state changes always pass
        ("completed", "completed", True),
    ],
)
def test_status_transitions(sim: Simulator, current: str, new: str, allowed: bool) -> None:
    task_id = _task_in(sim, current)
    if allowed:
        sim.state.change_status(task_id, new)
        assert sim.task(task_id)["status"] == new
    else:
        with pytest.raises(ApiError) as err:
            sim.state.change_status(task_id, new)
        assert (err.value.code, err.value.subcode) == (400, 110)
        assert sim.task(task_id)["status"] == current
        sim.state.change_status(task_id, new, force=True)  # force skips the table
        assert sim.task(task_id)["status"] == new


def test_status_change_is_compare_and_set(sim: Simulator) -> None:
    task_id = _task_in(sim, st.IN_PROGRESS)
    sim.state.change_status(task_id, st.STOPPED)
    with pytest.raises(ApiError) as err:  # someone read in_progress, but it is stopped by now
        sim.state.change_status(task_id, st.FAILED, expected=st.IN_PROGRESS)
    assert (err.value.code, err.value.subcode) == (400, 121)


def test_every_status_change_writes_the_stamps(raw: RawClient, sim: Simulator) -> None:
    task_id = _task_in(sim, st.IN_PROGRESS)
    before = sim.task(task_id)
    fields = raw.ok("tasks.stopped", task=task_id, status_reason="why", status_message="what")["fields"]
    after = sim.task(task_id)
    for key in ("status_changed", "last_update", "last_change"):
        assert after[key] > before[key]
        assert after[key].endswith("+00:00")
    assert (after["status"], after["status_reason"], after["status_message"]) == ("stopped", "why", "what")
    assert after["last_changed_by"] == sim.state.identity.user
    assert fields["status"] == "stopped" and "completed" in fields
    # tasks.stopped twice succeeds twice (same-state change)
    raw.ok("tasks.stopped", task=task_id)


def test_illegal_change_over_http_has_the_real_code_and_message(raw: RawClient, sim: Simulator) -> None:
    task_id = _task_in(sim, st.COMPLETED)
    code, subcode, msg = raw.error("tasks.enqueue", task=task_id, queue=sim.state.queue_id("default"))
    assert (code, subcode) == (400, 110)
    assert msg == "Invalid task status (Invalid status change): current_status=completed, new_status=queued"
    code, subcode, msg = raw.error("tasks.get_by_id", task="0" * 32)
    assert (code, subcode) == (400, 101)
    assert msg.startswith("Invalid task id")


# ---- clone -----------------------------------------------------------------------------------


def test_clone_keeps_the_recipe_and_drops_the_run(raw: RawClient, sim: Simulator) -> None:
    sim.start_agents(1)
    source = sim.create_task(
        "recipe", hyperparams={"Args": {"lr": 0.1}, "General": {"epochs": 5}}, configuration={"cfg": {"value": "x: 1"}},
        tags=["nightly"], system_tags=["development"], container={"image": "pytorch:2"},
    )
    sim.state.edit_task(source, {"execution": {"artifacts": [
        {"key": "weights", "type": "model", "mode": "output", "uri": "s3://b/w.pt"},
        {"key": "dataset", "type": "custom", "mode": "input", "uri": "s3://b/data"},
    ]}, "models": {"input": [{"name": "base", "model": "m1"}]}, "runtime": {"gpu": "A100"}})
    sim.enqueue(source)
    sim.wait_for(lambda: sim.models(source), 5)

    clone_id = raw.ok("tasks.clone", task=source, new_task_name="recipe (resume)")["id"]
    clone, src = sim.task(clone_id), sim.task(source)
    assert len(clone_id) == 32 and int(clone_id, 16) >= 0
    assert clone["status"] == "created" and clone["name"] == "recipe (resume)"
    for key in ("script", "hyperparams", "configuration", "container", "type", "tags"):
        assert clone[key] == src[key], key
    assert clone["models"] == {"input": src["models"]["input"], "output": []}
    assert [a["key"] for a in clone["execution"]["artifacts"]] == ["dataset"]  # output artifacts dropped
    assert "queue" not in clone["execution"]
    assert clone["runtime"] == {}
    assert clone["system_tags"] == []  # "development" is not inherited
    for key in ("last_worker", "started", "status_reason"):
        assert key not in clone
    assert src["models"]["output"] and src["execution"]["queue"]  # the source keeps its run


def test_clone_hyperparams_replace_everything(raw: RawClient, sim: Simulator) -> None:
    source = sim.create_task("params", hyperparams={"Args": {"lr": 0.1, "epochs": 5}, "General": {"seed": 1}})
    new = {"Args": {"resume_from": {"section": "Args", "name": "resume_from", "value": "s3://c.pt"}}}
    clone_id = raw.ok("tasks.clone", task=source, new_task_hyperparams=new)["id"]
    params = sim.task(clone_id)["hyperparams"]
    assert list(params) == ["Args"] and list(params["Args"]) == ["resume_from"]


@pytest.mark.parametrize(
    ("source_parent", "new_parent", "expected"),
    [
        (None, None, "source"),  # no parent anywhere: the source becomes the parent
        ("grand", None, "grand"),  # otherwise the source's own parent is inherited
        ("grand", "explicit", "explicit"),  # new_task_parent wins
    ],
)
def test_clone_parent_rule(raw: RawClient, sim: Simulator, source_parent: str | None, new_parent: str | None,
                           expected: str) -> None:
    ids = {"grand": sim.create_task("grandparent"), "explicit": sim.create_task("explicit parent")}
    source = sim.create_task("source", parent=ids[source_parent] if source_parent else None)
    ids["source"] = source
    body = {"task": source, **({"new_task_parent": ids[new_parent]} if new_parent else {})}
    clone_id = raw.ok("tasks.clone", **body)["id"]
    assert sim.task(clone_id)["parent"] == ids[expected]
    assert clone_id in [t["id"] for t in raw.ok("tasks.get_all", parent=[ids[expected]])["tasks"]]


def test_clone_with_unknown_parent_fails(raw: RawClient, sim: Simulator) -> None:
    source = sim.create_task("source")
    code, subcode, msg = raw.error("tasks.clone", task=source, new_task_parent="f" * 32)
    assert (code, subcode) == (400, 101) and "invalid parent" in msg


# ---- enqueue / dequeue -----------------------------------------------------------------------


def test_enqueue_by_name_auto_creates_the_queue(raw: RawClient, sim: Simulator) -> None:
    task_id = sim.create_task("typo")
    assert sim.state.queue_id("gpu-qeueu") is None
    res = raw.ok("tasks.enqueue", task=task_id, queue_name="gpu-qeueu")
    queue_id = sim.state.queue_id("gpu-qeueu")
    assert queue_id is not None and res["fields"]["execution.queue"] == queue_id
    assert res["queued"] == 1
    assert sim.queue_entries("gpu-qeueu") == [task_id]
    assert "gpu-qeueu" in [q["name"] for q in raw.ok("queues.get_all")["queues"]]


def test_enqueue_twice_into_the_same_queue_is_refused(raw: RawClient, sim: Simulator) -> None:
    task_id = sim.create_task("once")
    queue_id = sim.state.queue_id("default")
    raw.ok("tasks.enqueue", task=task_id, queue=queue_id)
    code, subcode, _ = raw.error("tasks.enqueue", task=task_id, queue=queue_id)
    assert (code, subcode) == (400, 706)  # TaskAlreadyQueued
    task = sim.task(task_id)
    assert (task["status"], task["status_reason"]) == ("queued", "failed enqueueing")
    assert sim.queue_entries("default") == [task_id]


def test_enqueue_into_a_missing_queue_reverts_the_status(raw: RawClient, sim: Simulator) -> None:
    task_id = _task_in(sim, st.STOPPED)
    code, subcode, _ = raw.error("tasks.enqueue", task=task_id, queue="e" * 32)
    assert (code, subcode) == (400, 701)
    task = sim.task(task_id)
    assert (task["status"], task["status_reason"]) == ("stopped", "failed enqueueing")


def test_enqueue_moves_between_queues_and_drops_the_development_tag(raw: RawClient, sim: Simulator) -> None:
    task_id = sim.create_task("mover", system_tags=["development"])
    raw.ok("tasks.enqueue", task=task_id, queue_name="default")
    raw.ok("tasks.enqueue", task=task_id, queue_name="other-queue")
    assert sim.queue_entries("default") == [] and sim.queue_entries("other-queue") == [task_id]
    assert sim.task(task_id)["system_tags"] == []
    raw.ok("tasks.dequeue", task=task_id)
    assert sim.task(task_id)["status"] == "created" and sim.queue_entries("other-queue") == []


def test_enqueue_with_queue_and_name_is_a_validation_error(raw: RawClient, sim: Simulator) -> None:
    task_id = sim.create_task("both")
    assert raw.error("tasks.enqueue", task=task_id, queue=sim.state.queue_id("default"), queue_name="x")[:2] == (
        400, 12)


def test_get_next_task_hands_each_entry_to_one_caller(raw: RawClient, sim: Simulator) -> None:
    ids = [sim.create_task(f"entry {i}") for i in range(3)]
    for task_id in ids:
        sim.enqueue(task_id)
    queue_id = sim.state.queue_id("default")
    got = [raw.ok("queues.get_next_task", queue=queue_id).get("entry", {}).get("task") for _ in range(4)]
    assert got == [*ids, None]


# ---- stop ------------------------------------------------------------------------------------


def test_stop_of_a_queued_task_stops_it_at_once(raw: RawClient, sim: Simulator) -> None:
    task_id = sim.create_task("waiting")
    sim.enqueue(task_id)
    raw.ok("tasks.stop", task=task_id)
    task = sim.task(task_id)
    assert (task["status"], task["status_reason"], task["status_message"]) == ("stopped", "", "Stopped by sim-user")
    assert sim.queue_entries("default") == []


def test_stop_with_a_recent_worker_only_says_stopping_and_bumps_last_update(raw: RawClient, sim: Simulator) -> None:
    task_id = _task_in(sim, st.IN_PROGRESS)
    sim.state.status_report("ghost-01:gpu0", task_id)  # a worker reported it, then vanished
    before = sim.task(task_id)["last_update"]
    for force in (False, True):
        raw.ok("tasks.stop", task=task_id, force=force)
        task = sim.task(task_id)
        assert (task["status"], task["status_message"]) == ("in_progress", "stopping")
        assert task["last_update"] > before
        before = task["last_update"]


def test_stop_after_the_worker_window_stops_it(raw: RawClient, sim: Simulator) -> None:
    task_id = _task_in(sim, st.IN_PROGRESS)
    sim.state.status_report("ghost-01:gpu0", task_id)
    sim.clock.advance(601)  # task_update_timeout: 600 s without an update
    raw.ok("tasks.stop", task=task_id)
    assert (sim.task(task_id)["status"], sim.task(task_id)["status_message"]) == ("stopped", "Stopped by sim-user")


def test_stopped_force_stops_a_zombie_at_once(raw: RawClient, sim: Simulator) -> None:
    task_id = _task_in(sim, st.IN_PROGRESS)
    sim.state.status_report("ghost-01:gpu0", task_id)
    raw.ok("tasks.stopped", task=task_id, force=True, status_reason="agent lost", status_message="watchdog")
    assert sim.task(task_id)["status"] == "stopped"


# ---- edits, tags, names, deletion ------------------------------------------------------------


def test_edit_needs_force_outside_drafts(raw: RawClient, sim: Simulator) -> None:
    task_id = _task_in(sim, st.STOPPED)
    assert raw.error("tasks.edit", task=task_id, comment="x")[:2] == (400, 110)
    res = raw.ok("tasks.edit", task=task_id, comment="note", force=True)
    assert res["updated"] == 1 and sim.task(task_id)["comment"] == "note"


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        ("none", {"Args": {"lr": "0.5", "epochs": "5"}, "General": {"seed": "1"}}),  # merge per parameter
        ("section", {"Args": {"lr": "0.5"}, "General": {"seed": "1"}}),  # replace the sections sent
        ("all", {"Args": {"lr": "0.5"}}),  # replace everything
    ],
)
def test_edit_hyper_params_modes(raw: RawClient, sim: Simulator, replace: str, expected: dict[str, object]) -> None:
    task_id = sim.create_task("params", hyperparams={"Args": {"lr": 0.1, "epochs": 5}, "General": {"seed": 1}})
    raw.ok("tasks.edit_hyper_params", task=task_id, replace_hyperparams=replace,
           hyperparams=[{"section": "Args", "name": "lr", "value": "0.5"}])
    params = sim.task(task_id)["hyperparams"]
    assert {s: {n: p["value"] for n, p in sec.items()} for s, sec in params.items()} == expected
    got = raw.ok("tasks.get_hyper_params", tasks=[task_id])["params"][0]
    assert got["task"] == task_id and {p["name"] for p in got["hyperparams"]} >= {"lr"}


def test_edit_hyper_params_of_a_stopped_task_fails_even_forced(raw: RawClient, sim: Simulator) -> None:
    task_id = _task_in(sim, st.STOPPED)
    code, subcode, msg = raw.error("tasks.edit_hyper_params", task=task_id, force=True,
                                   hyperparams=[{"section": "Args", "name": "lr", "value": "1"}])
    assert (code, subcode) == (400, 110) and "expected=created" in msg


def test_update_tags_is_atomic_and_keeps_last_update(raw: RawClient, sim: Simulator) -> None:
    a, b = sim.create_task("tag a", tags=["keep", "old"]), sim.create_task("tag b")
    before = sim.task(a)["last_update"]
    assert raw.ok("tasks.update_tags", ids=[a, b], add_tags=["resumed"], remove_tags=["old"])["updated"] == 4
    assert sim.task(a)["tags"] == ["keep", "resumed"] and sim.task(b)["tags"] == ["resumed"]
    assert sim.task(a)["last_update"] == before
    assert raw.error("tasks.update_tags", ids=[a, "9" * 32], add_tags=["x"])[:2] == (400, 101)
    assert sim.task(a)["tags"] == ["keep", "resumed"]  # nothing applied when one id is wrong


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("tasks.create", {"name": "ab", "type": "training"}),
        ("queues.create", {"name": "ab"}),
        ("projects.create", {"name": "ab"}),
        ("tasks.enqueue", {"queue_name": "ab"}),  # the auto-created queue is validated too
    ],
)
def test_names_shorter_than_three_characters_are_rejected(raw: RawClient, sim: Simulator, endpoint: str,
                                                          body: dict[str, str]) -> None:
    if endpoint == "tasks.enqueue":
        body = {**body, "task": sim.create_task("named")}
    assert raw.error(endpoint, **body)[0] == 400
    if endpoint == "tasks.enqueue":
        assert sim.task(body["task"])["status"] == "created"


def test_delete_leaves_children_with_a_deleted_parent(raw: RawClient, sim: Simulator) -> None:
    parent = sim.create_task("parent")
    child = sim.create_task("child", parent=parent)
    raw.ok("tasks.delete", task=parent)
    assert sim.task(child)["parent"] == f"__DELETED__{parent}"
    assert raw.error("tasks.get_by_id", task=parent)[:2] == (400, 101)
    running = _task_in(sim, st.IN_PROGRESS)
    assert raw.error("tasks.delete", task=running)[:2] == (400, 123)
    raw.ok("tasks.delete", task=running, force=True)


def test_reset_clears_the_run(raw: RawClient, sim: Simulator) -> None:
    sim.start_agents(1)
    task_id = sim.submit("reset me")
    sim.wait_for(lambda: sim.models(task_id), 5)
    sim.complete(task_id)
    raw.ok("tasks.reset", task=task_id)
    task = sim.task(task_id)
    assert (task["status"], task["status_reason"]) == ("created", "reset")
    assert task["models"]["output"] == [] and task["last_iteration"] == 0
    assert "last_worker" not in task and "queue" not in task["execution"]


# ---- concurrency: the guarantees exactly-once recovery leans on --------------------------------


def test_concurrent_get_next_task_hands_out_each_entry_once(sim: Simulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ids = [sim.create_task(f"race entry {i}") for i in range(40)]
    for task_id in ids:
        sim.enqueue(task_id)
    queue_id = sim.state.queue_id("default")

    def drain(_: int) -> list[str]:
        client, got = RawClient(sim), []
        while entry := client.ok("queues.get_next_task", queue=queue_id).get("entry"):
            got.append(entry["task"])
        return got

    with ThreadPoolExecutor(8) as pool:
        handed = [t for batch in pool.map(drain, range(8)) for t in batch]
    assert sorted(handed) == sorted(ids)


def test_concurrent_enqueue_of_one_task_succeeds_once(sim: Simulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    task_id = _task_in(sim, st.STOPPED)
    queue_id = sim.state.queue_id("default")
    clients = [RawClient(sim) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda c: c.call("tasks.enqueue", task=task_id, queue=queue_id).status_code, clients))
    assert sorted(codes) == [200] + [400] * 7
    assert sim.queue_entries("default") == [task_id]
