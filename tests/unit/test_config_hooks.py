"""The rendered gunicorn config's hooks for the warm bridge master of a restart, run in this
process with stand-ins for gunicorn's server: a master executed on USR2 keeps off the
service's control socket, and the sockets systemd passed are where the executed master will
look for them. (The workers' ready marks: test_config_handover.py.)"""

from __future__ import annotations

import os
import socket
import types
from typing import Any

import pytest

from test_unit_templates import gunicorn_config

VALUES = {"bind": ["127.0.0.1:8000"], "control_socket": "/run/gunicorn/gunicorn.ctl", "preload_app": True,
          "djdeploy_warm_up_paths": [], "djdeploy_warm_up_host": "localhost"}


def load_config(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]) -> dict[str, Any]:
    """The config as a master started with `environ` (and none of systemd's socket variables) runs it."""
    for name in ("GUNICORN_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return gunicorn_config(workers=2, **VALUES)


def test_the_services_master_keeps_the_configured_control_socket(monkeypatch) -> None:
    assert load_config(monkeypatch, {})["control_socket"] == "/run/gunicorn/gunicorn.ctl"


def test_a_master_executed_on_usr2_listens_for_control_elsewhere(monkeypatch) -> None:
    # It would unlink the service's socket when it stops, after the next master created it.
    config = load_config(monkeypatch, {"GUNICORN_PID": "4242"})
    assert config["control_socket"] == f"/run/gunicorn/bridge-{os.getpid()}.ctl"


def test_before_usr2_executes_a_master_the_sockets_from_systemd_move_to_fd_3(monkeypatch) -> None:
    config = load_config(monkeypatch, {})
    listeners = [socket.socket(), socket.socket()]
    saved = {fd: os.dup(fd) for fd in (3, 4) if _open(fd)}
    try:
        for index, listener in enumerate(listeners):
            listener.bind(("127.0.0.1", 0))
            listener.listen()
        server = types.SimpleNamespace(systemd=True, LISTENERS=listeners)
        config["pre_exec"](server)
        for index, listener in enumerate(listeners):
            with socket.socket(fileno=os.dup(3 + index)) as moved:
                assert moved.getsockname() == listener.getsockname()
            assert os.get_inheritable(3 + index)
    finally:
        for fd in (3, 4):
            if fd in saved:
                os.dup2(saved[fd], fd)
                os.close(saved[fd])
            elif _open(fd):
                os.close(fd)
        for listener in listeners:
            listener.close()


def test_sockets_the_master_bound_itself_pass_by_their_numbers(monkeypatch) -> None:
    # gunicorn hands them over in GUNICORN_FD then: nothing to move.
    config = load_config(monkeypatch, {})
    config["pre_exec"](types.SimpleNamespace(systemd=False, LISTENERS=[]))


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
