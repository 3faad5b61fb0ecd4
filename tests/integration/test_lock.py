"""The per-host lock on real lab hosts: one changing run at a time, the owner shown to the run
that is refused, stale locks (expired, or their run gone) taken over with a warning, and
read-only commands unaffected."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from conftest import LabHosts, master_pid, run_json

pytestmark = pytest.mark.lab

LOCK = "/var/lib/djdeploy/lock"
CONFIG = "/etc/gunicorn/gunicorn.conf.py"


@pytest.fixture(scope="module")
def lab(lab_factory) -> LabHosts:
    lab = lab_factory("--hosts", "1")
    code, result, _ = run_json(lab, "tune", "web01")
    assert code == 0, result
    return lab


def place_lock(lab: LabHosts, *, pid: int, controller: str, expires_in: float, run_id: str = "20261121T000000Z-0ther0") -> dict:
    now = time.time()
    lock = {"run_id": run_id, "who": "alice@elsewhere", "pid": pid, "controller": controller,
            "command": "djdeploy tune web01 --set workers=9", "acquired_at": now - 60, "expires_at": now + expires_in}
    lab.sh("web01", f"install -d -m 0700 /var/lib/djdeploy && printf '%s' '{json.dumps(lock)}' > {LOCK}")
    return lock


def dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


@pytest.fixture
def no_lock(lab):
    yield
    lab.sh("web01", f"rm -f {LOCK}")


def state(lab: LabHosts) -> tuple[int, str]:
    return master_pid(lab), lab.sh("web01", f"sha256sum {CONFIG}")


def test_a_run_releases_its_lock(lab, no_lock):
    code, _, _ = run_json(lab, "tune", "web01")
    assert code == 0
    assert lab.exec("web01", "test", "-e", LOCK).returncode == 1


@pytest.mark.covers(kind="fault", case="a second run against a host another run holds", exit_code=2,
                    end="refused at once, the owner shown; nothing changed; the other run's lock kept")
def test_a_held_lock_refuses_a_second_run_at_once_and_shows_the_owner(lab, no_lock):
    held = place_lock(lab, pid=os.getpid(), controller=socket.gethostname(), expires_in=600)
    before = state(lab)
    code, result, _ = run_json(lab, "tune", "web01", "--set", "max_requests=4321")
    record = result["hosts"]["web01"]
    assert code == 2, record
    assert record["outcome"] == "refused"
    assert "locked by alice@elsewhere" in record["message"] and "djdeploy tune web01 --set workers=9" in record["message"]
    assert record["lock_holder"]["run_id"] == held["run_id"]
    assert state(lab) == before
    assert json.loads(lab.sh("web01", f"cat {LOCK}")) == held


def test_read_only_commands_do_not_need_the_lock(lab, no_lock):
    held = place_lock(lab, pid=os.getpid(), controller=socket.gethostname(), expires_in=600)
    for command in (("status", "web01"), ("history", "web01"), ("tune", "web01", "--check")):
        code, result, _ = run_json(lab, *command)
        assert code == 0, (command, result)
    assert json.loads(lab.sh("web01", f"cat {LOCK}")) == held


@pytest.mark.covers(kind="fault", case="a lock left behind that has expired", exit_code=0,
                    end="taken over with a warning naming its owner; the run proceeds")
def test_an_expired_lock_is_taken_over_with_a_warning(lab, no_lock):
    place_lock(lab, pid=4242, controller="another-controller", expires_in=-5)
    code, result, _ = run_json(lab, "tune", "web01")
    record = result["hosts"]["web01"]
    assert code == 0, record
    assert any("took over the lock of alice@elsewhere" in w and "it expired" in w for w in record["warnings"])
    assert lab.exec("web01", "test", "-e", LOCK).returncode == 1


@pytest.mark.covers(kind="fault", case="a lock left behind by a run of this controller that is gone", exit_code=0,
                    end="taken over with a warning; the run proceeds")
def test_a_lock_whose_run_on_this_controller_is_gone_is_taken_over(lab, no_lock):
    place_lock(lab, pid=dead_pid(), controller=socket.gethostname(), expires_in=600)
    code, result, _ = run_json(lab, "tune", "web01")
    record = result["hosts"]["web01"]
    assert code == 0, record
    assert any("its run is gone" in w for w in record["warnings"])


@pytest.mark.covers(kind="fault", case="a lock of a run on another controller, not yet expired", exit_code=2,
                    end="refused: its pid means nothing here; only expiry frees it")
def test_a_lock_of_another_controller_is_not_judged_from_here(lab, no_lock):
    """Its pid means nothing on this machine: only expiry frees it."""
    place_lock(lab, pid=dead_pid(), controller="another-controller", expires_in=600)
    code, result, _ = run_json(lab, "tune", "web01")
    assert code == 2 and "locked by" in result["hosts"]["web01"]["message"]
