"""Application and host faults on real lab hosts: whatever goes wrong, each host ends serving on
a known-good config, its history intact and its lock released, and the command's exit code and
message say what happened.

A fault is caught either before the change (exit 2: the checks run the new config as the
service user, or the backup could not be written; nothing live changed, the attempt is kept as
a `refused` entry where the history can be written) or after it (exit 3: djdeploy rolled the
host back to its last-known-good config by itself). Every test removes the fault it injects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import NO_WORKER_CAN_START, LabHosts, djdeploy, live_settings, master_pid, run_json, serves_dashboard

pytestmark = pytest.mark.lab

HISTORY = "/var/lib/djdeploy/history"
LOCK = "/var/lib/djdeploy/lock"
CONFIG = "/etc/gunicorn/gunicorn.conf.py"
UNIT = "/etc/systemd/system/gunicorn.service"
APP_ENV = "/etc/demo/env"
FAULT_ENV = "/etc/demo/fault.env"
REFUSED_BEFORE_THE_CHANGE = "refused before any change; the same master serves; entry refused; lock released"


@pytest.fixture(scope="module")
def lab(lab_factory) -> LabHosts:
    """Two hosts, both tuned once, so each has a last-known-good entry to fall back on."""
    lab = lab_factory("--hosts", "2")
    code, result, stderr = run_json(lab, "tune", "all")
    assert code == 0, f"{result}\n{stderr}"
    return lab


# --- what a host looks like from outside ---


@dataclass(frozen=True)
class HostState:
    live: dict
    config_sha256: str
    unit_sha256: str
    live_entry: str
    lkg_entry: str
    entries: frozenset[str]

    @classmethod
    def read(cls, lab: LabHosts, host: str) -> HostState:
        shas = lab.sh(host, f"sha256sum {CONFIG} {UNIT}").split()
        return cls(
            live=live_settings(lab, host),
            config_sha256=shas[0],
            unit_sha256=shas[2],
            live_entry=lab.sh(host, f"cat {HISTORY}/LIVE").strip(),
            lkg_entry=lab.sh(host, f"cat {HISTORY}/LKG").strip(),
            entries=frozenset(lab.sh(host, f"ls {HISTORY}").split()) - {"LIVE", "LKG"},
        )


def entry_meta(lab: LabHosts, host: str, entry: str) -> dict:
    return json.loads(lab.sh(host, f"cat {HISTORY}/{entry}/meta.json"))


def assert_serves_its_last_known_good(lab: LabHosts, host: str, before: HostState) -> HostState:
    """The host serves /dashboard/ through nginx on the config it ran before the fault, LIVE
    and LKG both point at that config's entry, and no run holds the lock."""
    after = HostState.read(lab, host)
    assert serves_dashboard(lab, host)
    assert after.live == before.live
    assert (after.config_sha256, after.unit_sha256) == (before.config_sha256, before.unit_sha256)
    assert after.live_entry == after.lkg_entry == before.lkg_entry
    assert entry_meta(lab, host, after.lkg_entry)["config_sha256"] == after.config_sha256
    assert lab.exec(host, "test", "-e", LOCK).returncode == 1, "the lock was not released"
    return after


def new_entry(lab: LabHosts, host: str, before: HostState) -> dict:
    """The one history entry the run added."""
    added = sorted(HostState.read(lab, host).entries - before.entries)
    assert len(added) == 1, f"expected one new history entry, found {added}"
    return entry_meta(lab, host, added[0])


def tune(lab: LabHosts, *args: str, inventory: Path | None = None) -> tuple[int, dict]:
    """`djdeploy tune ARGS --json` against the lab's inventory or another: the exit code and the
    document."""
    done = djdeploy("tune", *args, "-i", str(inventory or lab.inventory), "--json")
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"djdeploy tune printed no JSON document:\n{done.stdout}\n{done.stderr}") from None


def tune_host(lab: LabHosts, host: str, *args: str, inventory: Path | None = None) -> tuple[int, dict]:
    """Tune one host: the exit code and the host's record."""
    code, result = tune(lab, host, *args, inventory=inventory)
    return code, result["hosts"][host]


# --- injecting faults the way they reach real hosts, and taking them away again ---


def inventory_with_host_vars(lab: LabHosts, directory: Path, host_vars: dict[str, dict]) -> Path:
    """A copy of the lab's inventory with host_vars files, as an operator keeps role inputs."""
    (directory / "host_vars").mkdir(parents=True)
    (directory / "hosts.yml").write_text(Path(lab.inventory).read_text())
    for host, values in host_vars.items():
        (directory / "host_vars" / f"{host}.yml").write_text(yaml.safe_dump(values))
    return directory


@contextmanager
def fault_environment(lab: LabHosts, host: str, tmp_path: Path, role_vars: dict | None = None,
                      **knobs: str) -> Iterator[Path]:
    """An operator adds an EnvironmentFile to the unit (a restart) that breaks the demo app.
    Yields the inventory that asks for it (with more role_vars); the file is removed afterwards."""
    lines = "".join(f"{name}={value}\n" for name, value in knobs.items())
    lab.sh(host, f"printf '{lines}' > {FAULT_ENV} && chown root:demo {FAULT_ENV} && chmod 0640 {FAULT_ENV}")
    try:
        yield inventory_with_host_vars(lab, tmp_path / "inventory",
                                       {host: {"gunicorn_environment_files": [APP_ENV, FAULT_ENV], **(role_vars or {})}})
    finally:
        lab.sh(host, f"rm -f {FAULT_ENV}")


def rolled_back(lab: LabHosts, host: str, before: HostState, code: int, record: dict, cause: str) -> dict:
    """Exit 3: the change was applied, failed, and was undone by djdeploy itself."""
    assert code == 3, record
    assert record["outcome"] == "rolled_back"
    assert cause in record["message"] and f"rolled back to {before.lkg_entry}, which serves" in record["message"]
    assert_serves_its_last_known_good(lab, host, before)
    failed = new_entry(lab, host, before)
    assert failed["verdict"] == "rolled_back" and cause in failed["failure"]
    return failed


def refused(lab: LabHosts, host: str, before: HostState, code: int, record: dict, cause: str) -> None:
    """Exit 2: caught before anything live changed; the same master serves on."""
    assert code == 2, record
    assert record["outcome"] == "refused"
    assert cause in record["message"]
    assert_serves_its_last_known_good(lab, host, before)


# --- caught before the change: exit 2, a refused entry, the same master ---


@pytest.mark.covers(kind="fault", case="a worker class gunicorn cannot load (gevent is not installed)", exit_code=2,
                    end=REFUSED_BEFORE_THE_CHANGE)
def test_a_setting_gunicorn_rejects_is_refused_before_the_change(lab):
    before, pid = HostState.read(lab, "web01"), master_pid(lab, "web01")
    code, record = tune_host(lab, "web01", "--set", "worker_class=gevent")
    refused(lab, "web01", before, code, record, "worker_class 'gevent' cannot be loaded in this venv")
    assert master_pid(lab, "web01") == pid
    assert new_entry(lab, "web01", before)["verdict"] == "refused"


@pytest.mark.parametrize(("knob", "cause"), [
    pytest.param("DEMO_FAIL_IMPORT", "ImportError: the demo app cannot be imported: DEMO_FAIL_IMPORT is set",
                 marks=pytest.mark.covers(kind="fault", case="the app fails to import with the new environment file",
                                          exit_code=2, end=REFUSED_BEFORE_THE_CHANGE)),
    pytest.param("DEMO_BROKEN_URLCONF", "demoproject.urls is broken: DEMO_BROKEN_URLCONF is set",
                 marks=pytest.mark.covers(kind="fault", case="a broken URLconf (gunicorn --check-config alone passes it)",
                                          exit_code=2, end=REFUSED_BEFORE_THE_CHANGE)),
])
def test_an_app_that_would_not_load_is_refused_before_the_change(lab, tmp_path, knob, cause):
    before, pid = HostState.read(lab, "web01"), master_pid(lab, "web01")
    with fault_environment(lab, "web01", tmp_path, **{knob: "1"}) as inventory:
        code, record = tune_host(lab, "web01", inventory=inventory)
    # The checks load the app and its URLconf as the service user with the new unit's
    # environment files.
    refused(lab, "web01", before, code, record, cause)
    assert master_pid(lab, "web01") == pid
    assert new_entry(lab, "web01", before)["verdict"] == "refused"


@pytest.mark.covers(kind="fault", case="the health endpoint already fails before the change", exit_code=2,
                    end="refused before any change, naming the failing endpoint; nothing changed; lock released")
def test_a_service_that_is_unhealthy_before_the_change_is_not_tuned(lab):
    """Tuning a failing service and then 'rolling back' to a state that fails as well would
    hide the real problem behind djdeploy's change."""
    lab.sh("web01", f"cp {APP_ENV} /root/env.bak && echo DEMO_HEALTH_STATUS=500 >> {APP_ENV} && systemctl restart gunicorn")
    try:
        before, pid = HostState.read(lab, "web01"), master_pid(lab, "web01")
        code, record = tune_host(lab, "web01", "--set", "max_requests=1234")
        refused(lab, "web01", before, code, record,
                "the service is unhealthy before the change: http://127.0.0.1:8000/healthz answered 500")
        assert "nothing was changed" in record["message"]
        assert master_pid(lab, "web01") == pid
        assert live_settings(lab, "web01")["max_requests"] != 1234
    finally:
        lab.sh("web01", f"mv /root/env.bak {APP_ENV} && systemctl restart gunicorn")
    assert serves_dashboard(lab, "web01")


@pytest.mark.covers(kind="fault", case="the app has no page at the health path (no /healthz)", exit_code=2,
                    end="refused before any change, naming gunicorn_health_path; `status` says the same; "
                        "nothing changed")
def test_an_app_without_the_health_path_is_refused_naming_the_variable(lab, tmp_path):
    inventory = inventory_with_host_vars(lab, tmp_path, {"web01": {"gunicorn_health_path": "/no-such-page/"}})
    before, pid = HostState.read(lab, "web01"), master_pid(lab, "web01")
    code, record = tune_host(lab, "web01", "--set", "max_requests=1234", inventory=inventory)
    refused(lab, "web01", before, code, record, "/no-such-page/ answered 404")
    assert "set gunicorn_health_path to a path that answers GET with 200" in record["message"]
    assert master_pid(lab, "web01") == pid
    done = djdeploy("status", "web01", "-i", str(inventory), "--json")
    health = json.loads(done.stdout)["hosts"]["web01"]["health"]
    assert (done.returncode, health["status"]) == (4, 404) and "gunicorn_health_path" in health["advice"]


@pytest.mark.covers(kind="fault", case="the app refuses the Host header the health check sends (ALLOWED_HOSTS)",
                    exit_code=2, end="refused before any change, naming gunicorn_verify_host_header; with that "
                                      "variable set to an allowed host, `status` is healthy")
def test_an_app_that_refuses_the_host_header_is_refused_naming_the_variable(lab, tmp_path):
    before = HostState.read(lab, "web01")
    allowed = inventory_with_host_vars(lab, tmp_path, {"web01": {"gunicorn_verify_host_header": "shop.example"}})
    lab.sh("web01", f"cp {APP_ENV} /root/env.bak && echo DEMO_ALLOWED_HOSTS=shop.example >> {APP_ENV}"
                    " && systemctl restart gunicorn")
    try:
        code, record = tune_host(lab, "web01", "--set", "max_requests=1234")
        status_with_header = djdeploy("status", "web01", "-i", str(allowed), "--json")
    finally:
        lab.sh("web01", f"mv /root/env.bak {APP_ENV} && systemctl restart gunicorn")
    assert code == 2 and record["outcome"] == "refused", record
    assert "/healthz answered 400" in record["message"] and "Host: localhost" in record["message"]
    assert "set gunicorn_verify_host_header to a host the app allows" in record["message"]
    assert status_with_header.returncode == 0, status_with_header.stdout
    assert json.loads(status_with_header.stdout)["hosts"]["web01"]["health"]["status"] == 200
    # The restarts were the test's own; djdeploy changed nothing.
    after = assert_serves_its_last_known_good(lab, "web01", before)
    assert [entry_meta(lab, "web01", e)["verdict"] for e in after.entries - before.entries] in ([], ["refused"])


@contextmanager
def history_mounted(lab: LabHosts, host: str, script: str) -> Iterator[None]:
    """Mount something over the history directory for the test; unmounted afterwards, which
    leaves the directory exactly as it was."""
    lab.sh(host, script)
    try:
        yield
    finally:
        lab.sh(host, f"umount {HISTORY}")


HISTORY_FAULTS = {
    "read-only": (f"mount --bind {HISTORY} {HISTORY} && mount -o remount,bind,ro {HISTORY}",
                  "Read-only file system"),
    # A small tmpfs holding a copy of the history, filled up: the entries are all there, and
    # not one more byte fits.
    "full": (f"mkdir -p /run/history-copy && cp -a {HISTORY}/. /run/history-copy/"
             f" && mount -t tmpfs -o size=1m,mode=0700 full-history {HISTORY}"
             f" && cp -a /run/history-copy/. {HISTORY}/ && rm -rf /run/history-copy"
             f" && (dd if=/dev/zero of={HISTORY}/.filler bs=4k 2>/dev/null || true)",
             "No space left on device"),
}


@pytest.mark.parametrize("fault", HISTORY_FAULTS)
@pytest.mark.covers(kind="fault", case="the history directory is read-only, or its disk is full", exit_code=2,
                    end="refused before any change; the same master serves; history as it was; lock released")
def test_a_history_that_cannot_be_written_refuses_the_change(lab, fault):
    """The backup is the first step of a change: without it the change could not be undone, and
    nothing live has changed yet."""
    mount, cause = HISTORY_FAULTS[fault]
    before, pid = HostState.read(lab, "web01"), master_pid(lab, "web01")
    with history_mounted(lab, "web01", mount):
        code, record = tune_host(lab, "web01", "--set", "max_requests=1234")
        # Not even a refused entry fits; no half-written one is left either.
        assert HostState.read(lab, "web01").entries == before.entries
    refused(lab, "web01", before, code, record, f"could not write the history in {HISTORY}")
    assert cause in record["message"] and record["message"].endswith("nothing was changed")
    assert record["history_entry"] is None
    assert master_pid(lab, "web01") == pid
    assert HostState.read(lab, "web01").entries == before.entries


# --- caught after the change: exit 3, rolled back by djdeploy itself ---


@pytest.mark.covers(kind="fault", case="the config passes every check before the change but no worker can start "
                                       "(a worker class that imports but is not a worker)", exit_code=3,
                    end="rolled back; serves the last-known-good; entry rolled_back; lock released")
def test_a_change_whose_workers_cannot_boot_is_rolled_back(lab):
    before = HostState.read(lab, "web01")
    code, record = tune_host(lab, "web01", "--set", NO_WORKER_CAN_START)
    failed = rolled_back(lab, "web01", before, code, record, "the gunicorn master is not running")
    assert failed["settings"]["worker_class"] == NO_WORKER_CAN_START.partition("=")[2]


@pytest.mark.covers(kind="fault", case="a change rolled back after it had made the environment files 0640 "
                                       "root:<group>", exit_code=3,
                    end="rolled back; the environment files have the owner, group and mode they had before the run")
def test_a_rolled_back_change_gives_the_environment_files_back_their_owner_and_mode(lab):
    # The operator keeps the app's environment file as they like it; the change tightens it to
    # 0640 root:demo before it reloads, and fails.
    lab.sh("web01", f"chown root:root {APP_ENV} && chmod 0644 {APP_ENV}")
    try:
        before = HostState.read(lab, "web01")
        code, record = tune_host(lab, "web01", "--set", NO_WORKER_CAN_START)
        rolled_back(lab, "web01", before, code, record, "the gunicorn master is not running")
        assert lab.sh("web01", f"stat -c '%U:%G %a' {APP_ENV}").strip() == "root:root 644"
    finally:
        lab.sh("web01", f"chown root:demo {APP_ENV} && chmod 0640 {APP_ENV}")


@pytest.mark.covers(kind="fault", case="the health endpoint answers 500 after the change", exit_code=3,
                    end="rolled back (the environment file removed again); serves the last-known-good; "
                        "entry rolled_back; lock released")
def test_a_health_endpoint_answering_500_after_the_change_is_rolled_back(lab, tmp_path):
    before = HostState.read(lab, "web01")
    with fault_environment(lab, "web01", tmp_path, DEMO_HEALTH_STATUS="500") as inventory:
        code, record = tune_host(lab, "web01", inventory=inventory)
        rolled_back(lab, "web01", before, code, record, "Status code was 500")
        assert FAULT_ENV not in lab.sh("web01", f"cat {UNIT}")


@pytest.mark.covers(kind="fault", case="the health endpoint answers too slowly after the change", exit_code=3,
                    end="rolled back; serves the last-known-good; entry rolled_back; lock released")
def test_a_health_endpoint_too_slow_after_the_change_is_rolled_back(lab, tmp_path):
    before = HostState.read(lab, "web01")
    # Longer than verify waits for an answer (2 s here), shorter than gunicorn's worker timeout.
    # One request per check, or verify would wait out its retries once per request.
    with fault_environment(lab, "web01", tmp_path, {"gunicorn_verify_requests": 1, "gunicorn_verify_request_timeout": 2},
                           DEMO_HEALTH_DELAY="4") as inventory:
        code, record = tune_host(lab, "web01", inventory=inventory)
        rolled_back(lab, "web01", before, code, record, "timed out")


@pytest.mark.covers(kind="fault", case="an address to bind is already taken by another process", exit_code=3,
                    end="rolled back; serves the last-known-good; entry rolled_back; lock released")
def test_a_bind_that_is_already_taken_is_rolled_back(lab):
    # gunicorn --check-config does not bind (it imports the app and runs the config): the
    # restart onto the new bind fails.
    lab.sh("web01", "systemd-run --unit=squatter --quiet python3 -m http.server --bind 127.0.0.1 8001"
                    " && until curl -s -o /dev/null 127.0.0.1:8001; do sleep 0.2; done")
    try:
        before = HostState.read(lab, "web01")
        code, record = tune_host(lab, "web01", "--set", "bind=127.0.0.1:8000,127.0.0.1:8001")
        failed = rolled_back(lab, "web01", before, code, record, "Unable to restart service gunicorn.service")
        assert failed["settings"]["bind"] == ["127.0.0.1:8000", "127.0.0.1:8001"]
        # systemd does not say why; gunicorn's log, carried into the message, names the address.
        assert "gunicorn logged: [ERROR] Connection in use: ('127.0.0.1', 8001)" in record["message"], record["message"]
    finally:
        lab.sh("web01", "systemctl stop squatter")


@pytest.mark.covers(kind="fault", case="the unit fails to start after a unit change (a sandbox too tight for gunicorn)",
                    exit_code=3, end="rolled back to the previous unit; serves the last-known-good; entry rolled_back; "
                                     "lock released")
def test_a_unit_that_fails_to_start_is_rolled_back(lab, tmp_path):
    # The checks before the change run in the same sandbox but open no socket; gunicorn does.
    inventory = inventory_with_host_vars(lab, tmp_path, {"web01": {"gunicorn_hardening_overrides": {
        "SystemCallFilter": ["@system-service", "~@privileged @resources @network-io"]}}})
    before = HostState.read(lab, "web01")
    code, record = tune_host(lab, "web01", inventory=inventory)
    failed = rolled_back(lab, "web01", before, code, record, "Restart gunicorn")
    assert failed["change"] == "restart"


# --- more than one host ---


@pytest.mark.covers(kind="fault", case="the second host of a run fails while the first succeeded", exit_code=3,
                    end="the first host applied and serves its new config; the second rolled back and serves its "
                        "last-known-good; locks released")
def test_a_second_host_failing_does_not_undo_the_first(lab, tmp_path):
    first, second = HostState.read(lab, "web01"), HostState.read(lab, "web02")
    with fault_environment(lab, "web02", tmp_path, DEMO_HEALTH_STATUS="500") as inventory:
        code, result = tune(lab, "web01", "web02", "--set", "max_requests=1357", inventory=inventory)
        assert code == 3, result
        ok, bad = result["hosts"]["web01"], result["hosts"]["web02"]
        assert ok["outcome"] == "applied"
        rolled_back(lab, "web02", second, code, bad, "Status code was 500")
    assert serves_dashboard(lab, "web01") and live_settings(lab, "web01")["max_requests"] == 1357
    applied = new_entry(lab, "web01", first)
    after = HostState.read(lab, "web01")
    assert after.live_entry == after.lkg_entry == applied["id"] and applied["verdict"] == "good"
    assert lab.exec("web01", "test", "-e", LOCK).returncode == 1


@pytest.mark.covers(kind="fault", case="a host in the pattern cannot be reached (nothing answers on its SSH port)",
                    exit_code=4, end="the reachable host applied; the unreachable one untouched and still serving; "
                                      "a person must look at it")
def test_an_unreachable_host_is_reported_and_the_others_are_tuned(lab, tmp_path):
    # Like a stopped sshd, seen from the controller; a port of its own also keeps Ansible from
    # reusing an SSH connection an earlier run left open.
    inventory = inventory_with_host_vars(lab, tmp_path, {"web02": {"ansible_port": 2222}})
    first, second = HostState.read(lab, "web01"), HostState.read(lab, "web02")
    pid = master_pid(lab, "web02")
    code, result = tune(lab, "web01", "web02", "--set", "max_requests=2468", inventory=inventory)
    assert code == 4, result
    assert result["hosts"]["web01"]["outcome"] == "applied"
    unreachable = result["hosts"]["web02"]
    assert unreachable["outcome"] == "failed" and unreachable["message"].startswith("unreachable:")
    assert "port 2222" in unreachable["message"]
    assert new_entry(lab, "web01", first)["verdict"] == "good"
    assert live_settings(lab, "web01")["max_requests"] == 2468
    # Nothing reached web02.
    assert HostState.read(lab, "web02") == second and master_pid(lab, "web02") == pid
    assert serves_dashboard(lab, "web02")
    assert lab.exec("web02", "test", "-e", LOCK).returncode == 1
