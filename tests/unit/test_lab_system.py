"""Pure parts of the lab's machine plumbing: which cgroup hierarchies a host's systemd lives in,
which processes a host's cgroups hold, and how a process that ended is described."""

from __future__ import annotations

import signal

import pytest

from djdeploy.lab import system


@pytest.mark.parametrize(("returncode", "words"), [
    (1, "exit status 1"),
    (0, "exit status 0"),
    (-signal.SIGKILL, "killed by SIGKILL"),
    (-signal.SIGTERM, "killed by SIGTERM"),
    (-99, "killed by signal 99"),
])
def test_how_a_process_ended_is_said_in_words(returncode, words):
    assert system.exit_description(returncode) == words


def make_hierarchy(root, name=None):
    path = root / name if name else root
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.procs").write_text("")
    return path


def test_a_hybrid_machine_gives_each_host_a_cgroup_in_name_systemd_and_unified(tmp_path, monkeypatch):
    monkeypatch.setattr(system, "CGROUP_V1", tmp_path)
    make_hierarchy(tmp_path, "systemd")
    make_hierarchy(tmp_path, "unified")
    make_hierarchy(tmp_path, "memory")  # a v1 controller: the size limits' business, not this
    assert system.systemd_hierarchies() == [tmp_path / "systemd", tmp_path / "unified"]
    assert system.create_scope_cgroups("djdeploy-lab-web01") == [
        str(tmp_path / "systemd" / "djdeploy-lab-web01"), str(tmp_path / "unified" / "djdeploy-lab-web01")]


def test_a_pure_cgroup2_machine_has_one_hierarchy_at_its_root(tmp_path, monkeypatch):
    monkeypatch.setattr(system, "CGROUP_V1", tmp_path)
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert system.systemd_hierarchies() == [tmp_path]


def test_a_hosts_processes_are_found_in_its_cgroups_and_every_cgroup_below(tmp_path):
    host = make_hierarchy(tmp_path, "djdeploy-lab-web01")
    (host / "cgroup.procs").write_text("10\n")
    make_hierarchy(host, "payload/system.slice/gunicorn.service")
    (host / "payload/system.slice/gunicorn.service/cgroup.procs").write_text("11\n12\n")
    other = make_hierarchy(tmp_path, "djdeploy-lab-web02")
    (other / "cgroup.procs").write_text("20\n")
    assert system.cgroup_pids([str(host)]) == {10, 11, 12}
