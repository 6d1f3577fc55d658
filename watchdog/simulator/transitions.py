"""Task statuses and the server's legal status transitions (apiserver/bll/task/utils.py, 2.0.0).

Kept as data so tests can walk the table. Callers: state, for every status change.
"""

from __future__ import annotations

from typing import Final

from . import errors

CREATED: Final = "created"
QUEUED: Final = "queued"
IN_PROGRESS: Final = "in_progress"
STOPPED: Final = "stopped"
PUBLISHING: Final = "publishing"
PUBLISHED: Final = "published"
CLOSED: Final = "closed"
FAILED: Final = "failed"
COMPLETED: Final = "completed"
UNKNOWN: Final = "unknown"

STATUSES: Final = frozenset(
    {CREATED, QUEUED, IN_PROGRESS, STOPPED, PUBLISHING, PUBLISHED, CLOSED, FAILED, COMPLETED, UNKNOWN}
)

# Same-state changes are always allowed and are not listed; `force` skips this table.
ALLOWED: Final[dict[str, frozenset[str]]] = {
    CREATED: frozenset({QUEUED, IN_PROGRESS}),
    QUEUED: frozenset({CREATED, IN_PROGRESS, STOPPED}),
    IN_PROGRESS: frozenset({STOPPED, FAILED, CREATED, COMPLETED}),
    STOPPED: frozenset({CLOSED, CREATED, FAILED, QUEUED, IN_PROGRESS, PUBLISHED, PUBLISHING, COMPLETED}),
    CLOSED: frozenset({CREATED, FAILED, PUBLISHED, PUBLISHING, STOPPED}),
    FAILED: frozenset({CREATED, STOPPED, PUBLISHED, QUEUED}),
    PUBLISHING: frozenset({PUBLISHED}),
    PUBLISHED: frozenset(),
    COMPLETED: frozenset({PUBLISHED, IN_PROGRESS, CREATED}),
}


def is_allowed(current: str, new: str) -> bool:
    """Whether the server accepts ``current -> new`` without force."""
    return current == new or new in ALLOWED.get(current, frozenset())


def check(current: str, new: str, *, force: bool) -> None:
    """Raise the server's InvalidTaskStatus for an illegal change unless forced."""
    if new not in STATUSES:
        raise errors.VALIDATION_ERROR(f"Invalid task status: {new}")
    if force or is_allowed(current, new):
        return
    if current not in ALLOWED:
        raise errors.INTERNAL_ERROR(f"Current status {current} not supported by state machine")
    raise errors.INVALID_TASK_STATUS("Invalid status change", current_status=current, new_status=new)
