"""The rendered gunicorn.conf.py's handover at a HUP, run as gunicorn runs it (its module
namespace) with stand-in workers: an old worker stopped by a HUP keeps serving until the new
workers are warm, and nothing else makes a worker wait."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from test_unit_templates import gunicorn_config

MASTER = 4242


@pytest.fixture
def config() -> dict[str, Any]:
    return gunicorn_config(workers=5)


class Worker:
    def __init__(self, tmp: Path, age: int, pid: int, graceful_timeout: float = 30.0):
        self.cfg = SimpleNamespace(worker_tmp_dir=str(tmp), graceful_timeout=graceful_timeout, preload_app=True)
        self.age, self.pid, self.ppid, self.booted = age, pid, MASTER, True
        self.log = SimpleNamespace(info=lambda *args: None)
        self.stopped = threading.Event()

    def handle_exit(self, sig: int, frame: object) -> None:
        self.stopped.set()


def workers_dir(tmp: Path) -> Path:
    return tmp / f"djdeploy-workers-{MASTER}"


def hup(config: dict[str, Any], tmp: Path, last_old_age: int, wanted: int,
        server: SimpleNamespace | None = None) -> SimpleNamespace:
    server = server or SimpleNamespace(pid=MASTER, LISTENERS=[])
    server.cfg = SimpleNamespace(worker_tmp_dir=str(tmp), workers=wanted, preload_app=False)
    server.worker_age = last_old_age
    config["on_reload"](server)
    return server


def warm(tmp: Path, age: int, pid: int) -> None:
    (workers_dir(tmp) / f"booted-{age}-{pid}").write_text("")


def test_a_worker_marks_itself_warm_and_unmarks_itself_when_it_exits(config, tmp_path):
    worker = Worker(tmp_path, age=3, pid=103)
    directory = str(workers_dir(tmp_path))
    config["_djdeploy_mark"](directory, "booted-3-103")
    assert config["_djdeploy_new_workers"](directory, 0) == (1, 0)
    config["worker_exit"](None, worker)
    assert config["_djdeploy_new_workers"](directory, 0) == (0, 0)


def test_a_worker_that_dies_before_it_is_warm_says_so(config, tmp_path, monkeypatch):
    worker = Worker(tmp_path, age=7, pid=107)
    worker.booted = False
    monkeypatch.setattr(config["os"], "getpid", lambda: 107)
    config["worker_exit"](None, worker)
    assert config["_djdeploy_new_workers"](str(workers_dir(tmp_path)), 6) == (0, 1)
    assert config["_djdeploy_new_workers"](str(workers_dir(tmp_path)), 7) == (0, 0)


def test_without_a_hup_a_stopped_worker_leaves_at_once(config, tmp_path):
    worker = Worker(tmp_path, age=2, pid=102)
    config["_djdeploy_stop_after_handover"](worker, 15, None)
    assert worker.stopped.is_set()


def test_a_worker_born_after_the_last_hup_leaves_at_once(config, tmp_path):
    hup(config, tmp_path, last_old_age=5, wanted=5)
    worker = Worker(tmp_path, age=6, pid=106)
    config["_djdeploy_stop_after_handover"](worker, 15, None)
    assert worker.stopped.is_set()


def test_an_old_worker_serves_until_as_many_new_workers_as_wanted_are_warm(config, tmp_path):
    hup(config, tmp_path, last_old_age=5, wanted=3)
    warm(tmp_path, age=4, pid=104)  # an old worker's own marker does not count
    old = Worker(tmp_path, age=4, pid=104)
    config["_djdeploy_stop_after_handover"](old, 15, None)
    for age in (6, 7):
        warm(tmp_path, age=age, pid=100 + age)
        assert not old.stopped.wait(0.3)
    warm(tmp_path, age=8, pid=108)
    assert old.stopped.wait(5)


def test_a_new_worker_that_fails_to_boot_releases_the_old_ones(config, tmp_path):
    hup(config, tmp_path, last_old_age=5, wanted=3)
    old = Worker(tmp_path, age=5, pid=105)
    config["_djdeploy_stop_after_handover"](old, 15, None)
    assert not old.stopped.wait(0.3)
    (workers_dir(tmp_path) / "unbooted-6-106").write_text("")
    assert old.stopped.wait(5)


def test_an_old_worker_waits_at_most_half_the_graceful_timeout(config, tmp_path):
    hup(config, tmp_path, last_old_age=5, wanted=3)
    old = Worker(tmp_path, age=1, pid=101, graceful_timeout=1.0)
    config["_djdeploy_stop_after_handover"](old, 15, None)
    assert not old.stopped.wait(0.2)
    assert old.stopped.wait(5)


def test_a_second_term_does_not_start_a_second_wait(config, tmp_path):
    old = Worker(tmp_path, age=1, pid=101)
    config["_djdeploy_stop_after_handover"](old, 15, None)
    old.stopped.clear()
    config["_djdeploy_stop_after_handover"](old, 15, None)
    assert not old.stopped.is_set()


@pytest.mark.parametrize("preload, after_a_hup, age, warms", [
    (True, False, 1, True),    # the first workers, which READY=1 waits for
    (True, False, 5, True),
    (True, False, 6, False),   # forked later (max_requests, a dead worker): the master is warm
    (True, True, 6, False),    # a HUP's: old workers serve while it starts
    (True, True, 12, False),
    (False, False, 6, True),   # without preload the app, and so the warm-up, is each worker's own
    (False, True, 6, True),
])
def test_with_preload_only_a_masters_first_workers_warm_up_themselves(tmp_path, monkeypatch,
                                                                      preload, after_a_hup, age, warms):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)  # gunicorn forks the workers itself then
    config = gunicorn_config(workers=5)
    master = SimpleNamespace(pid=MASTER, LISTENERS=[], log=SimpleNamespace(info=lambda *args: None),
                             cfg=SimpleNamespace(worker_tmp_dir=str(tmp_path), workers=5, preload_app=preload))
    monkeypatch.setitem(config, "gc", SimpleNamespace(freeze=lambda: None))  # not pytest's heap
    config["when_ready"](master)
    if after_a_hup:
        config = gunicorn_config(workers=5)  # a HUP runs the file afresh, as gunicorn does
        monkeypatch.setitem(config, "_djdeploy_warm_up", lambda log, app: None)  # the master's
        hup(config, tmp_path, last_old_age=5, wanted=5, server=master)
    warmed = []
    monkeypatch.setitem(config, "_djdeploy_warm_up", lambda log, app: warmed.append(app))
    monkeypatch.setitem(config, "signal", SimpleNamespace(signal=lambda *args: None, siginterrupt=lambda *args: None,
                                                          SIGTERM=15))
    worker = Worker(tmp_path, age=age, pid=100 + age)
    worker.cfg.preload_app, worker.wsgi = preload, "the app"
    config["post_worker_init"](worker)
    assert warmed == (["the app"] if warms else [])
    assert (workers_dir(tmp_path) / f"booted-{age}-{100 + age}").exists()  # warm either way


@pytest.mark.parametrize("preload_at_start, preload_at_hups, master_warm_ups, freezes_at_hups", [
    (True, [True, True], ["at start"], 0),            # the master keeps its warm app across HUPs
    (False, [True, True], ["at HUP 1"], 1),           # a HUP that turns preload on loads the app then
    (False, [False, False], [], 0),                   # without preload the workers warm themselves
    (True, [False, True], ["at start"], 0),           # turning preload off keeps the master's app
])
def test_the_master_warms_its_app_once_whatever_the_hups(tmp_path, monkeypatch, preload_at_start, preload_at_hups,
                                                         master_warm_ups, freezes_at_hups):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    moment = ["at start"]
    warm_ups, freezes = [], []
    master = SimpleNamespace(pid=MASTER, LISTENERS=[], log=SimpleNamespace(info=lambda *args: None),
                             app=SimpleNamespace(wsgi=lambda: "the app"),
                             cfg=SimpleNamespace(worker_tmp_dir=str(tmp_path), workers=3, address=[],
                                                 preload_app=preload_at_start))

    def fresh_config() -> dict[str, Any]:  # gunicorn runs the file afresh at each HUP
        config = gunicorn_config(workers=3)
        monkeypatch.setitem(config, "_djdeploy_warm_up", lambda log, app: warm_ups.append(moment[0]))
        monkeypatch.setitem(config, "gc", SimpleNamespace(freeze=lambda: freezes.append(moment[0])))
        return config

    fresh_config()["on_starting"](master)
    for i, preload in enumerate(preload_at_hups, 1):
        moment[0] = f"at HUP {i}"
        master.cfg.preload_app = preload
        master.worker_age = 3 * i
        fresh_config()["on_reload"](master)
    assert warm_ups == master_warm_ups
    assert len(freezes) == freezes_at_hups


def test_the_master_clears_its_markers_when_it_exits(config, tmp_path):
    hup(config, tmp_path, last_old_age=5, wanted=3)
    warm(tmp_path, age=6, pid=106)
    config["on_exit"](SimpleNamespace(cfg=SimpleNamespace(worker_tmp_dir=str(tmp_path)), pid=MASTER))
    assert not workers_dir(tmp_path).exists()


def test_a_hup_that_moves_worker_tmp_dir_leaves_nothing_in_the_old_one(config, tmp_path):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    server = hup(config, old_dir, last_old_age=5, wanted=3)
    warm(old_dir, age=6, pid=106)
    hup(config, new_dir, last_old_age=8, wanted=3, server=server)
    assert sorted(p.name for p in workers_dir(old_dir).iterdir()) == ["booted-6-106"]
    # The old worker finds no handover where it started, so it leaves at once, and the
    # directory leaves with it.
    old = Worker(old_dir, age=6, pid=106)
    config["_djdeploy_stop_after_handover"](old, 15, None)
    assert old.stopped.is_set()
    config["worker_exit"](None, old)
    assert not workers_dir(old_dir).exists()
    assert (workers_dir(new_dir) / "handover").read_text() == "8 3"
