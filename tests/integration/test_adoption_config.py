"""A service set up by hand the other common way: not named gunicorn.service, its own config
file with its own logs, an EnvironmentFile, nginx in front on another port. djdeploy finds it,
reads it whole by gunicorn's own rules, keeps every setting the user wrote, and goes back to it
byte for byte, while probe traffic through nginx never fails."""

from __future__ import annotations

import json

import pytest

from conftest import LabHosts, djdeploy
from djdeploy.lab.load import Load, nginx_failures, summarize

pytestmark = pytest.mark.lab

UNIT = "/etc/systemd/system/myapp.service"
USER_CONFIG = "/etc/myapp/gunicorn.conf.py"
ACCESS_LOG = "/var/log/gunicorn/myapp-access.log"
NGINX_LOG = "/var/log/nginx/access.log"
KEPT = f"kept from config file {USER_CONFIG}"

MYAPP_CONFIG = """\
# gunicorn settings for myapp
bind = "127.0.0.1:8001"
workers = 2
timeout = 60
accesslog = "/var/log/gunicorn/myapp-access.log"
errorlog = "/var/log/gunicorn/myapp-error.log"
loglevel = "info"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s'
forwarded_allow_ips = "127.0.0.1"
proxy_protocol = False
"""
MYAPP_SERVICE = """\
[Unit]
Description=myapp gunicorn
After=network.target

[Service]
User=demo
Group=demo
WorkingDirectory=/srv/demo/app
EnvironmentFile=/etc/demo/env
ExecStart=/srv/demo/venv/bin/gunicorn --config /etc/myapp/gunicorn.conf.py demoproject.wsgi:application
ExecReload=/bin/kill -s HUP $MAINPID
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def set_up_myapp(lab: LabHosts, host: str = "web01") -> None:
    """The lab's host rebuilt by hand: gunicorn.service gone, myapp.service on 127.0.0.1:8001."""
    lab.sh(host, "mkdir -p /etc/myapp /var/log/gunicorn && chown demo:demo /var/log/gunicorn\n"
                 f"cat > {USER_CONFIG} <<'EOF'\n{MYAPP_CONFIG}EOF\ncat > {UNIT} <<'EOF'\n{MYAPP_SERVICE}EOF\n"
                 "systemctl disable --now gunicorn && rm /etc/systemd/system/gunicorn.service"
                 " && systemctl daemon-reload && systemctl enable --now myapp"
                 " && sed -i 's#server 127.0.0.1:8000 fail_timeout=0;#server 127.0.0.1:8001 fail_timeout=0;#'"
                 " /etc/nginx/sites-available/demo && systemctl reload nginx"
                 "\nfor i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1/healthz && exit 0; sleep 0.2; done"
                 "; exit 1")


def user_files(lab: LabHosts, host: str = "web01") -> str:
    return lab.sh(host, f"sha256sum {UNIT} {USER_CONFIG} /etc/demo/env")


def log_size(lab: LabHosts, path: str, host: str = "web01") -> int:
    return int(lab.sh(host, f"stat -c %s {path}"))


def outcome(run) -> dict:
    assert run.stdout, run.stderr
    return json.loads(run.stdout)["hosts"]["web01"]


@pytest.fixture(scope="module")
def myapp(lab_factory) -> LabHosts:
    lab = lab_factory("--hosts", "1")
    set_up_myapp(lab)
    return lab


def probed(lab: LabHosts, *commands: tuple[str, ...]) -> tuple[list, dict, dict]:
    """Run djdeploy commands under probe traffic through nginx; (runs, probe summary, nginx's failures)."""
    offset = log_size(lab, NGINX_LOG)
    with Load(f"{lab.hosts['web01']['url']}dashboard/", connections=2, rate=5, max_seconds=600) as load:
        runs = [djdeploy(*command, lab=lab.name) for command in commands]
    nginx = nginx_failures(lab.sh("web01", f"tail -c +{offset + 1} {NGINX_LOG}").splitlines())
    return runs, summarize(load.samples()), nginx


def test_status_finds_the_service_and_asks_the_address_its_config_binds(myapp):
    record = outcome(djdeploy("status", "web01", "--json", lab=myapp.name))
    assert (record["outcome"], record["health"]["status"]) == ("healthy", 200), record
    assert "127.0.0.1:8001" in record["health"]["url"]


def test_tune_check_shows_each_setting_kept_and_changes_nothing(myapp):
    before = user_files(myapp)
    record = outcome(djdeploy("tune", "web01", "--check", "--json", lab=myapp.name))
    assert (record["outcome"], record["change"]) == ("would_apply", "restart"), record
    settings, reasons = record["settings"], record["reasons"]
    assert settings["bind"] == ["127.0.0.1:8001"] and settings["timeout"] == 60 and settings["workers"] == 2
    for name in ("bind", "timeout", "workers", "accesslog", "errorlog", "loglevel", "access_log_format",
                 "forwarded_allow_ips", "proxy_protocol"):
        assert reasons[name].endswith(KEPT), reasons[name]
    assert settings["access_log_format"] == '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s'
    assert record["previous"]["timeout"] == 60 and record["removed"] == {}
    assert record["message"].startswith("restart: systemd would hold the listening sockets"), record["message"]
    # The diff of every file the change writes: here the new config and the user's unit.
    assert "--- /dev/null\n+++ /etc/gunicorn/gunicorn.conf.py\n" in record["diff"]
    assert ("-ExecStart=/srv/demo/venv/bin/gunicorn --config /etc/myapp/gunicorn.conf.py demoproject.wsgi:application\n"
            "+# Holds the control socket") in record["diff"]
    assert user_files(myapp) == before
    assert myapp.exec("web01", "test", "-e", "/etc/gunicorn/gunicorn.conf.py").returncode != 0


@pytest.mark.covers(kind="input", case="a service not named gunicorn.service, with its own config file, logs and "
                                       "EnvironmentFile (myapp.service --config /etc/myapp/gunicorn.conf.py)",
                    exit_code=0, end="found and tuned keeping every setting of the user's config; a second tune "
                                      "unchanged; rollback and a second rollback byte-identical; no request failed")
def test_tune_keeps_the_users_settings_settles_and_rolls_back_byte_identical_without_a_failed_request(myapp):
    before = user_files(myapp)
    access_before = log_size(myapp, ACCESS_LOG)
    (tuned, again), summary, nginx = probed(myapp, ("tune", "web01", "--json"), ("tune", "web01", "--json"))
    assert summary["requests"] > 10 and (summary["failed"], summary["errors"], nginx) == (0, [], {}), summary
    tuned_record = outcome(tuned)
    assert (tuned.returncode, tuned_record["outcome"], tuned_record["change"]) == (0, "applied", "restart"), tuned_record["message"]
    assert "connections waited instead of being refused" in tuned_record["message"]
    # The user's service now runs djdeploy's config, which holds every setting the user wrote.
    assert "--config /etc/gunicorn/gunicorn.conf.py" in myapp.sh("web01", f"grep ^ExecStart= {UNIT}")
    config = myapp.sh("web01", "cat /etc/gunicorn/gunicorn.conf.py")
    for line in ("timeout = 60", "bind = ['127.0.0.1:8001']", "accesslog = '/var/log/gunicorn/myapp-access.log'",
                 "forwarded_allow_ips = '127.0.0.1'", "loglevel = 'info'", "proxy_protocol = False"):
        assert line in config.splitlines(), line
    # The access log the user configured keeps growing, in the user's format.
    assert log_size(myapp, ACCESS_LOG) > access_before
    assert '"GET /dashboard/ HTTP/1.1" 200' in myapp.sh("web01", f"tail -n 5 {ACCESS_LOG}")
    assert (again.returncode, outcome(again)["outcome"]) == (0, "unchanged"), again.stdout
    assert myapp.sh("web01", f"cat {USER_CONFIG}") == MYAPP_CONFIG

    (back,), summary, nginx = probed(myapp, ("rollback", "web01", "--json"))
    assert summary["requests"] > 10 and (summary["failed"], summary["errors"], nginx) == (0, [], {}), summary
    back_record = outcome(back)
    assert (back.returncode, back_record["outcome"], back_record["change"]) == (0, "applied", "restart"), back_record
    assert "connections waited instead of being refused" in back_record["message"], back_record["message"]
    # Rolled back to the user's own unit: the files as they were, nothing of djdeploy's in systemd.
    assert user_files(myapp) == before
    assert myapp.sh("web01", "systemctl show -p FileDescriptorStoreMax --value myapp").strip() == "0"
    assert myapp.exec("web01", "test", "-e", "/run/systemd/system/myapp.service.d").returncode != 0
    assert myapp.exec("web01", "test", "-e", "/etc/gunicorn").returncode != 0

    (forth,), summary, nginx = probed(myapp, ("rollback", "web01", "--json"))
    assert summary["requests"] > 10 and (summary["failed"], summary["errors"], nginx) == (0, [], {}), summary
    forth_record = outcome(forth)
    assert (forth.returncode, forth_record["outcome"]) == (0, "applied"), forth_record["message"]
    assert "--config /etc/gunicorn/gunicorn.conf.py" in myapp.sh("web01", f"grep ^ExecStart= {UNIT}")


def test_a_setting_only_the_hosts_gunicorn_knows_is_checked_there_and_written_as_a_literal(myapp):
    value = """%(h)s "%(r)s" %(s)s '+__import__('os').system('touch /tmp/pwned-alf')+'"""
    done = djdeploy("tune", "web01", "--set", f"access_log_format={value}", "--json", lab=myapp.name)
    record = outcome(done)
    assert (done.returncode, record["outcome"]) == (0, "applied"), record
    assert record["settings"]["access_log_format"] == value
    assert record["reasons"]["access_log_format"].endswith(": set by --set")
    config = myapp.sh("web01", "cat /etc/gunicorn/gunicorn.conf.py").splitlines()
    assert f"access_log_format = {value!r}" in config
    assert myapp.sh("web01", "find / -xdev -name 'pwned-*' 2>/dev/null; true") == ""
    # The format is in force: the new lines of the access log end in the quoted request and status.
    size = log_size(myapp, ACCESS_LOG)
    myapp.sh("web01", "curl -sf -o /dev/null http://127.0.0.1/healthz")
    assert myapp.sh("web01", f"tail -c +{size + 1} {ACCESS_LOG}").strip().endswith(
        "\"GET /healthz HTTP/1.1\" 200 '+__import__('os').system('touch /tmp/pwned-alf')+'")
    # A plain tune afterwards would undo it, and says so.
    checked = outcome(djdeploy("tune", "web01", "--check", "--json", lab=myapp.name))
    assert any(warning.startswith("access_log_format=") and "was set by an earlier tune's overrides" in warning
               for warning in checked["warnings"]), checked["warnings"]
