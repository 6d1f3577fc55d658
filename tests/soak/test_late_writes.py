"""Writes the server carries out after the watchdog gave up on them.

A request that outlives the client's timeout is not cancelled on the server: the SDK retries it, the retry
succeeds, the watchdog finishes the recovery, and THEN the first request completes. For `tasks.clone` that
is a second clone of the same loss, created after the claim step looked. The long chaos soak met exactly
this (a 4 s latency spike against a 3 s request timeout); here it is made to happen on purpose.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness import SPOT, Rig, fast_simulator
from watchdog.lineage import RESUMED_TAG
from watchdog.simulator.faults import Fault


def test_a_clone_the_server_makes_after_the_client_gave_up_is_deleted_before_the_incident_closes(
    tmp_path: Path,
) -> None:
    with fast_simulator() as sim:
        sim.start_agents(2, queues=[SPOT])
        task_id = sim.submit("late clone", queue=SPOT, hyperparams={"Args": {"resume_from": ""}})
        sim.wait_running(task_id)
        rig = Rig(sim, tmp_path)  # request_timeout_s 3, one retry
        rig.cycle()
        decide = sim.faults.decide
        delayed = {"n": 0}

        def first_clone_outlives_the_timeout(endpoint: str) -> Fault:
            if endpoint == "tasks.clone" and delayed["n"] == 0:
                delayed["n"] += 1
                return Fault(delay_s=4.0)  # > 3 s: the client retries while this one still runs
            return decide(endpoint)

        sim.faults.decide = first_clone_outlives_the_timeout  # type: ignore[method-assign]
        worker = sim.worker_of(task_id)
        assert worker
        sim.kill_agent(worker)
        sim.advance(5)
        report = rig.cycle()
        assert report.recoveries == 1, report.outcomes

        def clones() -> list[dict[str, object]]:
            return [t for t in sim.tasks(parent=task_id) if RESUMED_TAG in t.get("tags", [])]

        sim.wait_for(lambda: len(clones()) == 2, timeout=10)  # the late request has landed: a stray draft
        sim.wait_for(lambda: any(c["status"] == "in_progress" for c in clones()), timeout=10)
        for _ in range(3):
            rig.cycle()  # the incident follows its clone until it runs, then closes
        left = clones()
        incident = rig.journal.get_incident(f"{task_id}:loss")
        rig.close()
    assert incident is not None and incident.state == "recovered"
    assert [(c["status"]) for c in left] == ["in_progress"], [(c["id"], c["status"]) for c in left]
