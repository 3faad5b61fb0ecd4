"""`djdeploy tune` on real lab hosts: computed from facts, applied, verified, idempotent,
and refused on bad input. Faults after a change, and their rollbacks, are in test_faults.py."""

from __future__ import annotations

import json

import pytest

from conftest import LabHosts, djdeploy, live_settings, master_pid, run_json, serves_dashboard, worker_pids

pytestmark = pytest.mark.lab

HISTORY = "/var/lib/djdeploy/history"
CONFIG = "/etc/gunicorn/gunicorn.conf.py"


def tune(lab: LabHosts, *args: str) -> tuple[int, dict, str]:
    return run_json(lab, "tune", *args)


@pytest.fixture(scope="module")
def tuned(lab_factory) -> tuple[LabHosts, int, dict]:
    """A 2-CPU host tuned once from the untuned starting point (one sync worker)."""
    lab = lab_factory("--hosts", "1")
    assert len(worker_pids(lab)) == 1
    code, result, stderr = tune(lab, "web01")
    return lab, code, result


@pytest.fixture(scope="module")
def untouched(lab_factory) -> LabHosts:
    """A host no test changes: refusals must leave it so."""
    return lab_factory("--hosts", "1")


def test_a_fresh_host_is_tuned_to_the_computed_workers_and_serves(tuned):
    lab, code, result = tuned
    record = result["hosts"]["web01"]
    assert code == 0, record
    assert record["outcome"] == "applied"
    # What ran before: the bind its flag set, and the one worker that ran.
    assert record["previous"] == {"workers": 1, "bind": ["127.0.0.1:8000"]}
    assert record["settings"]["workers"] == 5  # 2 CPUs × 2 + 1
    assert record["reasons"]["workers"].startswith("workers=5: 2 CPUs × 2 + 1; memory allows")
    assert record["settings"]["bind"] == ["127.0.0.1:8000"]
    assert len(worker_pids(lab)) == 5
    live = live_settings(lab)
    assert (live["workers"], live["timeout"], live["graceful_timeout"], live["max_requests"],
            live["max_requests_jitter"], live["preload_app"]) == (5, 30, 30, 1000, 100, True)
    assert serves_dashboard(lab)
    # The config says where each value came from.
    config = lab.sh("web01", f"cat {CONFIG}")
    assert "#   workers=5: 2 CPUs × 2 + 1" in config and "#   cpus_affinity: 2" in config
    assert "\nworkers = 5\n" in config


def test_the_change_is_in_the_history_and_last_known_good(tuned):
    lab, _, result = tuned
    entries = sorted(lab.sh("web01", f"ls {HISTORY}").split())
    assert len(entries) == 4, entries  # LIVE, LKG, the baseline, the change
    lkg = lab.sh("web01", f"cat {HISTORY}/LKG").strip()
    assert lab.sh("web01", f"cat {HISTORY}/LIVE").strip() == lkg
    meta = json.loads(lab.sh("web01", f"cat {HISTORY}/{lkg}/meta.json"))
    assert meta["verdict"] == "good" and meta["settings"]["workers"] == 5
    assert meta["config_sha256"] == lab.sh("web01", f"sha256sum {CONFIG}").split()[0]
    baseline = json.loads(lab.sh("web01", f"cat {HISTORY}/{meta['previous']}/meta.json"))
    assert (baseline["kind"], baseline["verdict"], baseline["config_present"]) == ("baseline", "good", False)
    assert lab.sh("web01", f"stat -c %a {HISTORY}").strip() == "700"


def test_a_second_run_with_the_same_facts_changes_nothing(tuned):
    lab, _, _ = tuned
    pid = master_pid(lab)
    sha = lab.sh("web01", f"sha256sum {CONFIG}")
    code, result, _ = tune(lab, "web01")
    assert code == 0
    assert result["hosts"]["web01"]["outcome"] == "unchanged"
    assert master_pid(lab) == pid
    assert lab.sh("web01", f"sha256sum {CONFIG}") == sha


def test_a_setting_change_reloads_with_hup_on_the_same_master(tuned):
    lab, _, _ = tuned
    pid = master_pid(lab)
    old_workers = set(worker_pids(lab))
    code, result, _ = tune(lab, "web01", "--set", "max_requests=2000")
    record = result["hosts"]["web01"]
    assert code == 0, record
    assert (record["outcome"], record["change"]) == ("applied", "reload")
    assert master_pid(lab) == pid
    assert not old_workers & set(worker_pids(lab))
    assert live_settings(lab)["max_requests"] == 2000
    assert record["reasons"]["max_requests"] == "max_requests=2000: set by --set"


def test_check_mode_shows_the_plan_and_touches_nothing(lab_factory):
    lab = lab_factory("--hosts", "1", "--cpus", "1", "--memory", "1G")
    pid = master_pid(lab)
    code, result, _ = tune(lab, "web01", "--check")
    record = result["hosts"]["web01"]
    assert code == 0, record
    # The outcome agrees with the change it found (issue 18: it said "unchanged" beside "restart").
    assert (record["outcome"], record["change"], record["check_mode"]) == ("would_apply", "restart", True)
    # A 1-CPU, 1 GiB host gets fewer workers than the 2-CPU host above.
    assert record["settings"]["workers"] == 3
    assert record["reasons"]["workers"].startswith("workers=3: 1 CPU × 2 + 1")
    assert record["facts"]["cgroup_memory_limit_bytes"] == 1024**3
    assert master_pid(lab) == pid
    assert lab.exec("web01", "test", "-e", CONFIG).returncode == 1
    assert lab.exec("web01", "test", "-e", HISTORY).returncode == 1
    assert len(worker_pids(lab)) == 1


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--set", "workres=4"], "workres (from --set): not a gunicorn 27.0.1 setting; nothing was changed; did you "
                                 "mean workers"),
        (["--set", "workers=0"], "workers"),
        (["--set", "timeout=-5"], "timeout"),
        (["--set", "workers"], "--set workers"),
        (["--profile", "fast"], "--profile 'fast'"),
    ],
)
def test_bad_input_is_refused_before_any_host_changes(untouched, args, culprit):
    lab = untouched
    done = djdeploy("tune", "web01", "-i", lab.inventory, *args)
    assert done.returncode == 2, done.stderr
    assert culprit in done.stderr
    assert lab.exec("web01", "test", "-e", HISTORY).returncode == 1


def test_a_pattern_that_matches_no_host_is_refused(untouched):
    lab = untouched
    done = djdeploy("tune", "web99", "-i", lab.inventory)
    assert done.returncode == 2
    assert "host pattern 'web99' matches no host" in done.stderr

