"""Every knob of the simulator in one frozen dataclass, with the real server's defaults.

Defaults model a stock clearml-server 2.0.0 with clearml-agent workers (CLEARML_FACTS.md);
tests shrink the intervals (e.g. ``report_interval_s=0.2``). Read by state, agents and server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .faults import FaultPlan


@dataclass(frozen=True)
class SimulatorConfig:
    """Configuration of one simulated ClearML server and its fleet of agents."""

    # --- identity and wire format
    access_key: str = "sim-access-key"
    secret_key: str = "sim-secret-key"
    host: str = "127.0.0.1"
    port: int = 0  # 0 = an ephemeral port, chosen at start()
    api_version: str = "2.31"
    server_version: str = "2.0.0"
    feature_set: str = "basic"  # "basic" keeps the SDK from calling vault/enterprise endpoints
    company_id: str = "d1bd92a3b039400cbafc60a7a5b1e52b"
    company_name: str = "sim-company"
    user_id: str = "5f2c1e6b7a8d4c3e9b0a1d2c3e4f5a6b"
    user_name: str = "sim-user"
    token_ttl_s: float = 30 * 24 * 3600.0
    duplicate_date_header: bool = False  # the stock Werkzeug server sends Date twice on gzipped replies
    seed: int = 0  # ids and fault decisions are reproducible for a given seed

    # --- workers and agents
    report_interval_s: float = 30.0  # workers.status_report cadence of a live agent
    worker_timeout_s: float = 600.0  # a silent worker stays listed this long after its last report
    pickup_delay_s: float = 2.0  # a queued task waits this long before an idle agent takes it
    task_ping_interval_s: float = 60.0  # tasks.ping cadence of a running task
    task_init_delay_s: float = 2.0  # Task.init clears the "worker starting" reason/message after this
    replace_dead_workers_after_s: float | None = None  # spawn a fresh spot worker after a loss

    # --- training progress of running tasks
    training_progress: bool = True  # False: no iterations/checkpoints (cheap benchmarks)
    iteration_period_s: float = 1.0
    checkpoint_every_iters: int = 10
    task_duration_iters: int | None = None  # None = train forever; else complete at this iteration
    local_checkpoints: bool = False  # record file:///tmp/... paths instead of remote URIs
    checkpoint_bucket: str = "s3://sim-bucket"

    # --- server-side rules
    task_update_timeout_s: float = 600.0  # tasks.stop treats a task as run by a worker this long
    server_watchdog_enabled: bool = True
    server_watchdog_threshold_s: float = 7200.0
    server_watchdog_interval_s: float = 900.0

    # --- machinery
    tick_s: float = 0.05  # how often the single agent thread wakes up
    faults: FaultPlan = field(default_factory=FaultPlan)
