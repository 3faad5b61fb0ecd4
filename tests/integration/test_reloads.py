"""Reloads no user notices, on a real lab host whose URLconf import takes 3 s: the app is warm
before anyone is served, and no request fails across reloads and restarts under load.
Behaviour only: timings are the benchmark's business (bench/reloads.py)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import LabHosts, djdeploy
from djdeploy.lab.load import Load, nginx_failures, summarize

pytestmark = pytest.mark.lab

ACCESS_LOG = "/var/log/nginx/access.log"
CONFIG = "/etc/gunicorn/gunicorn.conf.py"


class Host:
    """The lab host with an inventory that names /dashboard/ as the path to warm up."""

    def __init__(self, lab: LabHosts):
        self.lab = lab
        self.url = lab.hosts["web01"]["url"].rstrip("/")
        inventory = yaml.safe_load(Path(lab.inventory).read_text())
        inventory["all"]["vars"]["gunicorn_warm_up_paths"] = ["/dashboard/"]
        self.inventory = str(Path(lab.inventory).with_name("warm-inventory.yml"))
        Path(self.inventory).write_text(yaml.safe_dump(inventory))

    def tune(self, *args: str) -> dict:
        done = djdeploy("tune", "web01", *args, "-i", self.inventory, "--json")
        record = json.loads(done.stdout)["hosts"]["web01"]
        assert done.returncode == 0, record
        return record

    def sh(self, script: str) -> str:
        return self.lab.sh("web01", script)

    def master_pid(self) -> int:
        return int(self.sh("systemctl show -p MainPID --value gunicorn"))

    def log_size(self) -> int:
        return int(self.sh(f"stat -c %s {ACCESS_LOG}"))

    def nginx_failures_since(self, offset: int) -> dict[str, int]:
        return nginx_failures(self.sh(f"tail -c +{offset + 1} {ACCESS_LOG}").splitlines())

    def healthz(self) -> dict:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}/healthz", timeout=60) as response:
            assert response.status == 200
            return json.loads(response.read())

    def under_load(self, action) -> tuple[list, dict[str, int]]:
        """Samples of a load on /dashboard/ around `action`, and nginx's failures meanwhile."""
        offset = self.log_size()
        with Load(f"{self.url}/dashboard/", connections=3, rate=5, max_seconds=900) as load:
            time.sleep(2)
            action()
            time.sleep(3)
        return load.samples(), self.nginx_failures_since(offset)


@pytest.fixture(scope="module")
def host(lab_factory) -> Host:
    lab = lab_factory("--hosts", "1", "--import-delay", "3")
    tuned = Host(lab)
    record = tuned.tune()
    assert (record["outcome"], record["settings"]["preload_app"]) == ("applied", True)
    return tuned


def first_request_after_restart(host: Host) -> tuple[float, dict]:
    host.sh("systemctl restart gunicorn")
    asked_at = time.time()  # the lab host shares this machine's clock
    return asked_at, host.healthz()


def test_the_rendered_config_warms_the_app_before_serving(host):
    config = host.sh(f"cat {CONFIG}")
    for hook in ("def on_starting(server):", "def when_ready(server):", "def on_reload(server):",
                 "def post_worker_init(worker):"):
        assert hook in config
    assert "\ndjdeploy_warm_up_paths = ['/dashboard/']\n" in config
    journal = host.sh("journalctl -u gunicorn --no-pager -o cat")
    assert "djdeploy: warm-up request /dashboard/ answered 200 OK" in journal


def test_with_preload_the_first_request_after_a_restart_finds_the_urlconf_imported_in_the_master(host):
    asked_at, health = first_request_after_restart(host)
    master = host.master_pid()
    assert health["urlconf_imported_at"] < asked_at
    assert health["urlconf_import_pid"] == master == health["ppid"]
    assert health["pid"] != master


def test_tune_cycles_under_load_fail_no_request(host):
    changes: list[str] = []

    def cycles() -> None:
        for i in range(5):
            changes.append(host.tune("--set", f"max_requests={1100 + 100 * (i % 2)}")["change"])

    samples, nginx = host.under_load(cycles)
    assert changes == ["reload"] * 5
    summary = summarize(samples)
    assert summary["requests"] > 100
    assert (summary["failed"], summary["errors"], nginx) == (0, [], {})


def test_a_restart_of_a_changed_unit_under_load_fails_no_request(host):
    records: list[dict] = []
    samples, nginx = host.under_load(lambda: records.append(host.tune("--set", "graceful_timeout=35")))
    assert records[0]["change"] == "restart"
    assert records[0]["message"].startswith("restart: systemd held the listening sockets")
    summary = summarize(samples)
    assert summary["requests"] > 50
    assert (summary["failed"], summary["errors"], nginx) == (0, [], {})


WARMED = "djdeploy: URLconf and 1 warm-up paths loaded before serving"


def test_without_preload_each_worker_imports_the_urlconf_before_it_accepts(host):
    since = int(time.time())
    record = host.tune("--set", "preload_app=false")
    # A HUP would keep the app the master preloaded, and the new workers would fork it.
    assert record["change"] == "restart"
    assert any(w.startswith("preload_app=False: every worker loads the app itself") for w in record["warnings"])
    # Wait until every new worker has logged its warm-up; without the hook a worker that
    # served nothing yet would not have imported the URLconf.
    deadline = time.monotonic() + 120
    while host.sh(f"journalctl -u gunicorn --no-pager -o cat --since @{since}").count(WARMED) < record["settings"]["workers"]:
        assert time.monotonic() < deadline, "the workers did not warm up"
        time.sleep(1)
    asked_at = time.time()
    health = host.healthz()
    assert health["urlconf_imported_at"] < asked_at
    assert health["urlconf_import_pid"] == health["pid"] != host.master_pid()


def test_without_preload_a_hup_keeps_the_old_workers_serving_until_the_new_ones_are_warm(host):
    # Runs after the test above: the master does not preload, so each new worker imports the
    # URLconf (3 s) after a HUP; gunicorn alone would stop the old workers at once.
    master = host.master_pid()
    since = int(time.time())
    records: list[dict] = []
    samples, nginx = host.under_load(lambda: records.append(
        host.tune("--set", "preload_app=false", "--set", "max_requests=1300")))
    assert (records[0]["change"], records[0]["settings"]["preload_app"], host.master_pid()) == ("reload", False, master)
    summary = summarize(samples)
    assert summary["requests"] > 50
    assert (summary["failed"], summary["errors"], nginx) == (0, [], {})
    # Each old worker stopped only once every new worker had loaded the app: it says so, and
    # its line comes after every new worker's warm-up line.
    workers = records[0]["settings"]["workers"]
    lines = host.sh(f"journalctl -u gunicorn --no-pager -o cat --since @{since}").splitlines()
    warmed = [i for i, line in enumerate(lines) if WARMED in line]
    stopped = [i for i, line in enumerate(lines) if "djdeploy: old worker" in line]
    assert (len(warmed), len(stopped)) == (workers, workers)
    assert all(f"{workers} of {workers} new workers warm, 0 failed to boot" in lines[i] for i in stopped)
    assert max(warmed) < min(stopped)
