"""Rollout: the unit's values, the kind of change, and whether a change really happened (or
verify may stop waiting for it).

Every function of djdeploy.rollout against tables of real units, command lines and facts,
with the exact answer (or the exact refusal) each must give.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import pytest

from djdeploy import rollout
from djdeploy.errors import DjdeployError, ExitCode
from djdeploy.rollout import (
    change_kind,
    previous_settings,
    rollout_problems,
    socket_activation,
    socket_listen_streams,
    socket_unit_name,
    unit_params,
    verify_targets,
)

# --- unit_params -----------------------------------------------------------------------------

# The lab's untuned unit, as gunicorn_facts reports it.
LAB_EXEC_START = ["/srv/demo/venv/bin/gunicorn", "--bind", "127.0.0.1:8000", "demoproject.wsgi:application"]


def service(**changes: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "main_pid": 812,
        "user": "demo",
        "group": "demo",
        "working_directory": "/srv/demo/app",
        "environment_files": ["/etc/demo/env"],
        "exec_start": list(LAB_EXEC_START),
    }
    facts.update(changes)
    return facts


def inputs(**changes: Any) -> dict[str, Any]:
    """What tasks/plan.yml hands the filter when no gunicorn_* unit input is set."""
    given: dict[str, Any] = {
        "user": None,
        "group": None,
        "working_directory": None,
        "environment_files": None,
        "gunicorn_bin": None,
        "wsgi_app": None,
        "config_path": "/etc/gunicorn/gunicorn.conf.py",
    }
    given.update(changes)
    return given


def params(**changes: Any) -> dict[str, Any]:
    """The lab unit's values with a 30 s graceful timeout."""
    expected: dict[str, Any] = {
        "user": "demo",
        "group": "demo",
        "working_directory": "/srv/demo/app",
        "environment_files": ["/etc/demo/env"],
        "gunicorn_bin": "/srv/demo/venv/bin/gunicorn",
        "wsgi_app": "demoproject.wsgi:application",
        "config_path": "/etc/gunicorn/gunicorn.conf.py",
        "timeout_stop_sec": 45,
    }
    expected.update(changes)
    return expected


UNIT_PARAMS = [
    pytest.param(service(), inputs(), {"graceful_timeout": 30}, params(), id="everything from the running unit"),
    pytest.param(
        service(),
        inputs(
            user="web",
            group="www-data",
            working_directory="/srv/web/current",
            environment_files=["/etc/web/env", "/etc/web/secrets"],
            gunicorn_bin="/opt/web/venv/bin/gunicorn",
            wsgi_app="web.wsgi:app",
            config_path="/etc/web/gunicorn.conf.py",
        ),
        {"graceful_timeout": 10},
        {
            "user": "web",
            "group": "www-data",
            "working_directory": "/srv/web/current",
            "environment_files": ["/etc/web/env", "/etc/web/secrets"],
            "gunicorn_bin": "/opt/web/venv/bin/gunicorn",
            "wsgi_app": "web.wsgi:app",
            "config_path": "/etc/web/gunicorn.conf.py",
            "timeout_stop_sec": 25,
        },
        id="every role input wins over the running unit",
    ),
    pytest.param(
        service(), inputs(wsgi_app="demoproject.wsgi"), {"graceful_timeout": 30},
        params(wsgi_app="demoproject.wsgi"), id="one input wins, the rest from the unit",
    ),
    pytest.param(
        service(group=None), inputs(), {"graceful_timeout": 30}, params(group="demo"),
        id="no Group= on the unit: the unit's user",
    ),
    pytest.param(
        service(group=None), inputs(user="web"), {"graceful_timeout": 30}, params(user="web", group="web"),
        id="no Group= on the unit: the user input",
    ),
    pytest.param(
        service(), inputs(user="web"), {"graceful_timeout": 30}, params(user="web", group="demo"),
        id="user input alone keeps the unit's Group=",
    ),
    pytest.param(
        service(environment_files=[]), inputs(), {"graceful_timeout": 30}, params(environment_files=[]),
        id="unit without EnvironmentFile=",
    ),
    pytest.param(
        service(environment_files=None), inputs(), {"graceful_timeout": 30}, params(environment_files=[]),
        id="environment files unknown",
    ),
    pytest.param(
        service(), inputs(), {"graceful_timeout": 0}, params(timeout_stop_sec=15),
        id="no graceful timeout still gives the stop margin",
    ),
    pytest.param(
        service(exec_start=["/usr/bin/env", "/srv/demo/venv/bin/gunicorn", "-c", "/etc/gunicorn/old.conf.py",
                            "-w", "2", "demoproject.wsgi:application"]),
        inputs(), {"graceful_timeout": 30}, params(),
        id="binary and app behind a wrapper",
    ),
    pytest.param(
        service(working_directory="/srv/demo-app_2/v1.2+build@x/..hidden"), inputs(), {"graceful_timeout": 30},
        params(working_directory="/srv/demo-app_2/v1.2+build@x/..hidden"),
        id="path of every plain character, '..' inside a name",
    ),
    pytest.param(
        service(), inputs(wsgi_app="demoproject.app:create_app()"), {"graceful_timeout": 30},
        params(wsgi_app="demoproject.app:create_app()"), id="application factory",
    ),
    pytest.param(
        service(), inputs(user="_svc-web_01", group="a" * 32), {"graceful_timeout": 30},
        params(user="_svc-web_01", group="a" * 32), id="longest and oddest plain names",
    ),
]


@pytest.mark.parametrize(("facts", "given", "settings", "expected"), UNIT_PARAMS)
def test_unit_params(facts: dict, given: dict, settings: dict, expected: dict) -> None:
    assert unit_params(facts, given, settings) == expected


def test_unit_params_does_not_share_the_environment_file_list() -> None:
    facts = service()
    result = unit_params(facts, inputs(), {"graceful_timeout": 30})
    result["environment_files"].append("/etc/other")
    assert facts["environment_files"] == ["/etc/demo/env"]


PLAIN_PATH_FIX = "an absolute path without spaces, '%', '$' or '..'"

# (running unit, inputs, the refusal's exact message)
REFUSALS = [
    # the account
    pytest.param(service(user="root", group="root"), inputs(),
                 "unit user is root: gunicorn must not run as root", id="unit runs as root"),
    pytest.param(service(), inputs(user="root"),
                 "unit user is root: gunicorn must not run as root", id="user input root"),
    pytest.param(service(), inputs(group="root"),
                 "unit group is root: gunicorn must not run as root", id="group input root"),
    pytest.param(service(user=None, group=None), inputs(),
                 "unit user None is not a plain user or group name", id="no user known"),
    pytest.param(service(), inputs(user="Demo"),
                 "unit user 'Demo' is not a plain user or group name", id="capital letter"),
    pytest.param(service(), inputs(user="demo user"),
                 "unit user 'demo user' is not a plain user or group name", id="space in user"),
    pytest.param(service(), inputs(user="demo\nExecStartPre=/bin/sh"),
                 "unit user 'demo\\nExecStartPre=/bin/sh' is not a plain user or group name",
                 id="unit line injected through user"),
    pytest.param(service(), inputs(user="1demo"),
                 "unit user '1demo' is not a plain user or group name", id="user starts with a digit"),
    pytest.param(service(), inputs(user="a" * 33),
                 f"unit user {'a' * 33!r} is not a plain user or group name", id="user of 33 characters"),
    pytest.param(service(), inputs(group="www data"),
                 "unit group 'www data' is not a plain user or group name", id="space in group"),
    pytest.param(service(group="$(id)"), inputs(),
                 "unit group '$(id)' is not a plain user or group name", id="shell in the unit's group"),
    # the paths
    pytest.param(service(working_directory="srv/demo/app"), inputs(),
                 "working_directory 'srv/demo/app' is not an absolute path of plain characters", id="relative"),
    pytest.param(service(working_directory=None), inputs(),
                 "working_directory None is not an absolute path of plain characters",
                 id="unit without WorkingDirectory="),
    pytest.param(service(), inputs(working_directory="/srv/my app"),
                 "working_directory '/srv/my app' is not an absolute path of plain characters", id="space"),
    pytest.param(service(), inputs(working_directory="/srv/%i/app"),
                 "working_directory '/srv/%i/app' is not an absolute path of plain characters",
                 id="systemd specifier"),
    pytest.param(service(), inputs(working_directory="/srv/$HOME"),
                 "working_directory '/srv/$HOME' is not an absolute path of plain characters", id="dollar"),
    pytest.param(service(), inputs(working_directory="/srv/demo/../../etc"),
                 "working_directory '/srv/demo/../../etc' is not an absolute path of plain characters",
                 id="dot-dot inside"),
    pytest.param(service(), inputs(working_directory="/srv/demo/.."),
                 "working_directory '/srv/demo/..' is not an absolute path of plain characters",
                 id="dot-dot at the end"),
    pytest.param(service(), inputs(gunicorn_bin="/opt/web venv/bin/gunicorn"),
                 "gunicorn_bin '/opt/web venv/bin/gunicorn' is not an absolute path of plain characters",
                 id="space in gunicorn_bin"),
    pytest.param(service(exec_start=["/srv/demo/venv/bin/python", "-m", "gunicorn", "demoproject.wsgi:application"]),
                 inputs(),
                 "gunicorn_bin 'gunicorn' is not an absolute path of plain characters",
                 id="python -m gunicorn has no gunicorn path"),
    pytest.param(service(exec_start=["/srv/demo/venv/bin/uwsgi", "--module", "demoproject.wsgi:application"]),
                 inputs(),
                 "gunicorn_bin None is not an absolute path of plain characters", id="unit runs no gunicorn"),
    pytest.param(service(), inputs(config_path="/etc/gunicorn/%n.conf.py"),
                 "config_path '/etc/gunicorn/%n.conf.py' is not an absolute path of plain characters",
                 id="specifier in config_path"),
    pytest.param(service(environment_files=["/etc/demo/env", "etc/demo/secrets"]), inputs(),
                 "environment_files 'etc/demo/secrets' is not an absolute path of plain characters",
                 id="relative environment file"),
    pytest.param(service(), inputs(environment_files=["/etc/demo/env\nExecStartPre=/bin/sh"]),
                 "environment_files '/etc/demo/env\\nExecStartPre=/bin/sh' is not an absolute path "
                 "of plain characters",
                 id="unit line injected through an environment file"),
    # the WSGI app
    pytest.param(service(), inputs(wsgi_app="demoproject.wsgi:application\nExecStartPre=/bin/sh"),
                 "WSGI app 'demoproject.wsgi:application\\nExecStartPre=/bin/sh' is not a module path like "
                 "project.wsgi:application", id="unit line injected through the app"),
    pytest.param(service(), inputs(wsgi_app="demoproject.wsgi:application --reload"),
                 "WSGI app 'demoproject.wsgi:application --reload' is not a module path like "
                 "project.wsgi:application", id="extra gunicorn argument"),
    pytest.param(service(), inputs(wsgi_app="demoproject.wsgi:application;id"),
                 "WSGI app 'demoproject.wsgi:application;id' is not a module path like project.wsgi:application",
                 id="semicolon"),
    pytest.param(service(), inputs(wsgi_app="demoproject.app:create_app(debug=True)"),
                 "WSGI app 'demoproject.app:create_app(debug=True)' is not a module path like "
                 "project.wsgi:application", id="factory with arguments"),
    pytest.param(service(), inputs(wsgi_app="$APP"),
                 "WSGI app '$APP' is not a module path like project.wsgi:application", id="variable"),
    pytest.param(service(exec_start=["/srv/demo/venv/bin/gunicorn", "--bind", "127.0.0.1:8000"]), inputs(),
                 "WSGI app None is not a module path like project.wsgi:application", id="unit names no app"),
]


@pytest.mark.parametrize(("facts", "given", "message"), REFUSALS)
def test_unit_params_refuses(facts: dict, given: dict, message: str) -> None:
    with pytest.raises(DjdeployError) as caught:
        unit_params(facts, given, {"graceful_timeout": 30})
    assert caught.value.message == message
    assert caught.value.exit_code is ExitCode.REFUSED


# (the culprit, the role input the refusal's fix must name)
FIXES = [
    pytest.param({"user": "root"}, "set gunicorn_user to the service account", id="user"),
    pytest.param({"group": "root"}, "set gunicorn_group to the service account", id="group"),
    pytest.param({"working_directory": "/srv/my app"}, f"set gunicorn_working_directory to {PLAIN_PATH_FIX}",
                 id="working_directory"),
    pytest.param({"environment_files": ["/etc/%i"]}, f"set gunicorn_environment_files to {PLAIN_PATH_FIX}",
                 id="environment_files"),
    pytest.param({"config_path": "/etc/my conf.py"}, f"set gunicorn_config_path to {PLAIN_PATH_FIX}",
                 id="config_path"),
    pytest.param({"wsgi_app": "app;id"}, "set gunicorn_wsgi_app", id="wsgi_app"),
    pytest.param(
        {"gunicorn_bin": "/opt/my venv/gunicorn"}, f"set gunicorn_bin to {PLAIN_PATH_FIX}", id="gunicorn_bin",
    ),
]


@pytest.mark.parametrize(("changes", "fix"), FIXES)
def test_unit_params_refusal_names_the_input_to_set(changes: dict, fix: str) -> None:
    with pytest.raises(DjdeployError) as caught:
        unit_params(service(), inputs(**changes), {"graceful_timeout": 30})
    assert caught.value.fix == fix


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"user": "demo\n"}, id="user"),
        pytest.param({"gunicorn_bin": "/srv/demo/venv/bin/gunicorn\n"}, id="gunicorn_bin"),
        pytest.param({"config_path": "/etc/gunicorn/gunicorn.conf.py\n"}, id="config_path"),
        pytest.param({"wsgi_app": "demoproject.wsgi:application\n"}, id="wsgi_app"),
    ],
)
def test_unit_params_refuses_a_trailing_newline(changes: dict) -> None:
    with pytest.raises(DjdeployError):
        unit_params(service(), inputs(**changes), {"graceful_timeout": 30})


# --- _wsgi_app: the APP_MODULE of real gunicorn command lines ----------------------------------

GUNICORN = "/srv/demo/venv/bin/gunicorn"
APP = "demoproject.wsgi:application"

WSGI_APPS = [
    pytest.param(LAB_EXEC_START, APP, id="the lab unit"),
    pytest.param([GUNICORN, APP], APP, id="app alone"),
    pytest.param([GUNICORN, "demoproject.wsgi"], "demoproject.wsgi", id="module without callable"),
    pytest.param([GUNICORN, APP, "-k", "gthread", "--threads", "2", "-w", "3"], APP, id="app before flags"),
    pytest.param([GUNICORN, "--bind=127.0.0.1:8000", "--workers=3", APP], APP, id="flags with ="),
    pytest.param([GUNICORN, APP, "--bind=127.0.0.1:8000"], APP, id="app before a flag with ="),
    pytest.param([GUNICORN, "--preload", "--reload", "--capture-output", APP], APP, id="flags without a value"),
    pytest.param([GUNICORN, "--access-logfile", "-", "--error-logfile", "-", APP], APP, id="'-' as a flag's value"),
    pytest.param([GUNICORN, "--env", "DJANGO_SETTINGS_MODULE=demoproject.settings", "--chdir", "/srv/demo/app",
                  "--pythonpath", "/srv/demo/lib", APP], APP, id="env, chdir and pythonpath"),
    pytest.param(["/srv/demo/venv/bin/python3", "-m", "gunicorn", "--config", "/etc/gunicorn/gunicorn.conf.py", APP],
                 APP, id="python -m gunicorn"),
    pytest.param(["/srv/demo/venv/bin/python3", GUNICORN, "-b", "unix:/run/gunicorn/app.sock", APP], APP,
                 id="python running the gunicorn script"),
    pytest.param(["/usr/bin/env", GUNICORN, "-n", "demo", APP], APP, id="wrapper before gunicorn"),
    pytest.param(["/usr/bin/env", GUNICORN, "--bind", "127.0.0.1:8000"], None,
                 id="wrapper, no app: gunicorn is not the app"),
    pytest.param([GUNICORN, "--bind", "127.0.0.1:8000"], None, id="no app"),
    pytest.param([GUNICORN], None, id="gunicorn alone"),
    pytest.param([], None, id="no ExecStart"),
]


@pytest.mark.parametrize(("exec_start", "expected"), WSGI_APPS)
def test_wsgi_app(exec_start: list[str], expected: str | None) -> None:
    assert rollout._wsgi_app(exec_start) == expected


# Every gunicorn flag that takes a separate value; the value must never be taken for the app.
FLAGS_WITH_VALUE = [
    "-b", "--bind", "-c", "--config", "-w", "--workers", "-k", "--worker-class", "--threads", "-t",
    "--timeout", "--graceful-timeout", "--chdir", "-e", "--env", "--pythonpath", "--max-requests",
    "--max-requests-jitter", "--keep-alive", "--backlog", "-u", "--user", "-g", "--group", "--log-level",
    "--access-logfile", "--error-logfile", "--name", "-n",
]


@pytest.mark.parametrize("flag", FLAGS_WITH_VALUE)
def test_wsgi_app_skips_the_value_of(flag: str) -> None:
    assert rollout._wsgi_app([GUNICORN, APP, flag, "decoy.wsgi:application"]) == APP


# --- change_kind -----------------------------------------------------------------------------

UNIT_TEXT = "[Service]\nExecStart=/srv/demo/venv/bin/gunicorn --config /etc/gunicorn/gunicorn.conf.py demo.wsgi\n"
# sha256sum of that text as a file, as gunicorn_facts reports the unit it reads.
UNIT_SHA = "fd82eee7db066141ce003a5eb06aa78e5f800f16a70741cf02d49937712a6e15"
CONFIG = {"workers": 3, "worker_class": "gthread", "threads": 2, "bind": ["127.0.0.1:8000"],
          "control_socket": "/run/gunicorn/gunicorn.ctl"}


def running(**changes: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {"main_pid": 812, "unit_sha256": UNIT_SHA, "config_settings": dict(CONFIG)}
    facts.update(changes)
    return facts


CHANGE_KINDS = [
    pytest.param(running(), CONFIG, UNIT_TEXT, "none", id="same unit, same config"),
    pytest.param(running(config_settings={**CONFIG, "workers": 1}), CONFIG, UNIT_TEXT, "reload",
                 id="one setting differs"),
    pytest.param(running(config_settings={k: v for k, v in CONFIG.items() if k != "threads"}), CONFIG, UNIT_TEXT,
                 "reload", id="a setting is new"),
    pytest.param(running(config_settings=None), CONFIG, UNIT_TEXT, "reload", id="no config file yet"),
    pytest.param(running(config_settings={**CONFIG, "workers": "3"}), CONFIG, UNIT_TEXT, "reload",
                 id="same digits, other type"),
    pytest.param(running(), CONFIG, UNIT_TEXT + "PrivateTmp=true\n", "restart", id="unit differs"),
    pytest.param(running(config_settings=None), CONFIG, UNIT_TEXT + "\n", "restart", id="unit and config differ"),
    pytest.param(running(unit_sha256=None), CONFIG, UNIT_TEXT, "restart", id="unit unreadable"),
    pytest.param(running(main_pid=None), CONFIG, UNIT_TEXT, "restart", id="master not running"),
    pytest.param(running(main_pid=0), CONFIG, UNIT_TEXT, "restart", id="master pid 0"),
    pytest.param(running(main_pid=None, config_settings={**CONFIG, "workers": 1}), CONFIG, UNIT_TEXT, "restart",
                 id="master not running, config differs"),
    pytest.param(running(config_settings={**CONFIG, "preload_app": True}), {**CONFIG, "preload_app": False},
                 UNIT_TEXT, "restart", id="preload turned off: a HUP keeps the master's app"),
    pytest.param(running(config_settings={**CONFIG, "preload_app": True}, live_settings={"preload_app": False}),
                 {**CONFIG, "preload_app": False}, UNIT_TEXT, "reload",
                 id="the live master does not preload: a HUP will do"),
    pytest.param(running(config_settings={**CONFIG, "preload_app": False}), {**CONFIG, "preload_app": True},
                 UNIT_TEXT, "reload", id="preload turned on: the master loads the app at the HUP"),
    pytest.param(running(config_settings={**CONFIG, "preload_app": False}), {**CONFIG, "preload_app": False,
                 "workers": 1}, UNIT_TEXT, "reload", id="without preload, another setting"),
]


@pytest.mark.parametrize(("facts", "config_values", "unit_text", "expected"), CHANGE_KINDS)
def test_change_kind(facts: dict, config_values: dict, unit_text: str, expected: str) -> None:
    assert change_kind(facts, config_values, unit_text) == expected


SOCKET_TEXT = "[Socket]\nListenStream=127.0.0.1:8000\nBacklog=2048\n"
SOCKET_SHA = hashlib.sha256(SOCKET_TEXT.encode()).hexdigest()
WITH_SOCKET = {"unit": "gunicorn.socket", "sha256": SOCKET_SHA}

SOCKET_CHANGE_KINDS = [
    pytest.param(running(socket=WITH_SOCKET), CONFIG, SOCKET_TEXT, "none", id="same socket, same config"),
    pytest.param(running(socket=WITH_SOCKET, config_settings={**CONFIG, "workers": 1}), CONFIG, SOCKET_TEXT,
                 "reload", id="same socket, config differs: a HUP keeps systemd's sockets"),
    pytest.param(running(socket=None), CONFIG, SOCKET_TEXT, "restart", id="socket activation turned on"),
    pytest.param(running(socket=WITH_SOCKET), CONFIG, "", "restart", id="socket activation turned off"),
    pytest.param(running(socket=WITH_SOCKET), CONFIG, None, "restart", id="no socket text: turned off"),
    pytest.param(running(socket=WITH_SOCKET), CONFIG, SOCKET_TEXT.replace("8000", "8001"), "restart",
                 id="the socket listens elsewhere: gunicorn would bind by itself on a HUP"),
    pytest.param(running(socket={"unit": "gunicorn.socket", "sha256": None}), CONFIG, SOCKET_TEXT, "restart",
                 id="socket unit unreadable"),
    pytest.param(running(socket=None), CONFIG, "", "none", id="no socket before or after"),
]


@pytest.mark.parametrize(("facts", "config_values", "socket_text", "expected"), SOCKET_CHANGE_KINDS)
def test_change_kind_with_a_socket_unit(facts: dict, config_values: dict, socket_text: str | None,
                                        expected: str) -> None:
    assert change_kind(facts, config_values, UNIT_TEXT, socket_text) == expected


# --- the socket unit -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_name", "expected"),
    [
        ("gunicorn.service", "gunicorn.socket"),
        ("app@web-1.service", "app@web-1.socket"),
        ("my_app.v2.service", "my_app.v2.socket"),
    ],
)
def test_socket_unit_name(service_name: str, expected: str) -> None:
    assert socket_unit_name(service_name) == expected


@pytest.mark.parametrize(
    "service_name",
    ["gunicorn", "gunicorn.socket", "gunicorn.service\nExecStartPre=/bin/sh", "gun icorn.service",
     "%n.service", "../gunicorn.service", "a\\x2db.service", ".service"],
)
def test_socket_unit_name_refuses(service_name: str) -> None:
    with pytest.raises(DjdeployError) as caught:
        socket_unit_name(service_name)
    assert caught.value.message == f"gunicorn_service {service_name!r} is not a plain service unit name"


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        (["127.0.0.1:8000"], ["127.0.0.1:8000"]),
        (["[::1]:8000", "0.0.0.0:8001"], ["[::1]:8000", "0.0.0.0:8001"]),
        (["unix:/run/gunicorn.sock"], ["/run/gunicorn.sock"]),
        (["unix:/run/myapp/gunicorn.sock", "127.0.0.1:8000"], ["/run/myapp/gunicorn.sock", "127.0.0.1:8000"]),
        # Only the runtime directory itself is systemd's to remove, not one that shares its prefix.
        (["unix:/run/gunicorn-app/app.sock"], ["/run/gunicorn-app/app.sock"]),
    ],
)
def test_socket_listen_streams(bind: list[str], expected: list[str]) -> None:
    assert socket_listen_streams(bind, "gunicorn") == expected


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        (["localhost:8000"], "socket activation needs numeric bind addresses: systemd does not resolve "
                             "'localhost' in 'localhost:8000'"),
        (["127.0.0.1:8000", "web01.example.com:80"], "socket activation needs numeric bind addresses: systemd "
                                                     "does not resolve 'web01.example.com' in 'web01.example.com:80'"),
        (["unix:/run/%i.sock"], "bind '/run/%i.sock' is not an absolute path of plain characters"),
        (["unix:/run/app sock"], "bind '/run/app sock' is not an absolute path of plain characters"),
        (["unix:/run/gunicorn/app.sock"], "bind 'unix:/run/gunicorn/app.sock' is in /run/gunicorn, the service's "
                                          "RuntimeDirectory, which systemd removes with the socket in it whenever "
                                          "gunicorn stops"),
    ],
)
def test_socket_listen_streams_refuses(bind: list[str], message: str) -> None:
    with pytest.raises(DjdeployError) as caught:
        socket_listen_streams(bind, "gunicorn")
    assert caught.value.message == message


# --- rollout_problems ------------------------------------------------------------------------

SETTINGS = {
    "workers": 3,
    "worker_class": "gthread",
    "threads": 2,
    "timeout": 30,
    "graceful_timeout": 30,
    "keepalive": 2,
    "max_requests": 1000,
    "max_requests_jitter": 100,
    "backlog": 2048,
    "bind": ["127.0.0.1:8000"],
    "preload_app": False,
}
BEFORE = {"main_pid": 812, "workers": [{"pid": 901}, {"pid": 902}]}
NEW_WORKERS = [{"pid": 1001}, {"pid": 1002}, {"pid": 1003}]


def after(**changes: Any) -> dict[str, Any]:
    """The same master with three new workers that serve as rendered."""
    facts: dict[str, Any] = {
        "main_pid": 812,
        "workers": copy.deepcopy(NEW_WORKERS),
        "live_settings": {**SETTINGS, "worker_connections": 1000},
    }
    facts.update(changes)
    return facts


def live(**changes: Any) -> dict[str, Any]:
    return {**SETTINGS, "worker_connections": 1000, **changes}


ROLLOUT_PROBLEMS = [
    pytest.param(after(), BEFORE, SETTINGS, "reload", [], id="HUP served as rendered"),
    pytest.param(after(main_pid=1500), BEFORE, SETTINGS, "restart", [], id="restart has a new master"),
    pytest.param(after(main_pid=None), BEFORE, SETTINGS, "reload", ["the gunicorn master is not running"],
                 id="master gone"),
    pytest.param(after(main_pid=None, workers=[{"pid": 901}], live_settings=None), BEFORE, SETTINGS, "restart",
                 ["the gunicorn master is not running"], id="master gone says only that"),
    pytest.param(after(main_pid=1500), BEFORE, SETTINGS, "reload",
                 ["the master changed from pid 812 to 1500 during a HUP"], id="master pid changed on reload"),
    pytest.param(after(workers=[{"pid": 902}, {"pid": 901}, {"pid": 1003}]), BEFORE, SETTINGS, "reload",
                 ["old workers still run: [901, 902]"], id="old workers survive"),
    pytest.param(after(workers=[{"pid": 902}, {"pid": 1002}, {"pid": 1003}]), BEFORE, SETTINGS, "restart",
                 ["old workers still run: [902]"], id="an old worker survives a restart"),
    # {1208, 1201} iterates as 1208, 1201: the pids are listed sorted, not in set order.
    pytest.param(after(workers=[{"pid": 1201}, {"pid": 1208}, {"pid": 1003}]),
                 {"main_pid": 812, "workers": [{"pid": 1201}, {"pid": 1208}]}, SETTINGS, "reload",
                 ["old workers still run: [1201, 1208]"], id="survivors sorted"),
    pytest.param(after(workers=NEW_WORKERS[:2]), BEFORE, SETTINGS, "reload", ["2 workers run, 3 expected"],
                 id="too few workers"),
    pytest.param(after(workers=[*NEW_WORKERS, {"pid": 1004}]), BEFORE, SETTINGS, "reload",
                 ["4 workers run, 3 expected"], id="too many workers"),
    pytest.param(after(workers=[]), BEFORE, SETTINGS, "restart", ["0 workers run, 3 expected"], id="no worker"),
    pytest.param(after(live_settings=live(timeout=60)), BEFORE, SETTINGS, "reload",
                 ["live timeout is 60, rendered 30"], id="live timeout differs"),
    pytest.param(after(live_settings=live(worker_class="sync")), BEFORE, SETTINGS, "reload",
                 ["live worker_class is 'sync', rendered 'gthread'"], id="live worker class differs"),
    pytest.param(after(live_settings=live(preload_app=True)), BEFORE, SETTINGS, "restart",
                 ["live preload_app is True, rendered False"], id="live preload differs"),
    pytest.param(after(live_settings=live(max_requests=0, threads=1, workers=2)), BEFORE, SETTINGS, "reload",
                 ["live workers is 2, rendered 3", "live threads is 1, rendered 2",
                  "live max_requests is 0, rendered 1000"],
                 id="several differ, in a fixed order"),
    pytest.param(after(live_settings=None), BEFORE, SETTINGS, "reload",
                 ["the control socket does not answer, so the live settings are unknown"], id="control socket missing"),
    pytest.param(after(live_settings=live(bind=("127.0.0.1:8000",))), BEFORE, SETTINGS, "reload", [],
                 id="live bind tuple equals rendered list"),
    pytest.param(after(), BEFORE, {**SETTINGS, "bind": ("127.0.0.1:8000",)}, "reload", [],
                 id="rendered bind tuple equals live list"),
    pytest.param(after(live_settings=live(bind=["0.0.0.0:8000"])), BEFORE, SETTINGS, "reload",
                 ["live bind is ['0.0.0.0:8000'], rendered ['127.0.0.1:8000']"], id="live bind differs"),
    pytest.param(after(live_settings=live(bind=("127.0.0.1:8000", "unix:/run/gunicorn/app.sock"))), BEFORE,
                 SETTINGS, "reload",
                 ["live bind is ('127.0.0.1:8000', 'unix:/run/gunicorn/app.sock'), rendered ['127.0.0.1:8000']"],
                 id="live bind has one more address"),
    pytest.param(after(live_settings={k: v for k, v in SETTINGS.items() if k != "backlog"}), BEFORE,
                 {**SETTINGS, "backlog": 64}, "reload", [], id="a setting the socket does not report"),
    pytest.param(after(live_settings=live(worker_connections=5)), BEFORE, {**SETTINGS, "worker_connections": 1000},
                 "reload", [], id="a setting outside LIVE_CHECKED"),
    pytest.param(after(workers=NEW_WORKERS[:1]), BEFORE, {"timeout": 30}, "reload", [],
                 id="settings without workers: no count"),
    pytest.param(after(), {"main_pid": 812}, SETTINGS, "reload", [], id="no workers before"),
    pytest.param(
        after(main_pid=1500, workers=[{"pid": 901}, {"pid": 1002}], live_settings=None), BEFORE, SETTINGS, "reload",
        [
            "the master changed from pid 812 to 1500 during a HUP",
            "old workers still run: [901]",
            "2 workers run, 3 expected",
            "the control socket does not answer, so the live settings are unknown",
        ],
        id="everything wrong at once, in order",
    ),
    # Rolling back to the baseline: what ran before djdeploy is not known well enough to check.
    pytest.param(after(workers=NEW_WORKERS[:1], live_settings=None), BEFORE, {}, "restart", [],
                 id="baseline verify with empty settings"),
    pytest.param(after(workers=NEW_WORKERS[:1], live_settings=None), BEFORE, None, "restart", [],
                 id="baseline verify without settings"),
    pytest.param(after(workers=[], live_settings=None), BEFORE, {}, "restart", ["no worker runs"],
                 id="baseline verify with no worker"),
    pytest.param(after(workers=[{"pid": 901}], live_settings=None), BEFORE, {}, "reload",
                 ["old workers still run: [901]"], id="baseline verify with an old worker left"),
    pytest.param(after(main_pid=1500, live_settings=None), BEFORE, {}, "reload",
                 ["the master changed from pid 812 to 1500 during a HUP"], id="baseline verify, master changed on HUP"),
]


@pytest.mark.parametrize(("facts", "before", "settings", "kind", "expected"), ROLLOUT_PROBLEMS)
def test_rollout_problems(facts: dict, before: dict, settings: dict | None, kind: str, expected: list[str]) -> None:
    assert rollout_problems(facts, before, settings, kind) == expected


def test_live_checked_names() -> None:
    assert rollout.LIVE_CHECKED == (
        "workers", "worker_class", "threads", "timeout", "graceful_timeout", "keepalive", "max_requests",
        "max_requests_jitter", "backlog", "bind", "preload_app",
    )


# --- rollout_settled: whether verify may stop waiting ------------------------------------------

SETTLED = [
    pytest.param(after(), BEFORE, SETTINGS, "reload", True, id="served as rendered"),
    pytest.param(after(main_pid=None), BEFORE, SETTINGS, "restart", True, id="master gone: waiting cannot help"),
    pytest.param(after(main_pid=1500), BEFORE, SETTINGS, "reload", True, id="HUP replaced the master"),
    pytest.param(after(main_pid=1500, workers=NEW_WORKERS[:2]), BEFORE, SETTINGS, "restart", False,
                 id="restart still booting workers"),
    pytest.param(after(workers=[{"pid": 901}, {"pid": 1002}, {"pid": 1003}]), BEFORE, SETTINGS, "reload", False,
                 id="old worker still stopping"),
    pytest.param(after(live_settings=None), BEFORE, SETTINGS, "reload", False, id="socket not up yet"),
    pytest.param(after(live_settings=live(timeout=60)), BEFORE, SETTINGS, "reload", False,
                 id="live setting not yet as rendered"),
    pytest.param(after(workers=[], live_settings=None), BEFORE, {}, "restart", False, id="baseline, no worker yet"),
    pytest.param(after(workers=NEW_WORKERS[:1], live_settings=None), BEFORE, {}, "restart", True,
                 id="baseline serving"),
]


@pytest.mark.parametrize(("facts", "before", "settings", "kind", "expected"), SETTLED)
def test_rollout_settled(facts: dict, before: dict, settings: dict, kind: str, expected: bool) -> None:
    assert rollout.rollout_settled(facts, before, settings, kind) is expected


# --- previous_settings -----------------------------------------------------------------------

PREVIOUS = [
    pytest.param({"live_settings": {"workers": 2, "timeout": 30}, "config_settings": {"workers": 5},
                  "workers": [{"pid": 1}]}, {"workers": 2, "timeout": 30}, id="live wins"),
    pytest.param({"live_settings": None, "config_settings": {"workers": 5}, "workers": [{"pid": 1}]},
                 {"workers": 5}, id="no socket: the file"),
    pytest.param({"live_settings": {}, "config_settings": {"workers": 5}}, {"workers": 5},
                 id="empty live: the file"),
    pytest.param({"live_settings": None, "config_settings": None, "workers": [{"pid": 1}, {"pid": 2}]},
                 {"workers": 2}, id="neither: count the workers"),
    pytest.param({"config_settings": {}, "workers": [{"pid": 1}]}, {"workers": 1}, id="empty file: count"),
    pytest.param({"live_settings": None, "config_settings": None, "workers": []}, {}, id="nothing runs"),
    pytest.param({}, {}, id="nothing known"),
    # One address as a string, as a config file may give it: gunicorn reads a list of one.
    pytest.param({"live_settings": None, "config_settings": {"bind": "127.0.0.1:8001", "timeout": 60}},
                 {"bind": ["127.0.0.1:8001"], "timeout": 60}, id="a string bind: a list of one"),
]


@pytest.mark.parametrize(("facts", "expected"), PREVIOUS)
def test_previous_settings(facts: dict, expected: dict) -> None:
    assert previous_settings(facts) == expected


def test_previous_settings_is_a_copy() -> None:
    facts = {"live_settings": {"workers": 2}}
    previous_settings(facts)["workers"] = 9
    assert facts == {"live_settings": {"workers": 2}}


# --- verify_targets --------------------------------------------------------------------------

VERIFY_TARGETS = [
    pytest.param(["127.0.0.1:8000"], ["/healthz", "/dashboard/"],
                 [{"url": "http://127.0.0.1:8000/healthz", "unix_socket": ""},
                  {"url": "http://127.0.0.1:8000/dashboard/", "unix_socket": ""}], id="tcp"),
    pytest.param(["0.0.0.0:8080"], ["/healthz"], [{"url": "http://127.0.0.1:8080/healthz", "unix_socket": ""}],
                 id="0.0.0.0 is asked on 127.0.0.1"),
    pytest.param([":8000"], ["/healthz"], [{"url": "http://127.0.0.1:8000/healthz", "unix_socket": ""}],
                 id="empty host is asked on 127.0.0.1"),
    pytest.param(["[::]:8000"], ["/healthz"], [{"url": "http://[::1]:8000/healthz", "unix_socket": ""}],
                 id="[::] is asked on [::1]"),
    pytest.param(["[::1]:8000"], ["/healthz"], [{"url": "http://[::1]:8000/healthz", "unix_socket": ""}],
                 id="[::1] as it is"),
    pytest.param(["10.0.3.7:8000"], ["/healthz"], [{"url": "http://10.0.3.7:8000/healthz", "unix_socket": ""}],
                 id="a specific address as it is"),
    pytest.param(["localhost:9000"], ["/healthz"], [{"url": "http://localhost:9000/healthz", "unix_socket": ""}],
                 id="host name as it is"),
    pytest.param(["unix:/run/gunicorn/app.sock"], ["/healthz", "/dashboard/"],
                 [{"url": "http://localhost/healthz", "unix_socket": "/run/gunicorn/app.sock"},
                  {"url": "http://localhost/dashboard/", "unix_socket": "/run/gunicorn/app.sock"}], id="unix socket"),
    pytest.param(["unix:/run/gunicorn/app.sock", "127.0.0.1:8000"], ["/healthz"],
                 [{"url": "http://localhost/healthz", "unix_socket": "/run/gunicorn/app.sock"}],
                 id="first address only: unix"),
    pytest.param(["0.0.0.0:8000", "unix:/run/gunicorn/app.sock"], ["/healthz"],
                 [{"url": "http://127.0.0.1:8000/healthz", "unix_socket": ""}], id="first address only: tcp"),
    pytest.param(["127.0.0.1:8000"], [], [], id="no paths"),
]


@pytest.mark.parametrize(("bind", "paths", "expected"), VERIFY_TARGETS)
def test_verify_targets(bind: list[str], paths: list[str], expected: list[dict[str, str]]) -> None:
    assert verify_targets(bind, paths) == expected


# --- restore_kind ------------------------------------------------------------------------------

RESTORED = {"unit_sha256": "u1", "config_sha256": "c1", "settings": {"workers": 5, "max_requests": 1000}}


@pytest.mark.parametrize(
    ("facts", "entry", "expected", "kind"),
    [
        ({"unit_sha256": "u1", "config_sha256": "c1", "live_settings": {"workers": 5, "max_requests": 1000}},
         RESTORED, RESTORED["settings"], "none"),
        ({"unit_sha256": "u0", "config_sha256": "c1"}, RESTORED, RESTORED["settings"], "restart"),
        ({"unit_sha256": "u1", "config_sha256": "c1", "main_pid": None}, RESTORED, RESTORED["settings"], "restart"),
        ({"unit_sha256": "u1", "config_sha256": "c0"}, RESTORED, RESTORED["settings"], "reload"),
        # The file is already the entry's, but the master never loaded it.
        ({"unit_sha256": "u1", "config_sha256": "c1", "live_settings": {"workers": 5, "max_requests": 2000}},
         RESTORED, RESTORED["settings"], "reload"),
        # A baseline without a config file, on a host that has one now.
        ({"unit_sha256": "u1", "config_sha256": "c1"}, {**RESTORED, "config_sha256": None}, {}, "reload"),
        ({"unit_sha256": "u1", "config_sha256": None}, {**RESTORED, "config_sha256": None}, {}, "none"),
        # Back to an entry without preload from a master that preloaded: a HUP would keep its app.
        ({"unit_sha256": "u1", "config_sha256": "c0", "live_settings": {"preload_app": True}},
         RESTORED, {"preload_app": False}, "restart"),
        ({"unit_sha256": "u1", "config_sha256": "c0", "live_settings": {"preload_app": False}},
         RESTORED, {"preload_app": True}, "reload"),
    ],
)
def test_restore_kind(facts, entry, expected, kind):
    assert rollout.restore_kind({"main_pid": 812, **facts}, entry, expected) == kind


@pytest.mark.parametrize(
    ("unfinished_change", "facts", "kind"),
    [
        # A run cut off around its restart may have left a master of its own unit: restart.
        ("restart", {"unit_sha256": "u1", "config_sha256": "c1", "live_settings": {"workers": 5, "max_requests": 1000}},
         "restart"),
        # A run cut off around its HUP: as restore_kind says.
        ("reload", {"unit_sha256": "u1", "config_sha256": "c0"}, "reload"),
        ("reload", {"unit_sha256": "u1", "config_sha256": "c1", "live_settings": {"workers": 5, "max_requests": 2000}},
         "reload"),
        ("reload", {"unit_sha256": "u1", "config_sha256": "c1", "live_settings": {"workers": 5, "max_requests": 1000}},
         "none"),
        # Nothing known of the run (unreadable entry): as restore_kind says.
        (None, {"unit_sha256": "u0", "config_sha256": "c1"}, "restart"),
    ],
)
def test_recovery_kind(unfinished_change, facts, kind):
    unfinished = {"id": "x", "change": unfinished_change} if unfinished_change else {"id": "x"}
    assert rollout.recovery_kind({"main_pid": 812, **facts}, RESTORED, RESTORED["settings"], unfinished) == kind


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({"live_settings": {"bind": ["127.0.0.1:8000"]}, "config_settings": {"bind": ["127.0.0.1:9000"]}},
         ["127.0.0.1:8000"]),
        # The control socket did not answer: the file says what the master read.
        ({"live_settings": None, "config_settings": {"bind": ("unix:/run/gunicorn/app.sock",)}},
         ["unix:/run/gunicorn/app.sock"]),
        ({"live_settings": {"workers": 5}, "config_settings": {"bind": ["127.0.0.1:9000"]}}, ["127.0.0.1:9000"]),
        # One address as a string (valid gunicorn) is that address, not its characters: the health
        # URL was http://127.0.0.1:1/healthz from ['1', '2', '7', ...].
        ({"live_settings": None, "config_settings": {"bind": "127.0.0.1:8001"}}, ["127.0.0.1:8001"]),
        ({"live_settings": None, "config_settings": {"bind": "unix:/run/gunicorn.sock"}}, ["unix:/run/gunicorn.sock"]),
        # An untuned master: nothing tells.
        ({"live_settings": None, "config_settings": None}, None),
        ({}, None),
    ],
)
def test_running_bind(facts, expected):
    assert rollout.running_bind(facts) == expected


def test_the_diff_of_removing_a_config_goes_to_dev_null():
    diff = rollout.unified_diff(None, "workers = 5\n", "/etc/gunicorn/gunicorn.conf.py")
    assert diff.splitlines()[:2] == ["--- /etc/gunicorn/gunicorn.conf.py", "+++ /dev/null"]
    assert "-workers = 5" in diff

# --- restart_plan: does systemd hold the listening sockets while the unit restarts? ------------


def unit_show(main_pid: int = 812, stored: int = 1, triggered_by: str = "", room: int = 1) -> str:
    return (f"MainPID={main_pid}\nNFileDescriptorStore={stored}\nFileDescriptorStoreMax={room}\n"
            f"TriggeredBy={triggered_by}\n")


def unit_before(stored: int = 1, room: int = 1) -> str:
    return f"NFileDescriptorStore={stored}\nFileDescriptorStoreMax={room}\n"


# What the running master stored, under the unit it was started from.
DJDEPLOYS = unit_before()  # a master of djdeploy's config and unit
USERS = unit_before(stored=0, room=0)  # a master of a unit djdeploy did not write


@pytest.mark.parametrize(
    ("shown", "before", "running", "new", "held", "why"),
    [
        (unit_show(), DJDEPLOYS, ["127.0.0.1:8000"], ["127.0.0.1:8000"], True, "systemd held the listening sockets"),
        (unit_show(), DJDEPLOYS, None, ["127.0.0.1:8000"], True, "the new master took them over"),
        (unit_show(stored=2, room=2), unit_before(2, 2), ["unix:/run/a.sock", "127.0.0.1:8000"],
         ["127.0.0.1:8000", "unix:/run/a.sock"], True, "connections waited instead of being refused"),
        (unit_show(stored=0, room=0, triggered_by="gunicorn.socket"), USERS, ["127.0.0.1:8000"], ["127.0.0.1:8000"],
         True, "socket-activated by gunicorn.socket: systemd keeps the socket open"),
        (unit_show(main_pid=0), DJDEPLOYS, ["127.0.0.1:8000"], ["127.0.0.1:8000"], False, "no master ran"),
        (unit_show(stored=0), USERS, None, ["127.0.0.1:8000"], False,
         "systemd holds 0 of the 1 listening sockets (a master not started from djdeploy's config stores none): "
         "connections were refused until the new master listened"),
        # The bind grew: djdeploy's master stored the one socket its unit had room for.
        (unit_show(stored=1, room=2), DJDEPLOYS, ["127.0.0.1:8000"], ["127.0.0.1:8000", "unix:/run/a.sock"], False,
         "systemd holds 1 of the 2 listening sockets (the running master had stored 1 of them): connections were "
         "refused"),
        (unit_show(), DJDEPLOYS, ["127.0.0.1:8000"], ["127.0.0.1:8001"], False,
         "the bind changed from 127.0.0.1:8000 to 127.0.0.1:8001, so the new master bound anew"),
        # Back to a unit with no store (a rollback to the baseline): djdeploy's master had stored
        # its sockets, and systemd let go of them when it read that unit (issue 18: the message
        # said the master was "not started from djdeploy's config").
        (unit_show(stored=0, room=0), DJDEPLOYS, ["127.0.0.1:8000"], ["127.0.0.1:8000"], False,
         "systemd let go of the listening sockets the running master had stored when it read the unit put in place, "
         "which keeps no more than 0 file descriptors (FileDescriptorStoreMax=0): connections were refused until the "
         "new master listened"),
        # From a user's unit to a user's unit (a failed first tune, rolled back): neither stores.
        (unit_show(stored=0, room=0), USERS, ["127.0.0.1:8000"], ["127.0.0.1:8000"], False,
         "systemd holds 0 of the 1 listening sockets (a master not started from djdeploy's config stores none, and "
         "the unit put in place keeps no more than 0 (FileDescriptorStoreMax=0)): connections were refused"),
        # djdeploy's unit, whose master could not store (its config logged why).
        (unit_show(stored=0), unit_before(stored=0), ["127.0.0.1:8000"], ["127.0.0.1:8000"], False,
         "systemd holds 0 of the 1 listening sockets (the running master had stored 0 of them): connections"),
    ],
)
def test_restart_plan(shown: str, before: str, running: list[str] | None, new: list[str], held: bool,
                      why: str) -> None:
    result = rollout.restart_plan(shown, running, new, unit_before=before)
    assert result["held"] is held
    assert why in result["why"]
    assert ("not started from djdeploy's config" in result["why"]) is (before == USERS and not held)


HANDED = {"changed": True, "stored": ["127.0.0.1:8000"], "why": "djdeploy handed systemd the running master's "
                                                                  "listening sockets (127.0.0.1:8000)"}
NOT_HANDED = {"changed": False, "stored": [], "why": "pidfd_getfd of the master's socket 5: Operation not permitted"}
NO_ROOM = {"changed": False, "stored": [], "why": "the unit keeps no more than 0 file descriptors"}


@pytest.mark.parametrize(
    ("shown", "before", "handed", "held", "was_handed", "why"),
    [
        (unit_show(stored=1), USERS, HANDED, True, True,
         "systemd held the listening sockets, which djdeploy had handed it from the running master (not started "
         "from djdeploy's config, it had stored none), and the new master took them over"),
        (unit_show(stored=1), unit_before(stored=0), HANDED, True, True,
         "systemd held the listening sockets, which djdeploy had handed it from the running master (it had stored "
         "none), and the new master took them over"),
        (unit_show(stored=0), USERS, NOT_HANDED, False, False,
         "systemd holds 0 of the 1 listening sockets (a master not started from djdeploy's config stores none) and "
         "djdeploy could not hand them over (pidfd_getfd of the master's socket 5: Operation not permitted): "
         "connections were refused until the new master listened"),
        # The master had stored its own: the module had nothing to do, and the plan is as without it.
        (unit_show(stored=1), DJDEPLOYS, {"changed": False, "stored": [], "why": "systemd holds sockets for "
                                                                                 "gunicorn.service already"},
         True, False, "systemd held the listening sockets and the new master took them over"),
        (unit_show(stored=0), USERS, None, False, False, "stores none): connections were refused"),
        # A unit with no room: the plan says so once, not again as the hand-over's excuse.
        (unit_show(stored=0, room=0), DJDEPLOYS, NO_ROOM, False, False,
         "systemd let go of the listening sockets the running master had stored when it read the unit put in place"),
    ],
)
def test_restart_plan_after_a_hand_over(shown: str, before: str, handed: dict | None, held: bool, was_handed: bool,
                                        why: str) -> None:
    result = rollout.restart_plan(shown, None, ["127.0.0.1:8000"], handed, unit_before=before)
    assert (result["held"], result["handed"]) == (held, was_handed)
    assert why in result["why"]
    assert "keeps no more than 0 file descriptors)" not in result["why"]


def test_sockets_handed_to_a_master_that_binds_elsewhere_are_not_held() -> None:
    result = rollout.restart_plan(unit_show(stored=1), ["127.0.0.1:8000"], ["127.0.0.1:8001"], HANDED,
                                  unit_before=USERS)
    assert result["held"] is False
    assert "the bind changed from 127.0.0.1:8000 to 127.0.0.1:8001" in result["why"]


def test_restart_plan_names_the_socket_unit_that_holds_the_socket() -> None:
    assert rollout.restart_plan(unit_show(triggered_by="gunicorn.socket"), None, ["127.0.0.1:8000"],
                                unit_before=USERS)["socket_unit"] == "gunicorn.socket"
    assert rollout.restart_plan(unit_show(stored=1), None, ["127.0.0.1:8000"], unit_before=DJDEPLOYS)[
        "socket_unit"] is None


def test_restart_plan_names_the_master_that_runs() -> None:
    assert rollout.restart_plan(unit_show(main_pid=812), None, ["127.0.0.1:8000"], unit_before=DJDEPLOYS)[
        "main_pid"] == 812
    assert rollout.restart_plan(unit_show(main_pid=0), None, ["127.0.0.1:8000"], unit_before=DJDEPLOYS)[
        "main_pid"] == 0


# --- bridge_plan / restart_message: a warm bridge master serves while the unit restarts -----------

HELD = {"held": True, "main_pid": 812, "why": "systemd held the listening sockets and the new master took them over: "
                                               "connections waited instead of being refused"}
NOT_HELD = {"held": False, "main_pid": 0, "why": "no master ran, so no socket was open to keep"}
SETTINGS = {"workers": 5, "worker_tmp_dir": "/dev/shm", "graceful_timeout": 35}


@pytest.mark.parametrize(
    ("restart", "swapped", "settings", "use", "why"),
    [
        (HELD, False, SETTINGS, True, "a warm bridge master can serve while the new one loads the app (up to 60 s"),
        (HELD, True, SETTINGS, False, "the socket unit changed"),
        (NOT_HELD, False, SETTINGS, False, "systemd does not hold the listening sockets"),
        ({**HELD, "held": False}, False, SETTINGS, False, "systemd does not hold the listening sockets"),
        (HELD, False, None, False, "the number of workers to wait for is not known"),
        (HELD, False, {"workers": 0}, False, "the number of workers to wait for is not known"),
        (HELD, False, {"workers": True}, False, "the number of workers to wait for is not known"),
        ({**HELD, "handed": True}, False, SETTINGS, False,
         "the running master was not started from djdeploy's config, so a copy of it would not tell when its "
         "workers are warm"),
    ],
)
def test_bridge_plan(restart: dict, swapped: bool, settings: dict | None, use: bool, why: str) -> None:
    plan = rollout.bridge_plan(restart, swapped, settings, "60")
    assert plan["use"] is use
    assert why in plan["why"]
    assert plan["timeout"] == 60


def test_bridge_plan_hands_the_module_what_it_waits_for() -> None:
    plan = rollout.bridge_plan(HELD, False, SETTINGS, 60)
    assert {k: plan[k] for k in ("master", "workers", "worker_tmp_dir", "stop_timeout")} == {
        "master": 812, "workers": 5, "worker_tmp_dir": "/dev/shm", "stop_timeout": 40}
    assert rollout.bridge_plan(HELD, False, {"workers": 2}, 60)["stop_timeout"] == 35


USED = rollout.bridge_plan(HELD, False, SETTINGS, 60)
UNUSED = rollout.bridge_plan(NOT_HELD, False, SETTINGS, 60)


@pytest.mark.parametrize(
    ("restart", "bridge", "swapped", "result", "says"),
    [
        (HELD, USED, False, {"changed": True, "bridge": {"pid": 4242, "scope": "djdeploy-bridge-4242.scope"}},
         "restart: a warm bridge master (pid 4242) served while the new one loaded the app, so no request waited "
         "for it; systemd held the listening sockets and the new master took them over"),
        ({**HELD, "socket_unit": "gunicorn.socket"}, USED, False, {"changed": True, "bridge": {"pid": 4242}},
         "restart: a warm bridge master (pid 4242) served while the new one loaded the app, so no request waited "
         "for it; the socket unit gunicorn.socket kept the listening sockets open and the new master took them over"),
        (HELD, USED, False, {"changed": False, "msg": "the bridge master (pid 4242) had 2 of 5 workers ready after "
                                                      "the time limit"},
         "restart: no warm bridge master served (the bridge master (pid 4242) had 2 of 5 workers ready after the "
         "time limit; it was removed), so requests waited while the new master loaded the app; systemd held"),
        (HELD, USED, False, {"changed": False}, "restart: no warm bridge master served (it did not start;"),
        (HELD, USED, False, None, "restart: systemd held the listening sockets"),
        (NOT_HELD, UNUSED, False, None, "restart: no master ran"),
        (HELD, USED, True, None, "restart: the socket unit was added, changed or removed"),
    ],
)
def test_restart_message(restart: dict, bridge: dict, swapped: bool, result: dict | None, says: str) -> None:
    assert rollout.restart_message(restart, bridge, swapped, result).startswith(says)


# --- health_advice ----------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "message", "says"), [
    (404, "", "the app has no such page; set gunicorn_health_path to a path that answers GET with 200"),
    (405, "", "set gunicorn_health_path"),
    (400, "", "the app refused the request with Host: shop.internal (with Django, a host missing from ALLOWED_HOSTS); "
              "set gunicorn_verify_host_header"),
    (301, "", "the app redirects it (an HTTPS redirect, a missing slash); set gunicorn_health_path"),
    (-1, "Request failed: <urlopen error [Errno 111] Connection refused>",
     "nothing answered at http://127.0.0.1:8000/healthz: gunicorn does not listen where djdeploy asked; if it binds "
     "elsewhere (another port, a unix socket), set gunicorn_bind"),
    (-1, "Request failed: <urlopen error timed out>", "it took longer than gunicorn_verify_request_timeout allows"),
    (500, "", "the app fails the request itself; fix it first, or put its last-known-good config back"),
    (503, "", "djdeploy rollback"),
])
def test_health_advice_names_what_to_set(status, message, says):
    assert says in rollout.health_advice(status, "http://127.0.0.1:8000/healthz", "shop.internal", message)


# --- reused_socket_unit -----------------------------------------------------------------------

GUIDE_SOCKET_TEXT = "[Socket]\nListenStream=/run/gunicorn.sock\n"
GUIDE_SOCKET = {"unit": "gunicorn.socket", "active_state": "active", "fragment_path": "/etc/systemd/system/gunicorn.socket",
                "sha256": "ab" * 32, "written_by_djdeploy": False, "listen": ["/run/gunicorn.sock"],
                "text": GUIDE_SOCKET_TEXT}
UNIT_DEST = "/etc/systemd/system/gunicorn.service"
GUIDE_BIND = ["unix:/run/gunicorn.sock"]


@pytest.mark.parametrize("socket", [None, {**GUIDE_SOCKET, "written_by_djdeploy": True}])
def test_no_socket_unit_or_djdeploys_own_is_not_reused(socket):
    service = {"fragment_path": UNIT_DEST, "socket": socket}
    assert rollout.reused_socket_unit(service, GUIDE_BIND, None, UNIT_DEST) is None


@pytest.mark.parametrize("activation", [None, True])
def test_a_socket_unit_of_the_users_own_on_the_bind_is_kept_byte_for_byte(activation):
    service = {"fragment_path": UNIT_DEST, "socket": GUIDE_SOCKET}
    assert rollout.reused_socket_unit(service, GUIDE_BIND, activation, UNIT_DEST) == {
        "name": "gunicorn.socket", "text": GUIDE_SOCKET_TEXT}
    tcp = {**GUIDE_SOCKET, "listen": ["127.0.0.1:8000", "/run/gunicorn.sock"]}
    assert rollout.reused_socket_unit({"fragment_path": UNIT_DEST, "socket": tcp},
                                      ["unix:/run/gunicorn.sock", "127.0.0.1:8000"], activation, UNIT_DEST)


@pytest.mark.parametrize(("socket", "bind", "activation", "why"), [
    (GUIDE_SOCKET, ["127.0.0.1:8000"], None, "it does not listen on exactly the addresses the new bind names "
                                             "(127.0.0.1:8000)"),
    (GUIDE_SOCKET, GUIDE_BIND, False, "gunicorn_socket_activation is false, which would remove it"),
    ({**GUIDE_SOCKET, "text": None}, GUIDE_BIND, None, "its unit file could not be read"),
    ({**GUIDE_SOCKET, "fragment_path": "/lib/systemd/system/gunicorn.socket"}, GUIDE_BIND, None,
     "it lives in /lib/systemd/system/gunicorn.socket, not next to the unit djdeploy writes"),
    ({**GUIDE_SOCKET, "fragment_path": None, "sha256": None, "listen": [], "text": None}, GUIDE_BIND, None,
     "it does not listen on exactly the addresses"),
])
def test_a_socket_unit_of_the_users_own_that_cannot_be_kept_is_refused_naming_it(socket, bind, activation, why):
    service = {"fragment_path": UNIT_DEST, "socket": socket}
    with pytest.raises(DjdeployError) as refused:
        rollout.reused_socket_unit(service, bind, activation, UNIT_DEST)
    message = str(refused.value)
    assert message.startswith(f"gunicorn.socket (listening on {', '.join(socket['listen']) or 'an address'}")
    assert "starts gunicorn.service: " + why in message and "nothing was changed" in message


def test_file_diff_reads_the_old_text_from_where_it_is_now():
    read_now = [{"item": "/etc/systemd/system/myapp.service", "content": base64.b64encode(b"a\nb\n").decode()}]
    unit = {"new": "a\nc\n", "dest": "/etc/systemd/system/myapp.service", "now": "/etc/systemd/system/myapp.service"}
    assert rollout.file_diff(unit, read_now).splitlines()[:2] == ["--- /etc/systemd/system/myapp.service",
                                                                 "+++ /etc/systemd/system/myapp.service"]
    assert "-b\n+c\n" in rollout.file_diff(unit, read_now)
    new_config = {"new": "x = 1\n", "dest": "/etc/gunicorn/gunicorn.conf.py", "now": None}
    assert rollout.file_diff(new_config, read_now).startswith("--- /dev/null\n+++ /etc/gunicorn/gunicorn.conf.py\n")
    removed_socket = {"new": None, "dest": "/etc/systemd/system/x.socket", "now": "/etc/systemd/system/myapp.service"}
    assert rollout.file_diff(removed_socket, read_now).startswith("--- /etc/systemd/system/myapp.service\n+++ /dev/null")
    unchanged = {"new": "a\nb\n", "dest": "/etc/systemd/system/myapp.service", "now": "/etc/systemd/system/myapp.service"}
    assert rollout.file_diff(unchanged, read_now) == ""


@pytest.mark.parametrize(
    ("requested", "bind", "expected"),
    [
        (None, ["127.0.0.1:8000"], False),
        (None, ["127.0.0.1:8000", "unix:/run/gunicorn.sock"], True),
        (None, "unix:/run/myapp/gunicorn.sock", True),
        (True, ["127.0.0.1:8000"], True),
        # Asked for by name: gunicorn binds the socket itself (the sandbox check says whether it can).
        (False, ["unix:/run/gunicorn.sock"], False),
    ],
)
def test_socket_activation_is_on_for_unix_sockets_unless_asked_otherwise(requested, bind, expected) -> None:
    assert socket_activation(requested, bind) is expected


def test_what_ran_before_is_what_the_service_set_with_the_workers_running():
    reading = {"settings": {"bind": {"source": "command line", "value": "unix:/run/app.sock", "hook": False,
                                     "plain": True},
                            "post_fork": {"source": "config", "value": None, "hook": True, "plain": False}}}
    running = [{"pid": 1}, {"pid": 2}]
    assert rollout.previous_settings({"settings_read": reading, "workers": running}) == {
        "workers": 2, "bind": ["unix:/run/app.sock"]}
    # Live settings from the control socket say it all.
    assert rollout.previous_settings({"settings_read": reading, "live_settings": {"workers": 4}}) == {"workers": 4}
    assert rollout.previous_settings({"workers": running}) == {"workers": 2}
    assert rollout.previous_settings({}) == {}


SOCKET_TEXT = "[Socket]\nListenStream=/run/gunicorn.sock\n"


@pytest.mark.parametrize(("service", "bind", "socket_text", "says"), [
    ({"main_pid": 7, "socket": None, "live_settings": {"bind": ["127.0.0.1:8000"]}}, ["127.0.0.1:8000"], None,
     "connections would wait, none would be refused"),
    ({"main_pid": 7, "socket": None, "live_settings": {"bind": ["127.0.0.1:8000"]}}, ["127.0.0.1:8001"], None,
     "the bind changes from 127.0.0.1:8000 to 127.0.0.1:8001, so the new master binds anew"),
    ({"main_pid": 7, "socket": None}, ["unix:/run/gunicorn.sock"], SOCKET_TEXT,
     "the socket unit would be added, changed or removed, so connections would be refused for a moment, once"),
    ({"main_pid": 7, "socket": {"sha256": hashlib.sha256(SOCKET_TEXT.encode()).hexdigest()}},
     ["unix:/run/gunicorn.sock"], SOCKET_TEXT, "the socket unit stays as it is and holds the socket"),
    ({"main_pid": None, "socket": None}, ["127.0.0.1:8000"], None, "no master runs now"),
])
def test_check_says_whether_the_restart_would_refuse_connections(service, bind, socket_text, says):
    forecast = rollout.restart_forecast(service, bind, socket_text)
    assert forecast.startswith("restart: ") and says in forecast
