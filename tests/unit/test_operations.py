"""The controller's own decisions around a run: which stale locks it may take over, and that a host
whose role arguments are refused counts as refused (exit 2), not failed."""

from __future__ import annotations

from djdeploy.operations import runs_gone, summarize
from djdeploy.runner import _Collector


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


def argument_check_failed(host: str, message: str) -> dict:
    """The event ansible-runner gives when a role's argument specs refuse a host's variables."""
    return {"event": "runner_on_failed", "event_data": {
        "host": host, "task": "Validating arguments against arg spec 'main'",
        "task_action": "ansible.builtin.validate_argument_spec", "res": {"msg": message}}}


def test_a_host_whose_role_arguments_are_refused_is_refused_not_failed():
    collected = _Collector(None)
    collected.handle(argument_check_failed("web01", "value of gunicorn_profile must be one of: cpu, io, mixed"))
    collected.handle({"event": "runner_on_failed", "event_data": {
        "host": "web02", "task": "Restart gunicorn", "task_action": "ansible.builtin.systemd_service",
        "res": {"msg": "Unable to restart"}}})
    result = collected.result
    summary = summarize(["web01", "web02"], result)
    web01, web02 = summary["hosts"]["web01"], summary["hosts"]["web02"]
    assert web01["outcome"] == "refused"
    assert "gunicorn_profile must be one of: cpu, io, mixed" in web01["message"]
    assert web02["outcome"] == "failed"
    assert summary["exit_code"] == 4  # the worst of the two


def test_a_run_stopped_only_by_argument_specs_exits_2():
    collected = _Collector(None)
    collected.handle(argument_check_failed("web01", "value of gunicorn_verify_requests must be an int"))
    result = collected.result
    assert summarize(["web01"], result)["exit_code"] == 2
