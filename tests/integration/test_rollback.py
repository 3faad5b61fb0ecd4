"""`djdeploy rollback`, `history` and `status` on real lab hosts: undo a change (checked through
the control socket, not only the file), go back and forth, see every change with its verdict,
see what runs, and refuse cleanly where there is nothing to restore."""

from __future__ import annotations

import json

import pytest

from conftest import (
    NO_WORKER_CAN_START,
    LabHosts,
    djdeploy,
    live_settings,
    master_pid,
    run_json,
    serves_dashboard,
    worker_pids,
)
from test_hardened_unit import inventory_with, tune_with

pytestmark = pytest.mark.lab

HISTORY = "/var/lib/djdeploy/history"
CONFIG = "/etc/gunicorn/gunicorn.conf.py"
APP_ENV = "/etc/demo/env"
EXTRA_ENV = "/etc/demo/extra.env"


def config_sha(lab: LabHosts, host: str = "web01") -> str:
    return lab.sh(host, f"sha256sum {CONFIG}").split()[0]


def applied(lab: LabHosts, command: str, *args: str) -> dict:
    code, result, stderr = run_json(lab, command, *args)
    record = result["hosts"]["web01"]
    assert code == 0, f"{command} {args}: exit {code}: {record}\n{stderr}"
    assert record["outcome"] == "applied", record
    return record


@pytest.fixture(scope="module")
def lab(lab_factory) -> LabHosts:
    """web01 goes through the tunes and rollbacks; web02 is never tuned."""
    return lab_factory("--hosts", "2")


@pytest.fixture(scope="module")
def two_tunes(lab) -> dict[str, str]:
    """web01 tuned twice: first max_requests=1111 (entry A), then 2222 (entry B, a HUP)."""
    first = applied(lab, "tune", "web01", "--set", "max_requests=1111")
    second = applied(lab, "tune", "web01", "--set", "max_requests=2222")
    assert second["change"] == "reload"
    assert live_settings(lab)["max_requests"] == 2222
    return {"A": first["history_entry"], "B": second["history_entry"]}


def test_status_reports_the_real_workers_memory_settings_and_health_and_changes_nothing(lab, two_tunes):
    pid, sha = master_pid(lab), config_sha(lab)
    code, result, _ = run_json(lab, "status", "web01")
    record = result["hosts"]["web01"]
    assert code == 0, record
    assert record["outcome"] == "healthy" and record["health"]["status"] == 200
    assert record["master"]["pid"] == pid and record["master"]["age_seconds"] >= 0
    assert sorted(w["pid"] for w in record["workers"]) == sorted(worker_pids(lab))
    assert len(record["workers"]) == 5
    assert all(w["pss_bytes"] > 0 and w["rss_bytes"] >= w["pss_bytes"] for w in record["workers"])
    assert record["settings"]["max_requests"] == {"live": 2222, "file": 2222, "tune": 1000}
    assert record["settings"]["workers"] == {"live": 5, "file": 5, "tune": 5}
    assert record["drift"] == [
        "max_requests: the file says 2222, a tune now would set 1000",
        "max_requests_jitter: the file says 222, a tune now would set 100",
    ]
    assert record["history"]["live"] == record["history"]["last_known_good"] == two_tunes["B"]
    assert record["service"]["config_sha256"] == sha
    # Read-only: the same master and config afterwards, and no new history entry.
    assert (master_pid(lab), config_sha(lab)) == (pid, sha)
    assert json.loads(lab.sh("web01", f"cat {HISTORY}/LIVE | xargs -I{{}} cat {HISTORY}/{{}}/meta.json"))["id"] == two_tunes["B"]


def test_status_sees_a_config_written_but_not_loaded(lab, two_tunes):
    """Drift between the file and the live master: an edit no one reloaded."""
    lab.sh("web01", f"cp {CONFIG} /root/conf.bak && sed -i 's/^max_requests = 2222$/max_requests = 3333/' {CONFIG}")
    try:
        _, result, _ = run_json(lab, "status", "web01")
    finally:
        lab.sh("web01", f"mv /root/conf.bak {CONFIG}")
    drift = result["hosts"]["web01"]["drift"]
    assert "max_requests: live 2222 but the file says 3333 (written, not loaded)" in drift


def test_tune_check_leaves_the_config_and_master_alone(lab, two_tunes):
    pid, sha = master_pid(lab), config_sha(lab)
    code, result, _ = run_json(lab, "tune", "web01", "--check", "--set", "max_requests=3333")
    assert code == 0 and result["hosts"]["web01"]["check_mode"] is True
    assert (result["hosts"]["web01"]["outcome"], result["hosts"]["web01"]["change"]) == ("would_apply", "reload")
    assert "+max_requests = 3333" in result["hosts"]["web01"]["diff"]
    assert (master_pid(lab), config_sha(lab)) == (pid, sha)


def test_rollback_goes_back_and_forth_through_the_live_master(lab, two_tunes):
    pid = master_pid(lab)
    first = applied(lab, "rollback", "web01")
    assert (first["restores"], first["change"]) == (two_tunes["A"], "reload")
    assert live_settings(lab)["max_requests"] == 1111
    assert master_pid(lab) == pid and serves_dashboard(lab)
    # Rolling back twice returns to where it began.
    second = applied(lab, "rollback", "web01")
    assert second["restores"] == two_tunes["B"]
    assert live_settings(lab)["max_requests"] == 2222
    # --to puts any good entry back.
    assert applied(lab, "rollback", "web01", "--to", two_tunes["A"])["restores"] == two_tunes["A"]
    assert live_settings(lab)["max_requests"] == 1111
    assert applied(lab, "rollback", "web01", "--to", two_tunes["B"])["restores"] == two_tunes["B"]
    assert live_settings(lab)["max_requests"] == 2222
    assert serves_dashboard(lab)


def test_history_lists_every_entry_with_who_what_and_verdict(lab, two_tunes):
    # A change that cannot boot adds a rolled-back entry.
    code, result, _ = run_json(lab, "tune", "web01", "--set", NO_WORKER_CAN_START)
    assert code == 3, result
    failed = result["hosts"]["web01"]["history_entry"]
    code, result, _ = run_json(lab, "history", "web01")
    assert code == 0
    record = result["hosts"]["web01"]
    entries = record["entries"]
    ids = [e["id"] for e in entries]
    # Newest first, as the text prints them.
    assert ids.index(failed) < ids.index(two_tunes["B"]) < ids.index(two_tunes["A"])
    assert entries[-1]["kind"] == "baseline" and entries[-1]["id"].endswith("-baseline")
    by_id = {e["id"]: e for e in entries}
    assert by_id[two_tunes["B"]]["changed"]["max_requests"] == [1111, 2222]
    assert by_id[two_tunes["B"]]["command"] == f"djdeploy tune web01 --set max_requests=2222 -i {lab.inventory} --json"
    assert "@" in by_id[two_tunes["B"]]["who"]
    assert by_id[failed]["verdict"] == "rolled_back"
    assert "the gunicorn master is not running" in by_id[failed]["failure"]
    rollbacks = [e for e in entries if e["kind"] == "rollback"]
    assert [e["restores"] for e in rollbacks] == [two_tunes["B"], two_tunes["A"], two_tunes["B"], two_tunes["A"]]
    assert all(e["verdict"] == "good" for e in entries if e["id"] != failed)
    # The failed change left the last rollback live and last-known-good.
    assert record["live"] == record["last_known_good"] == rollbacks[0]["id"]
    assert [e["id"] for e in entries if e["live"]] == [rollbacks[0]["id"]]


def test_a_rolled_back_or_unknown_entry_is_refused_and_nothing_changes(lab, two_tunes):
    pid, sha = master_pid(lab), config_sha(lab)
    _, result, _ = run_json(lab, "history", "web01")
    failed = next(e["id"] for e in result["hosts"]["web01"]["entries"] if e["verdict"] == "rolled_back")
    for entry, says in ((failed, "never served"), ("20200101T000000Z-abcdef", "no such entry")):
        code, result, _ = run_json(lab, "rollback", "web01", "--to", entry)
        record = result["hosts"]["web01"]
        assert code == 2, record
        assert record["outcome"] == "refused" and says in record["message"] and entry in record["message"]
    assert (master_pid(lab), config_sha(lab)) == (pid, sha)


def test_a_malformed_entry_id_is_refused_before_any_host_is_contacted(lab, two_tunes):
    done = djdeploy("rollback", "web01", "-i", lab.inventory, "--to", "../../etc/passwd")
    assert done.returncode == 2
    assert "--to '../../etc/passwd' is not a history entry id" in done.stderr


def applied_with(inventory: str) -> dict:
    code, record = tune_with(inventory)
    assert (code, record["outcome"]) == (0, "applied"), record
    return record


@pytest.mark.covers(kind="fault", case="a rollback whose target no longer serves (an environment file it reads "
                                       "changed since)", exit_code=3,
                    end="returned to where the rollback started, which serves; rollback entry rolled_back")
def test_a_rollback_whose_target_fails_returns_to_where_it_started(lab, two_tunes, tmp_path):
    """An entry that served once, but no longer can: the checks before the change load the app,
    and the app's health endpoint fails only when asked."""
    lab.sh("web01", f"install -m 0640 -o root -g demo /dev/null {EXTRA_ENV}")
    try:
        with_extra = inventory_with(lab, tmp_path, gunicorn_environment_files=[APP_ENV, EXTRA_ENV])
        doomed = applied_with(with_extra)["history_entry"]
        start = applied_with(inventory_with(lab, tmp_path, gunicorn_environment_files=[APP_ENV]))["history_entry"]
        lab.sh("web01", f"echo DEMO_HEALTH_STATUS=500 > {EXTRA_ENV}")
        before = live_settings(lab)
        code, result, _ = run_json(lab, "rollback", "web01", "--to", doomed)
    finally:
        lab.sh("web01", f"rm -f {EXTRA_ENV}")
    record = result["hosts"]["web01"]
    assert code == 3, record
    assert record["outcome"] == "rolled_back"
    assert f"restoring {doomed} failed" in record["message"] and f"returned to {start}" in record["message"]
    assert "Status code was 500" in record["message"], record["message"]
    assert live_settings(lab) == before and serves_dashboard(lab)
    assert lab.sh("web01", f"cat {HISTORY}/LIVE {HISTORY}/LKG").split() == [start, start]
    meta = json.loads(lab.sh("web01", f"cat {HISTORY}/{record['history_entry']}/meta.json"))
    assert (meta["kind"], meta["restores"], meta["verdict"]) == ("rollback", doomed, "rolled_back")


@pytest.mark.covers(kind="fault", case="a rollback to an entry whose worker_tmp_dir was removed since", exit_code=2,
                    end="refused before any change, naming the directory and the setting; the same master serves")
def test_a_rollback_to_an_entry_whose_worker_tmp_dir_is_gone_is_refused(lab, two_tunes):
    # Inside the path the lab's inventory lets the sandboxed service write (gunicorn_read_write_paths).
    lab.sh("web01", "install -d -o demo -g demo /srv/demo/data/heartbeats")
    doomed = applied(lab, "tune", "web01", "--set", "worker_tmp_dir=/srv/demo/data/heartbeats")["history_entry"]
    applied(lab, "tune", "web01")
    lab.sh("web01", "rmdir /srv/demo/data/heartbeats")
    pid, sha = master_pid(lab), config_sha(lab)
    code, result, _ = run_json(lab, "rollback", "web01", "--to", doomed)
    record = result["hosts"]["web01"]
    assert (code, record["outcome"]) == (2, "refused"), record
    assert ("/srv/demo/data/heartbeats (worker_tmp_dir): /srv/demo/data/heartbeats does not exist; create it, "
            "writable by demo") in record["message"], record["message"]
    assert (master_pid(lab), config_sha(lab)) == (pid, sha) and serves_dashboard(lab)


@pytest.mark.covers(kind="fault", case="a rollback on a host djdeploy never changed", exit_code=2,
                    end="refused; no history directory created")
def test_a_host_with_no_history_refuses_rollback_cleanly(lab):
    pid = master_pid(lab, "web02")
    code, result, _ = run_json(lab, "rollback", "web02")
    record = result["hosts"]["web02"]
    assert code == 2, record
    assert record["outcome"] == "refused" and "no djdeploy history" in record["message"]
    assert master_pid(lab, "web02") == pid
    assert lab.exec("web02", "test", "-e", HISTORY).returncode == 1
    assert lab.exec("web02", "test", "-e", CONFIG).returncode == 1
    code, result, _ = run_json(lab, "history", "web02")
    assert code == 0 and result["hosts"]["web02"]["entries"] == []


def test_retention_keeps_the_newest_entries_and_never_the_live_or_last_known_good(lab, tmp_path):
    """gunicorn_history_keep from group_vars, the way operators set role inputs."""
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(open(lab.inventory).read())
    (inventory / "group_vars" / "all.yml").write_text("gunicorn_history_keep: 3\n")
    made = []
    for max_requests in (1500, 1600, 1700, 1800):
        done = djdeploy("tune", "web02", "-i", str(inventory), "--json", "--set", f"max_requests={max_requests}")
        assert done.returncode == 0, done.stderr
        made.append(json.loads(done.stdout)["hosts"]["web02"]["history_entry"])
    kept = sorted(set(lab.sh("web02", f"ls {HISTORY}").split()) - {"LIVE", "LKG"})
    assert kept == made[-3:]  # the baseline and the two oldest changes are gone
    assert lab.sh("web02", f"cat {HISTORY}/LIVE {HISTORY}/LKG").split() == [made[-1], made[-1]]
    # The last-known-good entry survives retention even when it is the oldest (as after an
    # interrupted run, when LIVE moved and LKG did not).
    oldest, middle, live = made[-3:]
    lab.sh("web02", f"echo {oldest} > {HISTORY}/LKG")
    done = djdeploy("tune", "web02", "-i", str(inventory), "--json", "--set", "max_requests=1900")
    assert done.returncode == 0, done.stderr
    newest = json.loads(done.stdout)["hosts"]["web02"]["history_entry"]
    kept = set(lab.sh("web02", f"ls {HISTORY}").split()) - {"LIVE", "LKG"}
    assert kept == {oldest, live, newest}, f"{middle} should have gone, not the LKG {oldest} or the LIVE {live}"
