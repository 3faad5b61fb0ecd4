"""Hostile input on a real lab host: through --set, host_vars/group_vars and the command line's
arguments. Every case is refused before the host changes (exit 2, the message naming the
input), and nothing of an injection attempt ever runs on the host: each payload would leave a
pwned-* file if it reached gunicorn.conf.py or the unit and ran. One dangerous-looking value
that is legitimate is accepted and rendered as an inert literal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import LabHosts, djdeploy, live_settings

pytestmark = pytest.mark.lab

UNIT = "/etc/systemd/system/gunicorn.service"
# Everything a run that got past the checks would leave: the config, djdeploy's state (history,
# lock) and the staging directory. The host starts untuned, so none of them exists.
TRACES = ("/etc/gunicorn", "/var/lib/djdeploy", "/run/djdeploy")
STATE_SCRIPT = (
    "systemctl show -p MainPID --value gunicorn; sha256sum " + UNIT
    + "".join(f"; test -e {path} && echo 'present {path}'" for path in TRACES) + "; true"
)
# Searched on the whole root file system, PrivateTmp directories of the service included.
FIND_MARKERS = "find / -xdev -name 'pwned-*' 2>/dev/null; true"
REFUSED = "refused before any change; host untouched"


def refused(kind_of_input: str, case: str, *args: Any, **values: Any):
    return pytest.param(*args, marks=pytest.mark.covers(kind="input", case=case, exit_code=2, end=REFUSED),
                        id=f"{kind_of_input}: {case}", **values)


def with_set(case: str, *pairs: str, culprit: str):
    """A tune whose --set overrides are refused on the controller."""
    args = [arg for pair in pairs for arg in ("--set", pair)]
    return refused("--set", case, "tune", ["web01", *args], None, culprit)


def with_vars(case: str, where: str, values: dict[str, Any], culprit: str):
    """A tune whose host_vars/web01.yml or group_vars/all.yml is refused by the role."""
    return refused(where, case, "tune", ["web01"], (where, values), culprit)


def with_args(case: str, command: str, args: list[str], culprit: str):
    return refused("arguments", case, command, args, None, culprit)


CASES = [
    # --set: wrong types, out-of-range numbers, unknown names and near-misses
    with_set("--set workers=0 (below the minimum of 1)", "workers=0", culprit="workers must be between 1 and 256, got 0"),
    with_set("--set workers=10000 (above the maximum of 256)", "workers=10000",
             culprit="workers must be between 1 and 256, got 10000"),
    with_set("--set timeout=-5 (a negative timeout)", "timeout=-5", culprit="timeout must be between 1 and 3600, got -5"),
    with_set("--set workers=four (not a number)", "workers=four", culprit="--set workers=four: workers must be an integer"),
    with_set("--set preload_app=maybe (not true or false)", "preload_app=maybe",
             culprit="preload_app must be true or false"),
    with_set("--set workres=4 (a misspelt setting: the host's gunicorn knows none such; did you mean workers?)",
             "workres=4", culprit="workres (from --set): not a gunicorn 27.0.1 setting; nothing was changed; did you "
                                  "mean workers"),
    with_set("--set daemon=true (would take the master away from systemd)", "daemon=true",
             culprit="daemon (from --set): daemon=True makes the master fork away from systemd"),
    with_set("--set max-requests=100 (gunicorn's command-line spelling)", "max-requests=100",
             culprit="did you mean 'max_requests'?"),
    with_set("--set workers (no =VALUE)", "workers", culprit="--set workers: expected KEY=VALUE"),
    with_set("--set max_requests=100 max_requests_jitter=5000 (jitter above max_requests)", "max_requests=100",
             "max_requests_jitter=5000", culprit="max_requests_jitter=5000 must not exceed max_requests=100"),
    with_set("--set threads=4 with worker_class=sync (threads need gthread)", "threads=4", "worker_class=sync",
             culprit="threads=4 needs worker_class gthread"),
    # --set: strings that try to escape the Python literal or the unit
    with_set("--set proc_name with a newline and __import__ (escaping the Python literal)",
             "proc_name=x'\n__import__('os').system('touch /tmp/pwned-proc-name')\n'",
             culprit="proc_name must not contain control characters"),
    with_set("--set worker_class with quotes and __import__", "worker_class=sync'; __import__('os').system("
             "'touch /tmp/pwned-worker-class'); x='", culprit="worker_class must be sync, gthread or a dotted import"),
    with_set("--set forwarded_allow_ips with a quote and __import__",
             "forwarded_allow_ips=127.0.0.1'+__import__('os').system('touch /tmp/pwned-forwarded')+'",
             culprit="forwarded_allow_ips entries must be '*', IP addresses or networks"),
    with_set("--set bind with a newline and ExecStartPre= (escaping the unit line)",
             "bind=127.0.0.1:8000\nExecStartPre=/bin/touch /tmp/pwned-bind",
             culprit="bind must not contain control characters"),
    with_set("--set bind with a % systemd specifier in a unix socket path", "bind=unix:/run/gunicorn/%n.sock",
             culprit="bind: unix socket path must be plain"),
    with_set("--set accesslog=logs/access.log (a relative path)", "accesslog=logs/access.log",
             culprit="accesslog must be '-' or an absolute path, got 'logs/access.log'"),
    # host_vars / group_vars: settings the role receives as gunicorn_overrides and gunicorn_bind
    with_vars("host_vars gunicorn_overrides {workers: '4'} (a string, not a number)", "host_vars",
              {"gunicorn_overrides": {"workers": "4"}}, "workers must be an integer, got str '4' (from gunicorn_overrides)"),
    with_vars("host_vars gunicorn_overrides proc_name with a backslash-quote, newline and __import__", "host_vars",
              {"gunicorn_overrides": {"proc_name": "x\\'\n__import__('os').system('touch /tmp/pwned-overrides')#"}},
              "proc_name must not contain control characters"),
    with_vars("host_vars gunicorn_overrides with triple quotes across lines", "host_vars",
              {"gunicorn_overrides": {"proc_name": '"""\nimport os; os.system("touch /tmp/pwned-triple")\n"""'}},
              "proc_name must not contain control characters"),
    with_vars("host_vars gunicorn_bind with a newline and ExecStartPre=", "host_vars",
              {"gunicorn_bind": ["127.0.0.1:8000\nExecStartPre=/bin/touch /tmp/pwned-role-bind"]},
              "bind must not contain control characters"),
    # host_vars / group_vars: paths outside what the role owns
    with_vars("host_vars gunicorn_config_path=/etc/passwd", "host_vars", {"gunicorn_config_path": "/etc/passwd"},
              "gunicorn_config_path '/etc/passwd' is not a path djdeploy may own"),
    with_vars("host_vars gunicorn_config_path relative", "host_vars", {"gunicorn_config_path": "gunicorn.conf.py"},
              "gunicorn_config_path 'gunicorn.conf.py' is not an absolute path"),
    with_vars("host_vars gunicorn_config_path with '..' into /etc/python3.11", "host_vars",
              {"gunicorn_config_path": "/etc/gunicorn/../python3.11/sitecustomize.py"},
              "gunicorn_config_path '/etc/gunicorn/../python3.11/sitecustomize.py'"),
    with_vars("host_vars gunicorn_unit_path=/etc/passwd", "host_vars", {"gunicorn_unit_path": "/etc/passwd"},
              "gunicorn_unit_path '/etc/passwd' is not where djdeploy may write the unit"),
    with_vars("group_vars gunicorn_history_dir=/ (the whole file system)", "group_vars", {"gunicorn_history_dir": "/"},
              "gunicorn_history_dir '/' is not inside a directory of djdeploy's own"),
    with_vars("group_vars gunicorn_history_dir=/etc", "group_vars", {"gunicorn_history_dir": "/etc"},
              "gunicorn_history_dir '/etc' is not inside a directory of djdeploy's own"),
    with_vars("host_vars gunicorn_lock_path=/etc/shadow", "host_vars", {"gunicorn_lock_path": "/etc/shadow"},
              "gunicorn_lock_path '/etc/shadow' is not inside a directory of djdeploy's own"),
    with_vars("host_vars gunicorn_environment_files=[/etc/passwd]", "host_vars",
              {"gunicorn_environment_files": ["/etc/passwd"]}, "gunicorn_environment_files: '/etc/passwd' is a system"),
    with_vars("host_vars gunicorn_read_write_paths=[/] (undoing the sandbox)", "host_vars",
              {"gunicorn_read_write_paths": ["/"]}, "gunicorn_read_write_paths: '/' is outside what the app may write"),
    with_vars("host_vars gunicorn_read_write_paths relative", "host_vars", {"gunicorn_read_write_paths": ["srv/data"]},
              "gunicorn_read_write_paths 'srv/data' is not an absolute path"),
    # host_vars / group_vars: names and values that reach unit lines, systemctl and requests
    with_vars("host_vars gunicorn_service with '/'", "host_vars", {"gunicorn_service": "../gunicorn.service"},
              "gunicorn_service '../gunicorn.service' is not a plain service unit name"),
    with_vars("host_vars gunicorn_service with a space", "host_vars", {"gunicorn_service": "my app.service"},
              "gunicorn_service 'my app.service' is not a plain service unit name"),
    with_vars("host_vars gunicorn_service not ending in .service", "host_vars", {"gunicorn_service": "gunicorn"},
              "gunicorn_service 'gunicorn' is not a plain service unit name"),
    with_vars("host_vars gunicorn_user with a newline and ExecStartPre=", "host_vars",
              {"gunicorn_user": "demo\nExecStartPre=/bin/touch /tmp/pwned-user"},
              "gunicorn_user 'demo\\nExecStartPre=/bin/touch /tmp/pwned-user' is not a plain user or group name"),
    with_vars("host_vars gunicorn_user=root", "host_vars", {"gunicorn_user": "root"},
              "gunicorn_user is root: gunicorn must not run as root"),
    with_vars("host_vars gunicorn_group with a % specifier and shell", "host_vars", {"gunicorn_group": "%u;$(id)"},
              "gunicorn_group '%u;$(id)' is not a plain user or group name"),
    with_vars("host_vars gunicorn_wsgi_app with a newline and ExecStartPre=", "host_vars",
              {"gunicorn_wsgi_app": "demoproject.wsgi:application\nExecStartPre=/bin/touch /tmp/pwned-app"},
              "gunicorn_wsgi_app 'demoproject.wsgi:application\\nExecStartPre=/bin/touch /tmp/pwned-app'"),
    with_vars("host_vars gunicorn_wsgi_app=__import__(...) (not a module:callable)", "host_vars",
              {"gunicorn_wsgi_app": "__import__('os').system('touch /tmp/pwned-wsgi')"},
              "is not a module path like project.wsgi:application"),
    with_vars("host_vars gunicorn_health_path with a newline", "host_vars",
              {"gunicorn_health_path": "/healthz\nHost: evil"}, "gunicorn_health_path: '/healthz\\nHost: evil'"),
    with_vars("host_vars gunicorn_hardening_overrides {ExecStartPre: ...} (not a sandboxing directive)", "host_vars",
              {"gunicorn_hardening_overrides": {"ExecStartPre": "/bin/touch /tmp/pwned-hardening"}},
              "gunicorn_hardening_overrides: 'ExecStartPre' is not a sandboxing directive"),
    with_vars("group_vars gunicorn_verify_timeout=-5 (a negative timeout)", "group_vars",
              {"gunicorn_verify_timeout": -5}, "gunicorn_verify_timeout must be a whole number from 5 to 3600, got -5"),
    with_vars("host_vars gunicorn_profile=fast (not cpu, io or mixed)", "host_vars", {"gunicorn_profile": "fast"},
              "gunicorn_profile must be one of: cpu, io, mixed, got: fast"),
    with_vars("host_vars gunicorn_verify_requests=many (wrong type)", "host_vars",
              {"gunicorn_verify_requests": "many"}, "gunicorn_verify_requests"),
    # the command line's arguments
    with_args("--profile fast (not cpu, io or mixed)", "tune", ["web01", "--profile", "fast"], "--profile 'fast'"),
    with_args("rollback --to ../../etc (not a history entry id)", "rollback", ["web01", "--to", "../../etc"],
              "--to '../../etc' is not a history entry id"),
    with_args("host pattern web99 that matches no host", "tune", ["web99"], "host pattern 'web99' matches no host"),
    with_args("host pattern web01:&nothing (an empty intersection)", "tune", ["web01:&nothing"],
              "host pattern 'web01:&nothing' matches no host"),
    with_args("status of a pattern that matches no host", "status", ["nomatch*"], "host pattern 'nomatch*' matches no"),
    with_args("-i to an inventory that does not exist", "tune", ["web01", "-i", "/nonexistent/inventory.yml"],
              "inventory /nonexistent/inventory.yml does not exist"),
]


@pytest.fixture(scope="module")
def lab(lab_factory) -> LabHosts:
    """One untuned host shared by every case: each case must leave it exactly so."""
    return lab_factory("--hosts", "1")


@pytest.fixture(scope="module")
def untouched_state(lab) -> str:
    """The host's state before any case: master pid, unit checksum, and no trace of djdeploy."""
    before = lab.sh("web01", STATE_SCRIPT)
    assert "present" not in before, before
    return before


def inventory_with(lab: LabHosts, directory: Path, where: str, values: dict[str, Any]) -> str:
    """A copy of the lab's inventory with host_vars/web01.yml or group_vars/all.yml next to it."""
    inventory = directory / "inventory.yml"
    shutil.copy(lab.inventory, inventory)
    vars_file = directory / where / ("web01.yml" if where == "host_vars" else "all.yml")
    vars_file.parent.mkdir()
    vars_file.write_text(yaml.safe_dump(values))
    return str(inventory)


@pytest.mark.parametrize(("command", "args", "variables", "culprit"), CASES)
def test_hostile_input_is_refused_before_the_host_changes(lab, untouched_state, tmp_path, command, args, variables,
                                                          culprit):
    inventory = inventory_with(lab, tmp_path, *variables) if variables else lab.inventory
    # The case about a missing inventory brings its own -i.
    done = djdeploy(command, *args, *([] if "-i" in args else ["-i", inventory]), "--json")
    assert done.returncode == 2, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    if done.stdout.strip():  # the role refused it: one record saying so
        record = json.loads(done.stdout)["hosts"]["web01"]
        assert record["outcome"] == "refused", record
        assert culprit in record["message"], record["message"]
    else:  # the controller refused it before running Ansible
        assert culprit in done.stderr, done.stderr
    assert lab.sh("web01", STATE_SCRIPT) == untouched_state


def test_a_dangerous_looking_but_legitimate_value_is_an_inert_literal(lab, untouched_state):
    # Quotes, a backslash, __import__ and a % specifier are all fine in a process name: the
    # config holds them as a Python string and gunicorn shows them, nothing runs them.
    proc_name = "x'\"\\ __import__('os').system('touch /tmp/pwned-accepted') %n"
    done = djdeploy("tune", "web01", "-i", lab.inventory, "--json", "--set", f"proc_name={proc_name}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hosts"]["web01"]["outcome"] == "applied"
    assert live_settings(lab)["proc_name"] == proc_name


def test_nothing_of_any_injection_attempt_ran_on_the_host(lab):
    assert lab.sh("web01", FIND_MARKERS).split() == []
