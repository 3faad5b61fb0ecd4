"""What the runner takes from Ansible's events: the reason a host failed or was unreachable."""

from djdeploy.runner import _Collector


def event(kind: str, result: dict) -> dict:
    return {"event": kind, "event_data": {"host": "web02", "task": "Look for the paths the app writes", "res": result}}


def test_an_unreachable_loop_reports_the_ssh_error_not_all_items_completed():
    collected = _Collector(None)
    ssh_error = "Failed to connect to the host via ssh: ssh: connect to host 10.77.1.10 port 2222: Connection refused"
    collected.handle(event("runner_on_unreachable", {
        "msg": "All items completed", "unreachable": True,
        "results": [{"item": "/srv/demo/data", "unreachable": True, "msg": ssh_error}],
    }))
    assert collected.result.unreachable == {"web02": ssh_error}


def test_a_failed_task_reports_its_own_message():
    collected = _Collector(None)
    collected.handle(event("runner_on_failed", {"msg": "non-zero return code", "failed": True}))
    assert collected.result.failures == {"web02": "non-zero return code"}


def test_a_cancelled_run_kills_what_still_runs_with_its_private_directory(tmp_path):
    import subprocess
    import sys

    from djdeploy.runner import kill_leftovers

    private_dir = str(tmp_path / "djdeploy-run-x")
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-e", f"@{private_dir}/env/extravars"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "unrelated"])
    try:
        assert kill_leftovers(private_dir) == [left.pid]
        assert left.wait(10) == -9
        assert other.poll() is None
    finally:
        for process in (left, other):
            process.kill()
            process.wait()
