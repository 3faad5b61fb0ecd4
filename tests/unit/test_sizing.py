"""Sizing: real host shapes with exact answers, and properties that must hold for any host."""

from __future__ import annotations

import copy
import json
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from djdeploy.errors import DjdeployError, ExitCode
from djdeploy.gunicorn_settings import validate_settings
from djdeploy.sizing import FACT_NAMES, format_mib, plan

MiB = 2**20
GiB = 2**30
CGROUP_V1_UNLIMITED = 2**63 - 4096


def host(**changes: Any) -> dict[str, Any]:
    """One CPU, 1.5 GiB available, no cgroup limit, one worker measured at 40 MiB anonymous memory."""
    facts: dict[str, Any] = {
        "cpus_affinity": 1,
        "cpu_quota": None,
        "cpus_online": 1,
        "mem_total_bytes": 2 * GiB,
        "mem_available_bytes": 1536 * MiB,
        "cgroup_memory_limit_bytes": None,
        "cgroup_memory_usage_bytes": None,
        "cgroup_memory_inactive_file_bytes": None,
        "worker_anonymous_bytes": 40 * MiB,
        "workers_measured": 1,
        "gunicorn_pss_total_bytes": 0,
    }
    facts.update(changes)
    return facts


def refusal(facts: dict[str, Any], options: dict[str, Any] | None = None) -> DjdeployError:
    with pytest.raises(DjdeployError) as caught:
        plan(facts, options or {})
    assert caught.value.exit_code is ExitCode.REFUSED
    return caught.value


# --- real hosts, exact answers ---------------------------------------------------------------

REAL_HOSTS = [
    pytest.param(
        host(cgroup_memory_limit_bytes=GiB, cgroup_memory_usage_bytes=200 * MiB, worker_anonymous_bytes=38 * MiB),
        {},
        (3, "gthread", 2),
        "workers=3: 1 CPU × 2 + 1; memory allows 17 at 38 MiB each (anonymous memory, mean of 1 worker)",
        id="1 CPU, 1 GiB cgroup with 200 MiB used, 38 MiB per worker",
    ),
    pytest.param(
        host(cpus_affinity=2, cpus_online=2, mem_available_bytes=4 * GiB, worker_anonymous_bytes=100 * MiB),
        {"profile": "cpu"},
        (5, "sync", 1),
        "workers=5: 2 CPUs × 2 + 1; memory allows 32 at 100 MiB each (anonymous memory, mean of 1 worker)",
        id="2 CPUs, cpu profile",
    ),
    pytest.param(
        host(cpus_affinity=2, cpus_online=2, cpu_quota=0.5),
        {},
        (3, "gthread", 2),
        "workers=3: 1 CPU (CPU quota 0.5 of 2 CPUs, rounded up) × 2 + 1; "
        "memory allows 30 at 40 MiB each (anonymous memory, mean of 1 worker)",
        id="cpu quota 0.5 on a 2-CPU box",
    ),
    pytest.param(
        host(cpus_affinity=4, cpus_online=4, cpu_quota=1.5),
        {"profile": "io"},
        (5, "gthread", 4),
        "workers=5: 2 CPUs (CPU quota 1.5 of 4 CPUs, rounded up) × 2 + 1; "
        "memory allows 30 at 40 MiB each (anonymous memory, mean of 1 worker)",
        id="cpu quota 1.5 on 4 CPUs rounds up to 2",
    ),
    pytest.param(
        host(cpus_affinity=4, cpus_online=4, cpu_quota=2.0000000001),
        {},
        (5, "gthread", 2),
        "workers=5: 2 CPUs (CPU quota 2 of 4 CPUs, rounded up) × 2 + 1; "
        "memory allows 30 at 40 MiB each (anonymous memory, mean of 1 worker)",
        id="float noise in the quota does not add a CPU",
    ),
    pytest.param(
        host(cpus_affinity=2, cpus_online=8, cpu_quota=8.0),
        {},
        (5, "gthread", 2),
        "workers=5: 2 CPUs × 2 + 1; memory allows 30 at 40 MiB each (anonymous memory, mean of 1 worker)",
        id="quota above the affinity mask does not bind",
    ),
    pytest.param(
        host(cpus_affinity=8, cpus_online=8, mem_available_bytes=300 * MiB, worker_anonymous_bytes=None,
             workers_measured=0),
        {},
        (3, "gthread", 2),
        "workers=3: 8 CPUs × 2 + 1 = 17; memory allows only 3 at 64 MiB each (assumed: no running worker to measure); "
        "budget 240 MiB = 80% of 300 MiB: MemAvailable 300 MiB + running gunicorn 0 MiB",
        id="8 CPUs with tiny memory and no worker to measure",
    ),
    pytest.param(
        host(cpus_affinity=8, cpus_online=8, mem_available_bytes=8 * GiB, worker_anonymous_bytes=100 * MiB),
        {"profile": "io", "db_max_connections": 40, "db_hosts_sharing": 4},
        (2, "gthread", 4),
        "workers=2: 8 CPUs × 2 + 1 = 17; memory allows 65 at 100 MiB each (anonymous memory, mean of 1 worker); "
        "40 database connections ÷ 4 hosts = 10 per host allow only 2 at 4 threads each",
        id="db budget 40 over 4 hosts with threads 4",
    ),
    pytest.param(
        host(cpus_affinity=8, cpus_online=8, mem_available_bytes=8 * GiB, worker_anonymous_bytes=100 * MiB),
        {"profile": "io", "db_max_connections": 3},
        (1, "gthread", 3),
        "workers=1: 8 CPUs × 2 + 1 = 17; memory allows 65 at 100 MiB each (anonymous memory, mean of 1 worker); "
        "3 database connections allow only 1 worker at 3 threads",
        id="db budget below one worker's threads reduces threads",
    ),
    pytest.param(
        host(mem_available_bytes=8 * GiB),
        {"db_max_connections": 100},
        (3, "gthread", 2),
        "workers=3: 1 CPU × 2 + 1; memory allows 163 at 40 MiB each (anonymous memory, mean of 1 worker); "
        "100 database connections allow 50 at 2 threads each",
        id="db budget that does not bind",
    ),
    pytest.param(
        host(cpus_affinity=4, cpus_online=4, mem_available_bytes=100 * MiB, gunicorn_pss_total_bytes=200 * MiB),
        {},
        (6, "gthread", 2),
        "workers=6: 4 CPUs × 2 + 1 = 9; memory allows only 6 at 40 MiB each (anonymous memory, mean of 1 worker); "
        "budget 240 MiB = 80% of 300 MiB: MemAvailable 100 MiB + running gunicorn 200 MiB",
        id="memory held by the running gunicorn comes back",
    ),
    pytest.param(
        host(cpus_affinity=4, cpus_online=4, cgroup_memory_limit_bytes=CGROUP_V1_UNLIMITED, cgroup_memory_usage_bytes=GiB),
        {},
        (9, "gthread", 2),
        "workers=9: 4 CPUs × 2 + 1; memory allows 30 at 40 MiB each (anonymous memory, mean of 1 worker)",
        id="cgroup v1 'unlimited' is no limit",
    ),
    pytest.param(
        host(cpus_affinity=4, cpus_online=4, cgroup_memory_limit_bytes=512 * MiB, cgroup_memory_usage_bytes=412 * MiB,
             gunicorn_pss_total_bytes=150 * MiB),
        {"memory_reserve_fraction": 0.1},
        (5, "gthread", 2),
        "workers=5: 4 CPUs × 2 + 1 = 9; memory allows only 5 at 40 MiB each (anonymous memory, mean of 1 worker); "
        "budget 225 MiB = 90% of 250 MiB: cgroup limit 512 MiB − usage 412 MiB + running gunicorn 150 MiB",
        id="cgroup headroom tighter than the host",
    ),
    pytest.param(
        host(cpus_affinity=4, cpus_online=4, cgroup_memory_limit_bytes=512 * MiB, cgroup_memory_usage_bytes=500 * MiB,
             cgroup_memory_inactive_file_bytes=200 * MiB, gunicorn_pss_total_bytes=50 * MiB),
        {},
        (5, "gthread", 2),
        "workers=5: 4 CPUs × 2 + 1 = 9; memory allows only 5 at 40 MiB each (anonymous memory, mean of 1 worker); "
        "budget 209.6 MiB = 80% of 262 MiB: cgroup limit 512 MiB − working set 300 MiB "
        "(usage 500 MiB − inactive file cache 200 MiB) + running gunicorn 50 MiB",
        id="page cache the kernel reclaims first is not usage",
    ),
    pytest.param(
        host(cpus_affinity=2, cpus_online=2, cgroup_memory_limit_bytes=GiB, cgroup_memory_usage_bytes=400 * MiB,
             cgroup_memory_inactive_file_bytes=250 * MiB, worker_anonymous_bytes=31 * MiB, workers_measured=3),
        {},
        (5, "gthread", 2),
        "workers=5: 2 CPUs × 2 + 1; memory allows 22 at 31 MiB each (anonymous memory, mean of 3 workers)",
        id="anonymous memory of 3 workers, cache below the cgroup limit",
    ),
    pytest.param(
        host(cpus_affinity=2, cpus_online=2, worker_anonymous_bytes=60 * MiB),
        {"memory_reserve_fraction": 0},
        (5, "gthread", 2),
        "workers=5: 2 CPUs × 2 + 1; memory allows 25 at 60 MiB each (anonymous memory, mean of 1 worker)",
        id="no reserve",
    ),
    pytest.param(
        host(cpus_affinity=200, cpus_online=200, mem_available_bytes=80 * GiB, worker_anonymous_bytes=100 * MiB),
        {},
        (256, "gthread", 2),
        "workers=256: 200 CPUs × 2 + 1 = 401, capped at 256; "
        "memory allows 655 at 100 MiB each (anonymous memory, mean of 1 worker)",
        id="huge host stops at the catalogue's 256 workers",
    ),
]


@pytest.mark.parametrize(("facts", "options", "expected", "reason"), REAL_HOSTS)
def test_real_hosts(facts: dict[str, Any], options: dict[str, Any], expected: tuple[int, str, int], reason: str) -> None:
    result = plan(facts, options)
    settings_ = result["settings"]
    assert (settings_["workers"], settings_["worker_class"], settings_["threads"]) == expected
    assert result["reasons"]["workers"] == reason


def test_fixed_settings_and_their_reasons() -> None:
    result = plan(host(), {})
    assert result["settings"] == {
        "backlog": 2048,
        "bind": ["127.0.0.1:8000"],
        "graceful_timeout": 30,
        "keepalive": 5,
        "max_requests": 1000,
        "max_requests_jitter": 100,
        "preload_app": True,
        "threads": 2,
        "timeout": 30,
        "worker_class": "gthread",
        "worker_tmp_dir": "/dev/shm",
        "workers": 3,
    }
    reasons = result["reasons"]
    assert reasons["worker_tmp_dir"] == (
        "worker_tmp_dir=/dev/shm: heartbeat files on tmpfs, so a slow disk doesn't get workers killed"
    )
    assert reasons["max_requests_jitter"] == (
        "max_requests_jitter=100: 10% of max_requests=1000, so workers don't all restart at once"
    )
    assert reasons["bind"] == "bind=127.0.0.1:8000: localhost only; nginx on the same host proxies to it"
    assert result["warnings"] == []


def test_output_shape_is_sorted_json_with_a_reason_per_setting() -> None:
    result = plan(host(), {"overrides": {"accesslog": "-"}, "override_source": "host_vars"})
    assert set(result) == {"settings", "reasons", "inputs", "warnings"}
    assert list(result["settings"]) == sorted(result["settings"])
    assert list(result["reasons"]) == list(result["settings"])
    for name, reason in result["reasons"].items():
        assert reason.startswith(f"{name}=") and "\n" not in reason
    assert list(result["inputs"]) == sorted(FACT_NAMES)
    assert json.loads(json.dumps(result)) == result


def test_inputs_are_the_normalized_facts() -> None:
    facts = host(cgroup_memory_limit_bytes=CGROUP_V1_UNLIMITED, cpu_quota=2)
    inputs = plan(facts, {})["inputs"]
    assert inputs == {**facts, "cgroup_memory_limit_bytes": None, "cpu_quota": 2.0}
    assert type(inputs["cpu_quota"]) is float


@pytest.mark.parametrize(
    ("facts", "warning"),
    [
        (host(worker_anonymous_bytes=None, workers_measured=0),
         "no running worker to measure; assumed 64 MiB of memory per worker"),
        (
            host(cgroup_memory_limit_bytes=GiB),
            "cgroup memory usage unknown; assumed 0 bytes used within the cgroup limit",
        ),
        (
            host(cgroup_memory_limit_bytes=GiB, cgroup_memory_usage_bytes=100 * MiB),
            "cgroup inactive file cache unknown; the whole cgroup usage counted, page cache included",
        ),
    ],
)
def test_warnings_about_the_facts(facts: dict[str, Any], warning: str) -> None:
    assert plan(facts, {})["warnings"] == [warning]


def test_default_worker_memory_is_an_option() -> None:
    result = plan(host(worker_anonymous_bytes=None, workers_measured=0), {"default_worker_memory_bytes": 512 * MiB})
    assert result["warnings"] == ["no running worker to measure; assumed 512 MiB of memory per worker"]
    assert result["reasons"]["workers"] == "workers=2: 1 CPU × 2 + 1 = 3; memory allows only 2 at 512 MiB each " \
        "(assumed: no running worker to measure); budget 1228.8 MiB = 80% of 1536 MiB: MemAvailable 1536 MiB + " \
        "running gunicorn 0 MiB"


def test_null_options_mean_defaults() -> None:
    nulls = {name: None for name in ("profile", "bind", "db_max_connections", "db_hosts_sharing",
                                     "default_worker_memory_bytes", "memory_reserve_fraction",
                                     "overrides", "override_source")}  # fmt: skip
    assert plan(host(), nulls) == plan(host(), {})


def test_bind_option_is_used_and_validated() -> None:
    result = plan(host(), {"bind": ["unix:/run/app/gunicorn.sock"]})
    assert result["settings"]["bind"] == ["unix:/run/app/gunicorn.sock"]
    assert result["reasons"]["bind"] == "bind=unix:/run/app/gunicorn.sock: from the bind option"
    error = refusal(host(), {"bind": ["0.0.0.0:99999"]})
    assert "port must be a number from 1 to 65535" in error.message
    assert "(from sizing option bind)" in error.message


# --- refusals --------------------------------------------------------------------------------


def test_refuses_when_memory_cannot_fit_one_worker() -> None:
    error = refusal(host(mem_available_bytes=10 * MiB, worker_anonymous_bytes=None, workers_measured=0))
    assert error.message == (
        "memory cannot fit one gunicorn worker: "
        "budget 8 MiB = 80% of 10 MiB: MemAvailable 10 MiB + running gunicorn 0 MiB, "
        "less than one worker at 64 MiB each (assumed: no running worker to measure)"
    )
    assert error.fix and "raise the cgroup memory limit" in error.fix


def test_refuses_when_cgroup_usage_is_over_its_limit() -> None:
    error = refusal(host(cgroup_memory_limit_bytes=GiB, cgroup_memory_usage_bytes=GiB + MiB))
    assert (
        "budget 0 MiB = 80% of 0 MiB: cgroup limit 1024 MiB − usage 1025 MiB + running gunicorn 0 MiB, nothing left, "
        "less than one worker"
    ) in error.message


def test_refuses_when_the_database_leaves_this_host_no_connection() -> None:
    error = refusal(host(), {"db_max_connections": 3, "db_hosts_sharing": 4})
    assert error.message == (
        "the database budget leaves this host no connection: 3 database connections ÷ 4 hosts = 0 per host, "
        "and even 1 worker × 1 thread needs one"
    )


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        ({k: v for k, v in host().items() if k != "mem_total_bytes"}, "missing host fact 'mem_total_bytes'"),
        (host(cpus_afinity=2), "unknown host fact 'cpus_afinity'; did you mean 'cpus_affinity'?"),
        (host(cpus_affinity=0), "host fact cpus_affinity must be an integer from 1 to 65536, got int 0"),
        (host(cpus_affinity=True), "host fact cpus_affinity must be an integer, got bool True"),
        (host(cpus_affinity="2"), "host fact cpus_affinity must be an integer, got str '2'"),
        (host(cpus_online=1.0), "host fact cpus_online must be an integer, got float 1.0"),
        (host(mem_available_bytes=-1), "host fact mem_available_bytes must be an integer from 0 to"),
        (host(mem_total_bytes=None), "host fact mem_total_bytes must be an integer, got NoneType None"),
        (host(gunicorn_pss_total_bytes=2**61), "host fact gunicorn_pss_total_bytes must be an integer from 0 to"),
        (host(cgroup_memory_usage_bytes=-5), "host fact cgroup_memory_usage_bytes must be an integer from 0"),
        (host(cgroup_memory_limit_bytes="max"), "host fact cgroup_memory_limit_bytes must be an integer, got str"),
        (host(cpu_quota=0), "host fact cpu_quota must be a positive number of cores or null"),
        (host(cpu_quota=-1.0), "host fact cpu_quota must be a positive number of cores or null"),
        (host(cpu_quota=math.nan), "host fact cpu_quota must be a positive number of cores or null"),
        (host(cpu_quota=True), "host fact cpu_quota must be a positive number of cores or null"),
        (host(cgroup_memory_inactive_file_bytes=-1), "host fact cgroup_memory_inactive_file_bytes must be an integer"),
        (host(worker_anonymous_bytes=0), "host fact worker_anonymous_bytes must be an integer from 1"),
        (host(worker_anonymous_bytes=None),
         "host fact worker_anonymous_bytes must be an integer when workers_measured"),
        (host(workers_measured=0), "host fact worker_anonymous_bytes must be null when workers_measured is 0"),
        (host(workers_measured=-1), "host fact workers_measured must be an integer from 0"),
        (host(workers_measured=None), "host fact workers_measured must be an integer, got NoneType None"),
        (host(worker_pss_bytes=1), "unknown host fact 'worker_pss_bytes'"),
    ],
)
def test_invalid_facts_are_named(facts: dict[str, Any], message: str) -> None:
    assert refusal(facts).message.startswith(message)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"profile": "fast"}, "sizing option profile must be one of cpu, io, mixed, got str 'fast'"),
        ({"profiel": "io"}, "unknown sizing option 'profiel'; did you mean 'profile'?"),
        ({"memory_reserve_fraction": 1}, "sizing option memory_reserve_fraction must be a number from 0 up to"),
        ({"memory_reserve_fraction": -0.1}, "sizing option memory_reserve_fraction must be a number from 0 up to"),
        ({"db_max_connections": 0}, "sizing option db_max_connections must be an integer at least 1, got int 0"),
        ({"db_hosts_sharing": 0}, "sizing option db_hosts_sharing must be an integer at least 1, got int 0"),
        ({"default_worker_memory_bytes": 0}, "sizing option default_worker_memory_bytes must be an integer from 1"),
        ({"overrides": ["workers=3"]}, "sizing option overrides must be a mapping"),
        ({"override_source": "x\ny"}, "sizing option override_source must be short printable text"),
        ({"overrides": {"workres": 3}, "override_source": "--set"},
         "unknown gunicorn setting 'workres' (from --set); did you mean 'workers'?"),
        ({"overrides": {"proc_name": "app\nExecStart=/bin/sh"}, "override_source": "host_vars"},
         "proc_name must not contain control characters"),
    ],
)
def test_invalid_options_are_named(options: dict[str, Any], message: str) -> None:
    assert refusal(host(), options).message.startswith(message)


# --- overrides -------------------------------------------------------------------------------


def test_override_wins_with_its_source_as_reason() -> None:
    result = plan(host(), {"overrides": {"timeout": 120, "accesslog": "-"}, "override_source": "--set"})
    assert result["settings"]["timeout"] == 120
    assert result["settings"]["accesslog"] == "-"
    assert result["reasons"]["timeout"] == "timeout=120: set by --set"
    assert result["reasons"]["accesslog"] == "accesslog=-: set by --set"


def test_workers_override_above_the_memory_cap_is_kept_with_a_warning() -> None:
    facts = host(mem_available_bytes=300 * MiB, worker_anonymous_bytes=100 * MiB)
    result = plan(facts, {"overrides": {"workers": 10}, "override_source": "--set"})
    assert result["settings"]["workers"] == 10
    assert result["reasons"]["workers"] == "workers=10: set by --set"
    assert result["warnings"] == [
        "workers=10 set by --set exceeds what memory allows (2 at 100 MiB each (anonymous memory, mean of 1 worker); "
        "budget 240 MiB = 80% of 300 MiB: MemAvailable 300 MiB + running gunicorn 0 MiB); "
        "the host may swap or the kernel may kill workers"
    ]


def test_workers_override_even_where_memory_fits_none_is_kept_with_a_warning() -> None:
    facts = host(mem_available_bytes=10 * MiB)
    result = plan(facts, {"overrides": {"workers": 1}, "override_source": "--set"})
    assert result["settings"]["workers"] == 1
    assert result["warnings"][0].startswith(
        "workers=1 set by --set exceeds what memory allows (0 at 40 MiB each (anonymous memory, mean of 1 worker)"
    )


def test_workers_override_above_the_database_budget_warns() -> None:
    result = plan(host(), {"db_max_connections": 10, "overrides": {"workers": 8}, "override_source": "--set"})
    assert result["settings"]["workers"] == 8
    assert result["warnings"] == [
        "workers=8 set by --set at 2 threads each needs 16 connections, more than 10 database connections; "
        "requests may fail with 'too many connections'"
    ]


def test_pinned_threads_above_the_database_budget_stay_with_a_warning() -> None:
    result = plan(host(), {"db_max_connections": 3, "overrides": {"threads": 8}, "override_source": "--set"})
    assert (result["settings"]["workers"], result["settings"]["threads"]) == (1, 8)
    assert result["reasons"]["workers"] == (
        "workers=1: 1 CPU × 2 + 1 = 3; memory allows 30 at 40 MiB each (anonymous memory, mean of 1 worker); "
        "3 database connections fit less than one worker at 8 threads"
    )
    assert result["warnings"] == [
        "threads=8 set by --set needs 8 connections per worker, more than 3 database connections; "
        "requests may fail with 'too many connections'"
    ]


def test_pinned_threads_size_workers_against_the_database() -> None:
    result = plan(host(cpus_affinity=8), {"db_max_connections": 20, "overrides": {"threads": 8}})
    assert (result["settings"]["workers"], result["settings"]["threads"]) == (2, 8)


@pytest.mark.parametrize(
    ("profile", "overrides", "worker_class", "threads", "reasons"),
    [
        ("cpu", {"threads": 4}, "gthread", 4, {"worker_class": "worker_class=gthread: threads=4 set by --set needs the threaded worker"}),
        ("io", {"worker_class": "sync"}, "sync", 1, {"threads": "threads=1: worker_class sync runs one thread per worker"}),
        ("mixed", {"worker_class": "uvicorn.workers.UvicornWorker"}, "uvicorn.workers.UvicornWorker", 1, {}),
        ("cpu", {"threads": 1}, "sync", 1, {"threads": "threads=1: set by --set"}),
        ("cpu", {"worker_class": "gthread"}, "gthread", 1, {"worker_class": "worker_class=gthread: set by --set"}),
    ],
)
def test_pinning_worker_class_or_threads_fills_in_its_partner(
    profile: str, overrides: dict[str, Any], worker_class: str, threads: int, reasons: dict[str, str]
) -> None:
    result = plan(host(), {"profile": profile, "overrides": overrides, "override_source": "--set"})
    assert (result["settings"]["worker_class"], result["settings"]["threads"]) == (worker_class, threads)
    for name, reason in reasons.items():
        assert result["reasons"][name] == reason


def test_contradictory_overrides_are_refused_naming_their_source() -> None:
    error = refusal(host(), {"overrides": {"threads": 4, "worker_class": "sync"}, "override_source": "--set"})
    assert error.message.startswith("threads=4 needs worker_class gthread, but worker_class is 'sync'")
    assert error.message.endswith("(from --set)")


def test_max_requests_override_brings_its_jitter_along() -> None:
    result = plan(host(), {"overrides": {"max_requests": 500}})
    assert (result["settings"]["max_requests"], result["settings"]["max_requests_jitter"]) == (500, 50)
    off = plan(host(), {"overrides": {"max_requests": 0}})
    assert (off["settings"]["max_requests"], off["settings"]["max_requests_jitter"]) == (0, 0)


def test_jitter_override_above_max_requests_is_refused() -> None:
    error = refusal(host(), {"overrides": {"max_requests_jitter": 2000}, "override_source": "host_vars"})
    assert error.message == "max_requests_jitter=2000 must not exceed max_requests=1000 (from host_vars)"


def test_async_worker_class_with_a_database_budget_warns() -> None:
    result = plan(host(), {"db_max_connections": 50, "overrides": {"worker_class": "gevent"}, "override_source": "--set"})
    assert result["warnings"] == [
        "worker_class=gevent: the database budget assumes one connection per thread, "
        "but async workers may open one per connection (up to worker_connections each)"
    ]


# --- formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (64 * MiB, "64 MiB"),
        (38 * MiB + 400 * 1024, "38.4 MiB"),
        (int(819.2 * MiB), "819.2 MiB"),
        (MiB * 1.96, "2 MiB"),
        (0, "0 MiB"),
        (1000, "1000 bytes"),
        (8 * GiB, "8192 MiB"),
    ],
)
def test_format_mib(size: int, text: str) -> None:
    assert format_mib(size) == text


# --- properties ------------------------------------------------------------------------------


@st.composite
def any_host(draw: st.DrawFn) -> dict[str, Any]:
    cpus = draw(st.integers(min_value=1, max_value=128))
    anonymous = draw(st.none() | st.integers(min_value=MiB, max_value=2 * GiB))
    limit = draw(st.none() | st.integers(min_value=0, max_value=64 * GiB) | st.just(CGROUP_V1_UNLIMITED))
    return {
        "cpus_affinity": cpus,
        "cpu_quota": draw(st.none() | st.floats(min_value=0.01, max_value=256.0)),
        "cpus_online": draw(st.integers(min_value=cpus, max_value=256)),
        "mem_total_bytes": draw(st.integers(min_value=1, max_value=256 * GiB)),
        "mem_available_bytes": draw(st.integers(min_value=0, max_value=256 * GiB)),
        "cgroup_memory_limit_bytes": limit,
        "cgroup_memory_usage_bytes": draw(st.none() | st.integers(min_value=0, max_value=64 * GiB)),
        "cgroup_memory_inactive_file_bytes": draw(st.none() | st.integers(min_value=0, max_value=64 * GiB)),
        "worker_anonymous_bytes": anonymous,
        "workers_measured": 0 if anonymous is None else draw(st.integers(min_value=1, max_value=300)),
        "gunicorn_pss_total_bytes": draw(st.integers(min_value=0, max_value=8 * GiB)),
    }


any_options = st.fixed_dictionaries(
    {
        "profile": st.sampled_from(["cpu", "io", "mixed"]),
        "memory_reserve_fraction": st.floats(min_value=0.0, max_value=0.9),
        "db_max_connections": st.none() | st.integers(min_value=1, max_value=2000),
        "db_hosts_sharing": st.integers(min_value=1, max_value=20),
    }
)


def memory_budget(facts: dict[str, Any], options: dict[str, Any]) -> int:
    """The brief's formula, written independently of the module under test."""
    returned = facts["gunicorn_pss_total_bytes"]
    headroom = facts["mem_available_bytes"] + returned
    limit = facts["cgroup_memory_limit_bytes"]
    if limit is not None and limit < 2**60:
        # Page cache the kernel reclaims first is not usage; never below nothing.
        used = max(0, (facts["cgroup_memory_usage_bytes"] or 0) - (facts["cgroup_memory_inactive_file_bytes"] or 0))
        headroom = min(headroom, max(0, limit - used + returned))
    return math.floor(headroom * (1 - Fraction(str(options["memory_reserve_fraction"]))))


def worker_memory(facts: dict[str, Any]) -> int:
    return facts["worker_anonymous_bytes"] or 64 * MiB


def per_host_connections(options: dict[str, Any]) -> int | None:
    if options["db_max_connections"] is None:
        return None
    return options["db_max_connections"] // options["db_hosts_sharing"]


def plan_or_refusal(facts: dict[str, Any], options: dict[str, Any]) -> dict[str, Any] | None:
    """The plan, or None when refusing was right: memory or the database fit no worker."""
    per_host = per_host_connections(options)
    if (per_host is not None and per_host < 1) or memory_budget(facts, options) < worker_memory(facts):
        with pytest.raises(DjdeployError):
            plan(facts, options)
        return None
    return dict(plan(facts, options))


@settings(max_examples=300)
@given(any_host(), any_options)
def test_every_plan_fits_its_budgets(facts: dict[str, Any], options: dict[str, Any]) -> None:
    result = plan_or_refusal(facts, options)
    if result is None:
        return
    workers, threads = result["settings"]["workers"], result["settings"]["threads"]
    assert workers >= 1 and threads >= 1
    assert workers * worker_memory(facts) <= memory_budget(facts, options)
    per_host = per_host_connections(options)
    if per_host is not None:
        assert workers * threads <= per_host
    assert workers <= 2 * facts["cpus_affinity"] + 1
    assert validate_settings(result["settings"], source="test") == result["settings"]


@given(any_host(), any_options)
def test_more_cpus_never_mean_fewer_workers(facts: dict[str, Any], options: dict[str, Any]) -> None:
    fewer = plan_or_refusal(facts, options)
    more_facts = {**facts, "cpus_affinity": facts["cpus_affinity"] + 1, "cpus_online": facts["cpus_online"] + 1}
    more = plan_or_refusal(more_facts, options)
    if fewer is not None and more is not None:
        assert more["settings"]["workers"] >= fewer["settings"]["workers"]


@given(any_host(), any_options)
def test_same_input_same_plan(facts: dict[str, Any], options: dict[str, Any]) -> None:
    first = plan_or_refusal(facts, options)
    second = plan_or_refusal(copy.deepcopy(facts), copy.deepcopy(options))
    assert first == second
    if first is not None:
        assert json.dumps(first) == json.dumps(second)


def settings_or_refusal(facts: dict[str, Any], options: dict[str, Any]) -> dict[str, Any] | str:
    try:
        return plan(facts, options)["settings"]
    except DjdeployError as exc:
        return exc.message.partition(":")[0]  # the kind of refusal, without the figures


@given(any_host(), any_options, st.integers(min_value=64 * MiB, max_value=4 * GiB), st.data())
def test_page_cache_does_not_change_the_plan(
    facts: dict[str, Any], options: dict[str, Any], limit: int, data: st.DataObject
) -> None:
    """Reading files fills the cgroup's page cache; the kernel gives it back before it refuses memory."""
    usage = data.draw(st.integers(min_value=0, max_value=limit))
    cache = data.draw(st.integers(min_value=0, max_value=limit - usage))
    measured = {**facts, "cgroup_memory_limit_bytes": limit, "cgroup_memory_usage_bytes": usage,
                "cgroup_memory_inactive_file_bytes": 0}
    cached = {**measured, "cgroup_memory_usage_bytes": usage + cache, "cgroup_memory_inactive_file_bytes": cache}
    assert settings_or_refusal(cached, options) == settings_or_refusal(measured, options)


@st.composite
def gunicorn_before_and_after(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """One host as a tune finds it, then as the next tune finds it once the first changed gunicorn.

    Everything but gunicorn stays: the host's other memory and the workers' anonymous memory
    (the same with or without preload). What gunicorn holds, how many workers run and the page
    cache may all differ.
    """
    cpus = draw(st.integers(min_value=1, max_value=64))
    anonymous = draw(st.integers(min_value=MiB, max_value=GiB))
    held = st.integers(min_value=0, max_value=8 * GiB)
    before_held, after_held = draw(held), draw(held)
    free_with_gunicorn = draw(st.integers(min_value=max(before_held, after_held), max_value=64 * GiB))
    limit = draw(st.none() | st.integers(min_value=64 * MiB, max_value=64 * GiB))
    others = draw(st.integers(min_value=0, max_value=16 * GiB))

    def seen(held_bytes: int, workers: int, cache: int) -> dict[str, Any]:
        return {
            "cpus_affinity": cpus,
            "cpu_quota": None,
            "cpus_online": cpus,
            "mem_total_bytes": 128 * GiB,
            "mem_available_bytes": free_with_gunicorn - held_bytes,
            "cgroup_memory_limit_bytes": limit,
            "cgroup_memory_usage_bytes": None if limit is None else others + held_bytes + cache,
            "cgroup_memory_inactive_file_bytes": None if limit is None else cache,
            "worker_anonymous_bytes": anonymous,
            "workers_measured": workers,
            "gunicorn_pss_total_bytes": held_bytes,
        }

    workers, caches = st.integers(min_value=1, max_value=256), st.integers(min_value=0, max_value=8 * GiB)
    return seen(before_held, draw(workers), draw(caches)), seen(after_held, draw(workers), draw(caches))


@settings(max_examples=300)
@given(gunicorn_before_and_after(), any_options)
def test_a_tune_right_after_a_tune_plans_the_same(
    hosts: tuple[dict[str, Any], dict[str, Any]], options: dict[str, Any]
) -> None:
    before, after = hosts
    assert settings_or_refusal(after, options) == settings_or_refusal(before, options)


@given(any_host(), any_options, st.integers(min_value=1, max_value=256))
def test_pinned_workers_always_stand(facts: dict[str, Any], options: dict[str, Any], workers: int) -> None:
    options = {**options, "db_max_connections": None, "overrides": {"workers": workers}, "override_source": "--set"}
    result = plan(facts, options)
    assert result["settings"]["workers"] == workers
    over_memory = workers * worker_memory(facts) > memory_budget(facts, options)
    assert any("exceeds what memory allows" in warning for warning in result["warnings"]) == over_memory


# --- binds beyond this host ---------------------------------------------------------------------

PUBLIC_BIND_WARNING = (
    "bind {} is reachable from other hosts, bypassing nginx; bind 127.0.0.1, [::1] or a unix socket "
    "unless that is intended"
)


@pytest.mark.parametrize(
    "bind",
    [
        pytest.param(["127.0.0.1:8000"], id="IPv4 loopback"),
        pytest.param(["127.0.1.1:8000"], id="anywhere in 127/8"),
        pytest.param(["[::1]:8000"], id="IPv6 loopback"),
        pytest.param(["localhost:8000"], id="localhost"),
        pytest.param(["unix:/run/gunicorn/app.sock"], id="unix socket"),
    ],
)
def test_a_local_bind_gives_no_warning(bind: list[str]) -> None:
    assert plan(host(), {"bind": bind})["warnings"] == []


@pytest.mark.parametrize(
    ("bind", "public"),
    [
        pytest.param(["0.0.0.0:8000"], ["0.0.0.0:8000"], id="every IPv4 interface"),
        pytest.param(["[::]:8000"], ["[::]:8000"], id="every IPv6 interface"),
        pytest.param(["10.0.0.5:8000"], ["10.0.0.5:8000"], id="a private address"),
        pytest.param(["web01.example.com:8000"], ["web01.example.com:8000"], id="a host name"),
        pytest.param(["127.0.0.1:8000", "0.0.0.0:8001"], ["0.0.0.0:8001"], id="only the public one of two"),
    ],
)
def test_a_public_bind_is_warned_about(bind: list[str], public: list[str]) -> None:
    assert plan(host(), {"bind": bind})["warnings"] == [PUBLIC_BIND_WARNING.format(a) for a in public]


def test_a_public_bind_set_as_an_override_is_warned_about_too() -> None:
    result = plan(host(), {"overrides": {"bind": ["0.0.0.0:8000"]}, "override_source": "--set"})
    assert result["settings"]["bind"] == ["0.0.0.0:8000"]
    assert result["warnings"] == [PUBLIC_BIND_WARNING.format("0.0.0.0:8000")]

# --- preload: decided in one place, declared unsafe by the user ---------------------------------


@pytest.mark.parametrize(
    ("options", "preload", "reason_part", "warned"),
    [
        ({}, True, "set gunicorn_preload_app: false if the app opens sockets, threads or database", False),
        ({"preload_app": "auto"}, True, "workers fork ready and share its memory pages;", False),
        ({"preload_app": None}, True, "set gunicorn_preload_app: false if", False),
        ({"preload_app": True}, True, "(gunicorn_preload_app: true)", False),
        ({"preload_app": False}, False, "declared unsafe to load before fork (gunicorn_preload_app: false)", True),
        # --set wins over the role variable, either way, and says so.
        ({"preload_app": True, "overrides": {"preload_app": False}, "override_source": "--set"},
         False, "preload_app=False: set by --set", True),
        ({"preload_app": False, "overrides": {"preload_app": True}, "override_source": "--set"},
         True, "preload_app=True: set by --set", False),
    ],
)
def test_preload_unless_declared_unsafe(options: dict[str, Any], preload: bool, reason_part: str, warned: bool) -> None:
    result = plan(host(), options)
    assert result["settings"]["preload_app"] is preload
    assert reason_part in result["reasons"]["preload_app"]
    assert result["reasons"]["preload_app"].startswith(f"preload_app={preload}: ")
    warned_about = [w for w in result["warnings"] if w.startswith("preload_app=False: every worker loads the app")]
    assert bool(warned_about) is warned


@pytest.mark.parametrize("value", ["yes", "false", 1, 0, [], "AUTO"])
def test_preload_choice_must_be_auto_true_or_false(value: object) -> None:
    assert refusal(host(), {"preload_app": value}).message.startswith(
        "sizing option preload_app must be auto, true or false, got"
    )
