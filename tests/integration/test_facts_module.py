"""The gunicorn_facts Ansible module, run for real against a lab host confined to 1 CPU and 1 GiB.

The lab tests bring up their own lab ("facts-test") once for this file and always bring it
down. A few tests at the end call the module's pure helpers directly, for what a lab host
cannot show (cgroup v2, CPU quotas).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from djdeploy.sizing import FACT_NAMES

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "roles" / "gunicorn" / "library"
BIN = Path(sys.executable).parent
LAB = "facts-test"
MIB = 1024 * 1024
GIB = 1024 * MIB


def djdeploy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "djdeploy"), *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "DJDEPLOY_LAB": LAB})


def on_host(script: str) -> str:
    """Run a shell script as root inside web01 and return what it printed."""
    done = djdeploy("lab", "exec", "web01", "--", "sh", "-c", script)
    assert done.returncode == 0, f"{script!r} exited {done.returncode}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def inventory():
    try:
        djdeploy("lab", "down")  # a lab left by an interrupted run would refuse `up`
        done = djdeploy("lab", "up", "--hosts", "1", "--cpus", "1", "--memory", "1G", "--json")
        assert done.returncode == 0, f"lab up failed:\n{done.stderr}"
        yield json.loads(done.stdout)["hosts"][0]["inventory"]
    finally:
        djdeploy("lab", "down")


class Run:
    """One module run: its parsed result and everything ansible printed."""

    def __init__(self, done: subprocess.CompletedProcess):
        self.output = done.stdout + done.stderr
        # The ad-hoc (minimal) callback prints "web01 | SUCCESS => {json}".
        _, sep, result = done.stdout.partition(" => ")
        assert sep, f"no result from ansible (exit {done.returncode}):\n{self.output}"
        self.result = json.loads(result)
        self.failed = done.returncode != 0

    @property
    def facts(self) -> dict:
        assert not self.failed, self.result
        return self.result["gunicorn_facts"]


def run_module(inventory: str, *ansible_args: str, **module_args) -> Run:
    command = [str(BIN / "ansible"), "-i", inventory, "web01", "-M", str(LIBRARY), "-m", "gunicorn_facts"]
    if module_args:
        command += ["-a", json.dumps(module_args)]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    return Run(subprocess.run([*command, *ansible_args], capture_output=True, text=True, timeout=300, env=env))


@pytest.mark.lab
def test_running_service_is_measured_within_the_hosts_limits(inventory):
    run = run_module(inventory)
    facts = run.facts
    sizing, service = facts["sizing"], facts["service"]

    assert set(sizing) == set(FACT_NAMES)  # the sizing function refuses anything else
    assert sizing["cpus_affinity"] == 1
    assert sizing["cgroup_memory_limit_bytes"] == GIB
    assert 0 < sizing["cgroup_memory_usage_bytes"] < GIB
    assert 0 <= sizing["cgroup_memory_inactive_file_bytes"] < sizing["cgroup_memory_usage_bytes"]
    assert sizing["cpu_quota"] is None
    assert sizing["cpus_online"] >= 1
    assert sizing["mem_total_bytes"] >= sizing["mem_available_bytes"] > 0
    assert sizing["workers_measured"] == 1
    assert 0 < sizing["worker_anonymous_bytes"] < 200 * MIB

    assert isinstance(service["main_pid"], int)
    assert service["master"]["pid"] == service["main_pid"]
    assert len(service["workers"]) == 1  # gunicorn's default: one sync worker
    worker = service["workers"][0]
    assert worker["anonymous_bytes"] == sizing["worker_anonymous_bytes"]
    assert worker["rss_bytes"] >= worker["pss_bytes"] and worker["rss_bytes"] >= worker["anonymous_bytes"]
    assert worker["started_at_epoch"] >= service["master"]["started_at_epoch"]
    assert sizing["gunicorn_pss_total_bytes"] == worker["pss_bytes"] + service["master"]["pss_bytes"]

    assert (service["active_state"], service["sub_state"]) == ("active", "running")
    assert (service["user"], service["group"]) == ("demo", "demo")
    assert service["working_directory"] == "/srv/demo/app"
    assert "/etc/demo/env" in service["environment_files"]
    assert service["exec_start"] == [
        "/srv/demo/venv/bin/gunicorn", "--bind", "127.0.0.1:8000", "demoproject.wsgi:application"
    ]
    assert service["fragment_path"] == "/etc/systemd/system/gunicorn.service"
    assert service["unit_sha256"] == on_host("sha256sum /etc/systemd/system/gunicorn.service").split()[0]
    assert service["gunicorn_version"] == "27.0.1"
    assert service["venv_python"] == "/srv/demo/venv/bin/python3"
    # The lab's gunicorn cannot create its default socket dir (/srv/demo is root's): no live settings.
    assert service["control_socket"] is None and service["live_settings"] is None
    assert any("control socket" in warning for warning in facts["warnings"])
    assert service["config_path"] is None and service["config_settings"] is None

    secret = on_host(". /etc/demo/env && printf %s \"$DJANGO_SECRET_KEY\"")
    assert len(secret) >= 16
    assert secret not in run.output


@pytest.mark.lab
def test_stopped_service_has_no_measurements(inventory):
    on_host("systemctl stop gunicorn")
    try:
        facts = run_module(inventory, "--check").facts  # check mode: the module only reads
    finally:
        on_host("systemctl start gunicorn")
    sizing, service = facts["sizing"], facts["service"]

    assert service["main_pid"] is None and service["master"] is None and service["workers"] == []
    assert service["active_state"] == "inactive"
    assert sizing["worker_anonymous_bytes"] is None and sizing["workers_measured"] == 0
    assert sizing["gunicorn_pss_total_bytes"] == 0
    # The limits still hold for the service that is not running.
    assert sizing["cpus_affinity"] == 1
    assert sizing["cgroup_memory_limit_bytes"] == GIB
    assert service["live_settings"] is None and facts["warnings"] == []


@pytest.mark.lab
def test_page_cache_is_reported_apart_from_the_memory_in_use(inventory):
    before = run_module(inventory).facts["sizing"]
    # Written, not read back: the kernel keeps the pages as inactive file cache, charged to the host.
    on_host("dd if=/dev/zero of=/var/tmp/cache bs=1M count=200 status=none && sync")
    try:
        cached = run_module(inventory).facts["sizing"]
    finally:
        on_host("rm -f /var/tmp/cache")
    grown = cached["cgroup_memory_usage_bytes"] - before["cgroup_memory_usage_bytes"]
    cache = cached["cgroup_memory_inactive_file_bytes"] - before["cgroup_memory_inactive_file_bytes"]
    assert grown >= 150 * MIB, (before, cached)  # the usage counts the cache ...
    assert cache >= 150 * MIB, (before, cached)  # ... and so does the inactive file figure
    # Usage less the cache the kernel reclaims first (what sizing counts) barely moved.
    working_set = {name: facts["cgroup_memory_usage_bytes"] - facts["cgroup_memory_inactive_file_bytes"]
                   for name, facts in (("before", before), ("cached", cached))}
    assert abs(working_set["cached"] - working_set["before"]) < 50 * MIB, (before, cached)
    assert working_set["cached"] < cached["cgroup_memory_usage_bytes"] - 150 * MIB


@pytest.mark.lab
def test_config_file_and_control_socket_are_read(inventory):
    config = "\n".join([
        "import multiprocessing",
        "workers = 3",
        "workers = multiprocessing.cpu_count() * 2 + 1",  # the last assignment is not a literal
        "threads = 2",
        "timeout = 30",
        "timeout += 5",
        'bind = ["127.0.0.1:8000"]',
        "preload_app = True",
        'raw_env = {"A": (1, 2)}',
        "",
    ])
    on_host(
        # Give gunicorn the directory its default control socket ($HOME/.gunicorn) needs.
        "install -d -o demo -g demo -m 700 /srv/demo/.gunicorn && mkdir -p /etc/gunicorn && "
        f"cat > /etc/gunicorn/gunicorn.conf.py <<'EOF'\n{config}EOF\n"
        "systemctl restart gunicorn"
    )
    try:
        facts = run_module(inventory, config_path="/etc/gunicorn/gunicorn.conf.py").facts
    finally:
        on_host("rm -rf /srv/demo/.gunicorn /etc/gunicorn && systemctl restart gunicorn")
    service = facts["service"]

    assert service["config_path"] == "/etc/gunicorn/gunicorn.conf.py"
    assert len(service["config_sha256"]) == 64
    assert service["config_settings"] == {
        "threads": 2, "bind": ["127.0.0.1:8000"], "preload_app": True, "raw_env": {"A": [1, 2]},
    }
    assert service["control_socket"] == "/srv/demo/.gunicorn/gunicorn.ctl"
    # The running gunicorn was not started with that file, so it runs its defaults.
    live = service["live_settings"]
    assert live["workers"] == 1 and live["worker_class"] == "sync" and live["bind"] == ["127.0.0.1:8000"]
    assert live["timeout"] == 30 and live["preload_app"] is False
    assert [w["pid"] for w in service["workers"]] != []
    assert facts["warnings"] == []


@pytest.mark.lab
def test_missing_unit_fails_naming_it(inventory):
    run = run_module(inventory, service="nope.service")
    assert run.failed
    assert "nope.service" in run.result["msg"]


# --- pure helpers: what the lab hosts (cgroup v1) cannot show ------------------------------------


@pytest.fixture(scope="module")
def module():
    spec = importlib.util.spec_from_file_location("gunicorn_facts", LIBRARY / "gunicorn_facts.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_takes_the_tightest_limit_of_the_service_and_its_ancestors(module, tmp_path):
    root = tmp_path / "cgroup"
    write(root / "memory.max", "max\n")
    write(root / "system.slice" / "memory.max", "2147483648\n")
    write(root / "system.slice" / "memory.current", "500\n")
    write(root / "system.slice" / "memory.stat", "anon 300\nfile 200\nactive_file 80\ninactive_file 120\n")
    write(root / "system.slice" / "cpu.max", "150000 100000\n")
    write(root / "system.slice" / "gunicorn.service" / "memory.max", "max\n")
    write(root / "system.slice" / "gunicorn.service" / "cpu.max", "max 100000\n")
    mountinfo = f"30 23 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    mounts = module.cgroup_mounts(mountinfo)
    running = module.process_cgroup_paths("0::/system.slice/gunicorn.service\n")

    for master_paths in (running, None):  # running, and stopped (systemd's ControlGroup path)
        memory = module.service_cgroup_dirs("memory", mounts, master_paths, "/system.slice/gunicorn.service")
        cpu = module.service_cgroup_dirs("cpu", mounts, master_paths, "/system.slice/gunicorn.service")
        assert module.smallest_memory_limit(memory) == (2 * GIB, 500, 120)
        assert module.smallest_cpu_quota(cpu) == 1.5


def test_cgroup_v1_subtree_mount_is_read_relative_to_its_root(module, tmp_path):
    # As in a container: the machine's /djdeploy-x-web01 memory cgroup is the mount's root.
    root = tmp_path / "memory"
    write(root / "memory.limit_in_bytes", f"{GIB}\n")
    write(root / "memory.usage_in_bytes", "700\n")
    # v1's own counters leave out the child cgroups; the usage counts them, so do the total_ ones.
    write(root / "memory.stat", "cache 50\ninactive_file 40\ntotal_cache 450\ntotal_inactive_file 400\n")
    write(root / "system.slice" / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    mountinfo = f"52 47 0:32 /djdeploy-x-web01 {root} ro,nosuid - cgroup cgroup rw,memory\n"
    mounts = module.cgroup_mounts(mountinfo)
    paths = module.process_cgroup_paths("4:memory:/djdeploy-x-web01/system.slice\n1:cpu,cpuacct:/\n")

    dirs = module.service_cgroup_dirs("memory", mounts, paths, "/system.slice/gunicorn.service")
    assert [d for _, d in dirs] == [str(root / "system.slice"), str(root)]
    assert module.smallest_memory_limit(dirs) == (GIB, 700, 400)


@pytest.mark.parametrize(
    ("version", "files", "expected"),
    [
        (1, {"memory.limit_in_bytes": "1000\n", "memory.usage_in_bytes": "900\n",
             "memory.stat": "inactive_file 1\ntotal_inactive_file 600\n"}, (1000, 900, 600)),
        (2, {"memory.max": "1000\n", "memory.current": "900\n", "memory.stat": "inactive_file 600\n"},
         (1000, 900, 600)),
        # No memory.stat to read: the usage is known, the cache it holds is not.
        (1, {"memory.limit_in_bytes": "1000\n", "memory.usage_in_bytes": "900\n"}, (1000, 900, None)),
        (2, {"memory.max": "1000\n", "memory.current": "900\n", "memory.stat": "anon 5\n"}, (1000, 900, None)),
        # No limit: nothing to measure against.
        (1, {"memory.limit_in_bytes": "9223372036854771712\n", "memory.usage_in_bytes": "900\n",
             "memory.stat": "total_inactive_file 600\n"}, (None, None, None)),
        (2, {"memory.max": "max\n", "memory.current": "900\n", "memory.stat": "inactive_file 600\n"},
         (None, None, None)),
        (2, {}, (None, None, None)),  # the memory controller is not enabled here
    ],
    ids=["v1 total_inactive_file", "v2 inactive_file", "v1 no memory.stat", "v2 no inactive_file",
         "v1 unlimited", "v2 max", "v2 no controller"],
)
def test_a_cgroup_limit_comes_with_its_usage_and_the_cache_it_may_reclaim(module, tmp_path, version, files, expected):
    for name, text in files.items():
        write(tmp_path / name, text)
    assert module.memory_limit_and_usage(str(tmp_path), version) == expected


def test_config_literals_are_read_without_running_the_file(module):
    source = "\n".join([
        "import os",
        "os.system('touch /tmp/should-not-exist')",
        "workers = 4",
        "bind = ('unix:/run/g.sock',)",
        "timeout = int(os.environ['T'])",
        "keepalive = 5",
        "keepalive += 1",
        "max_requests: int = 1000",
        "blob = b'x'",
        "huge = 1e999",
        "if True:\n    threads = 8",
    ])
    assert module.literal_settings(source) == {"workers": 4, "bind": ["unix:/run/g.sock"], "max_requests": 1000}


def test_small_parsers(module):
    assert module.count_cpu_list("0-3,8,10-11") == 7
    assert module.count_cpu_list("0") == 1
    assert module.unit_object_path("gunicorn.service") == "/org/freedesktop/systemd1/unit/gunicorn_2eservice"
    assert module.unit_object_path("1a-b@x.service").endswith("/_31a_2db_40x_2eservice")
    assert module.unit_cgroup_path("system.slice", "g.service") == "/system.slice/g.service"
    assert module.unit_cgroup_path("app-web.slice", "g.service") == "/app.slice/app-web.slice/g.service"
    assert module.environment_file_paths(["/etc/demo/env (ignore_errors=no)", "/etc/x y (ignore_errors=yes)"]) == [
        "/etc/demo/env", "/etc/x y"
    ]
    assert module.worker_class_setting("<class 'gunicorn.workers.gthread.ThreadWorker'>") == "gthread"
    assert module.worker_class_setting("<class 'uvicorn.workers.UvicornWorker'>") == "uvicorn.workers.UvicornWorker"
    assert module.option_value(["g", "-c", "a.py", "--config=b.py"], "-c", "--config") == "b.py"
    # The fallback when D-Bus cannot be asked: systemctl's text (systemd 252 does not quote argv).
    shown = ("{ path=/srv/demo/venv/bin/gunicorn ; argv[]=/srv/demo/venv/bin/gunicorn --bind 127.0.0.1:8000 app:wsgi"
             " ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }")
    assert module.exec_start_from_text(shown) == (
        "/srv/demo/venv/bin/gunicorn", ["/srv/demo/venv/bin/gunicorn", "--bind", "127.0.0.1:8000", "app:wsgi"]
    )
