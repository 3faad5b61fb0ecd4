"""Hosts set up the way the common guides set Django up, not the way the lab builds them: what
djdeploy does with a deployment it did not make. Each host is rebuilt from the lab's by hand, as
a person following the guide would, and probed through nginx while djdeploy runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import LabHosts, djdeploy, master_pid
from djdeploy.lab.load import Load, nginx_failures, summarize

pytestmark = pytest.mark.lab

UNIT = "/etc/systemd/system/gunicorn.service"
SOCKET = "/etc/systemd/system/gunicorn.socket"
HISTORY = "/var/lib/djdeploy/history"
ACCESS_LOG = "/var/log/nginx/access.log"

# A socket unit, settings as ExecStart flags, no config file, a unix socket in /run, nginx over
# the socket: the layout of the most common Django-on-Debian guide.
GUIDE_SOCKET = """\
[Unit]
Description=gunicorn socket

[Socket]
ListenStream=/run/gunicorn.sock

[Install]
WantedBy=sockets.target
"""
GUIDE_SERVICE = """\
[Unit]
Description=gunicorn daemon
Requires=gunicorn.socket
After=network.target

[Service]
User=demo
Group=www-data
WorkingDirectory=/srv/demo/app
EnvironmentFile=/etc/demo/env
ExecStart=/srv/demo/venv/bin/gunicorn \\
          --access-logfile - \\
          --workers 3 \\
          --bind unix:/run/gunicorn.sock \\
          demoproject.wsgi:application

[Install]
WantedBy=multi-user.target
"""


def follow_the_guide(lab: LabHosts, host: str = "web01") -> None:
    """Turn the lab's host into the guide's: its units, its nginx upstream, started as it says."""
    lab.sh(host, f"cat > {SOCKET} <<'EOF'\n{GUIDE_SOCKET}EOF\ncat > {UNIT} <<'EOF'\n{GUIDE_SERVICE}EOF\n"
                 "systemctl stop gunicorn && systemctl daemon-reload"
                 " && systemctl enable --now gunicorn.socket && systemctl enable gunicorn"
                 " && sed -i 's#server 127.0.0.1:8000 fail_timeout=0;#server unix:/run/gunicorn.sock fail_timeout=0;#'"
                 " /etc/nginx/sites-available/demo && systemctl reload nginx"
                 # nginx's old workers finish on the old upstream first. The first request
                 # through the socket starts gunicorn, as in the guide's own check.
                 "\nfor i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1/healthz && exit 0; sleep 0.2; done"
                 "; exit 1")


def host_state(lab: LabHosts, host: str = "web01") -> dict:
    return {
        "files": lab.sh(host, f"sha256sum {UNIT} {SOCKET}"),
        "master": master_pid(lab, host),
        "active": lab.sh(host, "systemctl is-active gunicorn.socket gunicorn").split(),
        "history": lab.exec(host, "test", "-e", HISTORY).returncode == 0,
    }


@pytest.fixture(scope="module")
def guide_host(lab_factory, tmp_path_factory) -> tuple[LabHosts, str]:
    """A host built by the guide, and an inventory that names its bind as the guide's user would."""
    lab = lab_factory("--hosts", "1")
    follow_the_guide(lab)
    inventory = yaml.safe_load(Path(lab.inventory).read_text())
    inventory["all"]["vars"]["gunicorn_bind"] = ["unix:/run/gunicorn.sock"]
    with_bind = tmp_path_factory.mktemp("guide") / "inventory.yml"
    with_bind.write_text(yaml.safe_dump(inventory))
    return lab, str(with_bind)


def test_the_guides_host_serves_through_its_socket_unit(guide_host):
    lab, _ = guide_host
    assert lab.sh("web01", "systemctl show -p TriggeredBy --value gunicorn").strip() == "gunicorn.socket"
    # systemd (pid 1) holds the listening socket, and gunicorn serves on the very same one.
    listeners = lab.sh("web01", "ss -lxpH src /run/gunicorn.sock")
    assert '("systemd",pid=1,' in listeners and '("gunicorn",' in listeners and len(listeners.splitlines()) == 1
    done = djdeploy("lab", "exec", "web01", "--", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                    "http://127.0.0.1/dashboard/", lab=lab.name)
    assert done.stdout == "200"


def under_probe(lab: LabHosts, *commands: tuple[str, ...], inventory: str | None = None) -> list[dict]:
    """Run djdeploy commands with probe traffic through nginx the whole time; every request must
    succeed, and each run's record is returned."""
    offset = int(lab.sh("web01", f"stat -c %s {ACCESS_LOG}"))
    with Load(f"{lab.hosts['web01']['url']}dashboard/", connections=2, rate=5, max_seconds=600) as load:
        runs = [djdeploy(*command, "-i", inventory or lab.inventory, "--json") for command in commands]
    summary = summarize(load.samples())
    nginx = nginx_failures(lab.sh("web01", f"tail -c +{offset + 1} {ACCESS_LOG}").splitlines())
    assert summary["requests"] > 10 and (summary["failed"], summary["errors"], nginx) == (0, [], {}), summary
    return [{"exit": run.returncode, **json.loads(run.stdout)["hosts"]["web01"]} for run in runs]


@pytest.mark.covers(kind="fault", case="a socket unit of the user's own that does not listen on the bind asked for "
                                       "(gunicorn.socket on /run/gunicorn.sock, gunicorn_bind 127.0.0.1:8000)",
                    exit_code=2, end="refused before any change, naming the socket unit; units, socket and master "
                                     "untouched; no request failed")
def test_a_socket_unit_of_the_users_own_that_the_bind_leaves_is_refused(guide_host, tmp_path):
    lab, _ = guide_host
    inventory = yaml.safe_load(Path(lab.inventory).read_text())
    inventory["all"]["vars"]["gunicorn_bind"] = ["127.0.0.1:8000"]
    elsewhere = tmp_path / "inventory.yml"
    elsewhere.write_text(yaml.safe_dump(inventory))
    before = host_state(lab)
    (record,) = under_probe(lab, ("tune", "web01"), inventory=str(elsewhere))
    assert (record["exit"], record["outcome"]) == (2, "refused"), record
    assert ("gunicorn.socket (listening on /run/gunicorn.sock) starts gunicorn.service: it does not listen on exactly "
            "the addresses the new bind names (127.0.0.1:8000)") in record["message"], record["message"]
    assert host_state(lab) == before


@pytest.mark.covers(kind="input", case="a socket unit of the user's own (a guide's gunicorn.socket on "
                                       "/run/gunicorn.sock, settings as ExecStart flags, nginx over the socket)",
                    exit_code=0, end="the socket unit kept byte for byte and open throughout: tune, a second tune "
                                     "unchanged, rollback and a second rollback with no failed request")
def test_the_guides_socket_unit_is_kept_open_through_tune_and_rollbacks(guide_host):
    lab, _ = guide_host
    socket_before = lab.sh("web01", f"sha256sum {SOCKET}")
    unit_before = lab.sh("web01", f"sha256sum {UNIT}")
    checked, tuned, again = under_probe(lab, ("tune", "web01", "--check"), ("tune", "web01"), ("tune", "web01"))
    assert (checked["outcome"], checked["change"]) == ("would_apply", "restart"), checked
    assert SOCKET not in checked["diff"] and f"+++ {UNIT}" in checked["diff"]
    assert checked["message"] == ("restart: the socket unit stays as it is and holds the socket: connections would "
                                  "wait, none would be refused")
    for name, value in (("workers", 3), ("bind", ["unix:/run/gunicorn.sock"]), ("accesslog", "-")):
        assert checked["settings"][name] == value and checked["reasons"][name].endswith("kept from command line")
    assert (tuned["exit"], tuned["outcome"], tuned["change"]) == (0, "applied", "restart"), tuned["message"]
    assert "socket-activated by gunicorn.socket" in tuned["message"], tuned["message"]
    assert (again["exit"], again["outcome"]) == (0, "unchanged"), again
    assert lab.sh("web01", f"sha256sum {SOCKET}") == socket_before
    assert "--config /etc/gunicorn/gunicorn.conf.py" in lab.sh("web01", f"grep ^ExecStart= {UNIT}")
    # systemd (pid 1) still holds the very socket gunicorn serves on.
    listeners = lab.sh("web01", "ss -lxpH src /run/gunicorn.sock")
    assert '("systemd",pid=1,' in listeners and '("gunicorn",' in listeners and len(listeners.splitlines()) == 1
    # The access log to stdout goes on, into the journal.
    assert "GET /dashboard/" in lab.sh("web01", "journalctl -u gunicorn --since -20s --no-pager -o cat | tail -n 5")

    (back,) = under_probe(lab, ("rollback", "web01"))
    assert (back["exit"], back["outcome"], back["change"]) == (0, "applied", "restart"), back["message"]
    assert back["restores"].endswith("-baseline")
    assert lab.sh("web01", f"sha256sum {UNIT}") + lab.sh("web01", f"sha256sum {SOCKET}") == unit_before + socket_before
    (forth,) = under_probe(lab, ("rollback", "web01"))
    assert (forth["exit"], forth["outcome"]) == (0, "applied"), forth["message"]
    assert lab.sh("web01", f"sha256sum {SOCKET}") == socket_before
    assert "--config /etc/gunicorn/gunicorn.conf.py" in lab.sh("web01", f"grep ^ExecStart= {UNIT}")


@pytest.mark.parametrize("with_bind", [False, True], ids=["as found", "gunicorn_bind set to the socket"])
def test_status_of_the_guides_host_asks_the_socket_its_bind_flag_names(guide_host, with_bind):
    lab, inventory_with_bind = guide_host
    done = djdeploy("status", "web01", "-i", inventory_with_bind if with_bind else lab.inventory, "--json")
    record = json.loads(done.stdout)["hosts"]["web01"]
    assert (done.returncode, record["outcome"], record["health"]["status"]) == (0, "healthy", 200), record
    assert record["health"]["unix_socket"] == "/run/gunicorn.sock", record["health"]
