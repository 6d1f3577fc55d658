"""Hypothesis strategies for hostile input: what a confused server, a proxy or a person may hand the watchdog.

Who uses them: tests/test_hostile_records.py and tests/test_hostile_config.py. Every strategy mixes plausible
values (so records get deep into the code) with the wrong ones: missing keys, nulls, wrong types, unicode
(lone surrogates too, as `json.loads` produces from `\\ud800`), dates out of range, huge collections.
"""

from __future__ import annotations

from datetime import timezone
from typing import Any

from hypothesis import strategies as st

from watchdog.snapshots import TASK_LIST_FIELDS

HEX = "0123456789abcdef"

# Text that breaks naive code: markup, control characters, RTL marks, emoji, a lone surrogate.
nasty_text = st.one_of(
    st.text(max_size=40),
    st.integers(1000, 6000).map(lambda n: "x" * n),  # longer than any message limit
    st.sampled_from(
        [
            "",
            " ",
            "\ud800",
            "a\x00b",
            "<b>&amp;</b>",
            "*_`~",
            "\u202eevil",
            "🧨" * 20,
            "\n\r\t",
            "None",
            "null",
            "in_progress",
        ]
    ),
)

# Dates as ClearML sends them, and as it must never send them.
dates = st.one_of(
    st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2026-11-23T09:16:37.805433+00:00",
            "2026-11-23T09:16:37",
            "2026-11-23T09:16:37Z",
            "0001-01-01T00:00:00+01:00",  # out of range once moved to UTC
            "9999-12-31T23:59:59-01:00",
            "yesterday-ish",
            "2026-13-45T99:99:99",
            "",
            "1795460705",
        ]
    ),
    st.integers(),
    st.floats(),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)

json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(nasty_text, st.just("id")), inner, max_size=4)
    ),
    max_leaves=12,
)

ids = st.one_of(st.text(HEX, min_size=32, max_size=32), nasty_text, st.none(), st.integers())
statuses = st.one_of(
    st.sampled_from(["in_progress", "stopped", "failed", "queued", "created", "completed", "closed", "unknown"]),
    json_values,
)
status_reasons = st.one_of(
    st.sampled_from(
        [
            "",
            "user abort",
            "Forced stop (non-responsive)",
            "worker execution exit code -15",
            "worker execution exit code 137",
            "worker execution exit code 1",
            "clearml-watchdog: agent lost",
            "task was stopped by tasks.stop",
        ]
    ),
    json_values,
)


def _field_value(name: str) -> st.SearchStrategy[Any]:
    if name == "id":
        return ids
    if name == "status":
        return statuses
    if name in ("status_reason", "status_message"):
        return status_reasons
    if name in ("status_changed", "last_update", "last_worker_report", "created", "started"):
        return dates
    if name in ("tags", "system_tags"):
        return st.one_of(
            st.lists(st.one_of(nasty_text, st.sampled_from(["development", "watchdog:handled", "watchdog:resumed"]))),
            json_values,
        )
    if name == "execution.queue":
        return st.one_of(st.text(HEX, min_size=32, max_size=32), json_values)
    return json_values


def task_records() -> st.SearchStrategy[Any]:
    """A `tasks.get_all` record: any subset of the projected fields, each plausible or hostile; or not a dict."""
    fields = [f for f in TASK_LIST_FIELDS if f != "execution.queue"]
    record = st.fixed_dictionaries(
        {},
        optional={
            **{name: _field_value(name) for name in fields},
            "execution": st.one_of(
                st.fixed_dictionaries({}, optional={"queue": _field_value("execution.queue")}), json_values
            ),
            "unexpected": json_values,
        },
    )
    return st.one_of(record, record, record, json_values)


def worker_records() -> st.SearchStrategy[Any]:
    """A `workers.get_all` record, plausible or hostile."""
    record = st.fixed_dictionaries(
        {},
        optional={
            "id": ids,
            "task": st.one_of(st.fixed_dictionaries({}, optional={"id": ids}), json_values),
            "last_report_time": dates,
            "queues": st.one_of(st.lists(st.one_of(st.fixed_dictionaries({"id": ids}), json_values)), json_values),
        },
    )
    return st.one_of(record, record, json_values)


def model_records() -> st.SearchStrategy[Any]:
    record = st.fixed_dictionaries(
        {},
        optional={
            "id": ids,
            "name": nasty_text,
            "uri": st.one_of(st.sampled_from(["s3://b/m.pt", "file:///tmp/m.pt", "https://files/x"]), json_values),
            "last_update": dates,
            "created": dates,
            "last_iteration": json_values,
        },
    )
    return st.one_of(record, record, json_values)


def hyperparams() -> st.SearchStrategy[Any]:
    """`hyperparams` of a full task record: sections of named items, plausible or hostile."""
    item = st.one_of(
        st.fixed_dictionaries(
            {"value": st.one_of(nasty_text, json_values)},
            optional={"section": nasty_text, "name": nasty_text, "type": nasty_text, "description": nasty_text},
        ),
        json_values,
    )
    return st.one_of(
        st.dictionaries(nasty_text, st.dictionaries(nasty_text, item, max_size=5), max_size=4), json_values
    )


def detail_records() -> st.SearchStrategy[Any]:
    """A `tasks.get_by_id` task: a list record plus hyperparameters, artifacts and a comment."""
    return st.one_of(
        st.tuples(task_records(), hyperparams(), json_values, json_values).map(_merge_details),
        json_values,
    )


def _merge_details(parts: tuple[Any, Any, Any, Any]) -> Any:
    record, params, artifacts, comment = parts
    if not isinstance(record, dict):
        return record
    execution = record.get("execution")
    merged_execution = {**execution, "artifacts": artifacts} if isinstance(execution, dict) else execution
    return {**record, "hyperparams": params, "execution": merged_execution, "comment": comment}
