"""A ClearML API server simulator that speaks the real wire format.

The real ``clearml`` SDK talks to it over HTTP; tests, the ``demo`` command and the benchmarks
use it to produce every way a task can end (CLEARML_FACTS.md, "What each kind of ending looks
like") on demand and at any scale::

    with Simulator(SimulatorConfig(report_interval_s=0.2)) as sim:
        os.environ.update(sim.env())
        sim.start_agents(2)
        task_id = sim.submit("train", queue="default")
        sim.wait_running(task_id)
        sim.kill_agent(sim.worker_of(task_id))
"""

from .agents import (
    EXECUTION_DONE,
    STOPPED_BY_STOP,
    USER_ABORT,
    WORKER_STARTING,
    Agent,
    Fleet,
    agent_message,
    exit_code_reason,
)
from .calls import CallCounter
from .clock import SimClock
from .config import SimulatorConfig
from .errors import ApiError
from .faults import Fault, FaultInjector, FaultPlan
from .simulator import Simulator
from .state import FORCED_STOP, SERVER_USER, STOPPING, Identity, State

__all__ = [
    "EXECUTION_DONE",
    "FORCED_STOP",
    "SERVER_USER",
    "STOPPED_BY_STOP",
    "STOPPING",
    "USER_ABORT",
    "WORKER_STARTING",
    "Agent",
    "ApiError",
    "CallCounter",
    "Fault",
    "FaultInjector",
    "FaultPlan",
    "Fleet",
    "Identity",
    "SimClock",
    "Simulator",
    "SimulatorConfig",
    "State",
    "agent_message",
    "exit_code_reason",
]
