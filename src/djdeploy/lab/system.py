"""The Linux parts a lab host is made of: network namespaces, veth links, cgroup v1 limits,
overlay root file systems, systemd-nspawn and nsenter.

Every function here does one thing to the machine and has an inverse that is safe to call
when the thing is already gone, so that clean-up after a half-finished `lab up` is the same
code as `lab down`.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from djdeploy.errors import DjdeployError, ExitCode

CGROUP_V1 = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
NSPAWN_PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Which Debian package provides each command the lab needs, for the error message.
REQUIRED_COMMANDS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
}


def run(argv: list[str], *, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, capturing output; a failure becomes a DjdeployError that shows stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise DjdeployError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s", ExitCode.ERROR) from exc
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise DjdeployError(f"`{' '.join(argv)}` failed (exit {done.returncode}): {detail}", ExitCode.ERROR)
    return done


def require_root_and_tools() -> None:
    if os.geteuid() != 0:
        raise DjdeployError(
            "the lab needs root: it creates network namespaces, cgroups and containers",
            fix="run it as root (for example with sudo)",
        )
    missing = {cmd: pkg for cmd, pkg in REQUIRED_COMMANDS.items() if shutil.which(cmd) is None}
    if missing:
        packages = " ".join(sorted(set(missing.values())))
        raise DjdeployError(
            f"the lab needs {', '.join(sorted(missing))}, which this machine lacks",
            fix=f"apt-get install -y {packages}",
        )


# --- network namespaces and veth links ---------------------------------------------------


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create_netns_with_link(netns: str, veth: str, host_side_cidr: str, container_cidr: str, gateway: str) -> None:
    """A namespace whose `host0` is wired to `veth` on this machine, addressed on both ends."""
    run(["ip", "netns", "add", netns])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "host0", "netns", netns])
    run(["ip", "addr", "add", host_side_cidr, "dev", veth])
    run(["ip", "link", "set", veth, "up"])
    run(["ip", "-n", netns, "addr", "add", container_cidr, "dev", "host0"])
    run(["ip", "-n", netns, "link", "set", "host0", "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    run(["ip", "-n", netns, "route", "add", "default", "via", gateway])


def remove_netns_and_link(netns: str, veth: str) -> None:
    # Deleting the namespace destroys host0 and with it the peer; the explicit delete covers
    # a link whose namespace creation failed half-way.
    if netns_exists(netns):
        run(["ip", "netns", "del", netns], check=False)
    if Path("/sys/class/net", veth).exists():
        run(["ip", "link", "del", veth], check=False)


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


# --- cgroup v1 limits --------------------------------------------------------------------


def cgroup_v1_available() -> bool:
    return (CGROUP_V1 / "cpuset" / "cpuset.cpus").exists() and (CGROUP_V1 / "memory" / "memory.limit_in_bytes").exists()


def machine_cpus() -> list[int]:
    """CPUs this machine can hand out: the root cpuset, which is what containers draw from."""
    text = (CGROUP_V1 / "cpuset" / "cpuset.cpus").read_text().strip() if cgroup_v1_available() else ""
    if not text:
        return sorted(os.sched_getaffinity(0))
    return parse_cpu_list(text)


def parse_cpu_list(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            cpus.extend(range(int(lo), int(hi) + 1))
        elif part:
            cpus.append(int(part))
    return cpus


def create_cgroups(name: str, cpus: list[int] | None, memory_bytes: int | None) -> list[str]:
    """Create the cpuset and memory cgroups a host is confined by; returns their paths."""
    paths: list[str] = []
    if cpus is None and memory_bytes is None:
        return paths
    if not cgroup_v1_available():
        raise DjdeployError(
            "--cpus and --memory need cgroup v1 cpuset and memory hierarchies under /sys/fs/cgroup",
            fix="run the lab on a machine with the cgroup v1 controllers mounted, or leave out --cpus/--memory",
        )
    try:
        if cpus is not None:
            cpuset = CGROUP_V1 / "cpuset" / name
            cpuset.mkdir(exist_ok=True)
            paths.append(str(cpuset))
            # cgroup v1 refuses tasks until both cpus and mems are set.
            (cpuset / "cpuset.mems").write_text((CGROUP_V1 / "cpuset" / "cpuset.mems").read_text())
            (cpuset / "cpuset.cpus").write_text(",".join(str(c) for c in cpus))
        if memory_bytes is not None:
            memory = CGROUP_V1 / "memory" / name
            memory.mkdir(exist_ok=True)
            paths.append(str(memory))
            (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
    except OSError as exc:
        remove_cgroups(paths)
        raise DjdeployError(f"could not create cgroup {name}: {exc}", ExitCode.ERROR) from exc
    return paths


def systemd_hierarchies() -> list[Path]:
    """The hierarchies a booting systemd-nspawn and the systemd inside it put processes in:
    name=systemd and the unified one on a hybrid machine, the one cgroup2 tree on a pure v2 one."""
    if (CGROUP_V1 / "cgroup.controllers").exists():
        return [CGROUP_V1]
    return [CGROUP_V1 / name for name in ("systemd", "unified") if (CGROUP_V1 / name / "cgroup.procs").exists()]


def create_scope_cgroups(name: str) -> list[str]:
    """A cgroup of the host's own in each systemd hierarchy, for systemd-nspawn to start in.

    With --keep-unit, nspawn puts the container below the cgroup it was started in (its
    `payload`, beside its own `supervisor`), and on a hybrid machine it first empties that
    payload tree in the unified hierarchy. Started in one shared cgroup, every lab host's
    systemd managed the same `payload/system.slice/...` cgroups, and each boot swept the
    others' cgroups away. A cgroup per host keeps the hosts apart."""
    paths: list[str] = []
    try:
        for hierarchy in systemd_hierarchies():
            path = hierarchy / name
            path.mkdir(exist_ok=True)
            paths.append(str(path))
    except OSError as exc:
        remove_cgroups(paths)
        raise DjdeployError(f"could not create cgroup {name}: {exc}", ExitCode.ERROR) from exc
    return paths


def join_cgroups(paths: list[str]) -> None:
    """Move the calling process into the cgroups (runs in the child before exec)."""
    for path in paths:
        with open(os.path.join(path, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))


def cgroup_pids(paths: list[str]) -> set[int]:
    """Every process in the cgroups and the cgroups below them."""
    pids: set[int] = set()
    for path in paths:
        for procs in Path(path).rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except (OSError, ValueError):
                continue
    return pids


def remove_cgroups(paths: list[str]) -> None:
    """Remove cgroups bottom-up (systemd inside the host creates its own children)."""
    for path in paths:
        root = Path(path)
        if not root.exists():
            continue
        children = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for directory in [*children, root]:
            for _ in range(50):
                # A process that was still starting when the sweep before read the list.
                for pid in cgroup_pids([str(directory)]):
                    _kill(pid, signal.SIGKILL)
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    time.sleep(0.1)


# --- overlay root file systems ------------------------------------------------------------


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    for d in (upper, work, target):
        d.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(target)])


def is_mounted(target: Path) -> bool:
    wanted = str(target.resolve()) if target.exists() else str(target)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == wanted for line in mounts)


def unmount(target: Path) -> None:
    for _ in range(20):
        if not is_mounted(target):
            return
        run(["umount", str(target)], check=False)
        time.sleep(0.1)
    run(["umount", "--lazy", str(target)], check=False)


# --- processes: systemd-nspawn and nsenter ----------------------------------------------------


def start_container(
    root: Path, machine: str, netns: str, cgroups: list[str], console_log: Path
) -> subprocess.Popen:
    """Boot a real systemd in `root`, detached from this process; returns systemd-nspawn's process."""
    argv = [
        "systemd-nspawn",
        # Not --quiet: its own lines ("Container ... failed with error code N") are what the
        # console log has to say about a boot that ends early.
        # There is no system bus on the machine to register with: without this nspawn fails.
        "--register=no",
        "--keep-unit",
        f"--directory={root}",
        f"--machine={machine}",
        f"--network-namespace-path={NETNS_DIR / netns}",
        "--console=passive",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        # nspawn's own seccomp filter denies pidfd_getfd, which a host outside a container allows
        # root: djdeploy uses it to hand systemd the sockets of a master it did not configure.
        "--system-call-filter=pidfd_getfd",
        "--boot",
    ]
    with open(console_log, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: join_cgroups(cgroups)) if cgroups else None,  # noqa: PLW1509
        )
    return proc


def exit_description(returncode: int) -> str:
    """How a process ended, in words: 'exit status 1', 'killed by SIGKILL'."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def pid_is_nspawn(pid: int | None, machine: str) -> bool:
    """True if pid is still our systemd-nspawn (pids are reused after a reboot of this machine)."""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"systemd-nspawn") and f"--machine={machine}".encode() in argv


def container_init_pid(nspawn_pid: int) -> int | None:
    """The host pid of the container's PID 1: the child of systemd-nspawn."""
    for children in Path(f"/proc/{nspawn_pid}/task").glob("*/children"):
        try:
            pids = children.read_text().split()
        except OSError:
            continue
        if pids:
            return int(pids[0])
    return None


def stop_container(nspawn_pid: int, machine: str, cgroups: list[str], timeout: float = 20) -> None:
    """Power the container off cleanly (nspawn turns SIGTERM into a shutdown), then force it."""
    if pid_is_nspawn(nspawn_pid, machine):
        init_pid = container_init_pid(nspawn_pid)
        _kill(nspawn_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(nspawn_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(nspawn_pid):
            if init_pid:
                # Killing a pid namespace's init kills everything in it.
                _kill(init_pid, signal.SIGKILL)
            _kill(nspawn_pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while pid_alive(nspawn_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
    for pid in cgroup_pids(cgroups):
        _kill(pid, signal.SIGKILL)
    shutil.rmtree(NSPAWN_PROPAGATE_DIR / machine, ignore_errors=True)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def nsenter_argv(init_pid: int, command: list[str]) -> list[str]:
    """Run `command` as root inside the container, seeing its root, network and processes."""
    return [
        "nsenter",
        f"--target={init_pid}",
        "--mount",
        "--uts",
        "--ipc",
        "--net",
        "--pid",
        "--root",
        "--wd",
        "--",
        "/usr/bin/env",
        "-i",
        f"PATH={CONTAINER_PATH}",
        "HOME=/root",
        "LANG=C.UTF-8",
        f"TERM={os.environ.get('TERM', 'dumb')}",
        *command,
    ]
