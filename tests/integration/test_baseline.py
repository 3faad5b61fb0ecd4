"""Back to the host as djdeploy found it: `djdeploy rollback` to the baseline entry of hosts that
ran gunicorn from a unit of their own (flags only, no config file), and forward again. The
files come back byte for byte, a directory djdeploy made for its config goes and one that was
there stays, and each restart says truly what happened to the listening sockets."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from conftest import NO_WORKER_CAN_START, LabHosts, run_json, serves_dashboard
from djdeploy.lab.load import Load, nginx_failures, summarize

pytestmark = pytest.mark.lab

CONFIG_DIR = "/etc/gunicorn"
HISTORY = "/var/lib/djdeploy/history"
ACCESS_LOG = "/var/log/nginx/access.log"
# gunicorn's default control socket for a user without $XDG_RUNTIME_DIR: $HOME/.gunicorn.
CONTROL = "/srv/demo/.gunicorn/gunicorn.ctl"


def host_files(lab: LabHosts, host: str) -> str:
    """The units and everything under the config's directory, byte for byte, or that it is not there."""
    return lab.sh(host, f"cd /etc/systemd/system && sha256sum gunicorn*; "
                        f"if test -e {CONFIG_DIR}; then stat -c '%n %a %U:%G' {CONFIG_DIR};"
                        f" find {CONFIG_DIR} -type f -exec sha256sum {{}} +; else echo 'no {CONFIG_DIR}'; fi")


def ran(lab: LabHosts, command: str, host: str, *args: str, exit_code: int = 0) -> dict:
    code, result, stderr = run_json(lab, command, host, *args)
    record = result["hosts"][host]
    assert code == exit_code, f"{command} {host} {args}: exit {code}: {record}\n{stderr}"
    return record


def under_load(lab: LabHosts, host: str, action: Callable[[], dict]) -> tuple[dict, dict, dict]:
    """`action`'s record, the load's summary and nginx's failures, with requests to /dashboard/
    through nginx the whole time."""
    offset = int(lab.sh(host, f"stat -c %s {ACCESS_LOG}"))
    with Load(f"{lab.hosts[host]['url']}dashboard/", connections=2, rate=5, max_seconds=600) as load:
        record = action()
    nginx = nginx_failures(lab.sh(host, f"tail -c +{offset + 1} {ACCESS_LOG}").splitlines())
    return record, summarize(load.samples()), nginx


@pytest.fixture(scope="module")
def lab(lab_factory) -> LabHosts:
    """web01: the lab's own hand-written unit with gunicorn's default control socket on, as on
    a stock app whose user has a home it can write; web02: a /etc/gunicorn that holds a file of
    the user's; web03: for a first tune that fails."""
    lab = lab_factory("--hosts", "3")
    lab.sh("web01", "install -d -o demo -g demo -m 0700 /srv/demo/.gunicorn && systemctl restart gunicorn"
                    f" && for i in $(seq 100); do test -S {CONTROL} && exit 0; sleep 0.2; done; exit 1")
    lab.sh("web02", f"install -d -m 0755 {CONFIG_DIR} && echo 'loglevel = \"info\"' > {CONFIG_DIR}/logging.conf.py")
    return lab


@pytest.fixture(scope="module")
def found(lab) -> str:
    """web01's files as djdeploy found them."""
    return host_files(lab, "web01")


@pytest.fixture(scope="module")
def tuned(lab, found) -> tuple[dict, dict, dict, str]:
    """web01's first tune under load: its record, the load, nginx's failures and the files after."""
    record, load, nginx = under_load(lab, "web01", lambda: ran(lab, "tune", "web01"))
    return record, load, nginx, host_files(lab, "web01")


@pytest.fixture(scope="module")
def at_baseline(lab, tuned) -> tuple[dict, dict, dict]:
    """The rollback to the baseline, under load."""
    return under_load(lab, "web01", lambda: ran(lab, "rollback", "web01"))


@pytest.fixture(scope="module")
def forward(lab, at_baseline) -> tuple[dict, dict, dict]:
    """The rollback after the rollback to the baseline, under load: back to the tuned entry."""
    return under_load(lab, "web01", lambda: ran(lab, "rollback", "web01"))


def test_the_first_tune_hands_over_the_socket_beside_gunicorns_control_socket(lab, tuned):
    """Issue 18: the master's control socket was taken for a listener of another bind, the
    hand-over was declined and 21 requests got 502 during the restart."""
    record, load, nginx, _ = tuned
    assert (record["outcome"], record["change"]) == ("applied", "restart"), record
    assert record["message"] == (
        "restart: systemd held the listening sockets, which djdeploy had handed it from the running master (not "
        "started from djdeploy's config, it had stored none), and the new master took them over: connections waited "
        "instead of being refused")
    assert load["requests"] > 10 and (load["failed"], load["errors"], nginx) == (0, [], {})
    assert lab.sh("web01", "systemctl show -p NFileDescriptorStore --value gunicorn").strip() == "1"


def test_a_rollback_to_the_baseline_leaves_the_host_as_it_was_found(lab, found, tuned, at_baseline):
    record, _, _ = at_baseline
    tune_entry = json.loads(lab.sh("web01", f"cat {HISTORY}/{tuned[0]['history_entry']}/meta.json"))
    assert (record["outcome"], record["restores"]) == ("applied", tune_entry["previous"])
    assert record["restores"].endswith("-baseline")
    # No config, no /etc/gunicorn: the directory djdeploy made for its config is gone too.
    assert host_files(lab, "web01") == found
    assert f"no {CONFIG_DIR}" in found
    assert serves_dashboard(lab, "web01")


def test_the_rollback_to_the_baseline_refuses_no_connection_though_its_unit_keeps_no_sockets(lab, at_baseline):
    """Issue 18: the baseline unit keeps no file descriptors (FileDescriptorStoreMax=0), so systemd
    let go of the sockets djdeploy's master had stored and connections were refused; a drop-in
    under /run lets it hold them through the restart, and goes afterwards."""
    record, load, nginx = at_baseline
    assert record["change"] == "restart"
    assert record["message"] == ("restart: systemd held the listening sockets and the new master took them over: "
                                 "connections waited instead of being refused")
    assert load["requests"] > 10 and (load["failed"], load["errors"], nginx) == (0, [], {}), load
    assert lab.sh("web01", "systemctl show -p FileDescriptorStoreMax --value gunicorn").strip() == "0"
    assert lab.exec("web01", "test", "-e", "/run/systemd/system/gunicorn.service.d").returncode != 0


def test_rolling_back_again_puts_the_tuned_files_back_and_refuses_no_connection(lab, tuned, forward):
    record, load, nginx = forward
    assert (record["outcome"], record["change"], record["restores"]) == ("applied", "restart",
                                                                         tuned[0]["history_entry"])
    assert host_files(lab, "web01") == tuned[3]
    # The master it replaced was the baseline unit's, which stored nothing: djdeploy handed its socket.
    assert record["message"].startswith(
        "restart: systemd held the listening sockets, which djdeploy had handed it from the running master (not "
        "started from djdeploy's config, it had stored none)"), record["message"]
    assert load["requests"] > 10 and (load["failed"], load["errors"], nginx) == (0, [], {})


def test_a_config_directory_that_was_there_stays_with_the_users_file(lab):
    found = host_files(lab, "web02")
    assert f"{CONFIG_DIR}/logging.conf.py" in found
    tuned = ran(lab, "tune", "web02")
    assert tuned["outcome"] == "applied"
    assert "gunicorn.conf.py" in lab.sh("web02", f"ls {CONFIG_DIR}")
    back = ran(lab, "rollback", "web02")
    assert back["outcome"] == "applied" and back["restores"].endswith("-baseline")
    assert host_files(lab, "web02") == found


def test_a_failed_first_tune_leaves_no_config_directory_behind(lab):
    """The rescue of a change that does not boot restores the baseline the same way."""
    found = host_files(lab, "web03")
    failed = ran(lab, "tune", "web03", "--set", NO_WORKER_CAN_START, exit_code=3)
    assert failed["outcome"] == "rolled_back" and failed["message"].endswith("-baseline, which serves"), failed
    assert host_files(lab, "web03") == found
    assert serves_dashboard(lab, "web03")
