"""The controller's own decisions around a run: which stale locks it may take over."""

from __future__ import annotations

from djdeploy.operations import runs_gone


def test_only_locks_of_dead_runs_of_this_controller_are_taken_over():
    def holder(run_id, pid, controller="ctl"):
        return {"outcome": "refused", "lock_holder": {"run_id": run_id, "pid": pid, "controller": controller}}

    reports = {
        "web01": holder("dead", 10),
        "web02": holder("alive", 11),
        "web03": holder("elsewhere", 10, controller="other"),
        "web04": {"outcome": "refused", "lock_holder": None},
        "web05": {"outcome": "applied"},
        "web06": holder("dead", 10),
    }
    assert runs_gone(reports, "ctl", alive=lambda pid: pid == 11) == {"dead"}
