"""Choosing the checkpoint a resumed task starts from, and writing it into the clone's hyperparameters.

Who calls it: recovery, for each clone it makes. Pure: the task's details and output models are read by
the gateway beforehand. Sources are tried in the configured order; the first that yields a usable URI
wins; among output models the newest by `last_update` wins (auto-logging updates one model in place,
so list order means nothing). A local path is useless once the machine is gone: refused when
`require_remote` is set.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlparse

from watchdog.snapshots import HyperParams, ModelSnapshot, TaskDetails

REMOTE_SCHEMES = frozenset({"s3", "gs", "azure", "https", "http", "hdfs", "abfs", "abfss", "wasb", "wasbs"})
_OLDEST = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Checkpoint:
    uri: str
    source: str  # the config source that yielded it, e.g. "output_model" or "artifact:checkpoint"
    iteration: int | None = None


@dataclass(frozen=True)
class CheckpointChoice:
    """The outcome of a lookup: the checkpoint (or None) and every URI refused, with why."""

    checkpoint: Checkpoint | None
    refused: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def is_remote(uri: str) -> bool:
    scheme = urlparse(uri).scheme.lower()
    return scheme in REMOTE_SCHEMES


def _candidates(source: str, details: TaskDetails, models: Sequence[ModelSnapshot]) -> list[Checkpoint]:
    if source == "output_model":
        ordered = sorted(models, key=lambda m: m.last_update or _OLDEST, reverse=True)
        # ClearML leaves a model's last_iteration at 0 even when the SDK passed iteration=N: 0 means unknown.
        return [Checkpoint(m.uri, source, m.last_iteration or None) for m in ordered if m.uri]
    kind, _, name = source.partition(":")
    if kind == "artifact":
        uri = details.artifacts.get(name)
        return [Checkpoint(uri, source)] if uri else []
    if kind == "parameter":
        value = details.parameter(name)
        return [Checkpoint(value.strip(), source)] if value and value.strip() else []
    return []


def choose(
    details: TaskDetails, models: Sequence[ModelSnapshot], sources: Sequence[str], require_remote: bool
) -> CheckpointChoice:
    refused: list[tuple[str, str]] = []
    for source in sources:
        for candidate in _candidates(source, details, models):
            if require_remote and not is_remote(candidate.uri):
                refused.append((candidate.uri, f"{source}: a local path, gone with the machine"))
                continue
            return CheckpointChoice(candidate, tuple(refused))
    return CheckpointChoice(None, tuple(refused))


def inject(hyperparams: HyperParams, paths: Sequence[str], uri: str) -> HyperParams:
    """A full copy of the hyperparameters with `uri` written at each `Section/name` in `paths`.

    Full, because `tasks.clone(new_task_hyperparams=...)` replaces every hyperparameter of the clone.
    """
    merged = copy.deepcopy(hyperparams)
    for path in paths:
        section, _, name = path.partition("/")
        params = merged.setdefault(section, {})
        entry = params.setdefault(name, {"section": section, "name": name, "type": "str", "description": ""})
        entry["section"] = section
        entry["name"] = name
        entry["value"] = uri
    return merged
