"""One handler per ClearML endpoint: read the request body the way the server's schema does,
call ``State``, return the ``data`` part of the response.

Request keys the server does not know are ignored (the SDK sends ``method``, ``search_hidden``
and friends). Response shapes follow apiserver/schema/services/*.conf for the fields clients
read. ``auth.login`` lives in server.py because it is about credentials, not state.
Caller: server.py, through ``ENDPOINTS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import errors
from . import transitions as st
from .query import Doc
from .state import Identity, State


@dataclass(frozen=True)
class Call:
    """One decoded API call."""

    endpoint: str
    version: str
    data: Doc
    identity: Identity
    lines: tuple[Doc, ...] = ()  # items of a json-lines batch body


Handler = Callable[[State, Call], Doc]


# ---- request reading -----------------------------------------------------------------------


def _required(data: Mapping[str, Any], key: str) -> Any:
    value = data.get(key)
    if value is None or value == "":
        raise errors.required_property(key)
    return value


def _task(call: Call) -> str:
    value = _required(call.data, "task")
    if not isinstance(value, str):
        raise errors.VALIDATION_ERROR(message=f"{value!r} is not of type 'string'", path=["task"])
    return value


def _str(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    return default if value is None else str(value)


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value in (None, "") else str(value)


def _bool(data: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _ids(data: Mapping[str, Any], key: str) -> list[str]:
    return [str(v) for v in _list(data, key)]


def _user(call: Call) -> str:
    return call.identity.user


# ---- tasks ---------------------------------------------------------------------------------


def tasks_get_all(state: State, call: Call) -> Doc:
    tasks, extra = state.query_tasks(call.data)
    return {"tasks": tasks, **extra}


def tasks_get_by_id(state: State, call: Call) -> Doc:
    return {"task": state.get_task(_task(call))}


def tasks_get_by_id_ex(state: State, call: Call) -> Doc:
    if "id" not in call.data:
        raise errors.MISSING_REQUIRED_FIELDS(missing=["id"])
    tasks, _ = state.query_tasks(call.data)
    return {"tasks": tasks}


def tasks_create(state: State, call: Call) -> Doc:
    return {"id": state.create_task(call.data, user=_user(call))}


def tasks_clone(state: State, call: Call) -> Doc:
    d = call.data
    return state.clone_task(
        _task(call),
        name=_opt_str(d, "new_task_name"),
        comment=_opt_str(d, "new_task_comment"),
        parent=_opt_str(d, "new_task_parent"),
        project=_opt_str(d, "new_task_project"),
        tags=_ids(d, "new_task_tags") or None,
        system_tags=_ids(d, "new_task_system_tags") or None,
        hyperparams=d.get("new_task_hyperparams") or None,
        configuration=d.get("new_task_configuration") or None,
        container=d.get("new_task_container") or None,
        execution_overrides=d.get("execution_overrides") or None,
        input_models=d.get("new_task_input_models") or None,
        new_project_name=_opt_str(d, "new_project_name"),
        user=_user(call),
    )


def tasks_edit(state: State, call: Call) -> Doc:
    return state.edit_task(_task(call), call.data, force=_bool(call.data, "force"), user=_user(call))


def tasks_update(state: State, call: Call) -> Doc:
    fields = {
        k: v
        for k, v in call.data.items()
        if k in ("name", "comment", "tags", "system_tags", "project", "status_message", "status_reason", "created")
    }
    return state.edit_task(_task(call), fields, force=True, user=_user(call))


def tasks_set_requirements(state: State, call: Call) -> Doc:
    requirements = call.data.get("requirements")
    return state.set_requirements(_task(call), requirements if isinstance(requirements, dict) else {}, _user(call))


def tasks_edit_hyper_params(state: State, call: Call) -> Doc:
    items = _required(call.data, "hyperparams")
    replace = _str(call.data, "replace_hyperparams", "none")
    if replace not in ("none", "section", "all"):
        raise errors.VALIDATION_ERROR(f"Invalid replace_hyperparams value: {replace}")
    updated = state.edit_hyper_params(
        _task(call), list(items), replace=replace, force=_bool(call.data, "force"), user=_user(call)
    )
    return {"updated": updated}


def tasks_delete_hyper_params(state: State, call: Call) -> Doc:
    items = list(_required(call.data, "hyperparams"))
    return {"deleted": state.delete_hyper_params(_task(call), items, force=_bool(call.data, "force"), user=_user(call))}


def tasks_get_hyper_params(state: State, call: Call) -> Doc:
    return {"params": state.get_hyper_params(_ids(call.data, "tasks") or list(_required(call.data, "tasks")))}


def tasks_edit_configuration(state: State, call: Call) -> Doc:
    items = list(_required(call.data, "configuration"))
    updated = state.edit_configuration(
        _task(call),
        items,
        replace=_bool(call.data, "replace_configuration"),
        force=_bool(call.data, "force"),
        user=_user(call),
    )
    return {"updated": updated}


def tasks_get_configurations(state: State, call: Call) -> Doc:
    tasks = _ids(call.data, "tasks") or list(_required(call.data, "tasks"))
    return {"configurations": state.get_configurations(tasks, _ids(call.data, "names") or None)}


def tasks_get_configuration_names(state: State, call: Call) -> Doc:
    tasks = _ids(call.data, "tasks") or list(_required(call.data, "tasks"))
    found = state.get_configurations(tasks)
    return {"configurations": [{"task": c["task"], "names": [i["name"] for i in c["configuration"]]} for c in found]}


def tasks_enqueue(state: State, call: Call) -> Doc:
    d = call.data
    return state.enqueue(
        _task(call),
        queue_id=_opt_str(d, "queue"),
        queue_name=_opt_str(d, "queue_name"),
        reason=_str(d, "status_reason"),
        message=_str(d, "status_message"),
        force=_bool(d, "force"),
        update_execution_queue=_bool(d, "update_execution_queue", True),
        verify_watched_queue=_bool(d, "verify_watched_queue"),
        user=_user(call),
    )


def tasks_dequeue(state: State, call: Call) -> Doc:
    d = call.data
    return state.dequeue(
        _task(call),
        reason=_str(d, "status_reason"),
        message=_str(d, "status_message"),
        remove_from_all_queues=_bool(d, "remove_from_all_queues"),
        new_status=_opt_str(d, "new_status"),
        user=_user(call),
    )


def tasks_stop(state: State, call: Call) -> Doc:
    return state.stop(
        _task(call),
        reason=_str(call.data, "status_reason"),
        force=_bool(call.data, "force"),
        user=_user(call),
        user_name=call.identity.user_name,
    )


def _status_endpoint(new_status: str) -> Handler:
    def handler(state: State, call: Call) -> Doc:
        res = state.set_status(
            _task(call),
            new_status,
            reason=_str(call.data, "status_reason"),
            message=_str(call.data, "status_message"),
            force=_bool(call.data, "force"),
            user=_user(call),
        )
        if new_status == st.IN_PROGRESS:
            res["started"] = res["updated"]
        return res

    handler.__doc__ = f"tasks.* that moves a task to {new_status!r} under the transition rules."
    return handler


def tasks_completed(state: State, call: Call) -> Doc:
    res = _status_endpoint(st.COMPLETED)(state, call)
    if _bool(call.data, "publish"):
        published = state.set_status(_task(call), st.PUBLISHED, force=_bool(call.data, "force"), user=_user(call))
        res["published"] = published["updated"]
        res["fields"]["status"] = st.PUBLISHED
    return res


def tasks_reset(state: State, call: Call) -> Doc:
    return state.reset(
        _task(call), force=_bool(call.data, "force"), clear_all=_bool(call.data, "clear_all"), user=_user(call)
    )


def tasks_delete(state: State, call: Call) -> Doc:
    return state.delete_task(
        _task(call),
        force=_bool(call.data, "force"),
        delete_output_models=_bool(call.data, "delete_output_models", True),
    )


def tasks_update_tags(state: State, call: Call) -> Doc:
    d = call.data
    return {"updated": state.update_tags(_ids(d, "ids"), _ids(d, "add_tags"), _ids(d, "remove_tags"), user=_user(call))}


def tasks_ping(state: State, call: Call) -> Doc:
    state.ping(_task(call), user=_user(call))
    return {}


def tasks_add_or_update_artifacts(state: State, call: Call) -> Doc:
    artifacts = [a for a in _list(call.data, "artifacts") if isinstance(a, Mapping)]
    return {"updated": state.add_or_update_artifacts(_task(call), artifacts, force=True, user=_user(call))}


def tasks_add_or_update_model(state: State, call: Call) -> Doc:
    d = call.data
    iteration = d.get("iteration")
    return {
        "updated": state.add_or_update_model(
            _task(call),
            str(_required(d, "name")),
            str(_required(d, "model")),
            str(_required(d, "type")),
            iteration if isinstance(iteration, int) else None,
            user=_user(call),
        )
    }


# ---- queues --------------------------------------------------------------------------------


def _queue(call: Call) -> str:
    return str(_required(call.data, "queue"))


def queues_get_all(state: State, call: Call) -> Doc:
    queues, extra = state.query_queues(call.data)
    return {"queues": queues, **extra}


def queues_get_by_id(state: State, call: Call) -> Doc:
    limit = call.data.get("max_task_entries")
    return {"queue": state.get_queue(_queue(call), limit if isinstance(limit, int) else None)}


def queues_create(state: State, call: Call) -> Doc:
    d = call.data
    qid = state.create_queue(
        str(_required(d, "name")), _ids(d, "tags"), _ids(d, "system_tags"), _opt_str(d, "display_name")
    )
    return {"id": qid}


def queues_delete(state: State, call: Call) -> Doc:
    state.delete_queue(_queue(call), force=_bool(call.data, "force"))
    return {"deleted": 1}


def queues_get_default(state: State, call: Call) -> Doc:
    found, _ = state.query_queues({"system_tags": ["default"]})
    if not found:
        raise errors.NO_DEFAULT_QUEUE()
    return {"id": found[0]["id"], "name": found[0]["name"]}


def queues_add_task(state: State, call: Call) -> Doc:
    added = state.add_to_queue(_queue(call), _task(call), _bool(call.data, "update_execution_queue", True))
    return {"added": added}


def queues_remove_task(state: State, call: Call) -> Doc:
    return {"removed": state.remove_from_queue(_queue(call), _task(call))}


def queues_get_next_task(state: State, call: Call) -> Doc:
    entry = state.get_next_task(_queue(call), _opt_str(call.data, "task"))
    if entry is None:
        return {}
    data: Doc = {"entry": entry}
    if _bool(call.data, "get_task_info"):
        data["task_info"] = {"company": state.identity.company, "user": state.identity.user}
    return data


def queues_get_num_entries(state: State, call: Call) -> Doc:
    return {"num": len(state.queue_entries(_queue(call)))}


# ---- workers -------------------------------------------------------------------------------


def _worker(call: Call) -> str:
    return str(_required(call.data, "worker"))


def workers_get_all(state: State, call: Call) -> Doc:
    last_seen = call.data.get("last_seen", 3600)
    return {
        "workers": state.workers(
            last_seen=last_seen if isinstance(last_seen, (int, float)) else 3600,
            worker_pattern=_opt_str(call.data, "worker_pattern"),
            tags=_ids(call.data, "tags") or None,
        )
    }


def workers_get_count(state: State, call: Call) -> Doc:
    last_seen = call.data.get("last_seen")
    return {"count": len(state.workers(last_seen=last_seen if isinstance(last_seen, (int, float)) else None))}


def workers_register(state: State, call: Call) -> Doc:
    timeout = call.data.get("timeout")
    state.register_worker(
        _worker(call),
        _ids(call.data, "queues"),
        float(timeout) if isinstance(timeout, (int, float)) else None,
        tags=_ids(call.data, "tags"),
        system_tags=_ids(call.data, "system_tags"),
    )
    return {}


def workers_unregister(state: State, call: Call) -> Doc:
    state.unregister_worker(_worker(call))
    return {}


def workers_status_report(state: State, call: Call) -> Doc:
    d = call.data
    _required(d, "timestamp")
    state.status_report(
        _worker(call),
        _opt_str(d, "task"),
        _opt_str(d, "queue"),
        _ids(d, "queues") or None,
        tags=_ids(d, "tags") if "tags" in d else None,
        user=_user(call),
    )
    return {}


# ---- models, projects, events, misc --------------------------------------------------------


def models_get_all(state: State, call: Call) -> Doc:
    models, extra = state.query_models(call.data)
    return {"models": models, **extra}


def models_get_by_id(state: State, call: Call) -> Doc:
    return {"model": state.get_model(str(_required(call.data, "model")))}


def models_get_by_task_id(state: State, call: Call) -> Doc:
    task = state.get_task(_task(call))
    outputs = task.get("models", {}).get("output") or []
    if not outputs:
        raise errors.INVALID_TASK_ID("no such model", task=task["id"])
    return {"model": state.get_model(outputs[-1]["model"])}


def models_create(state: State, call: Call) -> Doc:
    _required(call.data, "uri")
    _required(call.data, "name")
    return {"id": state.create_model(call.data, user=_user(call)), "created": True}


def models_update(state: State, call: Call) -> Doc:
    return state.update_model(str(_required(call.data, "model")), call.data, user=_user(call))


def models_update_for_task(state: State, call: Call) -> Doc:
    d = call.data
    task_id = _task(call)
    override = _opt_str(d, "override_model_id")
    if override:
        state.update_model(override, {"task": task_id}, user=_user(call))
        model_id, created = override, False
    else:
        uri = str(_required(d, "uri"))
        task = state.get_task(task_id)
        model_id = state.create_model(
            {
                "uri": uri,
                "name": _opt_str(d, "name") or task["name"],
                "comment": _str(d, "comment"),
                "tags": _ids(d, "tags"),
                "task": task_id,
                "project": task.get("project"),
                "iteration": d.get("iteration"),
                "ready": False,
            },
            user=_user(call),
        )
        created = True
    state.add_or_update_model(task_id, "Output Model", model_id, "output", user=_user(call))
    return {"id": model_id, "created": created, "updated": 1}


def projects_get_all(state: State, call: Call) -> Doc:
    projects, extra = state.query_projects(call.data)
    return {"projects": projects, **extra}


def projects_get_by_id(state: State, call: Call) -> Doc:
    return {"project": state.get_project(str(_required(call.data, "project")))}


def projects_create(state: State, call: Call) -> Doc:
    d = call.data
    pid = state.create_project(
        str(_required(d, "name")), _str(d, "description"), _ids(d, "tags"), _ids(d, "system_tags"), _user(call)
    )
    return {"id": pid}


def events_add_batch(state: State, call: Call) -> Doc:
    events: Sequence[Doc] = call.lines or tuple(e for e in _list(call.data, "events") if isinstance(e, dict))
    if not events:
        raise errors.ApiError(400, 17, "Batch request contains no items")
    return state.add_events(events, user=_user(call))


def events_add(state: State, call: Call) -> Doc:
    return state.add_events([call.data], user=_user(call))


def events_get_task_events(state: State, call: Call) -> Doc:
    d = call.data
    batch = d.get("batch_size")
    default_type = "log" if call.endpoint == "events.get_task_log" else None
    return state.events_page(
        _task(call), _opt_str(d, "event_type") or default_type, order=_str(d, "order", "asc"),
        scroll_id=_opt_str(d, "scroll_id"), batch_size=batch if isinstance(batch, int) else 500,
    )


def events_scalar_metrics_iter_histogram(state: State, call: Call) -> Doc:
    return state.scalar_histogram(_task(call))


def debug_ping(state: State, call: Call) -> Doc:
    return {"msg": "ClearML server"}


def server_info(state: State, call: Call) -> Doc:
    return {
        "version": state.config.server_version,
        "build": "sim",
        "commit": "",
        "api_version": state.config.api_version,
        "uid": state.identity.company,
    }


def users_get_current_user(state: State, call: Call) -> Doc:
    ident = call.identity
    return {
        "user": {
            "id": ident.user,
            "name": ident.user_name,
            "company": {"id": ident.company, "name": ident.company_name},
            "role": ident.role,
        },
        "getting_started": {},
    }


ENDPOINTS: dict[str, Handler] = {
    "tasks.get_all": tasks_get_all,
    "tasks.get_all_ex": tasks_get_all,
    "tasks.get_by_id": tasks_get_by_id,
    "tasks.get_by_id_ex": tasks_get_by_id_ex,
    "tasks.create": tasks_create,
    "tasks.clone": tasks_clone,
    "tasks.edit": tasks_edit,
    "tasks.update": tasks_update,
    "tasks.set_requirements": tasks_set_requirements,
    "tasks.edit_hyper_params": tasks_edit_hyper_params,
    "tasks.delete_hyper_params": tasks_delete_hyper_params,
    "tasks.get_hyper_params": tasks_get_hyper_params,
    "tasks.edit_configuration": tasks_edit_configuration,
    "tasks.get_configurations": tasks_get_configurations,
    "tasks.get_configuration_names": tasks_get_configuration_names,
    "tasks.enqueue": tasks_enqueue,
    "tasks.dequeue": tasks_dequeue,
    "tasks.stop": tasks_stop,
    "tasks.stopped": _status_endpoint(st.STOPPED),
    "tasks.started": _status_endpoint(st.IN_PROGRESS),
    "tasks.failed": _status_endpoint(st.FAILED),
    "tasks.close": _status_endpoint(st.CLOSED),
    "tasks.publish": _status_endpoint(st.PUBLISHED),
    "tasks.completed": tasks_completed,
    "tasks.reset": tasks_reset,
    "tasks.delete": tasks_delete,
    "tasks.update_tags": tasks_update_tags,
    "tasks.ping": tasks_ping,
    "tasks.add_or_update_artifacts": tasks_add_or_update_artifacts,
    "tasks.add_or_update_model": tasks_add_or_update_model,
    "queues.get_all": queues_get_all,
    "queues.get_all_ex": queues_get_all,
    "queues.get_by_id": queues_get_by_id,
    "queues.create": queues_create,
    "queues.delete": queues_delete,
    "queues.get_default": queues_get_default,
    "queues.add_task": queues_add_task,
    "queues.remove_task": queues_remove_task,
    "queues.get_next_task": queues_get_next_task,
    "queues.get_num_entries": queues_get_num_entries,
    "workers.get_all": workers_get_all,
    "workers.get_count": workers_get_count,
    "workers.register": workers_register,
    "workers.unregister": workers_unregister,
    "workers.status_report": workers_status_report,
    "models.get_all": models_get_all,
    "models.get_all_ex": models_get_all,
    "models.get_by_id": models_get_by_id,
    "models.get_by_task_id": models_get_by_task_id,
    "models.create": models_create,
    "models.update": models_update,
    "models.edit": models_update,
    "models.update_for_task": models_update_for_task,
    "projects.get_all": projects_get_all,
    "projects.get_all_ex": projects_get_all,
    "projects.get_by_id": projects_get_by_id,
    "projects.create": projects_create,
    "events.add_batch": events_add_batch,
    "events.add": events_add,
    "events.get_task_events": events_get_task_events,
    "events.get_task_log": events_get_task_events,
    "events.scalar_metrics_iter_histogram": events_scalar_metrics_iter_histogram,
    "debug.ping": debug_ping,
    "server.info": server_info,
    "users.get_current_user": users_get_current_user,
}
