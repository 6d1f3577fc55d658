"""Hostile config files: whatever is in the file, loading it gives a config or a `ConfigError`, never a crash.

The CLI turns a `ConfigError` into one line and exit code 2 (DESIGN.md, "Exit codes"); any other exception
would be a traceback and exit 1, or, for a file that expands without bound, a daemon that never starts.
Hypothesis writes files of three kinds: documents shaped like the real config with hostile values, random
YAML-ish text, and random bytes. A few files no generator finds by chance (an alias bomb, deep nesting) are
checked through the real `check-config` process.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from tests.harness import WATCHDOG_CMD
from tests.hostile import json_values, nasty_text
from watchdog.config import WatchdogConfig, load_config
from watchdog.errors import ConfigError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# The config's own shape: the keys people write, with values that are right, nearly right, or hostile.
SECTIONS: dict[str, list[str]] = {
    "watch": ["queues", "projects", "exclude_tags"],
    "detect": ["task_stale_s", "worker_stale_s"],
    "recover": ["on", "max_attempts", "fallback_queue", "fallback_after"],
    "checkpoint": ["sources", "inject", "require_remote", "when_missing"],
    "clearml": ["api_host", "web_host", "access_key", "secret_key", "request_timeout_s", "retries"],
    "health": ["enabled", "host", "port", "stale_after_s"],
    "notify": ["console", "group_wait_s", "max_age_s", "events", "slack", "telegram", "retry"],
}
plausible = st.one_of(
    st.sampled_from(
        [
            15,
            0,
            -1,
            1e308,
            "gpu-spot",
            ["gpu-spot"],
            ["agent_lost", "user_aborted"],
            ["on"],
            "${NOT_SET_ANYWHERE}",
            "${HOME:-x}",
            "https://example.invalid",
            "http://10.0.0.1/",
            {"bot_token": "123:abc", "chat_id": "yes"},
            {"webhook_url": "http://127.0.0.1:1/x", "bot_token": "xoxb"},
            True,
            "on",
            "no",
            None,
        ]
    ),
    json_values,
)
KEYS = [key for keys in SECTIONS.values() for key in keys]
section = st.dictionaries(st.one_of(st.sampled_from(KEYS), nasty_text), plausible, max_size=6)
documents = st.dictionaries(
    st.one_of(st.sampled_from([*SECTIONS, "poll_interval_s", "state_dir"]), nasty_text),
    st.one_of(section, plausible),
    max_size=6,
)


def _dump(document: Any, path: Path) -> bool:
    """Write `document` as YAML; False if even the YAML library cannot represent it (nothing to test)."""
    yaml = YAML(typ="safe", pure=True)
    try:
        with path.open("w", encoding="utf-8", errors="surrogatepass") as handle:
            yaml.dump(document, handle)
    except Exception:
        return False
    return True


def _load(path: Path) -> None:
    try:
        config = load_config(path, environ={"HOME": "/home/x"})
    except ConfigError as error:
        assert str(error).strip()
        return
    assert isinstance(config, WatchdogConfig)


@SETTINGS
@given(document=documents)
def test_a_config_shaped_document_loads_or_says_why(tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / "config.yaml"
    if _dump(document, path):
        _load(path)


@SETTINGS
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.lists(
            st.sampled_from(["a:", " b", "- ", "&x ", "*x", "!!python/object:os.system", "{", "[", "\t", "\n"])
        ).map("".join),
    )
)
def test_any_text_loads_or_says_why(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _load(path)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_bytes_load_or_say_why(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    _load(path)


ALIAS_BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefg", "bcdefgh", strict=True)),
    ]
)


@pytest.mark.parametrize(
    "content, words",
    [
        # 9^8 = 43 million strings once the aliases are expanded: must be refused, not expanded
        (ALIAS_BOMB, "too large"),
        # deeper than Python's recursion limit
        ("x: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
        # a key twice: YAML says that is an error
        ("poll_interval_s: 5\npoll_interval_s: 6\n", "duplicate"),
        # not text at all
        ("\x00\x01\x02\xff", "not valid yaml"),
    ],
)
def test_the_cli_refuses_hostile_files_with_one_line_and_exit_2(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(content, encoding="utf-8")
    done = subprocess.run(
        [*WATCHDOG_CMD, "check-config", "--offline", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert words in done.stderr.lower()
