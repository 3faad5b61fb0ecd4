"""Reloads no user notices, on a real lab host whose URLconf import takes 3 s: the app is warm
before anyone is served, and no request fails across reloads and restarts under load.
Behaviour only: timings are the benchmark's business (bench/reloads.py)."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import LabHosts, djdeploy, live_settings
from djdeploy.lab.load import Load, nginx_failures, summarize

pytestmark = pytest.mark.lab

ACCESS_LOG = "/var/log/nginx/access.log"
CONFIG = "/etc/gunicorn/gunicorn.conf.py"


class Host:
    """The lab host with an inventory that names /dashboard/ as the path to warm up."""

    def __init__(self, lab: LabHosts):
        self.lab = lab
        self.url = lab.hosts["web01"]["url"].rstrip("/")
        self.inventory = self.inventory_with("warm-inventory.yml")
        self.first_tune: tuple[dict, list, dict] | None = None  # (record, load samples, nginx failures)

    def inventory_with(self, name: str, **role_vars: object) -> str:
        inventory = yaml.safe_load(Path(self.lab.inventory).read_text())
        inventory["all"]["vars"].update(gunicorn_warm_up_paths=["/dashboard/"], **role_vars)
        path = Path(self.lab.inventory).with_name(name)
        path.write_text(yaml.safe_dump(inventory))
        return str(path)

    def tune(self, *args: str, inventory: str | None = None) -> dict:
        done = djdeploy("tune", "web01", *args, "-i", inventory or self.inventory, "--json")
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

    def under_load(self, action, health: HealthSamples | None = None) -> tuple[list, dict[str, int]]:
        """Samples of a load on /dashboard/ around `action`, and nginx's failures meanwhile;
        with `health`, /healthz is asked in a loop meanwhile as well."""
        offset = self.log_size()
        with Load(f"{self.url}/dashboard/", connections=3, rate=5, max_seconds=900) as load:
            if health:
                health.start()
            try:
                time.sleep(2)
                action()
                time.sleep(3)
            finally:
                if health:
                    health.stop()
        return load.samples(), self.nginx_failures_since(offset)

    def bridges_left(self, *pids: int) -> str:
        """Any bridge scope, or any of `pids` still running, as the host lists them ('' if none)."""
        alive = " ".join(f"/proc/{pid}" for pid in pids)
        return self.sh(f"systemctl list-units --all --plain --no-legend 'djdeploy-bridge-*'; "
                       f"for p in {alive}; do test -e $p && echo $p; done; true").strip()


class HealthSamples:
    """/healthz asked one request after another through nginx: who answered each request (the
    worker's pid and its master's) and when the app that answered had imported its URLconf."""

    def __init__(self, url: str):
        self.url = url
        self.samples: list[dict] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 900
        while not self._stopping.is_set() and time.monotonic() < deadline:
            sent = time.time()
            try:
                with opener.open(f"{self.url}/healthz", timeout=60) as response:
                    self.samples.append({"sent": sent, **json.loads(response.read())})
            except OSError as exc:
                self.samples.append({"sent": sent, "error": str(exc)})
            time.sleep(0.05)

    def masters(self) -> list[int]:
        """The masters whose workers answered, in the order they first answered."""
        return list(dict.fromkeys(sample.get("ppid") for sample in self.samples))


@pytest.fixture(scope="module")
def host(lab_factory) -> Host:
    lab = lab_factory("--hosts", "1", "--import-delay", "3")
    tuned = Host(lab)
    # The first tune, under load: a restart away from the unit the user wrote, whose master
    # stored no sockets.
    records: list[dict] = []
    samples, nginx = tuned.under_load(lambda: records.append(tuned.tune()))
    tuned.first_tune = (records[0], samples, nginx)
    assert (records[0]["outcome"], records[0]["settings"]["preload_app"]) == ("applied", True)
    return tuned


def test_the_first_tune_from_the_untuned_unit_refuses_no_connection(host):
    record, samples, nginx = host.first_tune
    assert record["change"] == "restart"
    assert record["message"].startswith(
        "restart: systemd held the listening sockets, which djdeploy had handed it from the running master (not "
        "started from djdeploy's config, it had stored none)"), record["message"]
    summary = summarize(samples)
    assert summary["requests"] > 50
    assert (summary["failed"], summary["errors"], nginx) == (0, [], {})
    # The new master stored the socket it took over, for the next restart.
    assert host.sh("systemctl show -p NFileDescriptorStore --value gunicorn").strip() == "1"


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
    for value in (35, 40):
        records: list[dict] = []
        health = HealthSamples(host.url)
        old_master = host.master_pid()
        samples, nginx = host.under_load(
            lambda: records.append(host.tune("--set", f"graceful_timeout={value}")), health)
        record = records[0]
        assert record["change"] == "restart"
        summary = summarize(samples)
        assert summary["requests"] > 50
        assert (summary["failed"], summary["errors"], nginx) == (0, [], {})

        # A warm bridge master served while the service restarted, and is gone.
        bridge = int(re.match(r"restart: a warm bridge master \(pid (\d+)\) served while the new one loaded the app",
                              record["message"]).group(1))
        new_master = host.master_pid()
        assert [error for error in health.samples if "error" in error] == []
        assert health.masters() == [old_master, bridge, new_master]
        assert host.bridges_left(bridge) == ""
        assert live_settings(host.lab)["graceful_timeout"] == value

        # No request waited for an app import: each one was sent after the app of the master
        # that answered it had imported its URLconf, and the new master imported it while the
        # bridge answered.
        imported = {sample["ppid"]: sample["urlconf_imported_at"] for sample in health.samples}
        waited = [sample for sample in health.samples if sample["sent"] < sample["urlconf_imported_at"]]
        assert waited == []
        by_bridge = [sample["sent"] for sample in health.samples if sample["ppid"] == bridge]
        assert min(by_bridge) < imported[new_master] < max(by_bridge)
        # The bridge kept off the service's control socket, which the new master serves.
        journal = host.sh(f"journalctl -u gunicorn --no-pager -o cat --since @{int(health.samples[0]['sent'])}")
        assert f"[{bridge}] [INFO] Control socket listening at /run/gunicorn/bridge-{bridge}.ctl" in journal


@pytest.mark.covers(kind="fault", case="the warm bridge master of a restart not ready within gunicorn_bridge_timeout",
                    exit_code=0, end="the bridge removed; the restart goes ahead without it: nothing refused, "
                                     "requests wait for the import; the message says why; no bridge left")
def test_a_restart_without_a_bridge_in_time_waits_but_fails_no_request(host):
    # A second is too short for the bridge to import the lab's app (3 s): it is removed, and the
    # restart goes ahead as before the bridge existed.
    hurried = host.inventory_with("hurried-inventory.yml", gunicorn_bridge_timeout=1)
    records: list[dict] = []
    health = HealthSamples(host.url)
    samples, nginx = host.under_load(
        lambda: records.append(host.tune("--set", "graceful_timeout=45", inventory=hurried)), health)
    record = records[0]
    assert record["change"] == "restart"
    summary = summarize(samples)
    assert (summary["failed"], summary["errors"], nginx) == (0, [], {})
    found = re.match(r"restart: no warm bridge master served \(the bridge master \(pid (\d+)\) had \d of \d+ "
                     r"workers ready after the time limit; it was removed\), so requests waited while the new master "
                     r"loaded the app; systemd held the listening sockets", record["message"])
    assert found, record["message"]
    assert host.bridges_left(int(found.group(1))) == ""
    # Nothing but the old and the new master answered, and requests waited for the new one's
    # import: what the bridge spares them.
    assert len(health.masters()) == 2
    assert [sample for sample in health.samples if sample["sent"] < sample["urlconf_imported_at"]] != []


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


def test_a_restart_returns_once_a_worker_is_warm_so_the_first_request_waits_for_no_import(host):
    # Runs after the test above, without preload: each worker imports the URLconf (3 s) after
    # the fork, and gunicorn's own READY=1, sent before any fork, would let systemctl return
    # while none could answer.
    assert "\npreload_app = False\n" in host.sh(f"cat {CONFIG}")
    asked_at, health = first_request_after_restart(host)
    assert health["urlconf_imported_at"] < asked_at
    assert health["urlconf_import_pid"] == health["pid"] != host.master_pid()
    status = host.sh("systemctl show -p StatusText --value gunicorn").strip()
    assert re.fullmatch(r"gunicorn: [1-9]\d* of \d+ workers warm", status), status


def test_without_preload_a_hup_keeps_the_old_workers_serving_until_the_new_ones_are_warm(host):
    # Runs after the test above: the master does not preload, so each new worker imports the
    # URLconf (3 s) after a HUP; gunicorn alone would stop the old workers at once.
    master = host.master_pid()
    # The restart above returned once one worker was warm; its others may log their warm-up
    # during this test, so only the workers this HUP starts count.
    workers_before = set(host.sh(f"pgrep -P {master} || true").split())
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
    entries = [json.loads(line) for line in host.sh(
        f"journalctl -u gunicorn --no-pager -o json --output-fields=MESSAGE,_PID --since @{since}").splitlines()]
    lines = [entry["MESSAGE"] for entry in entries]
    warmed = [i for i, entry in enumerate(entries) if WARMED in lines[i] and entry["_PID"] not in workers_before]
    stopped = [i for i, line in enumerate(lines) if "djdeploy: old worker" in line]
    assert (len(warmed), len(stopped)) == (workers, workers)
    assert all(f"{workers} of {workers} new workers warm, 0 failed to boot" in lines[i] for i in stopped)
    assert max(warmed) < min(stopped)
