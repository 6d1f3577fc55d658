"""`clearml-watchdog demo`: a scripted night of spot losses on the built-in simulator, alerts on the terminal.

Who calls it: the CLI. It starts the ClearML simulator (the real wire format, the real SDK talks to it)
and the real daemon (`Service`, APScheduler, journal, outbox) in this process, plays a timeline of
losses, one person's abort and one crash, and ends with a summary checked against the simulator's state.
Nothing is installed or written outside a temporary directory.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from watchdog.config import WatchdogConfig, build_config
from watchdog.gateway import Gateway
from watchdog.journal import Journal
from watchdog.lineage import RESUMED_TAG
from watchdog.notify.build import build_channels, build_outbox
from watchdog.recovery import Reconciler
from watchdog.service import Service
from watchdog.simulator import Simulator, SimulatorConfig

SPOT, ONDEMAND = "gpu-spot", "gpu-ondemand"
JOBS = {
    "resnet50-imagenet": {"Args": {"lr": 0.1, "epochs": 90, "resume_from": ""}},
    "bert-large-finetune": {"Args": {"lr": 3e-5, "epochs": 4, "resume_from": ""}},
    "whisper-small-asr": {"Args": {"lr": 1e-4, "resume_from": ""}},
    "yolov8-coco": {"Args": {"imgsz": 640, "resume_from": ""}},
    "unet-diffusion": {"Args": {"steps": 200000, "resume_from": ""}},
    "llama-lora-eval": {"Args": {"rank": 16, "resume_from": ""}},
}
SIM_SETTINGS = SimulatorConfig(
    report_interval_s=0.5,
    worker_timeout_s=20,
    pickup_delay_s=0.3,
    task_init_delay_s=0.2,
    task_ping_interval_s=0.5,
    iteration_period_s=0.05,
    checkpoint_every_iters=20,
    server_watchdog_enabled=False,
    replace_dead_workers_after_s=1.5,  # a new spot machine joins the pool after a loss
    tick_s=0.05,
)


@dataclass
class Step:
    at_s: float
    say: str
    act: Callable[[], object]


def _config(sim: Simulator, state_dir: Path) -> WatchdogConfig:
    return build_config(
        {
            "poll_interval_s": 1,
            "watch": {"queues": [SPOT]},
            "detect": {"task_stale_s": 3, "worker_stale_s": 2},
            "recover": {"max_attempts": 3, "fallback_queue": ONDEMAND, "fallback_after": 2},
            "state_dir": str(state_dir),
            "clearml": {**sim.watchdog_clearml_section(), "request_timeout_s": 5, "retries": 1},
            "notify": {"console": True, "group_wait_s": 0},
            "health": {"enabled": False},
        },
        "demo",
    )


class Demo:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.sim = Simulator(SIM_SETTINGS)
        self.ids: dict[str, str] = {}

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.out.write(f"\n[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {text}\n")
        self.out.flush()

    def running_worker(self, name: str) -> str:
        """The live worker running the newest task of this job's lineage."""
        task_id = self.current(name)
        return self.sim.worker_of(task_id) or ""

    def current(self, name: str) -> str:
        """The newest run of a job: the original or its latest clone."""
        task_id = self.ids[name]
        while True:
            children = [t for t in self.sim.tasks(parent=task_id) if RESUMED_TAG in t.get("tags", [])]
            if not children:
                return task_id
            task_id = children[-1]["id"]

    def timeline(self) -> list[Step]:
        def kill(name: str) -> Callable[[], object]:
            return lambda: self.sim.kill_agent(self.running_worker(name))

        return [
            Step(
                3,
                "💥 AWS reclaims the spot machine running resnet50-imagenet (agent killed -9, no warning)",
                kill("resnet50-imagenet"),
            ),
            Step(
                5,
                "📣 spot 2-minute notice: the agent running bert-large-finetune gets SIGTERM",
                lambda: self.sim.sigterm_agent(self.running_worker("bert-large-finetune")),
            ),
            Step(
                7,
                "🙋 a person aborts whisper-small-asr from the web UI",
                lambda: self.sim.user_abort(self.current("whisper-small-asr")),
            ),
            Step(
                9,
                "🐛 yolov8-coco raises in the training code (exit code 1)",
                lambda: self.sim.code_failure(self.current("yolov8-coco"), exit_code=1),
            ),
            Step(
                11,
                "🧊 the server's non-responsive watchdog force-stops unet-diffusion",
                lambda: self.sim.force_stop(self.current("unet-diffusion")),
            ),
            Step(
                12,
                "😴 llama-lora-eval goes quiet for a long evaluation (its agent still reports): must be left alone",
                lambda: self.sim.set_quiet(self.current("llama-lora-eval")),
            ),
            Step(
                16,
                "💥 the resumed resnet50-imagenet loses its spot machine too: 2nd loss moves it to on-demand",
                kill("resnet50-imagenet"),
            ),
        ]

    def run(self, seconds: float) -> int:
        self.sim.start()
        with tempfile.TemporaryDirectory(prefix="clearml-watchdog-demo-") as state:
            config = _config(self.sim, Path(state))
            self.sim.start_agents(6, queues=[SPOT], prefix="spot")
            self.sim.start_agents(1, queues=[ONDEMAND], prefix="ondemand")
            self.say(
                "🌙 a night on spot GPUs: 6 training runs start on queue gpu-spot "
                f"(simulated ClearML at {self.sim.url})"
            )
            for name, params in JOBS.items():
                self.ids[name] = self.sim.submit(name, queue=SPOT, project="night-shift", hyperparams=params)
            for task_id in self.ids.values():
                self.sim.wait_running(task_id, timeout=15)
            journal = Journal.open_in(config.state_dir)
            outbox = build_outbox(journal, config.notify, channels=build_channels(config.notify, stream=self.out))
            reconciler = Reconciler(Gateway(config.clearml), journal, outbox, config, self_task_id="")
            service = Service(
                reconciler, journal, outbox, outbox, poll_interval_s=config.poll_interval_s, unhealthy_after_s=60
            )
            daemon = threading.Thread(target=service.run, kwargs={"install_signals": False}, daemon=True)
            self.say("🐕 clearml-watchdog starts: polling every 1 s, lost = no update for 3 s and no live worker")
            daemon.start()
            deadline = self.started + seconds
            try:
                for step in self.timeline():
                    while time.monotonic() - self.started < step.at_s:
                        time.sleep(0.05)
                    self.say(step.say)
                    step.act()
                while time.monotonic() < deadline and not self.settled(journal):
                    time.sleep(0.25)
                time.sleep(1.5)  # let the last alerts out
            finally:
                service.stop_requested.set()
                daemon.join(timeout=15)
            return self.summary(journal_path=config.state_dir)

    def settled(self, journal: Journal) -> bool:
        """Every expected incident is closed: recovered clones running, reports sent."""
        try:
            rows = journal.recent_incidents(limit=50)
            pending = journal.query("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")[0]["n"]
        except Exception:
            return False
        recovered = sum(1 for r in rows if r.state == "recovered")
        reported = sum(1 for r in rows if r.state == "reported")
        return recovered >= 4 and reported >= 2 and pending == 0

    def summary(self, journal_path: Path) -> int:
        self.say("☀️ morning. What happened overnight:")
        problems: list[str] = []
        lines = []
        for name, original in self.ids.items():
            chain = [original]
            while True:
                children = [t for t in self.sim.tasks(parent=chain[-1]) if RESUMED_TAG in t.get("tags", [])]
                if len(children) > 1:
                    problems.append(f"{name}: {len(children)} clones of one run (duplicates)")
                if not children:
                    break
                chain.append(children[0]["id"])
            last = self.sim.task(chain[-1])
            queue = self._queue_name(last)
            resume = ((last.get("hyperparams") or {}).get("Args") or {}).get("resume_from", {}).get("value", "")
            lines.append((name, len(chain) - 1, last["status"], queue, resume.rsplit("/", 1)[-1] or "-"))
        width = max(len(n) for n in self.ids)
        self.out.write(f"\n  {'job':<{width}}  resumes  now          queue          resumed from\n")
        for name, resumes, status, queue, resume in lines:
            self.out.write(f"  {name:<{width}}  {resumes:>7}  {status:<11}  {queue:<13}  {resume}\n")
        expected = {
            "resnet50-imagenet": 2,
            "bert-large-finetune": 1,
            "unet-diffusion": 1,
            "whisper-small-asr": 0,
            "yolov8-coco": 0,
            "llama-lora-eval": 0,
        }
        for name, resumes, *_ in lines:
            if resumes != expected[name]:
                problems.append(f"{name}: {resumes} resumes, expected {expected[name]}")
        self.sim.stop()
        if problems:
            self.out.write("\n❌ " + "\n❌ ".join(problems) + "\n")
            return 1
        self.out.write(
            "\n✅ 4 losses resumed exactly once each from their last checkpoint (one moved to on-demand after its\n"
            "   2nd loss), the abort and the crash reported and left alone, the quiet run untouched.\n"
            "   Try it on your server: clearml-watchdog once --dry-run --json --config config.yaml\n"
        )
        self.out.flush()
        return 0

    def _queue_name(self, task: dict[str, Any]) -> str:
        queue_id = (task.get("execution") or {}).get("queue") or ""
        for name in (SPOT, ONDEMAND):
            if self.sim.state.queue_id(name) == queue_id:
                return name
        return queue_id or "-"


def run_demo(seconds: float = 50.0, out: TextIO | None = None) -> int:
    return Demo(out or sys.stdout).run(seconds)
