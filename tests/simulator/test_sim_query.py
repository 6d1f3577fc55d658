"""tasks.get_all as the server answers it: filters, date filters, projection, order, paging."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_h
from sim_helpers import RawClient

from watchdog.simulator import ApiError, Simulator, dates
from watchdog.simulator import transitions as st


def _ids(raw: RawClient, **body: object) -> list[str]:
    return [t["id"] for t in raw.ok("tasks.get_all", **body)["tasks"]]


def _at(sim: Simulator, delta_s: float) -> str:
    return (datetime.fromtimestamp(sim.clock.now(), timezone.utc) + timedelta(seconds=delta_s)).isoformat()


@pytest.fixture
def stopped_pair(sim: Simulator) -> tuple[str, str, str]:
    """An early and a late stopped task, and a moment between their status changes."""
    early = sim.create_task("early")
    sim.state.change_status(early, st.STOPPED, force=True)
    sim.clock.advance(10)
    middle = _at(sim, 0)
    sim.clock.advance(10)
    late = sim.create_task("late")
    sim.state.change_status(late, st.STOPPED, force=True)
    return early, late, middle


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ([">{middle}"], ["late"]),
        ([">={middle}"], ["late"]),
        (["<{middle}"], ["early"]),
        (["<={middle}"], ["early"]),
        (["{before}", "{middle}"], ["early"]),  # a two-value range [from, to]
        ([None, "{middle}"], ["early"]),  # open-ended range
        ([">{middle_naive}"], ["late"]),  # a naive time is UTC
        ([">{middle_z}"], ["late"]),  # ...and so is a Z suffix
        ([">1700000000"], ["early", "late"]),  # an epoch cannot be parsed: the filter is dropped
        ([">yesterday"], ["early", "late"]),  # nor can words
        ([">{middle}", ">garbage"], ["late"]),  # only the unreadable part is dropped
    ],
)
def test_status_changed_filters(raw: RawClient, sim: Simulator, stopped_pair: tuple[str, str, str],
                                condition: list[str | None], expected: list[str]) -> None:
    early, late, middle = stopped_pair
    values = {
        "middle": middle,
        "middle_naive": middle.replace("+00:00", ""),
        "middle_z": middle.replace("+00:00", "Z"),
        "before": _at(sim, -3600),
    }
    filled = [c.format(**values) if c else None for c in condition]
    names = {early: "early", late: "late"}
    found = _ids(raw, status=["stopped"], status_changed=filled, order_by=["status_changed"])
    assert [names[i] for i in found] == expected


def test_last_update_filter_finds_stale_running_tasks(raw: RawClient, sim: Simulator) -> None:
    stale = sim.create_task("stale")
    sim.state.change_status(stale, st.IN_PROGRESS)
    sim.clock.advance(300)
    fresh = sim.create_task("fresh")
    sim.state.change_status(fresh, st.IN_PROGRESS)
    assert _ids(raw, status=["in_progress"], last_update=[f"<{_at(sim, -60)}"]) == [stale]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["a"], ["ab", "a"]),  # any of
        (["-b"], ["a", "none"]),  # exclude with the legacy "-" prefix
        (["__$not", "b"], ["a", "none"]),  # exclude with the operator
        (["__$all", "a", "b"], ["ab"]),  # all of
        ([None], ["none"]),  # empty
        (["a", "-b"], ["a"]),
    ],
)
def test_tag_filters(raw: RawClient, sim: Simulator, tags: list[str | None], expected: list[str]) -> None:
    named = {
        sim.create_task("tagged ab", tags=["a", "b"]): "ab",
        sim.create_task("tagged a", tags=["a"]): "a",
        sim.create_task("no tags"): "none",
    }
    assert [named[i] for i in _ids(raw, tags=tags)] == expected


def test_scalar_filters_and_hidden_tasks(raw: RawClient, sim: Simulator) -> None:
    parent = sim.create_task("parent task")
    child = sim.create_task("child task", parent=parent, task_type="testing")
    hidden = sim.create_task("hidden task", system_tags=["hidden"])
    assert _ids(raw, parent=[parent]) == [child]
    assert _ids(raw, type=["testing"]) == [child]
    assert _ids(raw, type=["-testing"]) == [parent]  # hidden tasks are left out by default
    assert hidden in _ids(raw, search_hidden=True)
    assert _ids(raw, id=[hidden]) == [hidden]  # ...but found by id
    assert _ids(raw, name="^child") == [child]  # name is a regex
    assert _ids(raw, user=[sim.state.identity.user], project=[sim.state.project_id("sim-project")]) == [
        parent, child]


def test_only_fields_projects_dotted_paths(raw: RawClient, sim: Simulator) -> None:
    task_id = sim.create_task("projected", hyperparams={"Args": {"lr": 0.1}})
    sim.enqueue(task_id)
    (task,) = raw.ok("tasks.get_all", id=[task_id], only_fields=["name", "execution.queue", "hyperparams.Args.lr"])[
        "tasks"]
    assert task == {
        "id": task_id,
        "name": "projected",
        "execution": {"queue": sim.state.queue_id("default")},
        "hyperparams": {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1", "type": "float",
                                        "description": ""}}},
    }
    (full,) = raw.ok("tasks.get_all", id=[task_id], only_fields=["-script", "-hyperparams"])["tasks"]
    assert "script" not in full and "hyperparams" not in full and full["status"] == "queued"


def test_order_by_and_pages(raw: RawClient, sim: Simulator) -> None:
    ids = [sim.create_task(f"page {i:02d}") for i in range(12)]
    by_name_desc = _ids(raw, order_by=["-name"], page=0, page_size=5)
    assert by_name_desc == list(reversed(ids))[:5]
    pages = [_ids(raw, page=p, page_size=5) for p in range(4)]
    assert pages[0] + pages[1] + pages[2] == ids and pages[3] == []
    assert _ids(raw, order_by=["id"], page_size=3) == sorted(ids)[:3]
    assert raw.error("tasks.get_all", page=-1, page_size=5)[:2] == (400, 12)


def test_page_size_is_capped_at_500(raw: RawClient, sim: Simulator) -> None:
    for i in range(510):
        sim.state.seed_running_task(f"many {i}")
    assert len(_ids(raw, status=["in_progress"], page_size=1000)) == 500
    assert len(_ids(raw, status=["in_progress"])) == 500  # no paging given: one page of 500
    assert len(_ids(raw, status=["in_progress"], page=1, page_size=500)) == 10


def test_scroll(raw: RawClient, sim: Simulator) -> None:
    ids = [sim.create_task(f"scroll {i}") for i in range(7)]
    first = raw.ok("tasks.get_all", scroll_id=None, size=3)
    second = raw.ok("tasks.get_all", scroll_id=first["scroll_id"], size=3)
    third = raw.ok("tasks.get_all", scroll_id=second["scroll_id"], size=3)
    assert [t["id"] for t in first["tasks"] + second["tasks"] + third["tasks"]] == ids
    assert raw.error("tasks.get_all", scroll_id="nope", size=3)[:2] == (400, 1104)
    assert raw.error("tasks.get_all", scroll_id=None)[:2] == (400, 12)  # size is required


def test_cached_answers_follow_every_change(raw: RawClient, sim: Simulator) -> None:
    """Pages are served from a cached match list; any change the filter can see refreshes it."""
    a = sim.create_task("cache a")
    b = sim.create_task("cache b")
    assert _ids(raw, status=["created"], tags=["-done"]) == [a, b]
    sim.state.update_tags([a], add=["done"])
    assert _ids(raw, status=["created"], tags=["-done"]) == [b]
    sim.state.change_status(b, st.IN_PROGRESS)
    assert _ids(raw, status=["created"], tags=["-done"]) == []
    before = _ids(raw, status=["in_progress"], last_update=[f">{_at(sim, 5)}"])
    sim.clock.advance(10)
    sim.state.ping(b)
    assert before == [] and _ids(raw, status=["in_progress"], last_update=[f">{_at(sim, -5)}"]) == [b]


def test_models_and_projects_and_queues_queries(raw: RawClient, sim: Simulator) -> None:
    sim.start_agents(1)
    task_id = sim.submit("with models")
    sim.wait_for(lambda: sim.models(task_id), 5)
    models = raw.ok("models.get_all", task=[task_id], only_fields=["id", "uri", "last_update", "last_iteration"],
                    order_by=["-last_update"])["models"]
    assert len(models) == 1 and set(models[0]) == {"id", "uri", "last_update", "last_iteration"}
    projects = raw.ok("projects.get_all", name="^sim-project$", only_fields=["id", "name"])["projects"]
    assert projects == [{"id": sim.state.project_id("sim-project"), "name": "sim-project"}]
    queues = raw.ok("queues.get_all", only_fields=["id", "name"])["queues"]
    assert queues == [{"id": sim.state.queue_id("default"), "name": "default"}]
    # the server would try re.compile() on a list and fail: so does the simulator
    assert raw.error("projects.get_all", name=["sim-project"])[0] == 500


# A filter the server cannot read is a 400 (or silently dropped for dates), never a crash.
_json_scalars = st_h.one_of(st_h.none(), st_h.booleans(), st_h.integers(), st_h.floats(allow_nan=False),
                            st_h.text(max_size=30))
_json_values = st_h.recursive(_json_scalars, lambda inner: st_h.lists(inner, max_size=4), max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st_h.sampled_from(
        ["status_changed", "last_update", "tags", "system_tags", "status", "id", "parent", "started",
         "last_iteration", "page", "page_size", "order_by", "only_fields", "type", "execution.queue"]
    ),
    value=_json_values,
)
def test_any_filter_value_is_answered_or_refused_never_crashes(sim: Simulator, key: str, value: object) -> None:
    if not sim.state.query_tasks({"status": ["stopped"], "page_size": 1})[0]:
        task_id = sim.create_task("fuzz target", tags=["a"])
        sim.state.change_status(task_id, st.STOPPED, force=True)
    try:
        sim.state.query_tasks({key: value})
    except ApiError as err:
        assert err.code == 400, err.msg


@settings(max_examples=300, deadline=None)
@given(text=st_h.text(max_size=40))
def test_any_date_text_parses_or_is_dropped(text: str) -> None:
    assert dates.normalize(text) is None or dates.normalize(text).endswith("+00:00")  # type: ignore[union-attr]
