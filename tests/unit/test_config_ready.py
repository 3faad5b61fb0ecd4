"""The rendered gunicorn.conf.py tells systemd READY=1 only once a worker is warm, run as
gunicorn runs it (its module namespace) with a stand-in master and a real notify socket:
gunicorn's own READY=1 comes before any worker is forked, and `systemctl restart` returning
then would send the first requests to a socket no worker accepts on yet."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from test_unit_templates import gunicorn_config

MASTER = 4242


@pytest.fixture
def config() -> dict[str, Any]:
    return gunicorn_config(workers=3)


@pytest.fixture
def systemd(tmp_path, monkeypatch) -> socket.socket:
    """The notify socket systemd listens on, named in NOTIFY_SOCKET as systemd does."""
    path = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield listener
    listener.close()


def received(listener: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(listener.recv(4096).decode())
        except BlockingIOError:
            return messages


class Master:
    """What the hooks use of gunicorn's arbiter; `boot` is what its workers do once forked."""

    def __init__(self, tmp: Path, boot: list[str], timeout: float = 30.0):
        self.pid, self.LISTENERS, self.WORKERS = MASTER, [], {}
        self.cfg = SimpleNamespace(worker_tmp_dir=str(tmp), workers=3, preload_app=False, timeout=timeout,
                                   address=[("127.0.0.1", 8000)])
        self.log = SimpleNamespace(info=lambda *args: None, exception=lambda *args: None)
        self.boot, self.tmp = boot, tmp
        self.spawned = 0
        self.told_before_spawning: list[str] | None = None
        self.listener: socket.socket | None = None

    def manage_workers(self) -> None:
        self.told_before_spawning = received(self.listener) if self.listener else []
        self.spawned += 1
        directory = self.tmp / f"djdeploy-workers-{MASTER}"
        directory.mkdir(exist_ok=True)
        for age, state in enumerate(self.boot, start=1):
            (directory / f"{state}-{age}-{100 + age}").write_text("")


def start(config: dict[str, Any], master: Master) -> None:
    config["on_starting"](master)
    config["when_ready"](master)


def test_gunicorn_no_longer_finds_the_notify_socket_and_the_config_keeps_it(config, systemd, tmp_path):
    master = Master(tmp_path, boot=[])
    config["on_starting"](master)
    assert "NOTIFY_SOCKET" not in os.environ
    assert master._djdeploy_notify_socket == systemd.getsockname()


def test_ready_comes_once_a_worker_is_warm_and_not_before_the_workers_are_forked(config, systemd, tmp_path):
    master = Master(tmp_path, boot=["booted"])
    master.listener = systemd
    start(config, master)
    assert master.spawned == 1
    assert not any("READY=1" in message for message in master.told_before_spawning)
    ready = [message for message in received(systemd) if "READY=1" in message]
    assert ready == ["READY=1\nSTATUS=gunicorn: 1 of 3 workers warm"]


def test_no_ready_when_the_workers_cannot_boot_so_the_start_fails(config, systemd, tmp_path):
    start(config, Master(tmp_path, boot=["unbooted"]))
    assert not any("READY=1" in message for message in received(systemd))


def test_no_ready_when_a_worker_exited_without_leaving_a_marker(config, systemd, tmp_path):
    # worker_tmp_dir missing: the worker dies before it can mark anything.
    dead = subprocess.Popen(["true"])
    try:
        master = Master(tmp_path, boot=[])
        master.WORKERS = {dead.pid: object()}
        deadline = time.monotonic() + 10
        while open(f"/proc/{dead.pid}/stat").read().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        start(config, master)
        assert not any("READY=1" in message for message in received(systemd))
    finally:
        dead.wait()


def test_a_worker_still_booting_is_waited_for(config, tmp_path):
    booting = subprocess.Popen(["sleep", "30"])
    try:
        assert config["_djdeploy_exited"](booting.pid) is False
    finally:
        booting.kill()
        booting.wait()
    assert config["_djdeploy_exited"](booting.pid) is True


def test_ready_after_gunicorns_worker_timeout_if_no_worker_says_anything(config, systemd, tmp_path):
    # Past it gunicorn's loop kills the silent worker and forks another; the service runs.
    start(config, Master(tmp_path, boot=[], timeout=0.05))
    assert [m for m in received(systemd) if "READY=1" in m] == ["READY=1\nSTATUS=gunicorn: 0 of 3 workers warm"]


def test_outside_systemd_gunicorn_forks_its_workers_itself(config, tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    master = Master(tmp_path, boot=["booted"])
    start(config, master)
    assert master.spawned == 0
