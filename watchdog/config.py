"""Loading and validating `config.yaml`.

Who calls it: the CLI, once at start. The file is read as YAML 1.2 (ruamel.yaml), so a bare `on:` key
stays the string "on" and `yes`/`no` stay strings; `${VAR}` / `${VAR:-default}` in a string value is
replaced from the environment after parsing (so a secret never has to be in the file, and its
characters cannot break the YAML). Any problem becomes a `ConfigError` whose message names the key
path and the reason; the CLI prints it and exits 2. Secrets are `SecretStr`: masked in every repr,
log line and `check-config` output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from watchdog.errors import ConfigError
from watchdog.notify.settings import NotifySettings
from watchdog.verdict import RECOVERABLE_REASONS, Reason

CONFIG_ENV_VAR = "CLEARML_WATCHDOG_CONFIG"
DEFAULT_CONFIG_PATH = Path("config.yaml")
MASK = "**********"

PositiveSeconds = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WatchConfig(_Section):
    """Which tasks the watchdog looks after. Empty lists mean "all"."""

    queues: list[str] = Field(default_factory=lambda: ["gpu-spot"])
    projects: list[str] = Field(default_factory=list)
    exclude_tags: list[str] = Field(default_factory=lambda: ["no-watchdog"])


class DetectConfig(_Section):
    """A task is lost only when BOTH clocks ran out: the task went quiet AND no live worker reports it."""

    task_stale_s: PositiveSeconds = 180
    worker_stale_s: PositiveSeconds = 90


class RecoverConfig(_Section):
    on: list[Reason] = Field(
        default_factory=lambda: [Reason.AGENT_LOST, Reason.AGENT_STOPPED, Reason.SERVER_FORCED_STOP]
    )
    max_attempts: int = Field(default=5, ge=1)
    fallback_queue: str | None = None
    fallback_after: int = Field(default=3, ge=1)

    @field_validator("on", mode="before")
    @classmethod
    def _only_recoverable(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        allowed = ", ".join(r.value for r in RECOVERABLE_REASONS)
        for item in value:
            if item == Reason.USER_ABORTED.value:
                raise ValueError(
                    f"user_aborted cannot be recovered: a person's abort is never undone (allowed: {allowed})"
                )
            if item not in {r.value for r in RECOVERABLE_REASONS}:
                raise ValueError(f"unknown verdict {item!r} (allowed: {allowed})")
        return value


_SOURCE_PATTERN = re.compile(r"^(output_model|artifact:[^\s]+|parameter:[^/\s]+/[^\s]+)$")
_PARAM_PATTERN = re.compile(r"^[^/\s]+/[^\s]+$")


class CheckpointConfig(_Section):
    sources: list[str] = Field(
        default_factory=lambda: ["output_model", "artifact:checkpoint", "parameter:General/last_checkpoint"]
    )
    inject: list[str] = Field(default_factory=lambda: ["Args/resume_from"], min_length=1)
    require_remote: bool = True
    when_missing: Literal["requeue", "give_up"] = "requeue"

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, value: list[str]) -> list[str]:
        for source in value:
            if not _SOURCE_PATTERN.match(source):
                raise ValueError(
                    f"unknown checkpoint source {source!r}: use output_model, artifact:<name> "
                    "or parameter:<Section>/<name>"
                )
        return value

    @field_validator("inject")
    @classmethod
    def _parameter_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not _PARAM_PATTERN.match(path):
                raise ValueError(f"{path!r} is not a parameter path like Args/resume_from")
        return value


class ClearMLConfig(_Section):
    """Optional overrides of what clearml.conf / CLEARML_* variables say. Unset keys keep those."""

    api_host: str | None = None
    web_host: str | None = None
    files_host: str | None = None
    access_key: str | None = None
    secret_key: SecretStr | None = None
    request_timeout_s: PositiveSeconds = 15
    retries: int = Field(default=2, ge=0, le=10)


class HealthConfig(_Section):
    """The HTTP endpoint with /healthz and /metrics. Loopback by default: it is not authenticated."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9478, ge=0, le=65535)
    stale_after_s: PositiveSeconds | None = None  # default: 3 poll intervals + request timeout


class WatchdogConfig(_Section):
    poll_interval_s: PositiveSeconds = 15
    watch: WatchConfig = Field(default_factory=WatchConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    recover: RecoverConfig = Field(default_factory=RecoverConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    clearml: ClearMLConfig = Field(default_factory=ClearMLConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    state_dir: Path = Path("~/.local/state/clearml-watchdog")

    @field_validator("state_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    def masked(self) -> dict[str, Any]:
        """The effective config as plain data, every secret replaced by a mask (for check-config)."""
        data: dict[str, Any] = self.model_dump(mode="json")
        return data


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a parsed YAML tree."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set")

        return _ENV_PATTERN.sub(substitute, value)
    if isinstance(value, Mapping):
        return {key: expand_env(item, environ, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, environ, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


# A real config has a few dozen values. Far more means YAML aliases expanding ("billion laughs": 9 aliases
# of 9 aliases ... is 43 million strings from a 500-byte file): refuse it instead of expanding it.
MAX_VALUES = 100_000


class _TooLarge(Exception):
    pass


def _plain(node: Any, budget: list[int]) -> Any:
    """ruamel's CommentedMap/Seq into dicts and lists, keys as strings; at most `budget[0]` values in all."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge
    if isinstance(node, Mapping):
        return {str(k): _plain(v, budget) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v, budget) for v in node]
    return node


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    yaml = YAML(typ="safe", pure=True)
    try:
        document = yaml.load(text)
        if document is None:
            return {}
        if not isinstance(document, Mapping):
            raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(document).__name__}")
        result: dict[str, Any] = _plain(document, [MAX_VALUES])
    except YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {str(error).strip()}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a config file") from None
    except _TooLarge:
        raise ConfigError(
            f"{source}: too large: more than {MAX_VALUES:,} values once YAML aliases are expanded"
        ) from None
    return result


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "<root>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see config.yaml for every key)"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        got = item.get("input")
        shown = (
            ""
            if item["type"] in ("extra_forbidden", "missing") or isinstance(got, (dict, list))
            else f" (got {got!r:.80})"
        )
        if "secret" in where or "token" in where or "webhook" in where:
            shown = ""
        lines.append(f"  {where}: {message}{shown}")
    return "\n".join(lines)


def build_config(data: Mapping[str, Any], source: str, environ: Mapping[str, str] | None = None) -> WatchdogConfig:
    expanded = expand_env(dict(data), os.environ if environ is None else environ)
    try:
        return WatchdogConfig.model_validate(expanded)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def resolve_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """The config path and whether the user named it (`--config`, then the env var, then ./config.yaml)."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit), True
    if env.get(CONFIG_ENV_VAR):
        return Path(env[CONFIG_ENV_VAR]), True
    return DEFAULT_CONFIG_PATH, False


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> WatchdogConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file (pass --config PATH or set {CONFIG_ENV_VAR}; "
            "the repository's config.yaml is a documented example)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    return build_config(parse_yaml(text, str(path)), str(path), environ)
