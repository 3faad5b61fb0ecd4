"""`djdeploy lab`: disposable real systemd hosts on one machine.

A lab is a named set of hosts `web01` … `webNN`. Each host boots the cached image (see
image.py) under systemd-nspawn, on its own overlay root, in its own network namespace with
its own address, optionally confined by cgroups to a size. The lab's state lives in
`$DJDEPLOY_HOME/labs/NAME/` (default /var/lib/djdeploy): state.json, the SSH key the lab owns,
the Ansible inventory, and each host's overlay and console log.

State is written before each thing is created, so `down` can always find and remove what an
interrupted `up` left behind.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from djdeploy.errors import DjdeployError, ExitCode
from djdeploy.lab import image, system

DEFAULT_LAB = "lab"
MAX_HOSTS = 60  # each host takes a /30 of the lab's /24
MIN_MEMORY = 384 * 1024**2  # Debian, sshd, nginx and a gunicorn with one worker
MAX_IMPORT_DELAY = 120.0
BOOT_TIMEOUT = 120.0
BOOT_ATTEMPTS = 2
BOOT_RETRY_DELAY = 3.0
LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
SUBNET_PREFIX = "10.77"  # private addresses that exist only on the lab's veth links
SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"

Log = Callable[[str], None]


def djdeploy_home() -> Path:
    return Path(os.environ.get("DJDEPLOY_HOME", "/var/lib/djdeploy"))


def default_lab_name() -> str:
    return os.environ.get("DJDEPLOY_LAB", DEFAULT_LAB)


def lab_inventory_path(name: str | None = None) -> Path:
    return djdeploy_home() / "labs" / (name or default_lab_name()) / "inventory.yml"


def parse_size(text: str) -> int:
    """'1G', '512M', '1.5GiB', '1073741824' → bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise DjdeployError(f"--memory {text!r} is not a size", fix="write it like 1G, 512M or 1536M")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


def host_names(count: int) -> list[str]:
    return [f"web{i:02d}" for i in range(1, count + 1)]


class BootExited(DjdeployError):
    """systemd-nspawn ended before the host served."""


class Lab:
    def __init__(self, name: str | None = None, log: Log | None = None):
        self.name = name or default_lab_name()
        if not LAB_NAME.match(self.name):
            raise DjdeployError(
                f"lab name {self.name!r} is not allowed",
                fix="use 1-20 lower-case letters, digits or '-', starting with a letter",
            )
        self.home = djdeploy_home()
        self.dir = self.home / "labs" / self.name
        self.log = log or (lambda message: None)
        # systemd-nspawn of each host this command started, to tell how one that ended ended.
        self._started: dict[str, subprocess.Popen] = {}

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def inventory_path(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def key_path(self) -> Path:
        return self.dir / "id_ed25519"

    # --- state -------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {"name": self.name, "slot": None, "hosts": {}}
        return json.loads(self.state_path.read_text())

    def _save(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DjdeployError(
                    f"another djdeploy command is changing lab {self.name!r} right now",
                    fix="wait for it to finish",
                ) from None
            yield

    @contextmanager
    def _slots_locked(self) -> Iterator[None]:
        labs = self.home / "labs"
        labs.mkdir(parents=True, exist_ok=True)
        with open(labs / ".slots.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # --- up ------------------------------------------------------------------------------

    def up(
        self,
        count: int = 1,
        cpus: int | None = None,
        memory: str | None = None,
        import_delay: float = 0.0,
    ) -> list[dict[str, Any]]:
        memory_bytes = parse_size(memory) if memory is not None else None
        self._check_request(count, cpus, memory_bytes, import_delay)
        system.require_root_and_tools()
        with self._locked():
            state = self.load()
            names = host_names(count)
            self._refuse_running(state, names)
            self._forget_dead(state, names)
            rootfs = image.ensure_image(self.home / "images", self.log)
            self._ensure_key()
            self._save(state)
            if state["slot"] is None:
                # Slots are shared by every lab: two labs coming up at once must not both
                # choose the one neither has saved yet.
                with self._slots_locked():
                    state["slot"] = self._free_slot()
                    self._save(state)
            for attempt in range(1, BOOT_ATTEMPTS + 1):
                created: list[str] = []
                try:
                    for name in names:
                        created.append(name)
                        self._create_host(state, name, rootfs, cpus, memory_bytes, import_delay)
                    self._wait_until_serving(state, names)
                    break
                except BaseException as exc:
                    self.log("bringing the new hosts down again after the failure")
                    for name in created:
                        self._destroy_host(state, name)
                    self._write_inventory(state)
                    # Seen twice, seconds after another lab's hosts went down, while every host
                    # still booted in one shared cgroup (see system.create_scope_cgroups): nspawn
                    # ended early without a word (--quiet hid even its exit line). Hosts now have
                    # cgroups of their own; a boot that still ends early is tried once more, and
                    # the message says how nspawn ended and what the console showed.
                    if not isinstance(exc, BootExited) or attempt == BOOT_ATTEMPTS:
                        raise
                    self.log(f"{exc.message.splitlines()[0]}; trying once more")
                    time.sleep(BOOT_RETRY_DELAY)
            self._write_inventory(state)
            return [self._describe(name, state["hosts"][name]) for name in names]

    def _check_request(self, count: int, cpus: int | None, memory_bytes: int | None, import_delay: float) -> None:
        if not 1 <= count <= MAX_HOSTS:
            raise DjdeployError(f"--hosts {count} is out of range", fix=f"ask for 1 to {MAX_HOSTS} hosts")
        available_cpus = len(system.machine_cpus())
        if cpus is not None and not 1 <= cpus <= available_cpus:
            raise DjdeployError(
                f"--cpus {cpus}: this machine can give a host 1 to {available_cpus} CPUs",
                fix=f"use --cpus between 1 and {available_cpus}",
            )
        if memory_bytes is not None:
            total = _meminfo("MemTotal")
            if memory_bytes < MIN_MEMORY:
                raise DjdeployError(
                    f"--memory {memory_bytes // 1024**2}M is too small for Debian, nginx and gunicorn",
                    fix=f"use at least {MIN_MEMORY // 1024**2}M",
                )
            if memory_bytes > total:
                raise DjdeployError(
                    f"--memory {memory_bytes / 1024**3:.1f}G is more than this machine has "
                    f"({total / 1024**3:.1f}G)",
                    fix="ask for less memory",
                )
        if not (0 <= import_delay <= MAX_IMPORT_DELAY) or math.isnan(import_delay):
            raise DjdeployError(
                f"--import-delay {import_delay} is out of range",
                fix=f"use 0 to {MAX_IMPORT_DELAY:.0f} seconds",
            )

    def _refuse_running(self, state: dict[str, Any], names: list[str]) -> None:
        running = [n for n in names if n in state["hosts"] and self._is_running(state["hosts"][n])]
        if running:
            raise DjdeployError(
                f"{', '.join(running)} already up in lab {self.name!r}; nothing was changed",
                fix=f"run `djdeploy lab down {' '.join(running)}` first, or use another lab with --lab",
            )

    def _forget_dead(self, state: dict[str, Any], names: list[str]) -> None:
        for name in names:
            if name in state["hosts"]:
                self.log(f"{name}: removing what is left of a host that is no longer running")
                self._destroy_host(state, name)

    def _free_slot(self) -> int:
        labs = self.home / "labs"
        used = set()
        for path in labs.glob("*/state.json"):
            if path.parent != self.dir:
                used.add(json.loads(path.read_text()).get("slot"))
        for slot in range(1, 251):
            if slot not in used and not system.netns_exists(f"djd{slot}-web01"):
                return slot
        raise DjdeployError("every lab slot (250) is taken", fix="bring old labs down with `djdeploy lab down`")

    def _ensure_key(self) -> None:
        if not self.key_path.exists():
            system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"djdeploy-lab-{self.name}",
                        "-f", str(self.key_path)])

    def _create_host(
        self,
        state: dict[str, Any],
        name: str,
        rootfs: Path,
        cpus: int | None,
        memory_bytes: int | None,
        import_delay: float,
    ) -> None:
        slot, index = state["slot"], int(name[3:])
        host_dir = self.dir / "hosts" / name
        host = {
            "index": index,
            "address": f"{SUBNET_PREFIX}.{slot}.{4 * index + 2}",
            "gateway": f"{SUBNET_PREFIX}.{slot}.{4 * index + 1}",
            "netns": f"djd{slot}-{name}",
            "veth": f"djd{slot}h{index}",
            "machine": f"djd{slot}-{name}",
            "cgroup": f"djdeploy-{self.name}-{name}",
            "cgroups": [],  # the size limits: cpuset, memory
            "scope_cgroups": [],  # where systemd-nspawn and the host's own systemd live
            "dir": str(host_dir),
            "root": str(host_dir / "root"),
            "image": str(rootfs),
            "cpus": cpus,
            "cpuset": _pick_cpus(system.machine_cpus(), index, cpus) if cpus else None,
            "memory_bytes": memory_bytes,
            "import_delay": import_delay,
            "pid": None,
            "created": time.time(),
        }
        for taken in (host["netns"], host["veth"]):
            if system.netns_exists(taken) or system.link_exists(taken):
                raise DjdeployError(
                    f"{name}: network name {taken} already exists on this machine, outside lab {self.name!r}'s "
                    "records; nothing was changed",
                    fix=f"remove it if it is a leftover (ip netns del {taken} / ip link del {taken})",
                )
        state["hosts"][name] = host
        self._save(state)
        self.log(f"{name}: starting at {host['address']}")
        root = Path(host["root"])
        system.mount_overlay(rootfs, host_dir / "upper", host_dir / "work", root)
        self._write_host_files(root, name, import_delay)
        system.create_netns_with_link(
            host["netns"], host["veth"], f"{host['gateway']}/30", f"{host['address']}/30", host["gateway"]
        )
        host["cgroups"] = system.create_cgroups(host["cgroup"], host["cpuset"], memory_bytes)
        self._save(state)
        host["scope_cgroups"] = system.create_scope_cgroups(host["cgroup"])
        self._save(state)
        started = system.start_container(root, host["machine"], host["netns"],
                                         host["cgroups"] + host["scope_cgroups"], host_dir / "console.log")
        self._started[name] = started
        host["pid"] = started.pid
        self._save(state)

    def _write_host_files(self, root: Path, name: str, import_delay: float) -> None:
        (root / "etc/hostname").write_text(f"{name}\n")
        (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost\n")
        keys = root / "root/.ssh/authorized_keys"
        keys.write_text(self.key_path.with_suffix(".pub").read_text())
        keys.chmod(0o600)
        gid = _group_id(root, image.APP_USER)
        env_file = root / "etc/demo/env"
        # The app's secrets reach gunicorn only through the unit's EnvironmentFile.
        env_file.write_text(
            f"DJANGO_SECRET_KEY={secrets.token_urlsafe(40)}\n"
            f"DEMO_DB_PATH={image.APP_DATA}/db.sqlite3\n"
            f"DEMO_IMPORT_DELAY={import_delay:g}\n"
        )
        os.chown(env_file, 0, gid)
        env_file.chmod(0o640)

    def _wait_until_serving(self, state: dict[str, Any], names: list[str]) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT + max(state["hosts"][n]["import_delay"] for n in names)
        waiting = list(names)
        while waiting:
            for name in list(waiting):
                host = state["hosts"][name]
                if not system.pid_is_nspawn(host["pid"], host["machine"]):
                    started = self._started.get(name)
                    ended = started.poll() if started else None
                    how = f" ({system.exit_description(ended)})" if ended is not None else ""
                    raise BootExited(
                        f"{name}: systemd-nspawn exited while booting{how}:\n{self._console_tail(host)}",
                        ExitCode.ERROR,
                    )
                if self._serving(host):
                    self.log(f"{name}: serving http://{host['address']}/")
                    waiting.remove(name)
            if waiting and time.monotonic() > deadline:
                name = waiting[0]
                raise DjdeployError(
                    f"{name} did not serve /healthz through nginx within {BOOT_TIMEOUT:.0f} s; "
                    f"{self._boot_diagnosis(state['hosts'][name])}",
                    ExitCode.ERROR,
                )
            time.sleep(0.3)

    def _serving(self, host: dict[str, Any]) -> bool:
        return _port_open(host["address"], 22) and http_status(f"http://{host['address']}/healthz") == 200

    def _boot_diagnosis(self, host: dict[str, Any]) -> str:
        init = system.container_init_pid(host["pid"])
        if not init:
            return "its init never started:\n" + self._console_tail(host)
        done = subprocess.run(
            system.nsenter_argv(init, ["sh", "-c", "systemctl is-system-running; systemctl --failed --no-legend; "
                                       "journalctl -u gunicorn -n 20 --no-pager"]),
            capture_output=True, text=True, timeout=30,
        )
        return "inside it:\n" + (done.stdout + done.stderr).strip()

    def _console_tail(self, host: dict[str, Any]) -> str:
        log = Path(host["dir"]) / "console.log"
        return log.read_text(errors="replace")[-1500:] if log.exists() else "(no console log)"

    # --- down ----------------------------------------------------------------------------

    def down(self, names: list[str] | None = None) -> list[str]:
        """Stop and remove the named hosts, or all of the lab; returns the names removed."""
        if not self.dir.exists():
            if names:
                raise DjdeployError(f"lab {self.name!r} has no hosts; nothing to bring down")
            return []
        system.require_root_and_tools()
        with self._locked():
            state = self.load()
            unknown = [n for n in names or [] if n not in state["hosts"]]
            if unknown:
                raise DjdeployError(
                    f"{', '.join(unknown)}: no such host in lab {self.name!r}; nothing was changed",
                    fix=f"hosts in this lab: {', '.join(sorted(state['hosts'])) or 'none'}",
                )
            targets = names or sorted(state["hosts"])
            for name in targets:
                self.log(f"{name}: stopping and removing")
                self._destroy_host(state, name)
            if state["hosts"]:
                self._write_inventory(state)
                return targets
        shutil.rmtree(self.dir)
        return targets

    def _destroy_host(self, state: dict[str, Any], name: str) -> None:
        host = state["hosts"][name]
        cgroups = (host.get("cgroups") or []) + (host.get("scope_cgroups") or [])
        if host.get("pid"):
            system.stop_container(host["pid"], host["machine"], cgroups)
        system.unmount(Path(host["root"]))
        system.remove_netns_and_link(host["netns"], host["veth"])
        system.remove_cgroups(cgroups)
        shutil.rmtree(host["dir"], ignore_errors=True)
        del state["hosts"][name]
        self._save(state)

    # --- ls and exec ---------------------------------------------------------------------

    def hosts(self) -> list[dict[str, Any]]:
        state = self.load()
        return [self._describe(name, host) for name, host in sorted(state["hosts"].items())]

    def _describe(self, name: str, host: dict[str, Any]) -> dict[str, Any]:
        return {
            "lab": self.name,
            "host": name,
            "address": host["address"],
            "url": f"http://{host['address']}/",
            "ssh": f"ssh -i {self.key_path} {SSH_OPTIONS} root@{host['address']}",
            "cpus": host["cpus"],
            "memory_bytes": host["memory_bytes"],
            "import_delay": host["import_delay"],
            "state": "running" if self._is_running(host) else "stopped",
            "inventory": str(self.inventory_path),
        }

    def _is_running(self, host: dict[str, Any]) -> bool:
        return system.pid_is_nspawn(host.get("pid"), host["machine"])

    def exec(self, name: str, command: list[str]) -> int:
        """Run a command as root inside a host; its exit code is returned."""
        state = self.load()
        host = state["hosts"].get(name)
        if host is None:
            raise DjdeployError(
                f"{name}: no such host in lab {self.name!r}",
                fix=f"hosts in this lab: {', '.join(sorted(state['hosts'])) or 'none (run `djdeploy lab up`)'}",
            )
        if not command:
            raise DjdeployError("lab exec needs a command", fix=f"djdeploy lab exec {name} -- systemctl status gunicorn")
        init = system.container_init_pid(host["pid"]) if self._is_running(host) else None
        if init is None:
            raise DjdeployError(f"{name} is not running", fix=f"djdeploy lab down {name} && djdeploy lab up")
        # nsenter does not join cgroups: join the host's, so `nproc` and limits read as inside.
        cgroups = host.get("cgroups") or []
        preexec = (lambda: system.join_cgroups(cgroups)) if cgroups else None
        return subprocess.run(system.nsenter_argv(init, command), preexec_fn=preexec).returncode  # noqa: PLW1509

    # --- inventory -----------------------------------------------------------------------

    def _write_inventory(self, state: dict[str, Any]) -> None:
        if not state["hosts"]:
            self.inventory_path.unlink(missing_ok=True)
            return
        inventory = {
            "all": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.key_path),
                    "ansible_ssh_common_args": SSH_OPTIONS,
                    "ansible_python_interpreter": "/usr/bin/python3",
                },
                "children": {
                    "lab": {
                        # The demo app keeps its SQLite database there; the unit's sandbox
                        # leaves every other path read-only.
                        "vars": {"gunicorn_read_write_paths": [image.APP_DATA]},
                        "hosts": {
                            name: {"ansible_host": host["address"]}
                            for name, host in sorted(state["hosts"].items())
                        }
                    }
                },
            }
        }
        header = f"# Written by `djdeploy lab up` for lab {self.name!r}; rewritten on every up and down.\n"
        self.inventory_path.write_text(header + yaml.safe_dump(inventory, sort_keys=False))


def _pick_cpus(available: list[int], index: int, count: int) -> list[int]:
    """Spread hosts over the machine's CPUs so that two 1-CPU hosts do not share one."""
    start = ((index - 1) * count) % len(available)
    return sorted(available[(start + i) % len(available)] for i in range(count))


def _meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise DjdeployError(f"/proc/meminfo has no {field}", ExitCode.ERROR)


def _group_id(root: Path, group: str) -> int:
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == group:
            return int(fields[2])
    raise DjdeployError(f"the lab image has no group {group!r}", ExitCode.ERROR)


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 3) -> int | None:
    """Status of a GET without proxies (lab addresses are only reachable directly)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None
