"""The in-memory ClearML domain: tasks, queues, workers, models, projects and scalar events.

One ``State`` holds everything behind ONE re-entrant lock (store.py), so every operation (an
HTTP call or a step of a simulated agent) is atomic, like a single Mongo update on the real
server. Status changes are compare-and-set on the status that was read (``expected=``), with
the server's transition table (transitions.py) and its side effects.

Documents are stored in wire format (dates as ISO strings, hyperparameters as
section -> name -> item, artifacts as a list), so reads are a projection plus a copy. Semantics
follow clearml-server 2.0.0 (apiserver/bll/task/*, bll/queue/*, bll/workers/*); where the
simulator simplifies, the method docstring says so. The operations are grouped by entity:
projects.py, queues.py, tasks.py, workers.py, models.py, events.py.
Callers: endpoints.py (one method per API call), agents.py, simulator.py (seeding, inspection).
"""

from __future__ import annotations

from .events import EventOps
from .models import ModelOps
from .store import (
    ARCHIVED,
    DELETED_PREFIX,
    DEVELOPMENT,
    FORCED_STOP,
    SERVER_USER,
    STOPPING,
    Identity,
    WorkerEntry,
)
from .tasks import TaskOps
from .workers import WorkerOps

__all__ = [
    "ARCHIVED",
    "DELETED_PREFIX",
    "DEVELOPMENT",
    "FORCED_STOP",
    "SERVER_USER",
    "STOPPING",
    "Identity",
    "State",
    "WorkerEntry",
]


class State(TaskOps, WorkerOps, ModelOps, EventOps):
    """Thread-safe store of the whole simulated server. All public methods take ``lock``."""
