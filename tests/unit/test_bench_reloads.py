"""The reload benchmark's own parts: the controller's cpu group and how its targets are judged."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bench import reloads
from djdeploy.lab.load import Sample


def test_the_controller_runs_in_a_low_weight_cpu_group_that_is_gone_afterwards() -> None:
    with reloads.controller_cgroup() as group:
        assert group is not None
        assert (group / "cpu.shares").read_text().strip() == str(reloads.CONTROLLER_CPU_SHARES)
        procs = group / "cgroup.procs"
        child = subprocess.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True, check=True,
                               preexec_fn=lambda: procs.write_text(str(os.getpid())))
        assert f":cpu:/{group.name}" in child.stdout
        # A straggler still in the group when the bench ends does not keep it from going.
        straggler = subprocess.Popen(["sleep", "30"], preexec_fn=lambda: procs.write_text(str(os.getpid())))
    try:
        assert not group.exists()
        assert f":cpu:/{group.name}" not in Path(f"/proc/{straggler.pid}/cgroup").read_text()
    finally:
        straggler.kill()
        straggler.wait()


def test_without_a_cpu_hierarchy_the_controller_runs_at_full_weight(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(reloads, "CPU_CGROUP", tmp_path)
    with reloads.controller_cgroup() as group:
        assert group is None
    assert list(tmp_path.iterdir()) == []


def window(max_s: float, reload_p99_s: float, failed: int = 0, nginx: dict | None = None) -> dict:
    return {"max": max_s, "failed": failed, "nginx": nginx or {}, "reload": {"p99": reload_p99_s}}


STEADY = {"p50": 0.020, "p99": 0.040}


@pytest.mark.parametrize(
    ("cycles", "first", "expected"),
    [
        (window(0.200, 0.080), 0.030, [True, True, True, True]),
        (window(0.200, 0.080, failed=1), 0.030, [False, True, True, True]),
        (window(0.200, 0.080, nginx={"502": 1}), 0.030, [False, True, True, True]),
        (window(0.251, 0.080), 0.030, [True, False, True, True]),
        (window(0.200, 0.081), 0.030, [True, True, False, True]),
        (window(0.200, 0.080), 0.031, [True, True, True, False]),
    ],
)
def test_targets_are_judged_against_the_steady_state_of_the_same_run(cycles, first, expected) -> None:
    judged = reloads.targets(cycles, STEADY, {"first": first}, cycles=20)
    assert list(judged.values()) == expected


def test_the_tuned_baseline_pools_the_quiet_slices_and_nothing_of_the_reload_windows() -> None:
    def sample(start: float, latency: float) -> Sample:
        return Sample(start=start, latency=latency, status=200)

    slices = [(10.0, 13.0), (30.0, 33.0)]
    quiet = [sample(10.0, 0.010), sample(12.9, 0.030), sample(30.5, 0.020), sample(32.99, 0.040)]
    reloads_and_edges = [sample(5.0, 0.500), sample(13.0, 0.400), sample(20.0, 0.300), sample(33.0, 0.200)]
    steady = reloads.steady_between(reloads_and_edges[:2] + quiet[:2] + reloads_and_edges[2:] + quiet[2:], slices)
    assert steady["requests"] == 4
    assert steady["max"] == pytest.approx(0.040)
    assert steady["p50"] == pytest.approx(reloads.summarize(quiet)["p50"])


def test_the_table_names_both_baselines_and_the_targets_on_each() -> None:
    result = {"rows": [], "targets": {"P2: x": True}, "targets_on_single_window": {"P2: x": False},
              "baselines": {reloads.BETWEEN_CYCLES: {"requests": 3800, "p50_ms": 20.0, "p99_ms": 40.0},
                            reloads.SINGLE_WINDOW: {"requests": 480, "p50_ms": 21.0, "p99_ms": 60.0}}}
    lines = reloads.table(result).splitlines()
    assert f"baseline {reloads.BETWEEN_CYCLES}: 3800 requests, p50 20.0 ms, p99 40.0 ms" in lines
    assert f"baseline {reloads.SINGLE_WINDOW}: 480 requests, p50 21.0 ms, p99 60.0 ms" in lines
    assert lines.index("PASS  P2: x") < lines.index(f"On the baseline {reloads.SINGLE_WINDOW}:") \
        < lines.index("FAIL  P2: x")


def test_a_window_without_any_request_stops_the_bench_instead_of_dividing_by_nothing(monkeypatch) -> None:
    class StoppedLoad:  # a load that reached its max_seconds keeps its old samples, sends no more
        def samples(self) -> list[Sample]:
            return [Sample(start=1.0, latency=0.02, status=200)]

    bench = reloads.Bench()
    monkeypatch.setattr(bench, "on_host", lambda script: "0")
    monkeypatch.setattr(reloads.time, "sleep", lambda seconds: None)
    with pytest.raises(RuntimeError, match="plain HUPs: the load sent no request in this window"):
        bench.window(StoppedLoad(), "plain HUPs", lambda: "done")


def test_the_first_request_figure_is_the_median_of_the_restarts_and_keeps_the_slowest(monkeypatch) -> None:
    class Response:
        status = 200

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b""

    latencies = iter([0.050, 0.01, 0.01, 0.01, 0.01, 0.020, 0.01, 0.01, 0.01, 0.01, 0.030, 0.01, 0.01, 0.01, 0.01])
    now = [0.0]

    class Opener:
        def open(self, url, timeout):
            now[0] += next(latencies)
            return Response()

    restarts = []
    bench = reloads.Bench()
    bench.host = {"url": "http://10.0.0.1/"}
    monkeypatch.setattr(bench, "on_host", restarts.append)
    monkeypatch.setattr(reloads.urllib.request, "build_opener", lambda *handlers: Opener())
    monkeypatch.setattr(reloads.time, "perf_counter", lambda: now[0])
    first = bench.first_requests()
    assert restarts == ["systemctl restart gunicorn"] * reloads.FIRST_RESTARTS
    assert first["first"] == pytest.approx(0.030)
    assert first["slowest_first"] == pytest.approx(0.050)
    assert [len(each) for each in first["latencies"]] == [reloads.FIRST_REQUESTS] * reloads.FIRST_RESTARTS
