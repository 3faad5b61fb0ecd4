"""The role's unit templates rendered as the role renders them: the sandbox lands in the unit
line for line, systemd scores the result as hardened, and socket activation adds a socket unit
the service requires."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest

from djdeploy.hardening import sandbox

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "gunicorn"
EXPOSURE_LIMIT = 2.0


def role_filters() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("djdeploy_filters", ROLE / "filter_plugins" / "djdeploy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def render(template: str, **changes: Any) -> str:
    # As Ansible's template lookup renders: trim_blocks on, the final newline kept.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"), trim_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(role_filters())
    context: dict[str, Any] = {
        "gunicorn_history_dir": "/var/lib/djdeploy/history",
        "_gunicorn_socket_activation": False,
        "_gunicorn_runtime_directory": "gunicorn",
        "_gunicorn_socket_name": "gunicorn.socket",
        "_gunicorn_sandbox": sandbox(["/srv/demo/data"], {}),
        "_gunicorn_listen_streams": ["127.0.0.1:8000"],
        "_gunicorn_plan": {"settings": {"backlog": 2048, "bind": ["127.0.0.1:8000"]}},
        "_gunicorn_unit": {
            "user": "demo", "group": "demo", "working_directory": "/srv/demo/app",
            "environment_files": ["/etc/demo/env"], "gunicorn_bin": "/srv/demo/venv/bin/gunicorn",
            "wsgi_app": "demoproject.wsgi:application", "config_path": "/etc/gunicorn/gunicorn.conf.py",
            "timeout_stop_sec": 45,
        },
    }
    context.update(changes)
    return env.get_template(template).render(context)


def gunicorn_config(workers: int, **values: Any) -> dict[str, Any]:
    """The rendered gunicorn.conf.py run as gunicorn runs it: its module namespace."""
    text = render(
        "gunicorn.conf.py.j2",
        djdeploy_run={"id": "r1", "who": "ops@ctl", "command": "djdeploy tune web01"},
        _gunicorn_plan={"inputs": {"cpus": 2}, "reasons": {"workers": f"workers: {workers}"}, "warnings": []},
        _gunicorn_config_values={"workers": workers, "worker_tmp_dir": "/dev/shm", **values},
    )
    namespace: dict[str, Any] = {}
    exec(compile(text, "gunicorn.conf.py", "exec"), namespace)
    return namespace


def directives(unit_text: str) -> list[list[str]]:
    return [line.split("=", 1) for line in unit_text.splitlines() if re.match(r"^[A-Z]\w*=", line)]


def test_the_sandbox_is_in_the_unit_line_for_line() -> None:
    lines = sandbox(["/srv/demo/data"], {"MemoryDenyWriteExecute": True})
    rendered = directives(render("gunicorn.service.j2", _gunicorn_sandbox=lines))
    start = rendered.index(["ProtectSystem", "strict"])
    assert rendered[start:start + len(lines)] == lines
    assert rendered[start + 1] == ["ReadWritePaths", "/srv/demo/data"]
    # No directive of the sandbox appears twice by accident (PrivateTmp was in the template before).
    assert [name for name, _ in rendered].count("PrivateTmp") == 1


def exposure(tmp_path: Path, unit_text: str) -> float:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = tmp_path / "gunicorn.service"
    unit.write_text(unit_text)
    done = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for gunicorn\.service: (\d+\.\d)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


def test_systemd_scores_the_rendered_unit_as_hardened(tmp_path: Path) -> None:
    assert exposure(tmp_path, render("gunicorn.service.j2")) <= EXPOSURE_LIMIT


def test_the_score_tells_a_relaxed_sandbox_apart(tmp_path: Path) -> None:
    # The check above could fail: dropping the sandbox scores the unit as exposed.
    relaxed = {name: None for name in ("ProtectSystem", "PrivateUsers", "CapabilityBoundingSet", "SystemCallFilter",
                                       "RestrictAddressFamilies", "ProtectHome", "PrivateDevices", "RestrictNamespaces")}
    assert exposure(tmp_path, render("gunicorn.service.j2", _gunicorn_sandbox=sandbox([], relaxed))) > EXPOSURE_LIMIT


def test_without_socket_activation_the_unit_needs_no_socket() -> None:
    assert "gunicorn.socket" not in render("gunicorn.service.j2")


def test_with_socket_activation_the_service_requires_its_socket() -> None:
    rendered = directives(render("gunicorn.service.j2", _gunicorn_socket_activation=True))
    assert ["Requires", "gunicorn.socket"] in rendered
    assert ["After", "network.target gunicorn.socket"] in rendered


def test_the_socket_unit_listens_where_gunicorn_binds() -> None:
    text = render("gunicorn.socket.j2", _gunicorn_listen_streams=["127.0.0.1:8000", "/run/app/gunicorn.sock"])
    assert directives(text) == [
        ["Description", "listening socket of gunicorn serving demoproject.wsgi:application"],
        ["ListenStream", "127.0.0.1:8000"],
        ["ListenStream", "/run/app/gunicorn.sock"],
        ["Backlog", "2048"],
        ["WantedBy", "sockets.target"],
    ]


def test_the_facts_module_knows_a_socket_unit_djdeploy_rendered_by_its_first_line(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("gunicorn_facts", ROLE / "library" / "gunicorn_facts.py")
    assert spec is not None and spec.loader is not None
    facts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(facts)
    ours, guides = tmp_path / "ours.socket", tmp_path / "guides.socket"
    ours.write_text(render("gunicorn.socket.j2"))
    guides.write_text("[Unit]\nDescription=gunicorn socket\n\n[Socket]\nListenStream=/run/gunicorn.sock\n\n"
                      "[Install]\nWantedBy=sockets.target\n")
    assert (facts.written_by_djdeploy(str(ours)), facts.written_by_djdeploy(str(guides))) == (True, False)
