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


@pytest.mark.parametrize("with_bind", [False, True], ids=["as found", "gunicorn_bind set to the socket"])
@pytest.mark.covers(kind="fault", case="a socket unit of the user's own starts the service (a guide's gunicorn.socket, "
                                       "settings as ExecStart flags, nginx over /run/gunicorn.sock)", exit_code=2,
                    end="refused before any change, naming the socket unit; units, socket and master untouched; "
                        "no request failed")
def test_tune_leaves_a_socket_unit_of_the_users_own_alone(guide_host, with_bind):
    lab, inventory_with_bind = guide_host
    inventory = inventory_with_bind if with_bind else lab.inventory
    before = host_state(lab)
    offset = int(lab.sh("web01", f"stat -c %s {ACCESS_LOG}"))
    with Load(f"{lab.hosts['web01']['url']}dashboard/", connections=2, rate=5, max_seconds=300) as load:
        checked = djdeploy("tune", "web01", "-i", inventory, "--check", "--json")
        done = djdeploy("tune", "web01", "-i", inventory, "--json")
    for run in (checked, done):
        record = json.loads(run.stdout)["hosts"]["web01"]
        assert (run.returncode, record["outcome"]) == (2, "refused"), run.stdout
        assert ("Refuse to take over a socket unit djdeploy did not write: gunicorn.socket (listening on "
                "/run/gunicorn.sock) starts gunicorn.service: taking over a socket unit of your own is not supported "
                "yet") in record["message"], record["message"]
    assert host_state(lab) == before
    summary = summarize(load.samples())
    nginx = nginx_failures(lab.sh("web01", f"tail -c +{offset + 1} {ACCESS_LOG}").splitlines())
    assert summary["requests"] > 10 and (summary["failed"], summary["errors"], nginx) == (0, [], {})


@pytest.mark.parametrize("with_bind", [False, True], ids=["as found", "gunicorn_bind set to the socket"])
def test_status_of_the_guides_host_asks_the_socket_its_bind_flag_names(guide_host, with_bind):
    lab, inventory_with_bind = guide_host
    done = djdeploy("status", "web01", "-i", inventory_with_bind if with_bind else lab.inventory, "--json")
    record = json.loads(done.stdout)["hosts"]["web01"]
    assert (done.returncode, record["outcome"], record["health"]["status"]) == (0, "healthy", 200), record
    assert record["health"]["unix_socket"] == "/run/gunicorn.sock", record["health"]
