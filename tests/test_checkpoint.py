"""Checkpoint choice and injection."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from watchdog.checkpoint import choose, inject, is_remote
from watchdog.snapshots import ModelSnapshot, TaskDetails, TaskSnapshot

T0 = datetime(2026, 11, 23, tzinfo=timezone.utc)
SOURCES = ["output_model", "artifact:checkpoint", "parameter:General/last_checkpoint"]


def details(artifacts: dict[str, str] | None = None, params: dict[str, str] | None = None) -> TaskDetails:
    hyperparams: dict[str, dict[str, dict[str, object]]] = {}
    for path, value in (params or {}).items():
        section, name = path.split("/")
        hyperparams.setdefault(section, {})[name] = {"section": section, "name": name, "value": value}
    return TaskDetails(TaskSnapshot("t", "n", "stopped"), hyperparams=hyperparams, artifacts=artifacts or {})


def model(uri: str, minutes: int, iteration: int | None = None) -> ModelSnapshot:
    return ModelSnapshot(id=uri, uri=uri, last_update=T0 + timedelta(minutes=minutes), last_iteration=iteration)


@pytest.mark.parametrize(
    ("uri", "remote"),
    [
        ("s3://bucket/a.pt", True),
        ("gs://bucket/a.pt", True),
        ("azure://acct/c/a.pt", True),
        ("https://files.example.com/a.pt", True),
        ("file:///tmp/a.pt", False),
        ("/tmp/a.pt", False),
        ("checkpoints/a.pt", False),
        ("C:\\ckpt\\a.pt", False),
    ],
)
def test_is_remote(uri: str, remote: bool) -> None:
    assert is_remote(uri) is remote


CASES = [
    # (id, models, artifacts, params, require_remote, expected uri, expected source)
    # Newest by last_update, not list order (auto-logging updates one entry in place).
    (
        "newest model wins",
        [model("s3://b/old", 1), model("s3://b/new", 9), model("s3://b/mid", 5)],
        {},
        {},
        True,
        "s3://b/new",
        "output_model",
    ),
    (
        "local newest model refused, older remote used",
        [model("file:///tmp/new", 9), model("s3://b/old", 1)],
        {},
        {},
        True,
        "s3://b/old",
        "output_model",
    ),
    (
        "local allowed when not required",
        [model("file:///tmp/new", 9)],
        {},
        {},
        False,
        "file:///tmp/new",
        "output_model",
    ),
    (
        "falls through to artifact",
        [model("/tmp/x", 1)],
        {"checkpoint": "s3://b/art"},
        {},
        True,
        "s3://b/art",
        "artifact:checkpoint",
    ),
    (
        "falls through to parameter",
        [],
        {"other": "s3://b/x"},
        {"General/last_checkpoint": "gs://b/p"},
        True,
        "gs://b/p",
        "parameter:General/last_checkpoint",
    ),
    ("nothing anywhere", [], {}, {"General/last_checkpoint": "  "}, True, None, None),
]


@pytest.mark.parametrize(
    ("name", "models", "artifacts", "params", "require_remote", "uri", "source"), CASES, ids=[c[0] for c in CASES]
)
def test_choose(
    name: str,
    models: list[ModelSnapshot],
    artifacts: dict[str, str],
    params: dict[str, str],
    require_remote: bool,
    uri: str | None,
    source: str | None,
) -> None:
    choice = choose(details(artifacts, params), models, SOURCES, require_remote)
    if uri is None:
        assert choice.checkpoint is None
    else:
        assert choice.checkpoint is not None
        assert (choice.checkpoint.uri, choice.checkpoint.source) == (uri, source)


def test_refusals_are_reported() -> None:
    choice = choose(details(), [model("file:///tmp/a.pt", 1)], SOURCES, True)
    assert choice.checkpoint is None
    assert choice.refused == (("file:///tmp/a.pt", "output_model: a local path, gone with the machine"),)


def test_source_order_is_respected() -> None:
    choice = choose(
        details({"checkpoint": "s3://b/art"}), [model("s3://b/m", 1)], ["artifact:checkpoint", "output_model"], True
    )
    assert choice.checkpoint is not None and choice.checkpoint.uri == "s3://b/art"


def test_inject_keeps_every_other_parameter() -> None:
    original = {
        "Args": {
            "lr": {"section": "Args", "name": "lr", "value": "0.1", "type": "float", "description": "rate"},
            "resume_from": {"section": "Args", "name": "resume_from", "value": "", "type": "str"},
        },
        "General": {"epochs": {"section": "General", "name": "epochs", "value": "90"}},
    }
    merged = inject(original, ["Args/resume_from", "General/ckpt"], "s3://b/c.pt")
    assert merged["Args"]["lr"] == original["Args"]["lr"]
    assert merged["General"]["epochs"] == original["General"]["epochs"]
    assert merged["Args"]["resume_from"]["value"] == "s3://b/c.pt"
    assert merged["Args"]["resume_from"]["type"] == "str"
    assert merged["General"]["ckpt"]["value"] == "s3://b/c.pt"
    assert original["Args"]["resume_from"]["value"] == "", "the input must not be modified"
