"""Shared helpers: run the real `djdeploy` command, and labs that are always brought down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DJDEPLOY = str(Path(sys.executable).parent / "djdeploy")


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


@pytest.fixture(scope="session")
def lab_factory() -> Iterator:
    """Bring labs up under unique names; every one of them is brought down at the end,
    whether the tests passed or not."""
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
