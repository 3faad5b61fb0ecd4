"""Runs cut off midway, on a real lab host: Ctrl-C and SIGTERM at each stage, the controller
killed, the SSH connection lost, the master killed during the reload. Whatever stops a run,
the host ends serving its last-known-good config (or the finished change), the history says
what happened, the lock is released, and the next run notices what an unfinished one left.

The signal is sent when djdeploy's progress on stderr shows the run reached a stage; the app
import takes 3 s, which keeps the stages wide enough to land in."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import DJDEPLOY, REPO, LabHosts, live_settings, master_pid, run_json, serves_dashboard

pytestmark = pytest.mark.lab

HISTORY = "/var/lib/djdeploy/history"
LOCK = "/var/lib/djdeploy/lock"
# Progress lines (task names as they end) that mark the stages a signal is sent at.
BEFORE_BACKUP = "Gather CPU, memory, worker PSS, the running unit and every setting it sets on the host"
AFTER_WRITE = "Point LIVE at the new entry, then write the new config and unit atomically"
BRIDGE_SERVES = "Start a warm bridge master outside the service's cgroup and wait until its workers serve"
RECOVER_STOPS_BRIDGE = "Stop a warm bridge master that the stopped run left serving"
IN_VERIFY = "Wait until the master lives, the old workers are gone and the new ones run as rendered"
# The tasks of verify.yml after IN_VERIFY, one of which a signal sent then lands in.
VERIFY_TASKS = ("Fail with what is still wrong with the new workers",
                "Check that the health and real endpoints answer 200 through the bind address")


@dataclass
class Stopped:
    code: int
    record: dict
    stderr: str


@dataclass
class HostState:
    live: str
    lkg: str
    locked: bool
    max_requests: int
    master: int


def host_state(lab: LabHosts) -> HostState:
    pointers = lab.sh("web01", f"cat {HISTORY}/LIVE {HISTORY}/LKG; test -e {LOCK} && echo locked || echo free").split()
    return HostState(pointers[0], pointers[1], pointers[2] == "locked", live_settings(lab)["max_requests"],
                     master_pid(lab))


def entry(lab: LabHosts, entry_id: str) -> dict:
    return json.loads(lab.sh("web01", f"cat {HISTORY}/{entry_id}/meta.json"))


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_until(inventory: str, stage: str, signum: int, *args: str) -> Stopped:
    """Run `djdeploy ARGS --json` and send it `signum` once its progress shows `stage` ended."""
    process = subprocess.Popen([DJDEPLOY, *args, "-i", inventory, "--json"], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # A run that hangs must not hang the suite.
    watchdog = threading.Timer(600, process.kill)
    watchdog.start()
    try:
        seen: list[str] = []
        doomed: list[int] = []
        for line in process.stderr:
            seen.append(line)
            if stage in line:
                # A SIGKILLed controller stands for the whole machine dying: its
                # ansible-playbook must not live on, orphaned, after the test.
                doomed = descendants(process.pid) if signum == signal.SIGKILL else []
                process.send_signal(signum)
                break
        stdout, rest = process.communicate()
    finally:
        watchdog.cancel()
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    stderr = "".join(seen) + rest
    assert any(stage in line for line in seen), f"the run never reached {stage!r}:\n{stderr}"
    document = json.loads(stdout) if stdout.strip() else {"hosts": {"web01": {}}}
    return Stopped(process.returncode, document["hosts"]["web01"], stderr)


@pytest.fixture(scope="module")
def lab(lab_factory) -> LabHosts:
    """One host whose app import takes 3 s, tuned once: every test starts on a last-known-good
    entry and ends back on one."""
    lab = lab_factory("--hosts", "1", "--import-delay", "3")
    code, result, stderr = run_json(lab, "tune", "web01")
    assert code == 0, stderr
    return lab


@pytest.fixture(scope="module")
def slow_verify_inventory(lab, tmp_path_factory) -> str:
    """The lab's inventory with 40 verify requests, so that verify lasts long enough to be
    interrupted in."""
    directory = tmp_path_factory.mktemp("slow-verify")
    inventory = directory / "inventory.yml"
    shutil.copy(lab.inventory, inventory)
    (directory / "group_vars").mkdir()
    (directory / "group_vars" / "all.yml").write_text("gunicorn_verify_requests: 40\n")
    return str(inventory)


def assert_back_on(lab: LabHosts, before: HostState) -> HostState:
    after = host_state(lab)
    assert (after.live, after.lkg, after.locked, after.max_requests) == (before.lkg, before.lkg, False,
                                                                         before.max_requests)
    assert serves_dashboard(lab)
    return after


@pytest.mark.parametrize(
    "signum",
    [
        pytest.param(signal.SIGINT, id="SIGINT", marks=pytest.mark.covers(
            kind="fault", case="Ctrl-C (SIGINT) before the backup", exit_code=2,
            end="stopped; nothing changed; no entry went live; lock released")),
        pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.covers(
            kind="fault", case="SIGTERM before the backup", exit_code=2,
            end="stopped; nothing changed; no entry went live; lock released")),
    ],
)
def test_a_signal_before_the_backup_stops_the_run_and_changes_nothing(lab, signum):
    before = host_state(lab)
    stopped = run_until(lab.inventory, BEFORE_BACKUP, signum, "tune", "web01", "--set", "max_requests=1300")
    name = signal.Signals(signum).name
    assert stopped.code == 2, stopped.stderr
    assert stopped.record["outcome"] == "interrupted"
    assert stopped.record["message"].startswith(f"stopped by {name} during ")
    assert stopped.record["message"].endswith("nothing changed")
    after = assert_back_on(lab, before)
    assert after.master == before.master


@pytest.mark.parametrize(
    "signum",
    [
        pytest.param(signal.SIGINT, id="SIGINT", marks=pytest.mark.covers(
            kind="fault", case="Ctrl-C (SIGINT) between writing the new config and reloading", exit_code=3,
            end="last-known-good restored with a HUP; entry interrupted; lock released")),
        pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.covers(
            kind="fault", case="SIGTERM between writing the new config and reloading", exit_code=3,
            end="last-known-good restored with a HUP; entry interrupted; lock released")),
    ],
)
def test_a_signal_after_the_write_restores_the_last_known_good_config(lab, signum):
    before = host_state(lab)
    max_requests = 1400 + signum  # one value per test, to find its entry by
    stopped = run_until(lab.inventory, AFTER_WRITE, signum, "tune", "web01", "--set", f"max_requests={max_requests}")
    name = signal.Signals(signum).name
    assert stopped.code == 3, stopped.stderr
    assert stopped.record["outcome"] == "rolled_back"
    assert stopped.record["message"].startswith(f"stopped by {name} during ")
    assert f"restored {before.lkg}, the last-known-good entry" in stopped.record["message"]
    after = assert_back_on(lab, before)
    assert after.master == before.master  # a HUP put it back
    interrupted = [e for e in (entry(lab, i) for i in lab.sh("web01", f"ls {HISTORY}").split()
                               if i not in ("LIVE", "LKG")) if e.get("settings", {}).get("max_requests") == max_requests]
    assert [e["verdict"] for e in interrupted] == ["interrupted"]
    assert interrupted[0]["failure"].startswith(f"run {interrupted[0]['id']} (djdeploy tune web01")


@pytest.mark.parametrize(
    "signum",
    [
        pytest.param(signal.SIGINT, id="SIGINT", marks=pytest.mark.covers(
            kind="fault", case="Ctrl-C (SIGINT) during verify", exit_code=3,
            end="last-known-good restored; entry interrupted; lock released")),
        pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.covers(
            kind="fault", case="SIGTERM during verify", exit_code=3,
            end="last-known-good restored; entry interrupted; lock released")),
    ],
)
def test_a_signal_during_verify_restores_the_last_known_good_config(lab, slow_verify_inventory, signum):
    before = host_state(lab)
    stopped = run_until(slow_verify_inventory, IN_VERIFY, signum, "tune", "web01", "--set", "max_requests=1500")
    assert stopped.code == 3, stopped.stderr
    assert stopped.record["outcome"] == "rolled_back"
    assert any(f"during {task!r}" in stopped.record["message"] for task in VERIFY_TASKS), stopped.record["message"]
    assert_back_on(lab, before)


@pytest.mark.covers(kind="fault", case="SIGTERM while a warm bridge master serves during a restart", exit_code=3,
                    end="the recovery stops the bridge, then restores the last-known-good entry; no bridge is "
                        "left; lock released")
def test_a_signal_while_the_bridge_serves_leaves_no_bridge(lab):
    before = host_state(lab)
    # graceful_timeout sets the unit's TimeoutStopSec: a restart, with a warm bridge master.
    stopped = run_until(lab.inventory, BRIDGE_SERVES, signal.SIGTERM, "tune", "web01", "--set", "graceful_timeout=33")
    assert stopped.code == 3, stopped.stderr
    assert stopped.record["outcome"] == "rolled_back"
    assert any(RECOVER_STOPS_BRIDGE in line and "changed" in line for line in stopped.stderr.splitlines()), \
        stopped.stderr
    assert_back_on(lab, before)
    assert lab.sh("web01", "systemctl list-units --all --plain --no-legend 'djdeploy-bridge-*'").strip() == ""
    assert live_settings(lab)["graceful_timeout"] == 30


@pytest.mark.covers(kind="fault", case="the controller killed (SIGKILL) during verify", exit_code=0,
                    end="host left mid-change and locked; `status` says so; the next tune takes the lock over, "
                        "restores the last-known-good entry first, then applies its own change")
def test_the_next_run_restores_what_a_killed_controller_left(lab, slow_verify_inventory):
    before = host_state(lab)
    killed = run_until(slow_verify_inventory, IN_VERIFY, signal.SIGKILL, "tune", "web01", "--set", "max_requests=1600")
    assert killed.code == -signal.SIGKILL
    left = host_state(lab)
    assert left.live != left.lkg == before.lkg and left.locked and left.max_requests == 1600

    code, status, _ = run_json(lab, "status", "web01")
    assert any(line.startswith(f"run {left.live} has not finished its change") and "it holds the lock" in line
               for line in status["hosts"]["web01"]["drift"]), status

    code, result, stderr = run_json(lab, "tune", "web01", "--set", "max_requests=1700")
    record = result["hosts"]["web01"]
    assert code == 0, stderr
    assert record["outcome"] == "applied"
    assert any("took over the lock" in w and "its run is gone" in w for w in record["warnings"]), record
    assert any(w.startswith(f"run {left.live} (djdeploy tune web01") and f"restored {before.lkg}" in w
               for w in record["warnings"]), record
    # The change was planned from the restored state, not from the killed run's.
    assert record["previous"]["max_requests"] == before.max_requests
    assert entry(lab, left.live)["verdict"] == "interrupted"
    after = host_state(lab)
    assert (after.live, after.lkg, after.locked, after.max_requests) == (record["history_entry"],) * 2 + (False, 1700)


@pytest.mark.covers(kind="fault", case="the SSH connection cut after the new config was written, and the host "
                                       "unreachable afterwards", exit_code=4,
                    end="the command names the lost connection; once the host answers, the next tune restores "
                        "the last-known-good entry first")
def test_a_connection_cut_midway_is_put_right_by_the_next_run(lab):
    before = host_state(lab)

    def cut() -> None:
        lab.sh("web01", "systemctl stop ssh.service; pkill -KILL -f '[s]shd: root' || true")

    process = subprocess.Popen([DJDEPLOY, "tune", "web01", "-i", lab.inventory, "--json", "--set", "max_requests=1800"],
                               cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(600, process.kill)
    watchdog.start()
    try:
        for line in process.stderr:
            if AFTER_WRITE in line:
                cut()
                break
        stdout, stderr = process.communicate()
    finally:
        watchdog.cancel()
    try:
        record = json.loads(stdout)["hosts"]["web01"]
        assert process.returncode == 4, stderr
        assert record["outcome"] == "failed"
        assert record["message"].startswith("unreachable: the connection was lost")
        assert "the next djdeploy run against it restores its last-known-good entry first" in record["message"]
        left = host_state(lab)
        assert left.live != left.lkg == before.lkg and left.locked
    finally:
        lab.sh("web01", "systemctl start ssh.service")

    # Asks for what the last-known-good entry has, so after the restore there is nothing to change.
    code, result, stderr = run_json(lab, "tune", "web01", "--set", f"max_requests={before.max_requests}")
    record = result["hosts"]["web01"]
    assert code == 0, stderr
    assert any(f"restored {before.lkg}, the last-known-good entry, first" in w for w in record["warnings"]), record
    assert record["outcome"] == "unchanged", record
    assert_back_on(lab, before)


@pytest.mark.covers(kind="fault", case="the master killed (SIGKILL) during the reload", exit_code=3,
                    end="rolled back; serves the last-known-good config on a new master; entry rolled_back")
def test_a_master_killed_during_the_reload_is_rolled_back(lab):
    before = host_state(lab)
    # Kill the master as soon as the new config lands on disk, before or while it is HUPped.
    config_sha = lab.sh("web01", "sha256sum /etc/gunicorn/gunicorn.conf.py").split()[0]
    lab.sh("web01", "systemd-run --unit=master-killer --collect sh -c '"
                    f"while [ \"$(sha256sum /etc/gunicorn/gunicorn.conf.py | cut -d\" \" -f1)\" = {config_sha} ]; "
                    "do sleep 0.05; done; kill -KILL $(systemctl show -p MainPID --value gunicorn)'")
    try:
        code, result, stderr = run_json(lab, "tune", "web01", "--set", "max_requests=1900")
    finally:
        lab.sh("web01", "systemctl stop master-killer 2>/dev/null || true")
    record = result["hosts"]["web01"]
    assert code == 3, stderr
    assert record["outcome"] == "rolled_back"
    assert "rolled back to" in record["message"]
    after = assert_back_on(lab, before)
    assert after.master != before.master
    assert entry(lab, record["history_entry"])["verdict"] == "rolled_back"
