"""Two watchdogs on one ClearML (someone started a second copy by mistake): still one clone per loss.

The claim step (recovery.py, step 3): every watchdog that cloned lists the clones of that attempt again, the
OLDEST one wins for all of them, and younger drafts are deleted (a draft never ran, and `tasks.delete`
without force refuses anything that left draft state). Here both watchdogs are forced to clone the same
losses at the same moment, the worst case the soak only meets by chance.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.harness import SPOT, Rig, fast_simulator
from watchdog.lineage import RESUMED_TAG


def meet_before_cloning(rig: Rig, barrier: threading.Barrier) -> None:
    """Both watchdogs have looked for a clone, found none, and now clone together."""
    clone = rig.gateway.clone

    def clone_together(*args: Any, **kwargs: Any) -> str:
        barrier.wait(timeout=20)
        return clone(*args, **kwargs)

    rig.gateway.clone = clone_together  # type: ignore[method-assign]


def test_two_watchdogs_cloning_the_same_losses_at_once_keep_one_clone_each(tmp_path: Path) -> None:
    lost_count = 6
    with fast_simulator() as sim:
        sim.start_agents(lost_count, queues=[SPOT])
        params = {"Args": {"resume_from": ""}}
        tasks = [sim.submit(f"job-{i}", queue=SPOT, hyperparams=params) for i in range(lost_count)]
        for task_id in tasks:
            sim.wait_running(task_id)
        rigs = [Rig(sim, tmp_path / "a"), Rig(sim, tmp_path / "b")]
        for rig in rigs:
            rig.cycle()
        barrier = threading.Barrier(2)
        for rig in rigs:
            meet_before_cloning(rig, barrier)
        for task_id in tasks:
            worker = sim.worker_of(task_id)
            assert worker
            sim.kill_agent(worker)
        sim.advance(5)
        sim.calls.reset()
        threads = [threading.Thread(target=rig.reconciler.run_cycle) for rig in rigs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        barrier.abort()
        for rig in rigs:  # a second round finds everything done
            rig.gateway.clone = type(rig.gateway).clone.__get__(rig.gateway)  # type: ignore[method-assign]
            rig.cycle()
        calls = sim.calls.snapshot()
        clones = {t: [c for c in sim.tasks(parent=t) if RESUMED_TAG in c.get("tags", [])] for t in tasks}
        for rig in rigs:
            rig.close()
    assert calls.get("tasks.clone") == 2 * lost_count, calls  # the race really happened: both cloned each loss
    assert calls.get("tasks.delete", 0) >= lost_count, calls  # ... and every younger draft was deleted
    for task_id, found in clones.items():
        assert len(found) == 1, (task_id, [(c["id"], c["status"]) for c in found])
        assert found[0]["status"] in ("queued", "in_progress"), found[0]["status"]
