"""What a tune keeps of the settings a running service sets itself: the host-side reader
(roles/gunicorn/files/read_settings.py, run here with the gunicorn the lab hosts run) and the
pure decision (djdeploy.adoption)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from djdeploy.adoption import adopt, config_records, kept_read_write_paths
from djdeploy.errors import DjdeployError
from djdeploy.sizing import plan

READER = Path(__file__).resolve().parents[2] / "roles/gunicorn/files/read_settings.py"
GUNICORN = "/srv/venv/bin/gunicorn"


def read(tmp_path: Path, argv: list[str], config: str | None = None, overrides: dict | None = None,
         env: dict | None = None) -> dict:
    """Run the reader as the role does: the service's Python, in its working directory."""
    if config is not None:
        (tmp_path / "gunicorn.conf.py").write_text(config)
    done = subprocess.run([sys.executable, str(READER), json.dumps({"argv": argv, "overrides": overrides or {}})],
                          cwd=tmp_path, capture_output=True, text=True, check=True, env=env or {})
    return json.loads(done.stdout)


# --- the reader, with gunicorn's own rules ---------------------------------------------------


def test_the_reader_reads_flags_in_short_and_long_forms_and_the_config_they_name(tmp_path):
    config = tmp_path / "elsewhere.conf.py"
    config.write_text('bind = "127.0.0.1:8001"\ntimeout = 60\nworkers = 5\n')
    reading = read(tmp_path, [GUNICORN, "-w", "3", "--access-logfile", "-", "-c", str(config), "-e", "A=1",
                              "--env", "B=2", "project.wsgi:application"])
    settings = reading["settings"]
    assert reading["config_file"] == str(config) and reading["app"] == "project.wsgi:application"
    # Flags win over the config file, as when gunicorn starts.
    assert settings["workers"] == {"source": "command line", "value": 3, "hook": False, "plain": True}
    assert settings["bind"]["value"] == "127.0.0.1:8001" and settings["bind"]["source"] == f"config file {config}"
    assert settings["timeout"]["value"] == 60 and settings["accesslog"]["value"] == "-"
    assert settings["raw_env"]["value"] == ["A=1", "B=2"]
    assert "config" not in settings and reading["djdeploy"] == {"written_by_djdeploy": False}


def test_the_reader_finds_gunicorn_conf_py_in_the_working_directory_and_python_dash_m(tmp_path):
    reading = read(tmp_path, ["/srv/venv/bin/python3", "-m", "gunicorn", "--bind", "unix:/run/app.sock", "app:wsgi"],
                   config="loglevel = 'debug'\n")
    assert reading["config_file"] == str(tmp_path / "gunicorn.conf.py")
    assert reading["settings"]["loglevel"]["value"] == "debug"
    assert reading["settings"]["bind"]["value"] == ["unix:/run/app.sock"] and reading["app"] == "app:wsgi"


def test_the_reader_reads_gunicorn_cmd_args_between_the_config_and_the_flags(tmp_path):
    reading = read(tmp_path, [GUNICORN, "--timeout", "90", "app:wsgi"], config="timeout = 10\nkeepalive = 2\n",
                   env={"GUNICORN_CMD_ARGS": "--keep-alive 7 --timeout 20"})
    assert reading["settings"]["keepalive"] == {"source": "GUNICORN_CMD_ARGS", "value": 7, "hook": False,
                                                "plain": True}
    assert reading["settings"]["timeout"]["value"] == 90


def test_the_reader_tells_hooks_and_values_that_are_not_plain_data(tmp_path):
    reading = read(tmp_path, [GUNICORN, "app:wsgi"],
                   config="import logging\ndef post_fork(server, worker):\n    pass\nlogger_class = logging.Logger\n")
    assert reading["settings"]["post_fork"] == {"source": f"config file {tmp_path / 'gunicorn.conf.py'}",
                                                "value": None, "hook": True, "plain": False}
    assert reading["settings"]["logger_class"]["plain"] is False


def test_the_reader_gives_the_registry_of_the_gunicorn_it_runs_with(tmp_path):
    reading = read(tmp_path, [GUNICORN, "app:wsgi"])
    registry = reading["registry"]
    assert len(registry) > 100 and reading["gunicorn_version"]
    assert registry["bind"]["flags"] == ["-b", "--bind"] and registry["bind"]["validator"] == "validate_list_string"
    assert registry["access_log_format"]["default"].startswith("%(h)s")


def test_the_reader_checks_overrides_with_gunicorns_validators(tmp_path):
    reading = read(tmp_path, [GUNICORN, "app:wsgi"],
                   overrides={"access_log_format": "%(h)s", "workres": 3, "timeout": "abc"})
    assert reading["overrides"]["access_log_format"] == {"value": "%(h)s"}
    assert "not a gunicorn" in reading["overrides"]["workres"]["error"]
    assert "invalid literal" in reading["overrides"]["timeout"]["error"]


def test_the_reader_reports_a_bad_command_line_and_a_failing_config(tmp_path):
    assert "unrecognized arguments" in read(tmp_path, [GUNICORN, "--no-such-flag", "app:wsgi"])["error"]
    assert "ZeroDivisionError" in read(tmp_path, [GUNICORN, "app:wsgi"], config="workers = 1 / 0\n")["error"]


def test_the_reader_reads_what_djdeploy_recorded_in_its_own_config(tmp_path):
    config = ("# gunicorn config written by djdeploy. Do not edit\nworkers = 4\ntimeout = 60\n"
              "djdeploy_kept_settings = {'timeout': 'config file /etc/myapp/gunicorn.conf.py'}\n"
              "djdeploy_overridden = ['workers']\n")
    reading = read(tmp_path, [GUNICORN, "app:wsgi"], config=config)
    assert reading["djdeploy"] == {"written_by_djdeploy": True,
                                   "djdeploy_kept_settings": {"timeout": "config file /etc/myapp/gunicorn.conf.py"},
                                   "djdeploy_overridden": ["workers"]}


# --- what the new config keeps ---------------------------------------------------------------

USER_CONFIG = "config file /etc/myapp/gunicorn.conf.py"


def entry(value, source=USER_CONFIG, **extra):
    return {"source": source, "value": value, "hook": False, "plain": True, **extra}


def reading_of(settings: dict, **djdeploy) -> dict:
    return {"gunicorn_version": "27.0.1", "config_file": "/etc/myapp/gunicorn.conf.py", "app": "app:wsgi",
            "settings": settings, "registry": {name: {} for name in ("workers", "timeout", "accesslog", "bind",
                                                                       "access_log_format", "loglevel")},
            "djdeploy": djdeploy or {"written_by_djdeploy": False}}


def test_sized_settings_the_user_set_are_kept_and_the_rest_carried_as_they_are():
    adopted = adopt(reading_of({"timeout": entry(60), "bind": entry("127.0.0.1:8001"),
                                "access_log_format": entry('%(h)s "%(r)s"'), "workers": entry(3, "command line")}),
                    asked=[], resets=[])
    assert adopted["kept"] == {"timeout": {"value": 60, "from": USER_CONFIG},
                               "bind": {"value": ["127.0.0.1:8001"], "from": USER_CONFIG},
                               "workers": {"value": 3, "from": "command line"}}
    assert adopted["carried"] == {"access_log_format": '%(h)s "%(r)s"'}
    assert adopted["reasons"] == {"access_log_format": f"access_log_format=%(h)s \"%(r)s\": kept from {USER_CONFIG}"}
    assert set(adopted["user_settings"]) == {"timeout", "bind", "access_log_format", "workers"}
    assert adopted["removed"] == {}


@pytest.mark.parametrize(("asked", "resets", "kept", "removed"), [
    (["timeout"], [], {}, {}),
    ([], ["timeout"], {}, {}),
    ([], ["accesslog"], {"timeout": 60}, {"accesslog": "given back to djdeploy by --reset; gunicorn's default applies"}),
])
def test_what_the_run_asks_for_or_resets_is_not_kept(asked, resets, kept, removed):
    adopted = adopt(reading_of({"timeout": entry(60), "accesslog": entry("/var/log/app.log")}), asked=asked,
                    resets=resets)
    assert {name: item["value"] for name, item in adopted["kept"].items()} == kept
    assert adopted["removed"] == removed
    assert ("accesslog" in adopted["carried"]) is ("accesslog" not in resets)


def test_settings_djdeploy_owns_are_replaced_and_said_so():
    adopted = adopt(reading_of({"control_socket": entry("/run/app.ctl"), "wsgi_app": entry("app:wsgi")}),
                    asked=[], resets=[])
    assert adopted["carried"] == {} and set(adopted["removed"]) == {"control_socket", "wsgi_app"}
    assert "gunicorn_control_socket" in adopted["removed"]["control_socket"]


@pytest.mark.parametrize(("settings", "message"), [
    ({"post_fork": entry(None, hook=True, plain=False), "when_ready": entry(None, hook=True, plain=False)},
     f"the running service's {USER_CONFIG} defines server hooks djdeploy cannot carry into its config: "
     "post_fork, when_ready; nothing was changed"),
    ({"logger_class": entry(None, plain=False)}, f"logger_class in the running service's {USER_CONFIG} is not a "
                                                 "plain value"),
    ({"daemon": entry(True)}, "the running service sets daemon: daemon=True makes the master fork away from systemd"),
    ({"workers": entry("x", error="ValueError: bad")}, "gunicorn 27.0.1 refuses workers from the running service's"),
])
def test_what_cannot_be_kept_is_refused_naming_it(settings, message):
    with pytest.raises(DjdeployError) as refused:
        adopt(reading_of(settings), asked=[], resets=[])
    assert message in str(refused.value)


def test_a_failed_reading_and_an_unknown_reset_are_refused():
    with pytest.raises(DjdeployError, match="could not read the settings the running service sets: boom"):
        adopt({"error": "boom"}, asked=[], resets=[])
    with pytest.raises(DjdeployError, match="--reset names no gunicorn 27.0.1 setting: wrokers"):
        adopt(reading_of({}), asked=[], resets=["wrokers"])


def test_nothing_read_keeps_nothing():
    assert adopt(None, asked=[], resets=[])["kept"] == {}


def test_in_djdeploys_own_config_only_what_it_recorded_as_the_users_is_kept():
    djdeploy_config = "config file /etc/gunicorn/gunicorn.conf.py"
    reading = reading_of({"timeout": entry(60, djdeploy_config), "workers": entry(5, djdeploy_config),
                          "loglevel": entry("debug", djdeploy_config), "keepalive": entry(9, djdeploy_config)},
                         written_by_djdeploy=True, djdeploy_kept_settings={"timeout": USER_CONFIG},
                         djdeploy_overridden=["loglevel", "keepalive"])
    reading["config_file"] = "/etc/gunicorn/gunicorn.conf.py"
    adopted = adopt(reading, asked=[], resets=[])
    assert adopted["kept"] == {"timeout": {"value": 60, "from": USER_CONFIG}} and adopted["carried"] == {}
    # A sized one is for the plan to judge; one it does not size is dropped, and said so.
    assert adopted["earlier_overrides"] == {"keepalive": 9}
    assert adopted["warnings"] == ["loglevel=debug was set by an earlier tune's overrides and this tune drops it "
                                   "(gunicorn's default applies); to keep it, pass --set loglevel=... again or put "
                                   "it in gunicorn_overrides"]
    assert adopt(reading, asked=["loglevel", "keepalive"], resets=[])["warnings"] == []
    assert config_records(adopted, ["workers"]) == {"djdeploy_kept_settings": {"timeout": USER_CONFIG},
                                                    "djdeploy_overridden": ["workers"]}


# --- kept settings in the plan ---------------------------------------------------------------

FACTS = {"cpus_affinity": 2, "cpus_online": 2, "cpu_quota": None, "mem_total_bytes": 4 << 30,
         "mem_available_bytes": 3 << 30, "cgroup_memory_limit_bytes": None, "cgroup_memory_usage_bytes": None,
         "cgroup_memory_inactive_file_bytes": None, "worker_anonymous_bytes": None, "workers_measured": 0,
         "gunicorn_pss_total_bytes": 0}


def test_the_plan_keeps_the_users_values_and_says_where_they_came_from():
    planned = plan(FACTS, {"kept": {"timeout": {"value": 60, "from": USER_CONFIG},
                                    "threads": {"value": 4, "from": "command line"}}})
    assert planned["settings"]["timeout"] == 60 and planned["reasons"]["timeout"] == f"timeout=60: kept from {USER_CONFIG}"
    # A kept thread count needs the threaded worker, as a pinned one does.
    assert planned["settings"]["worker_class"] == "gthread" and planned["settings"]["threads"] == 4


def test_an_override_wins_over_a_kept_value():
    planned = plan(FACTS, {"kept": {"timeout": {"value": 60, "from": USER_CONFIG}}, "overrides": {"timeout": 45},
                           "override_source": "--set"})
    assert planned["reasons"]["timeout"] == "timeout=45: set by --set"


def test_an_earlier_override_that_this_plan_changes_is_warned_about():
    changed = plan(FACTS, {"earlier_overrides": {"timeout": 45}})
    assert any(w.startswith("timeout=45 was set by an earlier tune's overrides and this tune changes it to 30")
               for w in changed["warnings"])
    same = plan(FACTS, {"earlier_overrides": {"timeout": 30}})
    assert not any("earlier tune" in w for w in same["warnings"])


def test_a_kept_value_djdeploy_would_refuse_is_refused_naming_the_users_config():
    with pytest.raises(DjdeployError, match="your config"):
        plan(FACTS, {"kept": {"workers": {"value": 0, "from": USER_CONFIG}}})


def test_an_override_only_the_hosts_gunicorn_knows_is_kept_as_it_judged_it():
    reading = {**reading_of({}), "overrides": {"access_log_format": {"value": "%(h)s"}}}
    adopted = adopt(reading, asked=["access_log_format"], resets=[], host_overrides={"access_log_format": "%(h)s"},
                    override_source="--set")
    assert adopted["carried"] == {"access_log_format": "%(h)s"}
    assert adopted["reasons"] == {"access_log_format": "access_log_format=%(h)s: set by --set"}
    assert adopted["user_settings"] == {}


@pytest.mark.parametrize(("name", "verdict", "message"), [
    ("workres", {"error": "not a gunicorn 27.0.1 setting"},
     "workres (from --set): not a gunicorn 27.0.1 setting; nothing was changed; did you mean workers?"),
    ("loglevel", {"error": "ValueError: Invalid log level"}, "loglevel (from --set): ValueError: Invalid log level"),
    ("daemon", {"value": True}, "daemon (from --set): daemon=True makes the master fork away from systemd"),
    ("config", {"value": "/x.py"}, "config (from --set): djdeploy's unit runs gunicorn with --config"),
])
def test_an_override_the_host_refuses_or_djdeploy_owns_is_refused_naming_it(name, verdict, message):
    reading = {**reading_of({}), "overrides": {name: verdict}}
    with pytest.raises(DjdeployError) as refused:
        adopt(reading, asked=[name], resets=[], host_overrides={name: "x"}, override_source="--set")
    assert message in str(refused.value)


def test_an_override_the_host_could_not_check_is_refused():
    with pytest.raises(DjdeployError, match="cannot check access_log_format"):
        adopt(None, asked=[], resets=[], host_overrides={"access_log_format": "%(h)s"})


def test_the_users_own_log_and_pid_directories_stay_writable_but_not_what_an_override_asks():
    adopted = adopt({**reading_of({"accesslog": entry("/var/log/gunicorn/access.log"), "errorlog": entry("-"),
                                   "pidfile": entry("run/app.pid"), "bind": entry("unix:/srv/app/app.sock")}),
                     "overrides": {"worker_tmp_dir": {"value": "/var/tmp/w"}}},
                    asked=[], resets=[], host_overrides={})
    assert kept_read_write_paths(adopted, "/srv/app", False, "gunicorn") == [
        "/srv/app", "/var/log/gunicorn", "/srv/app/run"]
    # systemd binds a unix socket for a socket unit: nothing to allow for it then.
    assert kept_read_write_paths(adopted, "/srv/app", True, "gunicorn") == ["/var/log/gunicorn", "/srv/app/run"]
    asked = adopt(reading_of({"accesslog": entry("/var/log/gunicorn/access.log")}), asked=["accesslog"], resets=[])
    assert kept_read_write_paths(asked, "/srv/app", False, "gunicorn") == []
    assert kept_read_write_paths(None, "/srv/app", False, "gunicorn") == []
