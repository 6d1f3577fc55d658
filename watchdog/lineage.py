"""How the watchdog marks tasks in ClearML, which is the source of truth for "already handled".

Who calls it: detect (skip handled tasks), policy (attempt number), recovery (tags for the clone,
finding an existing clone). Pure functions over tags; no I/O.

- A clone carries `watchdog:resumed`, `watchdog:attempt-<n>` and `watchdog:root-<root task id>`:
  a person sees the lineage as tags in the UI, and the attempt number needs no extra query.
- A handled original carries `watchdog:handled`.
- An original the watchdog itself marked stopped (agent lost) has the status reason `STOP_REASON`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RESUMED_TAG = "watchdog:resumed"
HANDLED_TAG = "watchdog:handled"
ATTEMPT_PREFIX = "watchdog:attempt-"
ROOT_PREFIX = "watchdog:root-"
STOP_REASON = "clearml-watchdog: agent lost"

_OWN_PREFIXES = (ATTEMPT_PREFIX, ROOT_PREFIX)


@dataclass(frozen=True)
class Lineage:
    """Where a task stands in its chain of resumes: the original is attempt 0 and its own root."""

    root_id: str
    attempt: int

    @property
    def next_attempt(self) -> int:
        return self.attempt + 1


def lineage_of(task_id: str, tags: Iterable[str]) -> Lineage:
    attempt = 0
    root_id = task_id
    tag_list = list(tags)
    if RESUMED_TAG in tag_list:
        for tag in tag_list:
            if tag.startswith(ATTEMPT_PREFIX) and tag[len(ATTEMPT_PREFIX) :].isdigit():
                attempt = max(attempt, int(tag[len(ATTEMPT_PREFIX) :]))
            elif tag.startswith(ROOT_PREFIX) and len(tag) > len(ROOT_PREFIX):
                root_id = tag[len(ROOT_PREFIX) :]
    return Lineage(root_id=root_id, attempt=attempt)


def is_watchdog_tag(tag: str) -> bool:
    return tag in (RESUMED_TAG, HANDLED_TAG) or tag.startswith(_OWN_PREFIXES)


def clone_tags(original_tags: Iterable[str], lineage: Lineage) -> list[str]:
    """The clone keeps the user's tags and gets the watchdog's lineage tags for the next attempt."""
    kept = [t for t in original_tags if not is_watchdog_tag(t)]
    return [*kept, RESUMED_TAG, f"{ATTEMPT_PREFIX}{lineage.next_attempt}", f"{ROOT_PREFIX}{lineage.root_id}"]


def is_clone_for(tags: Iterable[str], attempt: int) -> bool:
    """A task is the watchdog's clone for this attempt (a person's manual copy of a clone has an older one)."""
    tag_list = list(tags)
    return RESUMED_TAG in tag_list and f"{ATTEMPT_PREFIX}{attempt}" in tag_list
