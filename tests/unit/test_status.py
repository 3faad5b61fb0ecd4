"""`djdeploy status` judged from what the role read on a host: settings side by side, drift in
sentences, process ages and memory, health."""

from __future__ import annotations

from typing import Any

import pytest

from djdeploy.status import compare, drift, report

MIB = 1048576
TUNED = {"workers": 5, "worker_class": "gthread", "max_requests": 1000, "bind": ["127.0.0.1:8000"]}


def raw(**service_changes: Any) -> dict[str, Any]:
    service = {
        "main_pid": 400, "active_state": "active", "sub_state": "running",
        "live_settings": dict(TUNED), "config_settings": {**TUNED, "control_socket": "/run/gunicorn/gunicorn.ctl"},
        "master": {"pid": 400, "started_at_epoch": 1000, "rss_bytes": 40 * MIB, "pss_bytes": 20 * MIB},
        "workers": [{"pid": 401 + i, "started_at_epoch": 1900, "rss_bytes": 37 * MIB, "pss_bytes": 9 * MIB}
                    for i in range(5)],
    }
    service.update(service_changes)
    return {
        "facts": {"service": service, "collected_at_epoch": 2000.4, "warnings": []},
        "plan": {"settings": dict(TUNED), "reasons": {"workers": "workers=5: 2 CPUs × 2 + 1"}, "warnings": []},
        "history": {"live": "e2", "lkg": "e2", "entries": 3},
        "health": {"url": "http://127.0.0.1:8000/healthz", "status": 200},
    }


def test_a_healthy_tuned_host_has_no_drift_and_aged_processes():
    record = report(raw())
    assert record["outcome"] == "healthy" and record["health"]["ok"] is True
    assert record["drift"] == []
    assert record["master"] == {"pid": 400, "age_seconds": 1000, "rss_bytes": 40 * MIB, "pss_bytes": 20 * MIB}
    assert [w["age_seconds"] for w in record["workers"]] == [100] * 5
    assert record["history"] == {"live": "e2", "last_known_good": "e2", "entries": 3, "lock": None}
    assert record["settings"]["control_socket"] == {"live": None, "file": "/run/gunicorn/gunicorn.ctl", "tune": None}


@pytest.mark.parametrize(
    ("changes", "plan_error", "sentence"),
    [
        ({"config_settings": {**TUNED, "workers": 7}}, None, "workers: live 5 but the file says 7 (written, not loaded)"),
        ({"config_settings": {**TUNED, "workers": 7}, "live_settings": {**TUNED, "workers": 7}}, None,
         "workers: the file says 7, a tune now would set 5"),
        ({"config_settings": None, "live_settings": None, "main_pid": 400}, None,
         "the control socket does not answer, so the live settings are unknown"),
        ({"config_settings": None, "config_path": "/etc/gunicorn/gunicorn.conf.py"}, None,
         "no config file at /etc/gunicorn/gunicorn.conf.py: djdeploy never tuned this host; a tune now would set "
         "bind=['127.0.0.1:8000'], max_requests=1000, worker_class='gthread', workers=5"),
        ({"main_pid": None, "active_state": "failed", "sub_state": "failed", "live_settings": None}, None,
         "gunicorn is not running (failed/failed)"),
        ({}, "workers 0 is out of range", "a tune now would refuse: workers 0 is out of range"),
    ],
)
def test_each_kind_of_drift_is_a_sentence(changes, plan_error, sentence):
    given = raw(**changes)
    given["plan_error"] = plan_error
    assert sentence in report(given)["drift"]


def test_lists_and_tuples_of_the_same_values_are_no_drift():
    service = {"main_pid": 1, "live_settings": {"bind": ("127.0.0.1:8000",)}, "config_settings": {"bind": ["127.0.0.1:8000"]}}
    assert drift(service, compare(service["live_settings"], service["config_settings"], {"bind": ["127.0.0.1:8000"]})) == []


@pytest.mark.parametrize("status", [500, 502, -1, None])
def test_a_health_check_that_does_not_answer_200_is_unhealthy(status):
    given = raw()
    given["health"] = {"url": "http://127.0.0.1:8000/healthz", "status": status}
    assert report(given)["outcome"] == "unhealthy"


@pytest.mark.parametrize(("status", "names"), [
    (404, "gunicorn_health_path"),
    (400, "gunicorn_verify_host_header"),
    (-1, "gunicorn_bind"),
    (500, "djdeploy rollback"),
])
def test_an_unhealthy_host_says_which_variable_would_make_the_check_fit(status, names):
    given = raw()
    given["health"] = {"url": "http://127.0.0.1:8000/healthz", "status": status, "host_header": "localhost",
                       "message": ""}
    assert names in report(given)["health"]["advice"]


def test_a_healthy_host_needs_no_advice():
    assert "advice" not in report(raw())["health"]


def test_without_a_control_socket_the_live_worker_count_comes_from_the_processes():
    record = report(raw(live_settings=None))
    assert record["settings"]["workers"]["live"] == 5
    assert record["settings"]["max_requests"]["live"] is None


def test_a_stopped_service_has_no_master_or_workers():
    record = report(raw(main_pid=None, master=None, workers=[], live_settings=None))
    assert record["master"] is None and record["workers"] == []


def test_the_units_exposure_and_file_permissions_are_passed_on():
    security = {"exposure": 1.9, "files": [{"kind": "EnvironmentFile", "path": "/etc/demo/env", "owner": "root",
                                            "group": "demo", "mode": "0640", "problems": []}]}
    assert report(raw(security=security))["security"] == security
    assert report(raw())["security"] is None


def test_a_run_that_did_not_finish_and_holds_no_lock_is_named_with_the_way_back():
    record = report({**raw(), "history": {"live": "e3", "lkg": "e2", "entries": 3}})
    assert record["drift"][0] == ("run e3 did not finish its change (LIVE e3, last-known-good e2): the next tune "
                                  "restores e2 first, and `djdeploy rollback` returns to it")


def test_a_run_that_holds_the_lock_may_still_be_running():
    lock = {"run_id": "e3", "who": "ops@laptop", "pid": 4242, "controller": "laptop", "command": "djdeploy tune web01"}
    record = report({**raw(), "history": {"live": "e3", "lkg": "e2", "entries": 3}, "lock": lock})
    assert record["drift"][0].startswith("run e3 has not finished its change (LIVE e3, last-known-good e2); it holds "
                                         "the lock (ops@laptop, pid 4242 on laptop, djdeploy tune web01)")
    assert record["history"]["lock"] == lock


def test_a_finished_run_leaves_no_sentence():
    assert not any("finish" in line for line in report(raw())["drift"])
