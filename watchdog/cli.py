"""`clearml-watchdog`: the command line.

Exit codes (the same for every command): 0 the command did its job (a cycle ran, whatever it found);
1 it could not (ClearML unreachable, an action failed and will be retried); 2 usage or config error.
Errors are one readable line on stderr, never a traceback; `run` never exits on a ClearML or chat error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from watchdog import __version__
from watchdog.errors import ClearMLRejected, ClearMLUnavailable, ConfigError, StateError, WatchdogError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clearml-watchdog",
        description="Resume ClearML tasks lost with their spot machines, from their last checkpoint, exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", help="config file (default: $CLEARML_WATCHDOG_CONFIG or ./config.yaml)"
    )
    common.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    common.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="run the daemon (poll, recover, notify) until stopped")
    once = commands.add_parser("once", parents=[common], help="run one cycle and exit")
    once.add_argument("--dry-run", action="store_true", help="decide but change nothing in ClearML or the journal")
    once.add_argument("--json", action="store_true", help="print every task considered, with verdict and action")
    history = commands.add_parser("history", parents=[common], help="recent incidents from the journal")
    history.add_argument("--json", action="store_true")
    history.add_argument("--limit", type=int, default=20)
    check = commands.add_parser("check-config", parents=[common], help="validate and print the effective config")
    check.add_argument("--offline", action="store_true", help="don't contact ClearML to check queues and projects")
    demo = commands.add_parser("demo", help="a scripted night of spot losses on the built-in simulator (~1 min)")
    demo.add_argument("--log-format", choices=["auto", "json", "console"], default="console")
    demo.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    demo.add_argument("--seconds", type=float, default=50.0, help="stop after this long at the latest")
    commands.add_parser("notify-test", parents=[common], help="send a test message to every configured channel")
    deploy = commands.add_parser(
        "deploy-service",
        parents=[common],
        help="create or update the watchdog's task on the ClearML services queue and enqueue it",
        description="Create (or update) a ClearML task of type 'service' that runs `clearml-watchdog run` "
        "with this config attached (secrets left out: the agent's environment supplies them), and enqueue it "
        "on the services queue by id. Run it again to update the same task.",
    )
    deploy.add_argument("--queue", default="services", help="queue the services agent serves (default: services)")
    deploy.add_argument("--project", default="DevOps", help="project of the service task (default: DevOps)")
    deploy.add_argument("--name", default="clearml-spot-watchdog", help="task name (default: clearml-spot-watchdog)")
    deploy.add_argument(
        "--package",
        default=f"clearml-spot-watchdog=={__version__}",
        help="pip requirement the agent installs (default: this version; a wheel URL or git+https://... works)",
    )
    deploy.add_argument("--docker-image", default=None, help="container image for the task (default: the agent's)")
    return parser


@dataclass
class Runtime:
    """Everything a command needs, built from the config (side effects start here)."""

    config: Any
    gateway: Any
    journal: Any
    outbox: Any


def load(args: argparse.Namespace) -> Any:
    """The config: from --config / $CLEARML_WATCHDOG_CONFIG / ./config.yaml; or, inside a ClearML agent
    (`$CLEARML_TASK_ID` set) with neither of the first two, from the task's configuration object."""
    import os

    from watchdog.config import load_config, resolve_path
    from watchdog.logs import register_secrets

    path, explicit = resolve_path(getattr(args, "config", None))
    task_id = os.environ.get("CLEARML_TASK_ID", "")
    if task_id and not explicit:
        from watchdog.service_task import load_config_from_task

        config = load_config_from_task(task_id)
    else:
        config = load_config(path)
    register_secrets(_secrets_of(config))
    return config


def _secrets_of(config: Any) -> list[str | None]:
    secrets: list[str | None] = []
    if config.clearml.secret_key is not None:
        secrets.append(config.clearml.secret_key.get_secret_value())
    secrets.extend(config.notify.secret_values())
    return secrets


def build_runtime(config: Any, *, console_stream: TextIO | None = None) -> Runtime:
    """`console_stream`: where console alerts go (stderr when stdout carries JSON)."""
    from watchdog.gateway import Gateway
    from watchdog.journal import Journal
    from watchdog.notify.build import build_channels, build_outbox

    journal = Journal.open_in(config.state_dir)
    channels = build_channels(config.notify, stream=console_stream)
    return Runtime(config, Gateway(config.clearml), journal, build_outbox(journal, config.notify, channels=channels))


def cmd_run(args: argparse.Namespace) -> int:
    import threading

    from watchdog.service import install_signal_handlers

    stop_requested = threading.Event()
    install_signal_handlers(stop_requested)  # first thing: a stop during start-up still exits 0

    from watchdog.recovery import Reconciler
    from watchdog.service import Service

    config = load(args)
    runtime = build_runtime(config)
    reconciler = Reconciler(runtime.gateway, runtime.journal, runtime.outbox, config)
    _check_scope_or_warn(reconciler)
    service = Service(
        reconciler,
        runtime.journal,
        runtime.outbox,
        runtime.outbox,
        poll_interval_s=config.poll_interval_s,
        unhealthy_after_s=config.notify.unhealthy_after_s,
        deliver_every_s=config.notify.deliver_every_s,
        observers=_observers(config, runtime),
        stop_requested=stop_requested,
    )
    return service.run()


def _observers(config: Any, runtime: Runtime) -> list[Any]:
    """What watches the daemon: figures for /metrics and /healthz, systemd's notify socket, and (inside a
    ClearML agent) scalars on the watchdog's own task. Metrics come first so a probe that hears READY=1
    already finds the first cycle counted."""
    import os

    from watchdog.health import HealthServer, default_stale_after_s
    from watchdog.metrics import Metrics
    from watchdog.systemd import SystemdNotifier

    stale_after_s = config.health.stale_after_s or default_stale_after_s(
        config.poll_interval_s, config.clearml.request_timeout_s
    )
    metrics = Metrics(
        stale_after_s=stale_after_s,
        gateway_stats=runtime.gateway.stats,
        outbox=runtime.outbox,
        journal=runtime.journal,
    )
    observers: list[Any] = [metrics]
    if config.health.enabled:
        server = HealthServer(metrics, config.health.host, config.health.port)
        if server.start():
            observers.append(server)
    task_id = os.environ.get("CLEARML_TASK_ID", "")
    if task_id:
        from watchdog.service_task import TaskScalars

        observers.append(TaskScalars(runtime.gateway, task_id))
    systemd = SystemdNotifier(poll_interval_s=config.poll_interval_s)
    if systemd.enabled:
        systemd.starting()
        observers.append(systemd)
    return observers


def _check_scope_or_warn(reconciler: Any) -> list[str]:
    """Missing queues are warnings; an unreachable server at start is not fatal for a daemon."""
    import structlog

    try:
        return list(reconciler.check_scope())
    except ClearMLUnavailable as error:
        structlog.get_logger("watchdog.cli").warning("clearml_unreachable_at_start", problem=str(error))
        return []


def cmd_once(args: argparse.Namespace) -> int:
    from watchdog.recovery import Reconciler

    config = load(args)
    runtime = build_runtime(config, console_stream=sys.stderr if args.json else None)
    reconciler = Reconciler(runtime.gateway, runtime.journal, runtime.outbox, config, dry_run=args.dry_run)
    try:
        report = reconciler.run_cycle()
        if not args.dry_run:
            runtime.outbox.deliver_due()
    finally:
        runtime.journal.close()
    if args.json:
        print(
            json.dumps(
                {
                    "finished": report.finished,
                    "blind_reason": report.blind_reason,
                    "dry_run": args.dry_run,
                    "summary": report.summary(),
                    "tasks": [o.as_dict() for o in report.outcomes],
                },
                indent=2,
            )
        )
    else:
        for outcome in report.outcomes:
            if outcome.action != "nothing":
                print(f"{outcome.task_id}  {outcome.verdict:<18} {outcome.action:<11} {outcome.name}")
                print(f"{'':34}{outcome.explanation}")
        print(("dry run: " if args.dry_run else "") + report.summary())
    if not report.finished:
        _error(f"the cycle did not finish: {report.blind_reason}")
        return EXIT_FAILED
    return EXIT_OK if report.failures == 0 else EXIT_FAILED


def cmd_history(args: argparse.Namespace) -> int:
    from watchdog.journal import Journal

    config = load(args)
    journal = Journal.open_in(config.state_dir)
    try:
        rows = journal.recent_incidents(limit=max(1, args.limit))
    finally:
        journal.close()
    if args.json:
        print(json.dumps([row.__dict__ for row in rows], indent=2, default=str))
        return EXIT_OK
    if not rows:
        print(f"no incidents recorded in {config.state_dir}")
    for row in rows:
        clone = f" -> {row.clone_id}" if row.clone_id else ""
        print(f"{row.detected_at[:19]}  {row.reason:<18} {row.state:<10} {row.task_name or row.task_id}{clone}")
        print(f"{'':21}{row.explanation}")
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate, print the effective config (secrets masked), and check the watched names exist."""
    from ruamel.yaml import YAML

    from watchdog.gateway import Gateway
    from watchdog.recovery import resolve_scope

    config = load(args)
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(config.masked(), sys.stdout)
    if args.offline:
        print("# config is valid (ClearML not contacted: --offline)")
        return EXIT_OK
    gateway = Gateway(config.clearml)
    try:
        warnings = resolve_scope(gateway, config, self_task_id="").warnings
    except (ClearMLUnavailable, ClearMLRejected) as error:
        print(f"# config is valid; ClearML could not be checked: {error}")
        return EXIT_OK
    for warning in warnings:
        print(f"# warning: {warning}")
    print(f"# config is valid; ClearML at {gateway.api_host} answered")
    return EXIT_OK


def _error(message: str) -> None:
    from watchdog.logs import mask

    print(f"clearml-watchdog: error: {mask(message)}", file=sys.stderr)


def cmd_deploy_service(args: argparse.Namespace) -> int:
    """`deploy-service`: see watchdog/service_task.py for what the task is and how an agent runs it."""
    from watchdog.config import parse_yaml, resolve_path
    from watchdog.gateway import Gateway
    from watchdog.service_task import deploy

    config = load(args)
    path, _explicit = resolve_path(args.config)
    raw = parse_yaml(path.read_text(encoding="utf-8"), str(path)) if path.is_file() else {}
    result = deploy(
        Gateway(config.clearml),
        config,
        raw,
        queue=args.queue,
        project=args.project,
        name=args.name,
        package=args.package,
        image=args.docker_image,
    )
    enqueued = f"enqueued on {args.queue!r} (queue id {result.queue_id})" if result.enqueued else "not enqueued"
    print(f"{result.action} service task {result.task_id}: {enqueued}")
    if result.task_url:
        print(f"  {result.task_url}")
    for note in result.notes:
        print(f"  note: {note}")
    if result.required_env:
        print("  the services agent must have these in its environment (and pass them into its containers, e.g.")
        print('  CLEARML_AGENT_EXTRA_DOCKER_ARGS="' + " ".join(f"-e {v}" for v in result.required_env) + '"):')
        for name in result.required_env:
            print(f"    {name}")
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "once": cmd_once,
    "history": cmd_history,
    "check-config": cmd_check_config,
    "deploy-service": cmd_deploy_service,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from watchdog.logs import configure

    configure(args.log_format, args.log_level)
    handler = COMMANDS.get(args.command)
    if handler is None:
        return _dispatch_extra(args)
    try:
        return handler(args)
    except (ConfigError, StateError) as error:
        _error(str(error))
        return EXIT_USAGE
    except ClearMLRejected as error:
        _error(str(error))
        return EXIT_FAILED
    except (ClearMLUnavailable, WatchdogError) as error:
        _error(str(error))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _dispatch_extra(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from watchdog.demo import run_demo

        return run_demo(seconds=args.seconds)
    if args.command == "notify-test":
        try:
            config = load(args)
        except ConfigError as error:
            _error(str(error))
            return EXIT_USAGE
        from watchdog.notify.notify_test import notify_test

        return int(notify_test(config.notify))
    return EXIT_USAGE
