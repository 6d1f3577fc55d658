"""The deploy artefacts: the Dockerfile and compose file checked statically (no Docker engine here), the
container's exact entrypoint run in a fresh virtualenv built from the build context, and the systemd unit
checked by `systemd-analyze verify` and `security`."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import REPO, env_without_clearml, free_port, http_get, write_config
from ruamel.yaml import YAML

from watchdog.config import build_config, parse_yaml
from watchdog.simulator import Simulator

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
UNIT = REPO / "deploy" / "clearml-watchdog.service"
ENV_EXAMPLE = REPO / "deploy" / "clearml-watchdog.env.example"
DEPLOY_README = REPO / "deploy" / "README.md"
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make ", "cmake", "rustc", "cargo", "apt-get", "apk add")


# --- a small Dockerfile reader ---------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name}, found {len(found)}"
        return found[0]


def read_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "a continuation line runs off the end of the Dockerfile"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base, name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return read_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def final(dockerfile: tuple[dict[str, str], list[Stage]]) -> Stage:
    return dockerfile[1][-1]


def test_multi_stage_on_slim_python(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2, "multi-stage: build and runtime"
    for stage in stages:
        assert re.fullmatch(r"python:3\.\d+-slim(-[a-z]+)?", stage.base), f"not a slim Python base: {stage.base}"
    runtime = stages[-1]
    assert any(args.startswith(f"--from={stages[0].name} ") for args in runtime.all("COPY")), "copies the build"
    assert not any("pip install" in r for r in runtime.all("RUN")), "nothing installed in the final stage"
    for run in runtime.all("RUN"):
        for tool in COMPILERS:
            assert tool not in run, f"{tool!r} in the final stage: {run}"
    build = stages[0]
    assert any("pip uninstall -y pip" in r for r in build.all("RUN")), "no pip left in the copied venv"
    assert env_of(build).get("PIP_ONLY_BINARY") == ":all:", "wheels only: nothing is ever compiled"


def test_runs_as_a_non_root_user(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    user = final(dockerfile).all("USER")[-1].split(":")[0]
    assert user not in ("root", "0"), user
    assert user.isdigit() and int(user) >= 1000, "a numeric uid, so runAsNonRoot can verify it"


def test_entrypoint_and_cmd_exactly(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    runtime = final(dockerfile)
    assert json.loads(runtime.one("ENTRYPOINT")) == ["clearml-watchdog"]
    assert json.loads(runtime.one("CMD")) == ["run"]
    assert runtime.one("STOPSIGNAL") == "SIGTERM"


def test_config_by_file_plus_environment_and_state_on_a_volume(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    runtime = final(dockerfile)
    env = env_of(runtime)
    state = env["CLEARML_WATCHDOG_STATE_DIR"]
    assert json.loads(runtime.one("VOLUME")) == [state]
    assert env["HOME"] == state, "even a config that says ~/... keeps its state on the volume"
    assert runtime.one("WORKDIR") == state
    copies = {args.split()[-1]: args.split()[-2] for args in runtime.all("COPY") if not args.startswith("--from")}
    assert copies[env["CLEARML_WATCHDOG_CONFIG"]] == "deploy/config.container.yaml"
    config = build_config(
        parse_yaml((REPO / "deploy/config.container.yaml").read_text(), "config.container.yaml"),
        "config.container.yaml",
        {"CLEARML_WATCHDOG_STATE_DIR": state},
    )
    assert str(config.state_dir) == state
    assert config.health.enabled and config.health.host == "0.0.0.0"
    assert runtime.one("EXPOSE") == str(config.health.port)
    assert f"127.0.0.1:{config.health.port}/healthz" in runtime.one("HEALTHCHECK")


def healthcheck_command(dockerfile: tuple[dict[str, str], list[Stage]], port: int) -> list[str]:
    """The HEALTHCHECK's exec form, with the image's `python` as this interpreter and the port given."""
    spec = final(dockerfile).one("HEALTHCHECK")
    options, _, command = spec.partition("CMD ")
    assert "--start-period" in options and "--timeout" in options
    argv = json.loads(command)
    assert argv[0] == "python" and "curl" not in command and "wget" not in command
    return [sys.executable, *[a.replace(":9478/", f":{port}/") for a in argv[1:]]]


def test_healthcheck_command_against_a_real_daemon(
    tmp_path: Path, sim: Simulator, start_daemon: Any, dockerfile: tuple[dict[str, str], list[Stage]]
) -> None:
    port = free_port()
    command = healthcheck_command(dockerfile, port)
    down = subprocess.run(command, capture_output=True, text=True, timeout=10)
    assert down.returncode != 0 and "no answer" in down.stderr  # nothing listening yet
    daemon = start_daemon(write_config(tmp_path, health_port=port))
    daemon.notify.wait_for("READY=1", timeout_s=30)
    up = subprocess.run(command, capture_output=True, text=True, timeout=10)
    assert up.returncode == 0 and json.loads(up.stdout)["status"] == "ok"
    sim.stop_listener()
    sim.wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 503, timeout=15)
    stale = subprocess.run(command, capture_output=True, text=True, timeout=10)
    assert stale.returncode == 1 and json.loads(stale.stderr)["status"] == "unhealthy"


def dockerignore_allows(path: str) -> bool:
    """Whether the build context keeps `path` under .dockerignore (last matching rule wins)."""
    keep = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule[1:] if negate else rule
        pattern = pattern.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            matched = any(fnmatch(p, pattern[3:]) for p in parts)
        else:
            matched = any(fnmatch(prefix, pattern) for prefix in prefixes)
        if matched:
            keep = negate
    return keep


def build_context(into: Path) -> Path:
    """A copy of what `docker build .` would send, per .dockerignore."""
    for path in sorted(REPO.rglob("*")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith((".git/", ".venv/")) or not path.is_file() or not dockerignore_allows(relative):
            continue
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return into


def test_dockerignore_keeps_what_the_build_copies(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    for stage in dockerfile[1]:
        for args in stage.all("COPY"):
            if args.startswith("--from"):
                continue
            for source in args.split()[:-1]:
                assert dockerignore_allows(source.rstrip("/")), f"{source} is excluded from the build context"
    for secret_like in (".git/config", ".venv/bin/python", "deploy/clearml-watchdog.env", "state/journal.sqlite3"):
        assert not dockerignore_allows(secret_like), secret_like


# --- compose ---------------------------------------------------------------------------------------


def test_compose_runs_the_image_with_a_state_volume_and_an_env_file(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    runtime = final(dockerfile)
    env = env_of(runtime)
    compose = YAML(typ="safe", pure=True).load(COMPOSE.read_text())
    [service] = compose["services"].values()
    assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert service["command"] == json.loads(runtime.one("CMD"))
    assert service["env_file"] == ["./clearml-watchdog.env"] and ENV_EXAMPLE.is_file()
    mounts = {m["target"]: m for m in service["volumes"]}
    state = mounts[env["CLEARML_WATCHDOG_STATE_DIR"]]
    assert state["type"] == "volume" and state["source"] in compose["volumes"]
    config = mounts[env["CLEARML_WATCHDOG_CONFIG"]]
    assert config["type"] == "bind" and config["read_only"] and config["bind"]["create_host_path"] is False
    assert all(p.startswith("127.0.0.1:") for p in service["ports"]), "the endpoint has no authentication"
    assert service["stop_signal"] == "SIGTERM"
    assert int(service["stop_grace_period"].rstrip("s")) >= 10
    assert service["read_only"] and "/tmp" in service["tmpfs"] and service["cap_drop"] == ["ALL"]


def test_env_example_covers_every_variable_the_configs_use() -> None:
    documented = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line}
    used: set[str] = set()
    for path in (REPO / "deploy/config.container.yaml",):
        used |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(?::-[^}]*)?\}", path.read_text()))
    used -= {"CLEARML_WATCHDOG_STATE_DIR"}  # set by the image
    assert used <= documented, used - documented
    assert {"CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"} <= documented


# --- the exact entrypoint in a fresh virtualenv ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_entrypoint_in_a_fresh_virtualenv(
    tmp_path: Path, sim: Simulator, dockerfile: tuple[dict[str, str], list[Stage]]
) -> None:
    """`pip install .` from the build context into a new venv, then ENTRYPOINT + CMD with the image's ENV
    (paths moved under tmp), the env file's variables and the image's config: healthy, then SIGTERM -> 0."""
    # A container has its own network namespace; this machine may not have 9478 free (another daemon,
    # a parallel test run): then the copied config and the HEALTHCHECK move to a free port together.
    port = 9478 if _port_free(9478) else free_port()
    runtime = final(dockerfile)
    context = build_context(tmp_path / "context")
    venv = tmp_path / "opt" / "clearml-watchdog"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip_env = {**os.environ, "PIP_ONLY_BINARY": ":all:", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(context)], env=pip_env, capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    def moved(value: str) -> str:
        for root in ("/opt/", "/var/", "/etc/"):
            value = value.replace(root, str(tmp_path) + root)
        return value

    image_env = {k: moved(v) for k, v in env_of(runtime).items()}
    image_env["PATH"] = image_env["PATH"].replace("$PATH", "/usr/bin:/bin")
    config_target = Path(image_env["CLEARML_WATCHDOG_CONFIG"])
    config_target.parent.mkdir(parents=True)
    image_config = (REPO / "deploy/config.container.yaml").read_text()
    config_target.write_text(image_config.replace("port: 9478", f"port: {port}"))  # the COPY into the image
    state = Path(image_env["CLEARML_WATCHDOG_STATE_DIR"])
    state.mkdir(parents=True)
    env_file = {k: v for k, v in (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line)}
    env_file.update(sim.env())  # the env file, filled in for this server
    env = {**env_without_clearml(), **env_file, **image_env}
    env.pop("CLEARML_CONFIG_FILE", None)  # as in the image: no clearml.conf, the env file says it all
    argv = json.loads(runtime.one("ENTRYPOINT")) + json.loads(runtime.one("CMD"))
    executable = shutil.which(argv[0], path=env["PATH"])
    assert executable == str(venv / "bin" / "clearml-watchdog")
    log = (tmp_path / "container.log").open("w")
    process = subprocess.Popen([executable, *argv[1:]], env=env, cwd=state, stdout=log, stderr=log)
    try:
        check = healthcheck_command(dockerfile, port)
        check[0] = shutil.which("python", path=env["PATH"]) or ""
        deadline = time.monotonic() + 60  # the HEALTHCHECK's start period
        while subprocess.run(check, capture_output=True, timeout=10).returncode != 0:
            assert process.poll() is None, (tmp_path / "container.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "never healthy"
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    db = sqlite3.connect(state / "journal.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    lines = [json.loads(x) for x in (tmp_path / "container.log").read_text().splitlines() if x.startswith("{")]
    assert lines and {"started", "stopped"} <= {x.get("event") for x in lines}, "JSON logs when not on a terminal"


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


# --- systemd ---------------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_declares_what_the_issue_asks() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert int(s["WatchdogSec"][0]) >= 60
    assert s["Restart"] == ["on-failure"]
    assert s["StateDirectory"] == ["clearml-watchdog"] and s["EnvironmentFile"] == ["/etc/clearml-watchdog/env"]
    assert s.get("DynamicUser") == ["yes"] or s.get("User", ["root"])[0] not in ("root", "0")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictNamespaces": "yes",
        "SystemCallArchitectures": "native",
    }.items():
        assert s.get(key) == [value], key
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "@system-service" in s["SystemCallFilter"]
    assert s["CapabilityBoundingSet"] == [""]
    assert int(s["TimeoutStopSec"][0]) > 10, "longer than the daemon's own 10 s"
    exec_start = shlex.split(s["ExecStart"][0])
    assert exec_start[0].endswith("/clearml-watchdog") and exec_start[1] == "run"


def systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed: `apt-get install systemd` (Debian/Ubuntu) provides it")
    return binary


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    binary = systemd_analyze()
    # verify checks that ExecStart's program exists: point it at the one this test suite runs
    unit = tmp_path / UNIT.name
    installed = Path(sys.executable).parent / "clearml-watchdog"
    unit.write_text(UNIT.read_text().replace("/opt/clearml-watchdog/bin/clearml-watchdog", str(installed)))
    result = subprocess.run([binary, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "clearml-watchdog" not in result.stderr, result.stderr  # no warning about our unit at all


def test_systemd_analyze_security_score_is_ok_and_documented() -> None:
    binary = systemd_analyze()
    result = subprocess.run(
        [binary, "security", "--offline=true", "--no-pager", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"this systemd-analyze cannot score a unit offline: {result.stderr.strip()[:200]}")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    score, label = float(match.group(1)), match.group(2)
    assert score <= 2.0 and label in ("OK", "SAFE"), f"{score} {label}"
    assert f"{score:.1f} {label}" in DEPLOY_README.read_text(), "deploy/README.md shows a different score"


def test_the_daemon_runs_with_write_xor_execute_memory(tmp_path: Path, sim: Simulator, start_daemon: Any) -> None:
    """MemoryDenyWriteExecute=yes in the unit: the kernel's per-process form (PR_SET_MDWE, Linux 6.3+)
    is inherited by the daemon; it must still load, run cycles and stop cleanly."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(66, 0, 0, 0, 0) < 0:  # PR_GET_MDWE
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    wrapper = tmp_path / "mdwe.py"
    wrapper.write_text(
        "import ctypes, os, sys\n"
        "assert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0  # PR_SET_MDWE, refuse exec gain\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    port = free_port()
    config = write_config(tmp_path, health_port=port)
    env = {**env_without_clearml(), **sim.env()}
    installed = Path(sys.executable).parent / "clearml-watchdog"
    log = (tmp_path / "mdwe.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(wrapper), str(installed), "run", "--config", str(config)], env=env, stderr=log
    )
    try:
        sim.wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, timeout=30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
