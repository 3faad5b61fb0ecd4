"""What the new unit's sandbox would forbid, found before anything changes: every path the new
config and unit make the service write is checked writable as the service user inside that
sandbox (a log file under read-only /var/log, a worker_tmp_dir that does not exist), and a unix
socket in /run, as the common guides bind it, works without any exception to the sandbox.
Probed through nginx while djdeploy runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import LabHosts, djdeploy, master_pid
from djdeploy.lab.load import Load, nginx_failures, summarize
from test_hardened_unit import EXPOSURE_LIMIT, exposure, inventory_with
from test_hardened_unit import tune_with as tune

pytestmark = pytest.mark.lab

CONFIG = "/etc/gunicorn/gunicorn.conf.py"
UNIT = "/etc/systemd/system/gunicorn.service"
SOCKET = "/etc/systemd/system/gunicorn.socket"
NGINX_SITE = "/etc/nginx/sites-available/demo"
NGINX_LOG = "/var/log/nginx/access.log"
LOG_DIR = "/var/log/gunicorn"
ACCESS_LOG = f"{LOG_DIR}/access.log"
REFUSED_UNTOUCHED = "refused before any change, naming the path, its setting and the variable that allows it; " \
                    "config, unit and the path untouched; the same master serves; no request failed"


def host_files(lab: LabHosts, *paths: str) -> str:
    """The config, the unit, whether a socket unit exists, and what `paths` hold, byte for byte."""
    return lab.sh("web01", f"sha256sum {CONFIG} {UNIT}; ls {SOCKET} 2>&1; "
                           + "".join(f"ls -lA --time-style=full-iso {path} 2>&1; " for path in paths) + "true")


@contextmanager
def probed(lab: LabHosts) -> Iterator[dict]:
    """Requests through nginx the whole time; on leaving, the summary: no failed request and no
    5xx or retried upstream attempt in nginx's log is what every test here asks."""
    offset = int(lab.sh("web01", f"stat -c %s {NGINX_LOG}"))
    found: dict = {}
    with Load(f"{lab.hosts['web01']['url']}dashboard/", connections=2, rate=5, max_seconds=600) as load:
        yield found
    found.update(summarize(load.samples()))
    found["nginx"] = nginx_failures(lab.sh("web01", f"tail -c +{offset + 1} {NGINX_LOG}").splitlines())


def assert_no_request_failed(probe: dict) -> None:
    assert probe["requests"] > 10 and (probe["failed"], probe["errors"], probe["nginx"]) == (0, [], {}), probe


@pytest.fixture(scope="module")
def lab(lab_factory) -> LabHosts:
    """A host tuned once, with the directory a person makes for gunicorn's logs: the service
    user's own, under /var/log, which the sandbox keeps read-only."""
    lab = lab_factory("--hosts", "1")
    code, record = tune(lab.inventory)
    assert (code, record["outcome"]) == (0, "applied"), record
    lab.sh("web01", f"install -d -o demo -g demo -m 0755 {LOG_DIR}")
    return lab


# --- paths the new sandbox would not let the service write: refused, nothing changed ---


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        pytest.param(f"accesslog={ACCESS_LOG}",
                     f"{ACCESS_LOG} (accesslog): {LOG_DIR} is read-only in the sandbox (ProtectSystem=strict); add "
                     f"{LOG_DIR} to gunicorn_read_write_paths",
                     marks=pytest.mark.covers(kind="fault", case="a log file the new sandbox would not let gunicorn "
                                                                 "write (accesslog under read-only /var/log)",
                                              exit_code=2, end=REFUSED_UNTOUCHED),
                     id="an access log under /var/log"),
        pytest.param("worker_tmp_dir=/nonexistent",
                     "/nonexistent (worker_tmp_dir): /nonexistent does not exist; create it, writable by demo, and "
                     "add /nonexistent to gunicorn_read_write_paths",
                     marks=pytest.mark.covers(kind="fault", case="a worker_tmp_dir that does not exist (until these "
                                                                 "checks: rolled back once no worker could boot)",
                                              exit_code=2, end=REFUSED_UNTOUCHED),
                     id="a worker_tmp_dir that does not exist"),
    ],
)
def test_a_path_the_new_sandbox_would_not_let_the_service_write_is_refused(lab, setting, says):
    before, pid = host_files(lab, LOG_DIR), master_pid(lab)
    with probed(lab) as probe:
        code, record = tune(lab.inventory, "--set", setting)
    assert (code, record["outcome"]) == (2, "refused"), record
    assert "Check that the service user can write every path" in record["message"]
    assert f"as demo in the new unit's sandbox: {says}" in record["message"], record["message"]
    assert record["message"].endswith(says), record["message"]
    assert (host_files(lab, LOG_DIR), master_pid(lab)) == (before, pid)
    assert_no_request_failed(probe)


@pytest.mark.covers(kind="fault", case="a unix socket gunicorn would bind itself (gunicorn_socket_activation: false): "
                                       "the sandbox forbids the chown gunicorn does after binding",
                    exit_code=2, end="refused before any change, naming the socket and gunicorn_socket_activation; "
                                     "nothing changed")
def test_a_unix_socket_gunicorn_would_bind_itself_is_refused(lab, tmp_path):
    inventory = inventory_with(lab, tmp_path, gunicorn_socket_activation=False)
    before, pid = host_files(lab), master_pid(lab)
    # A directory the service may write: only the system call stands in the way.
    code, record = tune(inventory, "--set", "bind=unix:/srv/demo/data/gunicorn.sock")
    assert (code, record["outcome"]) == (2, "refused"), record
    assert ("/srv/demo/data/gunicorn.sock (bind): gunicorn chowns a unix socket it binds itself, a system call the "
            "sandbox forbids; leave gunicorn_socket_activation unset (or true)") in record["message"], record["message"]
    assert (host_files(lab), master_pid(lab)) == (before, pid)
    assert lab.exec("web01", "test", "-e", "/srv/demo/data/gunicorn.sock").returncode == 1


@pytest.mark.covers(kind="input", case="--set bind=unix:/run/gunicorn/app.sock (in the service's RuntimeDirectory, "
                                       "which systemd removes when gunicorn stops)",
                    exit_code=2, end="refused before any change, naming the bind and the RuntimeDirectory")
def test_a_unix_socket_in_the_runtime_directory_is_refused(lab):
    before, pid = host_files(lab), master_pid(lab)
    code, record = tune(lab.inventory, "--set", "bind=unix:/run/gunicorn/app.sock")
    assert (code, record["outcome"]) == (2, "refused"), record
    assert ("bind 'unix:/run/gunicorn/app.sock' is in /run/gunicorn, the service's RuntimeDirectory, which systemd "
            "removes with the socket in it whenever gunicorn stops") in record["message"], record["message"]
    assert (host_files(lab), master_pid(lab)) == (before, pid)


# --- with the exception declared, the change applies and gunicorn writes there ---


def test_with_the_log_directory_declared_the_access_log_grows(lab, tmp_path):
    inventory = inventory_with(lab, tmp_path, gunicorn_read_write_paths=["/srv/demo/data", LOG_DIR])
    with probed(lab) as probe:
        code, record = tune(inventory, "--set", f"accesslog={ACCESS_LOG}")
    assert (code, record["outcome"]) == (0, "applied"), record
    assert_no_request_failed(probe)
    assert lab.sh("web01", "systemctl show -p ReadWritePaths --value gunicorn").split() == ["/srv/demo/data", LOG_DIR]
    # Every request nginx passes on is in gunicorn's log once it has been served.
    lines = int(lab.sh("web01", f"wc -l < {ACCESS_LOG}"))
    lab.sh("web01", "for i in $(seq 20); do curl -sf -o /dev/null http://127.0.0.1/dashboard/?probe=$i || exit 1; done")
    logged = lab.sh("web01", f"tail -n +{lines + 1} {ACCESS_LOG}")
    assert [f'"GET /dashboard/?probe={i} HTTP/1.1" 200' in line for i, line in enumerate(
        (line for line in logged.splitlines() if "probe=" in line), 1)] == [True] * 20, logged
    assert exposure(lab) <= EXPOSURE_LIMIT


# --- a unix socket in /run, as the guides bind it ---


def point_nginx_at(lab: LabHosts, upstream: str) -> None:
    """Change nginx's upstream as a person would, and wait until it serves through it."""
    lab.sh("web01", f"sed -i 's#^    server .* fail_timeout=0;#    server {upstream} fail_timeout=0;#' {NGINX_SITE}"
                    " && systemctl reload nginx"
                    "\nfor i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1/healthz && exit 0; sleep 0.2; done"
                    "; exit 1")


def test_a_unix_socket_in_run_works_out_of_the_box(lab):
    code, record = tune(lab.inventory, "--set", "bind=unix:/run/gunicorn.sock")
    assert (code, record["outcome"], record["change"]) == (0, "applied", "restart"), record
    # systemd (pid 1) created the socket as root and holds it; gunicorn serves on the very same one.
    listeners = lab.sh("web01", "ss -lxpH src /run/gunicorn.sock")
    assert '("systemd",pid=1,' in listeners and '("gunicorn",' in listeners and len(listeners.splitlines()) == 1
    assert lab.sh("web01", "systemctl is-active gunicorn.socket gunicorn").split() == ["active", "active"]
    assert lab.sh("web01", "stat -c '%U %a' /run/gunicorn.sock").split() == ["root", "666"]
    assert exposure(lab) <= EXPOSURE_LIMIT
    point_nginx_at(lab, "unix:/run/gunicorn.sock")
    pid = master_pid(lab)
    # A restart and a HUP through the socket: systemd keeps the socket file, so nothing fails.
    with probed(lab) as probe:
        lab.sh("web01", "systemctl restart gunicorn")
        code, record = tune(lab.inventory, "--set", "bind=unix:/run/gunicorn.sock", "--set", "max_requests=1234")
    assert (code, record["outcome"], record["change"]) == (0, "applied", "reload"), record
    assert master_pid(lab) != pid
    assert_no_request_failed(probe)


def test_a_unix_socket_in_a_directory_of_its_own_under_run(lab):
    code, record = tune(lab.inventory, "--set", "bind=unix:/run/myapp/gunicorn.sock")
    assert (code, record["outcome"]) == (0, "applied"), record
    assert lab.sh("web01", "stat -c '%U %a' /run/myapp").split() == ["root", "755"]
    answered = lab.sh("web01", "curl -s -o /dev/null -w '%{http_code}' --unix-socket /run/myapp/gunicorn.sock "
                               "http://localhost/healthz")
    assert answered == "200"
