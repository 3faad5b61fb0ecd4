"""Reloads side by side, on one lab host whose app import takes 3 s, under load through nginx.

    .venv/bin/python -m bench.reloads [--cycles 20] [--out FILE]

Scenarios, in this order on one host (so they share the machine's noise):
  untuned  gunicorn's defaults (the lab's unit): a plain HUP, then a stop/start of the
           service, then the first requests after a full restart;
  first tune  djdeploy tune from the untuned unit (a restart);
  tuned    --cycles tune/rollback cycles under load (cycle_command, each a HUP), then BARE_HUPS
           plain HUPs sent from inside the host (the same reload without Ansible around it), a
           restart of a changed unit (systemd's file descriptor store holds the socket); then
           the switch to socket activation, a restart of a changed unit under socket
           activation; the first requests after FIRST_RESTARTS full restarts are measured
           before the switch;
  no preload  the same host with preload turned off (a restart), then NO_PRELOAD_CYCLES
           tune/rollback cycles: each HUP makes every new worker import the app (3 s) while the
           old ones keep serving.

For each: failed requests (non-2xx and socket errors seen by the clients, and 5xx or
failed upstream attempts in nginx's log), max and p99 latency in the window (from the
command's start to SETTLE seconds after its end), the p99 of the reload window (from each
HUP the master logged to SETTLE seconds later: the reload itself, without the rest of the
Ansible run that shares these 2 cores with the lab host), the steady p50/p99 of the same
configuration measured in the same run, and their ratios. Prints a table and writes it as
JSON. The lab host is always brought down, on errors and Ctrl-C too.

The tuned steady state, which the targets are judged on, is pooled from a QUIET_SECONDS
slice after each cycle's window (40 slices, about 3800 requests at --cycles 20): it spans
the cycles, so the machine's drift over those 20 minutes hits it as it hits the windows.
A single 15 s window (about 480 requests, its p99 is its fifth slowest) gave p99s from 26
to 68 ms from one run to the next. That window is still measured before the cycles and
kept in the JSON with the targets judged on it too.

The controller (djdeploy, ansible-playbook, ssh) runs in a cgroup v1 cpu group with
cpu.shares=CONTROLLER_CPU_SHARES: in production it runs on another machine (a laptop, AWX),
here it shares the lab host's 2 cores, and at equal weight its CPU alone doubled the reload
window's p99 (2.73x against 2.00x, 6 cycles each, one run). The host side of the Ansible run
(sshd, the modules' Python) runs inside the lab host at full weight and stays in the figures.
Without a cpu hierarchy the controller runs at full weight and the JSON says so.

The load is `djdeploy.lab.load.Load`: wrk reports only aggregates, and the window of a
reload needs every request's start time and latency.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import yaml

from djdeploy.lab.load import Load, Sample, nginx_failures, summarize

REPO = Path(__file__).resolve().parents[1]
DJDEPLOY = str(Path(sys.executable).parent / "djdeploy")
LAB = "w5bench"
IMPORT_DELAY = "3"
PATH = "/dashboard/"
CONNECTIONS, RATE = 4, 8.0  # 32 requests/s: moderate for 2 cores shared with gunicorn and nginx
STEADY_SECONDS, SETTLE_SECONDS = 15.0, 5.0
QUIET_SECONDS = 3.0  # after each cycle's window: the tuned steady state between the reloads
NO_PRELOAD_CYCLES = 3
FIRST_REQUESTS, FIRST_RESTARTS = 5, 3
BARE_HUPS = 6
CONTROLLER_CPU_SHARES = 2  # of the 1024 every other group of processes on the machine has
CPU_CGROUP = Path("/sys/fs/cgroup/cpu")
MAX_LATENCY_TARGET = 0.250  # P2
ACCESS_LOG = "/var/log/nginx/access.log"


def cycle_command(i: int, *extra: str) -> list[str]:
    """One half of a tune/rollback cycle: a tune that changes a setting, then the rollback that
    undoes it (both a HUP)."""
    return ["tune", "web01", *extra, "--set", "max_requests=1200"] if i % 2 == 0 else ["rollback", "web01"]


@contextlib.contextmanager
def controller_cgroup():
    """A cpu cgroup with a small weight for the controller's commands; None without one."""
    if not (CPU_CGROUP / "cpu.shares").exists():
        yield None
        return
    path = CPU_CGROUP / f"djdeploy-bench-controller-{os.getpid()}"
    path.mkdir()
    try:
        (path / "cpu.shares").write_text(str(CONTROLLER_CPU_SHARES))
        yield path
    finally:
        # Its commands have ended (each is waited for); move any straggler out so it can go.
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (CPU_CGROUP / "cgroup.procs").write_text(pid)
        path.rmdir()


class Bench:
    def __init__(self, controller: Path | None = None) -> None:
        self.host: dict = {}
        self.inventory = ""
        self.socket_inventory = ""
        self.controller = controller

    def djdeploy(self, *args: str, check: bool = True, as_controller: bool = False) -> subprocess.CompletedProcess:
        # Only the runs that drive Ansible: a lab host started from the group would be in it too.
        procs = self.controller / "cgroup.procs" if as_controller and self.controller else None
        done = subprocess.run([DJDEPLOY, *args], capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "DJDEPLOY_LAB": LAB}, timeout=900,
                              preexec_fn=(lambda: procs.write_text(str(os.getpid()))) if procs else None)
        if check and done.returncode != 0:
            raise RuntimeError(f"djdeploy {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def on_host(self, script: str) -> str:
        return self.djdeploy("lab", "exec", "web01", "--", "sh", "-c", script).stdout

    def up(self) -> None:
        done = self.djdeploy("lab", "up", "--hosts", "1", "--import-delay", IMPORT_DELAY, "--json")
        self.host = json.loads(done.stdout)["hosts"][0]
        # The same lab inventory, with the role told which path the first users hit.
        inventory = yaml.safe_load(Path(self.host["inventory"]).read_text())
        inventory["all"]["vars"].update(gunicorn_warm_up_paths=[PATH], gunicorn_verify_paths=[PATH])
        self.inventory = str(Path(self.host["inventory"]).with_name("bench-inventory.yml"))
        Path(self.inventory).write_text(yaml.safe_dump(inventory))
        # The same again with socket activation: systemd, not gunicorn, holds the socket.
        inventory["all"]["vars"].update(gunicorn_socket_activation=True)
        self.socket_inventory = str(Path(self.host["inventory"]).with_name("bench-socket-inventory.yml"))
        Path(self.socket_inventory).write_text(yaml.safe_dump(inventory))

    def down(self) -> None:
        self.djdeploy("lab", "down", check=False)

    @property
    def url(self) -> str:
        return self.host["url"].rstrip("/") + PATH

    def log_size(self) -> int:
        return int(self.on_host(f"stat -c %s {ACCESS_LOG}"))

    def nginx_failures_since(self, offset: int) -> dict[str, int]:
        return nginx_failures(self.on_host(f"tail -c +{offset + 1} {ACCESS_LOG}").splitlines())

    def run_cycle(self, i: int, *extra: str) -> str:
        command = cycle_command(i, *extra)
        return (self.tune(*command[1:])["change"] if command[0] == "tune"
                else self.djdeploy(*command, as_controller=True).stdout)

    def hangups(self, since: float, until: float) -> list[float]:
        """When the master logged each HUP (the lab host shares this machine's clock)."""
        lines = self.on_host(f"journalctl -u gunicorn --no-pager -o short-unix --since @{int(since)} "
                             f"--until @{int(until) + 1} | grep -F 'Hang up: Master' || true").splitlines()
        return [float(line.split()[0]) for line in lines if since <= float(line.split()[0]) < until]

    def tune(self, *args: str, inventory: str | None = None) -> dict:
        done = self.djdeploy("tune", *args, "-i", inventory or self.inventory, "--json", check=False,
                             as_controller=True)
        record = json.loads(done.stdout)["hosts"]["web01"]
        if done.returncode != 0:
            raise RuntimeError(f"tune {' '.join(args)} exited {done.returncode}: {record['message']}")
        return record

    def window(self, load: Load, name: str, action) -> dict:
        """Run `action` under the running load; the window ends SETTLE_SECONDS after it."""
        offset = self.log_size()
        start = time.time()
        detail = action()
        end = time.time() + SETTLE_SECONDS
        time.sleep(SETTLE_SECONDS)
        samples = load.samples()
        inside = within(samples, [(start, end)])
        if not inside:
            raise RuntimeError(f"{name}: the load sent no request in this window (did it reach its max_seconds?)")
        # Where in the window the slowest requests were sent: at the reload, or all along?
        slowest = [(round(s.start - start, 2), ms(s.latency))
                   for s in sorted(inside, key=lambda s: -s.latency)[:5]]
        hangups = self.hangups(start, end)
        return {"scenario": name, "since": start, "until": end, "detail": detail, "slowest_at_s_ms": slowest,
                "hangups": hangups, "reload": summarize(in_reload_windows(samples, hangups)),
                "nginx": self.nginx_failures_since(offset), **summarize(inside)}

    def steady(self, load: Load) -> dict:
        start = time.time()
        time.sleep(STEADY_SECONDS)
        return summarize(load.samples(), start, time.time())

    def quiet_slice(self) -> tuple[float, float]:
        start = time.time()
        time.sleep(QUIET_SECONDS)
        return start, time.time()

    def bare_hangups(self) -> str:
        """BARE_HUPS plain HUPs from inside the host, one reload window apart."""
        pause = SETTLE_SECONDS + 1
        self.on_host(f"for i in $(seq {BARE_HUPS}); do sleep {pause}; systemctl reload gunicorn; done")
        return f"{BARE_HUPS} x systemctl reload"

    def first_requests(self) -> dict:
        """FIRST_RESTARTS times: restart with no load, then the first requests as soon as
        systemctl returns. One request against a p50 of ~15 ms moves with the machine's noise,
        so the figure is the median of the first requests; the slowest is kept beside it."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        restarts = []
        for _ in range(FIRST_RESTARTS):
            self.on_host("systemctl restart gunicorn")
            latencies = []
            for _ in range(FIRST_REQUESTS):
                clock = time.perf_counter()
                with opener.open(self.url, timeout=60) as response:
                    response.read()
                    assert response.status == 200, response.status
                latencies.append(time.perf_counter() - clock)
            restarts.append(latencies)
        firsts = [latencies[0] for latencies in restarts]
        return {"first": statistics.median(firsts), "slowest_first": max(firsts), "latencies": restarts}


def run(cycles: int) -> dict:
    with controller_cgroup() as controller:
        return run_with(Bench(controller), cycles)


def run_with(bench: Bench, cycles: int) -> dict:
    result: dict = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "lab": LAB,
                    "import_delay_s": float(IMPORT_DELAY), "path": PATH,
                    "load": {"connections": CONNECTIONS, "rate_per_connection": RATE},
                    "controller_cpu_shares": CONTROLLER_CPU_SHARES if bench.controller else None,
                    "loadavg_before": os.getloadavg()}
    try:
        bench.up()
        # Untuned: gunicorn's defaults as the lab starts them.
        with Load(bench.url, connections=CONNECTIONS, rate=RATE) as load:
            untuned_steady = bench.steady(load)
            hup = bench.window(load, "defaults: plain HUP", lambda: bench.on_host("systemctl reload gunicorn"))
            stop_start = bench.window(load, "defaults: stop/start", lambda: bench.on_host(
                "systemctl stop gunicorn; systemctl start gunicorn"))
        untuned_first = bench.first_requests()
        # The first tune replaces the unit: a restart from a master that stored no sockets.
        with Load(bench.url, connections=CONNECTIONS, rate=RATE) as load:
            first_tune = bench.window(load, "djdeploy: first tune (restart)", lambda: bench.tune("web01")["message"])
            single_window_steady = bench.steady(load)
            # A cycle is a tune that changes a setting and the rollback that undoes it. After
            # each, a quiet slice: pooled, they are the tuned baseline, measured all along the
            # cycles, so it drifts with the machine as the reload windows do.
            windows, quiet_slices = [], []
            for i in range(2 * cycles):
                windows.append(bench.window(
                    load, f"djdeploy: cycle {i // 2 + 1} {'tune' if i % 2 == 0 else 'rollback'}",
                    lambda i=i: bench.run_cycle(i)))
                quiet_slices.append(bench.quiet_slice())
            bare = bench.window(load, f"djdeploy's config: {BARE_HUPS} plain HUPs, no Ansible", bench.bare_hangups)
            unit_change = bench.window(load, "djdeploy: changed unit (restart)",
                                       lambda: bench.tune("web01", "--set", "graceful_timeout=35")["message"])
            samples = load.samples()
        tuned_first = bench.first_requests()
        # Without preload: the switch is a restart (a HUP would keep the master's app); then
        # each HUP has every new worker import the app while the old ones serve.
        with Load(bench.url, connections=CONNECTIONS, rate=RATE) as load:
            to_no_preload = bench.window(load, "djdeploy: preload off (restart)",
                                         lambda: bench.tune("web01", "--set", "preload_app=false")["message"])
            time.sleep(SETTLE_SECONDS)
            no_preload_steady = bench.steady(load)
            no_preload_windows = [
                bench.window(load, f"no preload: cycle {i // 2 + 1}", lambda i=i: bench.run_cycle(
                    i, "--set", "preload_app=false"))
                for i in range(2 * NO_PRELOAD_CYCLES)]
            no_preload_samples = load.samples()
        bench.tune("web01")
        # Socket activation: the switch itself (gunicorn stops before the socket unit can bind
        # its address), then a changed unit's restart with systemd holding the socket.
        with Load(bench.url, connections=CONNECTIONS, rate=RATE) as load:
            to_socket = bench.window(load, "djdeploy: to socket activation (restart)",
                                     lambda: bench.tune("web01", inventory=bench.socket_inventory)["message"])
            socket_unit_change = bench.window(
                load, "socket activation: changed unit (restart)",
                lambda: bench.tune("web01", "--set", "graceful_timeout=40", inventory=bench.socket_inventory)["message"])
        result["loadavg_after"] = os.getloadavg()
        cycles_row = merge_windows(f"djdeploy: {cycles} tune/rollback cycles", windows, samples)
        tuned_steady = steady_between(samples, quiet_slices)
        no_preload_row = merge_windows(f"no preload: {NO_PRELOAD_CYCLES} tune/rollback cycles", no_preload_windows,
                                       no_preload_samples)
        result["rows"] = [
            row(hup, untuned_steady, untuned_first),
            row(stop_start, untuned_steady, None),
            row(first_tune, tuned_steady, None),
            row(cycles_row, tuned_steady, tuned_first),
            row(bare, tuned_steady, None),
            row(unit_change, tuned_steady, None),
            row(to_no_preload, no_preload_steady, None),
            row(no_preload_row, no_preload_steady, None),
            row(to_socket, tuned_steady, None),
            row(socket_unit_change, tuned_steady, None),
        ]
        result["cycles"] = [row(w, tuned_steady, None) for w in windows]
        result["no_preload_cycles"] = [row(w, no_preload_steady, None) for w in no_preload_windows]
        result["targets"] = targets(cycles_row, tuned_steady, tuned_first, cycles)
        result["baselines"] = {
            BETWEEN_CYCLES: {**baseline(tuned_steady), "seconds": round(sum(b - a for a, b in quiet_slices), 1)},
            SINGLE_WINDOW: {**baseline(single_window_steady), "seconds": STEADY_SECONDS},
        }
        # The same targets on the one 15 s window before the cycles, the baseline of earlier runs.
        result["targets_on_single_window"] = targets(cycles_row, single_window_steady, tuned_first, cycles)
        return result
    finally:
        bench.down()


def within(samples: list[Sample], spans: list[tuple[float, float]]) -> list[Sample]:
    """The requests sent within any of the spans [since, until)."""
    return [s for s in samples if any(since <= s.start < until for since, until in spans)]


def steady_between(samples: list[Sample], slices: list[tuple[float, float]]) -> dict:
    """The requests sent within any of the quiet slices, summarized as one steady state."""
    return summarize(within(samples, slices))


BETWEEN_CYCLES = f"tuned, pooled {QUIET_SECONDS:g} s slices between the cycles (the targets' baseline)"
SINGLE_WINDOW = f"tuned, one {STEADY_SECONDS:g} s window before the cycles"


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def baseline(steady: dict) -> dict:
    return {"requests": steady["requests"], "p50_ms": ms(steady["p50"]), "p99_ms": ms(steady["p99"]),
            "max_ms": ms(steady["max"])}


def in_reload_windows(samples: list[Sample], hangups: list[float]) -> list[Sample]:
    return within(samples, [(at, at + SETTLE_SECONDS) for at in hangups])


def merge_windows(name: str, windows: list[dict], samples: list[Sample]) -> dict:
    chosen = within(samples, [(w["since"], w["until"]) for w in windows])
    nginx: dict[str, int] = {}
    for w in windows:
        for key, count in w["nginx"].items():
            nginx[key] = nginx.get(key, 0) + count
    hangups = [at for w in windows for at in w["hangups"]]
    return {"scenario": name, "detail": sorted({str(w["detail"]) for w in windows}), "nginx": nginx,
            "hangups": hangups, "reload": summarize(in_reload_windows(samples, hangups)), **summarize(chosen)}


def row(window: dict, steady: dict, first: dict | None) -> dict:
    return {
        "scenario": window["scenario"],
        "detail": window["detail"],
        "slowest_at_s_ms": window.get("slowest_at_s_ms"),
        "requests": window["requests"],
        "failed": window["failed"],
        "errors": window["errors"],
        "nginx_failed": sum(window["nginx"].values()),
        "nginx": window["nginx"],
        "max_ms": ms(window["max"]),
        "p99_ms": ms(window["p99"]),
        "steady_p50_ms": ms(steady["p50"]),
        "steady_p99_ms": ms(steady["p99"]),
        "steady_max_ms": ms(steady["max"]),
        "max_over_steady_p99": round(window["max"] / steady["p99"], 1),
        "p99_over_steady_p99": round(window["p99"] / steady["p99"], 2),
        "hangups": len(window["hangups"]),
        "reload_requests": window["reload"]["requests"],
        "reload_p99_ms": ms(window["reload"]["p99"]),
        "reload_p99_over_steady_p99": (round(window["reload"]["p99"] / steady["p99"], 2)
                                       if window["reload"]["p99"] is not None else None),
        "first_request_ms": ms(first["first"]) if first else None,
        "first_over_steady_p50": round(first["first"] / steady["p50"], 2) if first else None,
        "slowest_first_request_ms": ms(first["slowest_first"]) if first else None,
        "first_requests_ms": [[ms(x) for x in latencies] for latencies in first["latencies"]] if first else None,
    }


def targets(cycles_row: dict, steady: dict, first: dict, cycles: int) -> dict:
    failed = cycles_row["failed"] + sum(cycles_row["nginx"].values())
    return {
        f"P1: {cycles} cycles, 0 failed requests": failed == 0,
        "P2: slowest request during a tune <= 250 ms": cycles_row["max"] <= MAX_LATENCY_TARGET,
        "P2: reload window p99 <= 2 x steady p99": cycles_row["reload"]["p99"] <= 2 * steady["p99"],
        f"P3: first request after a restart (median of {FIRST_RESTARTS}) <= 1.5 x steady p50":
            first["first"] <= 1.5 * steady["p50"],
    }


COLUMNS = [("scenario", 36), ("failed", 6), ("nginx_failed", 6), ("max_ms", 8), ("p99_ms", 8),
           ("steady_p50_ms", 8), ("steady_p99_ms", 8), ("p99_over_steady_p99", 7), ("hangups", 4),
           ("reload_p99_ms", 8), ("reload_p99_over_steady_p99", 7), ("first_request_ms", 8),
           ("first_over_steady_p50", 7)]
HEADERS = ["scenario", "failed", "nginx", "max ms", "p99 ms", "st p50", "st p99", "p99/st", "HUPs",
           "rl p99", "rl/st", "1st ms", "1st/p50"]


def verdicts(targets: dict[str, bool]) -> list[str]:
    return [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in targets.items()]


def table(result: dict) -> str:
    widths = [width for _, width in COLUMNS]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(HEADERS, widths)))]
    for r in result["rows"]:
        cells = ["-" if r[key] is None else str(r[key]) for key, _ in COLUMNS]
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))
    lines.append("")
    for name, figures in result["baselines"].items():
        lines.append(f"baseline {name}: {figures['requests']} requests, p50 {figures['p50_ms']} ms, "
                     f"p99 {figures['p99_ms']} ms")
    lines += ["", *verdicts(result["targets"])]
    lines += ["", f"On the baseline {SINGLE_WINDOW}:", *verdicts(result["targets_on_single_window"])]
    return "\n".join(lines)


def _interrupted(signum: int, frame: object) -> None:
    # SIGTERM too goes through the finally that brings the host down.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reloads", description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/reloads-TIME.json)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    result = run(args.cycles)
    out = args.out or REPO / "bench" / "results" / f"reloads-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nJSON: {out}")
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
