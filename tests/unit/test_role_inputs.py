"""The role's inputs that are not gunicorn settings: paths outside what the role owns, names and
values that could escape a unit line, systemctl argument or HTTP request, and numbers out of
range are refused with the input named; what the role may own is accepted."""

from __future__ import annotations

import re
import string
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from djdeploy.errors import DjdeployError, ExitCode
from djdeploy.role_inputs import check_role_inputs
from djdeploy.rollout import unit_params
from test_unit_templates import ROLE, render

DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
SIZING_OPTIONS = {
    "profile": "mixed", "overrides": {}, "override_source": "gunicorn_overrides", "preload_app": "auto",
    "bind": ["127.0.0.1:8000"], "default_worker_memory_bytes": 64 * 1048576, "memory_reserve_fraction": 0.2,
    "db_max_connections": None, "db_hosts_sharing": 1,
}


def role_inputs(**changes: Any) -> dict[str, Any]:
    """The inputs as the role passes them (vars/main.yml's _gunicorn_role_inputs), with changes."""
    names = re.findall(r"^  (gunicorn_\w+):", (ROLE / "vars" / "main.yml").read_text(), re.MULTILINE)
    inputs = {name: DEFAULTS[name] for name in names}
    unknown = set(changes) - set(inputs)
    assert not unknown, f"not a checked role input: {unknown}"
    return {**inputs, **changes}


def refusal(inputs: dict[str, Any], options: dict[str, Any] | None = None) -> str:
    with pytest.raises(DjdeployError) as caught:
        check_role_inputs(inputs, options or SIZING_OPTIONS)
    assert caught.value.exit_code is ExitCode.REFUSED
    return caught.value.message


class RecordingInputs(dict):
    """Inputs that remember which of them the check read."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        self.read.add(name)
        return super().__getitem__(name)


def test_the_role_passes_exactly_the_inputs_the_check_reads() -> None:
    inputs = RecordingInputs(role_inputs())
    check_role_inputs(inputs, SIZING_OPTIONS)
    assert inputs.read == set(inputs)


def test_the_defaults_are_accepted() -> None:
    assert check_role_inputs(role_inputs(), SIZING_OPTIONS) is True


@pytest.mark.parametrize(
    "changes",
    [
        {"gunicorn_config_path": "/srv/shop/gunicorn/shop.conf.py"},
        {"gunicorn_config_path": "/opt/shop/gunicorn.conf.py"},
        {"gunicorn_unit_path": "/etc/systemd/system/shop@web.service", "gunicorn_service": "shop@web.service"},
        {"gunicorn_history_dir": "/srv/shop/djdeploy/history", "gunicorn_lock_path": "/srv/shop/djdeploy/lock"},
        {"gunicorn_environment_files": ["/etc/shop/env", "/srv/shop/.env"]},
        {"gunicorn_read_write_paths": ["/srv/shop/media", "/var/cache/shop"]},
        {"gunicorn_user": "www-data", "gunicorn_group": "www-data"},
        {"gunicorn_wsgi_app": "shop.wsgi:application"},
        {"gunicorn_wsgi_app": "shop.wsgi:create_app()"},
        {"gunicorn_health_path": "/health/?full=1&x=%20"},
        {"gunicorn_verify_host_header": "shop.example.com:8080"},
        {"gunicorn_verify_host_header": "[::1]"},
        {"gunicorn_verify_requests": "3", "gunicorn_history_keep": 2},
    ],
    ids=lambda changes: ", ".join(f"{k}={v}" for k, v in changes.items()),
)
def test_inputs_the_role_may_own_are_accepted(changes: dict[str, Any]) -> None:
    assert check_role_inputs(role_inputs(**changes), SIZING_OPTIONS) is True


REFUSED = [
    # paths outside what the role owns
    ({"gunicorn_config_path": "/etc/passwd"}, "gunicorn_config_path '/etc/passwd' is not a path djdeploy may own"),
    ({"gunicorn_config_path": "gunicorn.conf.py"},
     "gunicorn_config_path 'gunicorn.conf.py' is not an absolute path of plain characters"),
    ({"gunicorn_config_path": "/etc/gunicorn/../python3.11/sitecustomize.py"},
     "gunicorn_config_path '/etc/gunicorn/../python3.11/sitecustomize.py' is not an absolute path of plain"),
    ({"gunicorn_config_path": "/etc/python3.11/sitecustomize.py"}, "is not a path djdeploy may own"),
    ({"gunicorn_config_path": "/tmp/gunicorn.conf.py"}, "gunicorn_config_path '/tmp/gunicorn.conf.py' is not a path"),
    ({"gunicorn_config_path": "/etc/gunicorn.conf.py"}, "gunicorn_config_path '/etc/gunicorn.conf.py' is not a path"),
    # The root alone once raised IndexError instead of this refusal (found by the property test below).
    ({"gunicorn_config_path": "/"}, "gunicorn_config_path '/' is not a path djdeploy may own"),
    ({"gunicorn_config_path": "/usr/lib/python3/dist-packages/x/gunicorn.conf.py"}, "is not a path djdeploy may own"),
    ({"gunicorn_unit_path": "/etc/passwd"},
     "gunicorn_unit_path '/etc/passwd' is not where djdeploy may write the unit of gunicorn.service"),
    ({"gunicorn_unit_path": "/lib/systemd/system/gunicorn.service"}, "gunicorn_unit_path '/lib/systemd/system/"),
    ({"gunicorn_unit_path": "/etc/systemd/system/other.service"}, "gunicorn_unit_path '/etc/systemd/system/other"),
    ({"gunicorn_history_dir": "/"}, "gunicorn_history_dir '/' is not inside a directory of djdeploy's own"),
    ({"gunicorn_history_dir": "/etc"}, "gunicorn_history_dir '/etc' is not inside a directory of djdeploy's own"),
    ({"gunicorn_history_dir": "/var/lib/djdeploy"}, "gunicorn_history_dir '/var/lib/djdeploy' is not inside"),
    ({"gunicorn_history_dir": "/usr/djdeploy/history"}, "gunicorn_history_dir '/usr/djdeploy/history' is not"),
    ({"gunicorn_lock_path": "/etc/shadow"}, "gunicorn_lock_path '/etc/shadow' is not inside a directory of djdeploy"),
    ({"gunicorn_lock_path": "/var/lib/djdeploy/history/lock"},
     "gunicorn_lock_path '/var/lib/djdeploy/history/lock' is inside gunicorn_history_dir"),
    ({"gunicorn_environment_files": ["/etc/passwd"]}, "gunicorn_environment_files: '/etc/passwd' is a system file"),
    ({"gunicorn_environment_files": ["/proc/self/environ"]}, "gunicorn_environment_files: '/proc/self/environ' is a"),
    ({"gunicorn_environment_files": ["env"]}, "gunicorn_environment_files 'env' is not an absolute path"),
    ({"gunicorn_environment_files": ["-/etc/app/env"]}, "gunicorn_environment_files '-/etc/app/env' is not an"),
    ({"gunicorn_environment_files": "/etc/shop/env"}, "gunicorn_environment_files must be a list of absolute paths"),
    ({"gunicorn_read_write_paths": ["/"]}, "gunicorn_read_write_paths: '/' is outside what the app may write"),
    ({"gunicorn_read_write_paths": ["/etc"]}, "gunicorn_read_write_paths: '/etc' is outside what the app may write"),
    ({"gunicorn_read_write_paths": ["/usr/local"]}, "gunicorn_read_write_paths: '/usr/local' is outside"),
    ({"gunicorn_read_write_paths": ["/var/lib"]},
     "gunicorn_read_write_paths: '/var/lib' is outside what the app may write: it would let the app write "
     "/var/lib/djdeploy/history"),
    ({"gunicorn_read_write_paths": ["srv/media"]}, "gunicorn_read_write_paths 'srv/media' is not an absolute path"),
    ({"gunicorn_hardening_overrides": {"ExecStartPre": "/bin/sh"}},
     "gunicorn_hardening_overrides: 'ExecStartPre' is not a sandboxing directive"),
    # names and values that reach unit lines and systemctl
    ({"gunicorn_service": "../gunicorn.service"}, "gunicorn_service '../gunicorn.service' is not a plain service"),
    ({"gunicorn_service": "gunicorn"}, "gunicorn_service 'gunicorn' is not a plain service unit name"),
    ({"gunicorn_service": "my app.service"}, "gunicorn_service 'my app.service' is not a plain service unit name"),
    ({"gunicorn_service": "-H.service"}, "gunicorn_service '-H.service' is not a plain service unit name"),
    ({"gunicorn_user": "demo\nExecStartPre=/bin/touch /tmp/pwned"},
     "gunicorn_user 'demo\\nExecStartPre=/bin/touch /tmp/pwned' is not a plain user or group name"),
    ({"gunicorn_user": "root"}, "gunicorn_user is root: gunicorn must not run as root"),
    ({"gunicorn_group": "demo;id"}, "gunicorn_group 'demo;id' is not a plain user or group name"),
    ({"gunicorn_group": "%u"}, "gunicorn_group '%u' is not a plain user or group name"),
    ({"gunicorn_working_directory": "/srv/%h"}, "gunicorn_working_directory '/srv/%h' is not an absolute path"),
    ({"gunicorn_bin": "/srv/venv/bin/gunicorn --reload"}, "gunicorn_bin '/srv/venv/bin/gunicorn --reload' is not"),
    ({"gunicorn_control_socket": "run/gunicorn.ctl"}, "gunicorn_control_socket 'run/gunicorn.ctl' is not an"),
    ({"gunicorn_wsgi_app": "shop.wsgi:application; touch /tmp/pwned"},
     "gunicorn_wsgi_app 'shop.wsgi:application; touch /tmp/pwned' is not a module path"),
    ({"gunicorn_wsgi_app": "__import__('os').system('id')"}, "gunicorn_wsgi_app \"__import__('os').system('id')\""),
    # what verify sends to the app
    ({"gunicorn_health_path": "/healthz\nHost: evil"}, "gunicorn_health_path: '/healthz\\nHost: evil' is not a URL"),
    ({"gunicorn_health_path": "healthz"}, "gunicorn_health_path: 'healthz' is not a URL path"),
    ({"gunicorn_verify_paths": ["/ok", "/a b"]}, "gunicorn_verify_paths: '/a b' is not a URL path"),
    ({"gunicorn_warm_up_paths": ["/dashboard/?x=1"]}, "gunicorn_warm_up_paths: '/dashboard/?x=1' is not a URL path"),
    ({"gunicorn_verify_host_header": "localhost\r\nX-Evil: 1"}, "gunicorn_verify_host_header 'localhost\\r\\nX-Evil"),
    ({"gunicorn_verify_host_header": "a'b"}, "gunicorn_verify_host_header \"a'b\" is not a host name"),
    # numbers
    ({"gunicorn_verify_requests": 0}, "gunicorn_verify_requests must be a whole number from 1 to 1000, got 0"),
    ({"gunicorn_verify_request_timeout": 0},
     "gunicorn_verify_request_timeout must be a whole number from 1 to 3600, got 0"),
    ({"gunicorn_verify_timeout": -5}, "gunicorn_verify_timeout must be a whole number from 5 to 3600, got -5"),
    ({"gunicorn_history_keep": 1}, "gunicorn_history_keep must be a whole number from 2 to 10000, got 1"),
    ({"gunicorn_lock_ttl": True}, "gunicorn_lock_ttl must be a whole number from 1 to 604800, got True"),
    ({"gunicorn_verify_timeout": "90s"}, "gunicorn_verify_timeout must be a whole number from 5 to 3600, got '90s'"),
    ({"gunicorn_bridge_timeout": 0}, "gunicorn_bridge_timeout must be a whole number from 1 to 3600, got 0"),
]


@pytest.mark.parametrize(("changes", "message"), REFUSED,
                         ids=[next(iter(c)) + "=" + repr(next(iter(c.values())))[:40] for c, _ in REFUSED])
def test_inputs_outside_what_the_role_owns_are_refused_naming_them(changes: dict[str, Any], message: str) -> None:
    assert message in refusal(role_inputs(**changes))


def test_a_dotted_wsgi_app_is_left_to_gunicorn_to_import() -> None:
    # Whatever module it names runs as the app, with the app's rights: the value is the
    # operator's choice, only its shape is djdeploy's business.
    assert check_role_inputs(role_inputs(gunicorn_wsgi_app="os:system"), SIZING_OPTIONS) is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"overrides": {"workres": 4}}, "unknown gunicorn setting 'workres' (from gunicorn_overrides); did you mean"),
        ({"overrides": {"workers": 10_000}}, "workers must be between 1 and 256, got 10000 (from gunicorn_overrides)"),
        ({"bind": ["127.0.0.1:8000\nExecStartPre=/bin/sh"]}, "bind"),
        ({"memory_reserve_fraction": 1.5}, "memory_reserve_fraction must be a number from 0 up to (not including) 1"),
        ({"db_max_connections": 2, "db_hosts_sharing": 5}, "the database budget leaves this host no connection"),
    ],
    ids=["near-miss name", "workers 10000", "bind with a newline", "reserve 1.5", "database too small"],
)
def test_sizing_options_are_checked_before_the_host_is_looked_at(options: dict[str, Any], message: str) -> None:
    assert message in refusal(role_inputs(), {**SIZING_OPTIONS, **options})


# --- properties: what passes can never escape its unit line ----------------------------------

hostile = st.text(alphabet=string.ascii_letters + string.digits + "/._-%$\\'\"; \n\r\t@:=()", max_size=30)


def unit_from(inputs: dict[str, Any]) -> str:
    """The unit the role renders from these inputs (over the lab's running unit)."""
    running = {"user": "demo", "group": "demo", "working_directory": "/srv/demo/app",
               "environment_files": ["/etc/demo/env"],
               "exec_start": ["/srv/demo/venv/bin/gunicorn", "demoproject.wsgi:application"]}
    unit_inputs = {"user": inputs["gunicorn_user"], "group": inputs["gunicorn_group"],
                   "working_directory": inputs["gunicorn_working_directory"],
                   "environment_files": inputs["gunicorn_environment_files"], "gunicorn_bin": inputs["gunicorn_bin"],
                   "wsgi_app": inputs["gunicorn_wsgi_app"], "config_path": inputs["gunicorn_config_path"]}
    params = unit_params(running, unit_inputs, {"graceful_timeout": 30})
    return render("gunicorn.service.j2", _gunicorn_unit=params, gunicorn_history_dir=inputs["gunicorn_history_dir"])


BASELINE_UNIT = unit_from(role_inputs())


@given(st.sampled_from(["gunicorn_user", "gunicorn_group", "gunicorn_working_directory", "gunicorn_bin",
                        "gunicorn_wsgi_app", "gunicorn_config_path", "gunicorn_history_dir"]), hostile)
def test_no_accepted_input_adds_a_unit_line_or_a_specifier(name: str, text: str) -> None:
    inputs = role_inputs(**{name: text})
    try:
        check_role_inputs(inputs, SIZING_OPTIONS)
    except DjdeployError:
        return  # refused: nothing is rendered
    unit = unit_from(inputs)
    assert len(unit.splitlines()) == len(BASELINE_UNIT.splitlines())
    # systemd expands % specifiers and joins lines ending in a backslash; input adds neither.
    assert unit.count("%") == BASELINE_UNIT.count("%") and "\\" not in unit
    assert "\r" not in unit and unit.count(";") == BASELINE_UNIT.count(";")


@given(hostile)
def test_any_environment_file_list_that_passes_adds_one_line_per_file(text: str) -> None:
    inputs = role_inputs(gunicorn_environment_files=["/etc/shop/env", text])
    try:
        check_role_inputs(inputs, SIZING_OPTIONS)
    except DjdeployError:
        return
    lines = unit_from(inputs).splitlines()
    assert [line for line in lines if line.startswith("EnvironmentFile=")] == [
        "EnvironmentFile=/etc/shop/env", f"EnvironmentFile={text}"]
    assert len(lines) == len(BASELINE_UNIT.splitlines()) + 1


def test_a_value_of_a_str_subclass_is_named_as_text_in_the_message() -> None:
    # Ansible hands over its own str subclass; users wrote a string.
    class TaggedStr(str):
        pass

    message = refusal(role_inputs(), {**SIZING_OPTIONS, "overrides": {"workers": TaggedStr("4")}})
    assert "workers must be an integer, got str '4' (from gunicorn_overrides)" in message
