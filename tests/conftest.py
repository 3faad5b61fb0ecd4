"""Shared helpers: run the real `djdeploy` command, and labs that are always brought down."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
DJDEPLOY = str(Path(sys.executable).parent / "djdeploy")
# A --set that passes every check before the change and fails after it: the checks import the
# worker class, but it is not a worker, so the master dies making its first one. (A missing
# worker_tmp_dir did this until the checks looked at the paths the service writes.)
NO_WORKER_CAN_START = "worker_class=gunicorn.config.Config"


def library_module(name: str) -> ModuleType:
    """One of the role's modules (roles/gunicorn/library/NAME.py), imported to test its functions."""
    spec = importlib.util.spec_from_file_location(name, REPO / "roles" / "gunicorn" / "library" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def djdeploy(*args: str, lab: str | None = None, check: bool = False, timeout: float = 900,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    if lab:
        full_env["DJDEPLOY_LAB"] = lab
    done = subprocess.run([DJDEPLOY, *args], capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=REPO)
    if check and done.returncode != 0:
        raise AssertionError(f"djdeploy {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


@dataclass
class LabHosts:
    name: str
    hosts: dict[str, dict]

    @property
    def inventory(self) -> str:
        return next(iter(self.hosts.values()))["inventory"]

    def exec(self, host: str, *command: str) -> subprocess.CompletedProcess:
        return djdeploy("lab", "exec", host, "--", *command, lab=self.name)

    def sh(self, host: str, script: str) -> str:
        done = self.exec(host, "sh", "-c", script)
        assert done.returncode == 0, f"{script!r} on {host} exited {done.returncode}: {done.stderr}"
        return done.stdout


# --- looking at a lab host from outside, the way an operator would ---


def run_json(lab: LabHosts, command: str, *args: str) -> tuple[int, dict, str]:
    """Run a djdeploy command with --json against the lab: (exit code, the document, stderr)."""
    done = djdeploy(command, *args, "-i", lab.inventory, "--json")
    # --json: exactly one JSON document on stdout, progress on stderr.
    try:
        return done.returncode, json.loads(done.stdout), done.stderr
    except json.JSONDecodeError as exc:
        raise AssertionError(f"djdeploy {command} printed no JSON document ({exc}):\n{done.stdout}\n{done.stderr}")


def live_settings(lab: LabHosts, host: str = "web01") -> dict:
    out = lab.sh(host, "/srv/demo/venv/bin/gunicornc -s /run/gunicorn/gunicorn.ctl -c 'show config' -j")
    return json.loads(out)


def worker_pids(lab: LabHosts, host: str = "web01") -> list[int]:
    master = int(lab.sh(host, "systemctl show -p MainPID --value gunicorn").strip())
    return [int(p) for p in lab.sh(host, f"pgrep -P {master} || true").split()]


def master_pid(lab: LabHosts, host: str = "web01") -> int:
    return int(lab.sh(host, "systemctl show -p MainPID --value gunicorn").strip())


def serves_dashboard(lab: LabHosts, host: str = "web01") -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{lab.hosts[host]['url']}dashboard/", timeout=10) as response:
        return response.status == 200


@pytest.fixture(scope="module")
def lab_factory() -> Iterator:
    """Bring labs up under unique names; every one of them is brought down when the test module
    ends, whether its tests passed or not. A host boots from the cached image in a second or
    two, so a module starts from fresh hosts rather than from hosts another module changed."""
    started: list[str] = []

    def up(*args: str) -> LabHosts:
        name = f"t{uuid.uuid4().hex[:8]}"
        started.append(name)
        done = djdeploy("lab", "up", *args, "--json", lab=name)
        assert done.returncode == 0, f"lab up {' '.join(args)} failed:\n{done.stderr}"
        hosts = json.loads(done.stdout)["hosts"]
        return LabHosts(name, {h["host"]: h for h in hosts})

    yield up
    for name in started:
        djdeploy("lab", "down", lab=name)
