"""Config loading: the real config.yaml, YAML 1.2, env expansion, key paths in errors, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdog.config import CONFIG_ENV_VAR, build_config, load_config, parse_yaml, resolve_path
from watchdog.errors import ConfigError
from watchdog.verdict import Reason

REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_config_yaml_loads_with_on_as_a_key() -> None:
    text = (REPO / "config.yaml").read_text()
    assert "\n  on: [" in text, "the example must use the bare `on:` key that YAML 1.1 would break"
    config = load_config(REPO / "config.yaml")
    assert config.recover.on == [Reason.AGENT_LOST, Reason.AGENT_STOPPED, Reason.SERVER_FORCED_STOP]
    assert config.watch.queues == ["gpu-spot"]
    assert config.checkpoint.inject == ["Args/resume_from"]
    assert "~" not in str(config.state_dir)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("on: 1", {"on": 1}),
        ("x: yes", {"x": "yes"}),  # YAML 1.1 would say True
        ("x: off", {"x": "off"}),
        ("x: true", {"x": True}),
        ("", {}),
    ],
)
def test_yaml_12_keeps_words_as_written(yaml_text: str, expected: dict[str, object]) -> None:
    assert parse_yaml(yaml_text, "t") == expected


# (id, config data, key path the error must name, words the error must contain)
BAD = [
    ("user abort", {"recover": {"on": ["user_aborted"]}}, "recover.on", "never undone"),
    ("unknown verdict", {"recover": {"on": ["agent_lsot"]}}, "recover.on", "unknown verdict 'agent_lsot'"),
    ("typo key", {"recover": {"max_attempt": 3}}, "recover.max_attempt", "unknown key"),
    ("negative interval", {"poll_interval_s": -5}, "poll_interval_s", "greater than 0"),
    ("zero attempts", {"recover": {"max_attempts": 0}}, "recover.max_attempts", "greater than or equal to 1"),
    ("bad source", {"checkpoint": {"sources": ["latest"]}}, "checkpoint.sources", "unknown checkpoint source"),
    ("bad inject", {"checkpoint": {"inject": ["resume_from"]}}, "checkpoint.inject", "parameter path"),
    ("bad when_missing", {"checkpoint": {"when_missing": "retry"}}, "checkpoint.when_missing", "requeue"),
    ("wrong type", {"watch": {"queues": "gpu-spot"}}, "watch.queues", "list"),
]


@pytest.mark.parametrize(("name", "data", "path", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_values_name_the_key_and_the_reason(name: str, data: dict[str, object], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(data, "cfg.yaml")
    message = str(caught.value)
    assert f"  {path}" in message and words in message, message


def test_env_expansion_and_missing_variable() -> None:
    config = build_config(
        {"clearml": {"secret_key": "${SECRET}", "api_host": "${HOST:-http://localhost:8008}"}},
        "c",
        environ={"SECRET": "hunter2-very-secret"},
    )
    assert config.clearml.api_host == "http://localhost:8008"
    assert config.clearml.secret_key is not None
    assert config.clearml.secret_key.get_secret_value() == "hunter2-very-secret"
    with pytest.raises(ConfigError, match=r"clearml.secret_key: environment variable NOPE is not set"):
        build_config({"clearml": {"secret_key": "${NOPE}"}}, "c", environ={})


def test_secrets_are_masked_in_reprs_and_dumps() -> None:
    config = build_config({"clearml": {"secret_key": "hunter2-very-secret"}}, "c", environ={})
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.masked())
    assert "hunter2" not in str(config.model_dump())


def test_bad_secret_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"clearml": {"secret_key": ["hunter2-very-secret"]}}, "c", environ={})
    assert "hunter2" not in str(caught.value)


def test_config_path_resolution(tmp_path: Path) -> None:
    assert resolve_path("x.yaml", {}) == (Path("x.yaml"), True)
    assert resolve_path(None, {CONFIG_ENV_VAR: "/etc/w.yaml"}) == (Path("/etc/w.yaml"), True)
    assert resolve_path(None, {}) == (Path("config.yaml"), False)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("watch: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)
