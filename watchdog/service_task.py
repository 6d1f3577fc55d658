"""The watchdog as a ClearML service: deployed as a task on the `services` queue, run by an agent.

Who calls it: `clearml-watchdog deploy-service` (`deploy`), the CLI's `load` when it runs inside an
agent (`load_config_from_task`), and `cli._observers` there (`TaskScalars`). All I/O goes through
`Gateway.call` (raw API requests; no `Task.init`, so the SDK never patches the daemon's process).

How an agent runs it. `deploy` creates (or updates) one task of type `service` whose script is a
*literal script*: no repository, the file's text in `script.diff`, `script.entry_point` naming it, and
`script.requirements.pip` naming the package. A `clearml-agent --services-mode` writes that file into a
fresh environment, pip-installs the requirement, sets `CLEARML_TASK_ID` and its own credentials
(`CLEARML_CONFIG_FILE`), and runs `python -u clearml_watchdog_service.py`, which is `clearml-watchdog run`.
Aborting the task in the UI makes the agent send SIGTERM: the daemon's normal clean shutdown.

The config travels as the task's configuration object `watchdog` (YAML, visible and editable in the
UI under CONFIGURATION). No secret is ever written there: ClearML credentials are dropped (the agent
provides its own), and every other secret becomes a `${VAR}` reference that the agent's environment
must supply (the command prints their names). Inside the agent, with no `--config` and no
`$CLEARML_WATCHDOG_CONFIG`, the daemon reads that object back from its own task, never acts on its
own task (the reconciler skips `$CLEARML_TASK_ID`), and plots its own figures as scalars on it (`events.add`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from io import StringIO
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, SecretStr

from watchdog import __version__
from watchdog.config import ClearMLConfig, WatchdogConfig, build_config, parse_yaml
from watchdog.errors import ClearMLRejected, ClearMLUnavailable, ConfigError

if TYPE_CHECKING:
    from watchdog.gateway import Gateway
    from watchdog.recovery import CycleReport

log = structlog.get_logger(__name__)

CONFIG_NAME = "watchdog"  # the configuration object on the service task
SERVICE_TAG = "clearml-watchdog-service"  # finds the task again on the next deploy
ENTRY_POINT = "clearml_watchdog_service.py"
DEFAULT_QUEUE = "services"
DEFAULT_PROJECT = "DevOps"  # where ClearML's own services (slack alerts, cleanup) live
DEFAULT_NAME = "clearml-spot-watchdog"
STATE_DIR_REFERENCE = "${CLEARML_WATCHDOG_STATE_DIR:-~/.local/state/clearml-watchdog}"
# The agent supplies the connection to its own server; none of these may travel with the task.
CLEARML_CONNECTION_KEYS = ("api_host", "web_host", "files_host", "access_key", "secret_key")
ENDED = frozenset({"stopped", "failed", "completed", "closed", "published", "publishing", "unknown"})
_PLAIN_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")

SERVICE_SCRIPT = '''\
"""clearml-spot-watchdog as a ClearML service task (written by `clearml-watchdog deploy-service`).

A clearml-agent runs this file with CLEARML_TASK_ID set. The watchdog then reads its config from this
task's configuration object "watchdog", never acts on this task, and plots its figures on it. Secrets
come from the agent's environment (see the configuration object's header). Abort the task to stop it.
"""

import sys

try:
    from watchdog.cli import main
except ImportError as error:  # another package named "watchdog" (filesystem events) is not ours
    sys.exit(f"clearml-spot-watchdog is not installed in this environment: {error}")

sys.exit(main(["run", "--log-format", "json", *sys.argv[1:]]))
'''


# --- the config that travels with the task ----------------------------------------------------------


def secret_paths(model: BaseModel, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths of every secret value set in `model` (any `SecretStr` field, at any depth)."""
    found: list[tuple[str, ...]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            found.append((*prefix, name))
        elif isinstance(value, BaseModel):
            found.extend(secret_paths(value, (*prefix, name)))
    return found


def _get(tree: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _set(tree: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def env_name_for(path: Sequence[str]) -> str:
    """The variable a secret is read from when the file held it literally: notify.slack.bot_token ->
    CLEARML_WATCHDOG_NOTIFY_SLACK_BOT_TOKEN."""
    return "CLEARML_WATCHDOG_" + "_".join(re.sub(r"[^A-Za-z0-9]", "_", p).upper() for p in path)


@dataclass(frozen=True)
class ServiceConfig:
    """The YAML attached to the task, and the variables the agent's environment must provide."""

    text: str
    required_env: tuple[str, ...]


def service_config(config: WatchdogConfig, raw: Mapping[str, Any]) -> ServiceConfig:
    """The config as the service task carries it: what the user set, minus every secret.

    `raw` is the config file as parsed, before `${VAR}` expansion: a secret the file already took from
    a plain `${VAR}` keeps that reference; a secret written literally becomes `${CLEARML_WATCHDOG_...}`.
    ClearML connection keys are dropped: inside the agent the SDK gets them from the agent.
    """
    data: dict[str, Any] = config.model_dump(mode="json", exclude_unset=True)
    clearml = data.get("clearml")
    if isinstance(clearml, dict):
        for key in CLEARML_CONNECTION_KEYS:
            clearml.pop(key, None)
        if not clearml:
            data.pop("clearml")
    required: list[str] = []
    for path in secret_paths(config):
        if path[0] == "clearml":
            continue
        written = _get(raw, path)
        if isinstance(written, str) and _PLAIN_REFERENCE.match(written.strip()):
            reference = written.strip()
        else:
            reference = "${" + env_name_for(path) + "}"
        _set(data, path, reference)
        required.append(reference[2:-1])
    data["state_dir"] = STATE_DIR_REFERENCE
    header = [
        f"# clearml-spot-watchdog {__version__} configuration, attached by `clearml-watchdog deploy-service`.",
        "# Edit it here and restart the task (Abort, then Enqueue) to apply. No secret is stored here:",
        "# ClearML credentials come from the agent, and each ${VAR} below from the agent's environment.",
    ]
    if required:
        header.append("# Needed in the agent's environment: " + ", ".join(sorted(set(required))))
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    stream = StringIO()
    yaml.dump(data, stream)
    return ServiceConfig("\n".join(header) + "\n" + stream.getvalue(), tuple(sorted(set(required))))


def check_round_trip(config: WatchdogConfig, service: ServiceConfig) -> None:
    """Prove the attached YAML loads back into the same settings (with the secrets supplied again)."""
    environ = dict(os.environ)
    for path in secret_paths(config):
        if path[0] == "clearml":
            continue
        secret = _get_attr(config, path)
        reference = _get(parse_yaml(service.text, "service config"), path)
        if isinstance(secret, SecretStr) and isinstance(reference, str):
            environ[reference.strip()[2:-1]] = secret.get_secret_value()
    loaded = build_config(parse_yaml(service.text, "service config"), "service config", environ)
    mine = config.model_dump(mode="json", exclude={"clearml", "state_dir"})
    theirs = loaded.model_dump(mode="json", exclude={"clearml", "state_dir"})
    if mine != theirs:
        raise ConfigError("internal error: the service config does not load back into the same settings")


def _get_attr(model: BaseModel, path: Sequence[str]) -> Any:
    node: Any = model
    for key in path:
        node = getattr(node, key, None)
    return node


# --- deploy -------------------------------------------------------------------------------------------


@dataclass
class DeployResult:
    """What `deploy` did, for the command's output."""

    task_id: str
    action: str  # created | updated | updated-running
    queue_id: str
    enqueued: bool
    required_env: tuple[str, ...]
    task_url: str = ""
    notes: list[str] = field(default_factory=list)


def task_body(*, name: str, project_id: str, service: ServiceConfig, package: str, image: str | None) -> dict[str, Any]:
    """The fields of the service task, as `tasks.create` and `tasks.edit` take them."""
    body: dict[str, Any] = {
        "name": name,
        "project": project_id,
        "type": "service",
        "comment": (
            "clearml-spot-watchdog: finds tasks lost with their spot machines and re-enqueues them from their "
            "last checkpoint. Created by `clearml-watchdog deploy-service`; its config is the configuration "
            f"object '{CONFIG_NAME}'."
        ),
        "script": {
            "repository": "",
            "branch": "",
            "version_num": "",
            "entry_point": ENTRY_POINT,
            "working_dir": ".",
            "binary": "python3",
            "diff": SERVICE_SCRIPT,
            "requirements": {"pip": package + "\n"},
        },
        "configuration": {
            CONFIG_NAME: {
                "name": CONFIG_NAME,
                "type": "yaml",
                "value": service.text,
                "description": "clearml-spot-watchdog config (no secrets; see the header)",
            }
        },
    }
    if image:
        body["container"] = {"image": image, "arguments": "", "setup_shell_script": ""}
    return body


def _project_id(gateway: Gateway, project: str) -> str:
    """The project's id, created if missing. `name` is a regular expression on the server: anchor it."""
    data = gateway.call(
        "projects", "get_all", {"name": f"^{re.escape(project)}$", "only_fields": ["id", "name"], "page_size": 500}
    )
    for found in data.get("projects") or []:
        if isinstance(found, dict) and found.get("name") == project and isinstance(found.get("id"), str):
            return str(found["id"])
    data = gateway.call("projects", "create", {"name": project, "description": "ClearML services"})
    project_id = data.get("id")
    if not isinstance(project_id, str) or not project_id:
        raise ClearMLUnavailable("projects.create: no id in the answer")
    return project_id


def find_service_task(gateway: Gateway, project_id: str, name: str) -> dict[str, Any] | None:
    """The existing service task (newest first, archived ones skipped), so a second deploy updates it."""
    data = gateway.call(
        "tasks",
        "get_all",
        {
            "project": [project_id],
            "type": ["service"],
            "tags": [SERVICE_TAG],
            "system_tags": ["-archived"],
            "only_fields": ["id", "name", "status", "created"],
            "order_by": ["-created"],
            "page": 0,
            "page_size": 100,
        },
    )
    tasks = [t for t in data.get("tasks") or [] if isinstance(t, dict) and t.get("name") == name]
    if len(tasks) > 1:
        log.warning("several_service_tasks", kept=tasks[0].get("id"), others=[t.get("id") for t in tasks[1:]])
    return tasks[0] if tasks else None


def deploy(
    gateway: Gateway,
    config: WatchdogConfig,
    raw: Mapping[str, Any],
    *,
    queue: str = DEFAULT_QUEUE,
    project: str = DEFAULT_PROJECT,
    name: str = DEFAULT_NAME,
    package: str = f"clearml-spot-watchdog=={__version__}",
    image: str | None = None,
) -> DeployResult:
    """Create or update the service task and enqueue it on `queue` by id. Idempotent: one task per
    (project, name); a second run updates it in place (a running one keeps running; see notes)."""
    if len(name.strip()) < 3:
        raise ConfigError("--name must have at least 3 characters (ClearML refuses shorter task names)")
    service = service_config(config, raw)
    check_round_trip(config, service)
    queue_id = gateway.queue_id(queue, refresh=True)
    if queue_id is None:
        raise ConfigError(
            f"queue {queue!r} does not exist on the ClearML server: start the services agent with "
            "--create-queue, create it in the UI, or pass --queue (never created here: a typo would make a new one)"
        )
    project_id = _project_id(gateway, project)
    body = task_body(name=name, project_id=project_id, service=service, package=package, image=image)
    tags = sorted({SERVICE_TAG, *config.watch.exclude_tags})  # other watchdogs leave it alone too
    existing = find_service_task(gateway, project_id, name)
    notes: list[str] = []
    if existing is None:
        created = gateway.call("tasks", "create", {**body, "tags": tags})
        task_id = created.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise ClearMLUnavailable("tasks.create: no id in the answer")
        action = "created"
        status = "created"
    else:
        task_id = str(existing["id"])
        status = str(existing.get("status") or "created")
        action = "updated"
        if status == "in_progress":
            action = "updated-running"
            _edit(gateway, task_id, body, tags, force=True)
            notes.append(
                "the service is running with its previous config: Abort it in the UI and Enqueue it again "
                "to apply (or stop it and run deploy-service again)"
            )
            return DeployResult(
                task_id, action, queue_id, False, service.required_env, gateway.task_url(task_id, project_id), notes
            )
        if status == "queued":
            gateway.call("tasks", "dequeue", {"task": task_id, "status_reason": "clearml-watchdog deploy-service"})
        elif status in ENDED:
            gateway.call(
                "tasks",
                "reset",
                {"task": task_id, "force": True, "status_reason": "clearml-watchdog deploy-service"},
            )
        _edit(gateway, task_id, body, tags, force=False)
    gateway.enqueue(task_id, queue_id, "clearml-watchdog deploy-service", f"deployed {__version__}")
    return DeployResult(
        task_id, action, queue_id, True, service.required_env, gateway.task_url(task_id, project_id), notes
    )


def _edit(gateway: Gateway, task_id: str, body: Mapping[str, Any], tags: Sequence[str], *, force: bool) -> None:
    fields = {k: v for k, v in body.items() if k != "configuration"}
    gateway.call("tasks", "edit", {"task": task_id, **fields, "tags": list(tags), "force": force})
    gateway.call(
        "tasks",
        "edit_configuration",
        {
            "task": task_id,
            "configuration": list(body["configuration"].values()),
            "replace_configuration": False,
            "force": force,
        },
    )


# --- inside the agent: the config comes from the task -------------------------------------------------


def load_config_from_task(
    task_id: str,
    *,
    gateway: Gateway | None = None,
    attempts: int = 5,
    first_delay_s: float = 2.0,
    environ: Mapping[str, str] | None = None,
) -> WatchdogConfig:
    """The config attached to task `task_id` (the agent's `$CLEARML_TASK_ID`), `${VAR}`s expanded from the
    environment. ClearML briefly unreachable at start is retried a few times, then it is an error."""
    if gateway is None:
        from watchdog.gateway import Gateway

        gateway = Gateway(ClearMLConfig())
    source = f"ClearML task {task_id}, configuration object {CONFIG_NAME!r}"
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            data = gateway.call("tasks", "get_configurations", {"tasks": [task_id], "names": [CONFIG_NAME]})
            break
        except ClearMLUnavailable as error:
            if attempt == attempts:
                raise
            log.warning("config_from_task_retry", task_id=task_id, problem=str(error), retry_in_s=delay)
            time.sleep(delay)
            delay *= 2
    text = None
    for entry in data.get("configurations") or []:
        if not isinstance(entry, dict) or entry.get("task") not in (task_id, None):
            continue
        for item in entry.get("configuration") or []:
            if isinstance(item, dict) and item.get("name") == CONFIG_NAME:
                text = item.get("value")
    if not isinstance(text, str):
        raise ConfigError(
            f"{source}: not found. Running inside a ClearML agent (CLEARML_TASK_ID is set) with no --config: "
            "deploy the task with `clearml-watchdog deploy-service`, or pass --config / CLEARML_WATCHDOG_CONFIG"
        )
    config = build_config(parse_yaml(text, source), source, environ)
    log.info("config_from_task", task_id=task_id)
    return config


# --- inside the agent: the watchdog's own dashboard ---------------------------------------------------


class TaskScalars:
    """Plots the watchdog's figures on its own task (SCALARS tab): tasks watched, incidents, recoveries
    by outcome, detection delay.

    Observer of the service. Reports at most every `every_s` seconds, and at once after a cycle that
    acted; a report sends "tasks watched" plus only the figures that changed since the last one, so an
    idle watchdog costs one call per `every_s`. Each point is one `events.add` call (the single-event
    form of `events.add_batch`): a batch must be sent as JSON lines, and `Gateway.call` sends one JSON
    object. The x axis is the cycle number since start (ClearML's "wall time" axis shows real time). A
    failure to report is logged once and never touches the cycle.
    """

    def __init__(self, gateway: Gateway, task_id: str, *, every_s: float = 120.0) -> None:
        self.gateway = gateway
        self.task_id = task_id
        self.every_s = every_s
        self.cycles = 0
        self.totals = {"incidents": 0, "requeued": 0, "gave_up": 0, "recovered": 0}
        self._delays: list[float] = []
        self._last_sent: float | None = None
        self._sent_values: dict[tuple[str, str], float] = {}
        self._warned = False

    def ready(self) -> None:
        """Nothing: the first cycle has already been reported."""

    def stopping(self) -> None:
        """Nothing: the last figures are at most `every_s` old."""

    def cycle_done(self, report: CycleReport, duration_s: float) -> None:
        self.cycles += 1
        if not report.finished:
            return
        acted = report.recoveries + report.gave_up + report.reported + report.resolved > 0
        self.totals["incidents"] += report.recoveries + report.gave_up + report.reported
        self.totals["requeued"] += report.recoveries
        self.totals["gave_up"] += report.gave_up
        self.totals["recovered"] += report.resolved
        self._delays.extend(report.detection_delays_s)
        now = time.monotonic()
        if not acted and self._last_sent is not None and now - self._last_sent < self.every_s:
            return
        self._last_sent = now
        figures: list[tuple[str, str, float]] = [
            ("tasks", "watched (running)", float(report.running_tasks)),
            ("incidents", "total", float(self.totals["incidents"])),
            ("recoveries", "requeued", float(self.totals["requeued"])),
            ("recoveries", "gave up", float(self.totals["gave_up"])),
            ("recoveries", "recovered", float(self.totals["recovered"])),
        ]
        points = [f for f in figures if f[0] == "tasks" or self._sent_values.get((f[0], f[1])) != f[2]]
        if self._delays:
            points.append(("detection delay (s)", "longest since last point", round(max(self._delays), 1)))
            self._delays.clear()
        self.send(points)

    def send(self, points: Sequence[tuple[str, str, float]]) -> None:
        stamp = int(time.time() * 1000)
        for metric, variant, value in points:
            event = {
                "task": self.task_id,
                "type": "training_stats_scalar",  # MetricsScalarEvent: what report_scalar sends
                "timestamp": stamp,
                "iter": self.cycles,
                "metric": metric,
                "variant": variant,
                "value": value,
            }
            try:
                self.gateway.call("events", "add", event)
            except (ClearMLUnavailable, ClearMLRejected) as error:
                if not self._warned:
                    log.warning("scalars_not_reported", task_id=self.task_id, problem=str(error))
                    self._warned = True
                return
            self._sent_values[(metric, variant)] = value
