"""`djdeploy lab` on this machine: real hosts, real limits, and nothing left behind."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import urllib.request
import time
import uuid
from pathlib import Path

import pytest

from conftest import DJDEPLOY, djdeploy

pytestmark = pytest.mark.lab


def _get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.status, response.read().decode()


def _lab_traces(name: str) -> dict[str, list[str]]:
    """Everything of lab `name` that could still exist on this machine."""
    state_dir = Path("/var/lib/djdeploy/labs") / name
    processes = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True).stdout.splitlines()
    return {
        "state": [str(state_dir)] if state_dir.exists() else [],
        "nspawn": [p for p in processes if "systemd-nspawn" in p and f"/labs/{name}/" in p and not p.startswith("Z")],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/djdeploy-{name}-*")],
        "mounts": [line for line in Path("/proc/mounts").read_text().splitlines() if f"/labs/{name}/" in line],
    }


def test_two_confined_hosts_serve_the_demo_app_and_leave_nothing_behind(lab_factory):
    lab = lab_factory("--hosts", "2", "--cpus", "1", "--memory", "1G")
    assert sorted(lab.hosts) == ["web01", "web02"]
    state = json.loads((Path("/var/lib/djdeploy/labs") / lab.name / "state.json").read_text())
    netns = [h["netns"] for h in state["hosts"].values()]
    veths = [h["veth"] for h in state["hosts"].values()]

    for name, host in lab.hosts.items():
        assert lab.sh(name, "nproc").strip() == "1"
        assert lab.sh(name, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes").strip() == str(1024**3)
        assert lab.sh(name, "hostname").strip() == name
        # The untuned starting point: gunicorn's defaults, one sync worker, as a non-root user.
        processes = lab.sh(name, "ps -o user=,args= -C gunicorn").splitlines()
        assert len(processes) == 2 and all(p.split()[0] == "demo" for p in processes), processes
        status, body = _get(f"{host['url']}dashboard/")
        assert status == 200 and "<table" in body
        health = json.loads(_get(f"{host['url']}healthz")[1])
        assert health["status"] == "ok"

    # The two hosts really are separate machines with their own addresses.
    assert lab.hosts["web01"]["address"] != lab.hosts["web02"]["address"]
    assert lab.exec("web01", "sh", "-c", "exit 7").returncode == 7

    listed = json.loads(djdeploy("lab", "ls", "--json", lab=lab.name, check=True).stdout)["hosts"]
    assert [(h["host"], h["state"], h["cpus"], h["memory_bytes"]) for h in listed] == [
        ("web01", "running", 1, 1024**3),
        ("web02", "running", 1, 1024**3),
    ]

    down_one = djdeploy("lab", "down", "web02", lab=lab.name, check=True)
    assert "web02" in down_one.stderr
    assert [h["host"] for h in json.loads(djdeploy("lab", "ls", "--json", lab=lab.name).stdout)["hosts"]] == ["web01"]
    assert _get(f"{lab.hosts['web01']['url']}healthz")[0] == 200

    djdeploy("lab", "down", lab=lab.name, check=True)
    assert _lab_traces(lab.name) == {"state": [], "nspawn": [], "cgroups": [], "mounts": []}
    existing_netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in existing_netns for ns in netns)
    assert not any(Path("/sys/class/net", veth).exists() for veth in veths)


def test_a_lab_chooses_its_slot_only_under_the_lock_every_lab_shares():
    # Each lab's lock is its own, but the slot (addresses, netns names) is chosen among all
    # labs: two `lab up` at the same moment once both took the same free slot. While another
    # command holds the shared lock, a new lab must wait before it chooses one.
    name = f"t{uuid.uuid4().hex[:8]}"
    state = Path("/var/lib/djdeploy/labs") / name / "state.json"
    with open("/var/lib/djdeploy/labs/.slots.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        up = subprocess.Popen([DJDEPLOY, "lab", "up", "--json"], env={**os.environ, "DJDEPLOY_LAB": name},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            # It gets as far as its own state (lab lock, image, key), then waits for the slot.
            while not state.exists() and up.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3)
            assert up.poll() is None, up.communicate()
            assert json.loads(state.read_text())["slot"] is None
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
            out, err = up.communicate(timeout=300)
            djdeploy("lab", "down", lab=name)
    assert up.returncode == 0, err
    assert json.loads(out)["hosts"][0]["host"] == "web01"
    assert _lab_traces(name) == {"state": [], "nspawn": [], "cgroups": [], "mounts": []}


def test_a_host_already_up_is_refused_and_left_running(lab_factory):
    lab = lab_factory("--hosts", "1", "--import-delay", "0.5")
    pid_before = lab.sh("web01", "systemctl show -p MainPID --value gunicorn").strip()

    again = djdeploy("lab", "up", "--hosts", "1", lab=lab.name)

    assert again.returncode == 2
    assert "web01 already up" in again.stderr and "lab down web01" in again.stderr
    assert lab.sh("web01", "systemctl show -p MainPID --value gunicorn").strip() == pid_before
    # --import-delay reaches the app through the unit's EnvironmentFile.
    assert "DEMO_IMPORT_DELAY=0.5" in lab.sh("web01", "cat /etc/demo/env")
    assert lab.sh("web01", "stat -c '%a %U %G' /etc/demo/env").strip() == "640 root demo"


@pytest.mark.parametrize(
    ("args", "culprit", "fix"),
    [
        (["--hosts", "0"], "--hosts 0", "1 to 60"),
        (["--hosts", "61"], "--hosts 61", "1 to 60"),
        (["--cpus", "99"], "--cpus 99", "between 1 and"),
        (["--cpus", "0"], "--cpus 0", "between 1 and"),
        (["--memory", "10M"], "--memory 10M", "at least 384M"),
        (["--memory", "9000G"], "more than this machine has", "less memory"),
        (["--memory", "lots"], "--memory 'lots'", "1G, 512M"),
        (["--import-delay", "-1"], "--import-delay -1", "0 to 120"),
    ],
)
def test_bad_sizes_are_refused_before_anything_is_created(args, culprit, fix):
    lab = "tbadinput"
    done = djdeploy("lab", "up", *args, lab=lab)
    assert done.returncode == 2, done.stderr
    assert culprit in done.stderr and fix in done.stderr
    assert not (Path("/var/lib/djdeploy/labs") / lab).exists()


def test_missing_tools_name_the_debian_package(tmp_path):
    # A PATH without systemd-nspawn, debootstrap and the rest.
    done = djdeploy("lab", "up", lab="tnotools", env={"PATH": str(tmp_path)})
    assert done.returncode == 2
    assert "apt-get install -y" in done.stderr and "systemd-container" in done.stderr and "debootstrap" in done.stderr


def test_not_root_is_refused_with_the_fix():
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", DJDEPLOY, "lab", "up"],
        capture_output=True, text=True, env={**os.environ, "DJDEPLOY_LAB": "tnotroot", "HOME": "/tmp"},
    )
    assert done.returncode == 2, done.stderr
    assert "needs root" in done.stderr and "sudo" in done.stderr


def test_unknown_host_and_empty_lab_are_clear_errors():
    done = djdeploy("lab", "exec", "web07", "--", "true", lab="tempty")
    assert done.returncode == 2 and "web07: no such host in lab 'tempty'" in done.stderr
    down = djdeploy("lab", "down", lab="tempty")
    assert down.returncode == 0 and "nothing of this lab was running" in down.stderr

