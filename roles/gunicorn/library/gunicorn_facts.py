#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: djdeploy contributors
# MIT License (see pyproject.toml)

DOCUMENTATION = r"""
---
module: gunicorn_facts
short_description: Read the facts djdeploy sizes Gunicorn from
description:
  - Reads, on the host, the CPU and memory Gunicorn can use as its systemd service sees them
    (CPU affinity, cgroup v1 or v2 CPU quota, memory limit and usage with the page cache it may
    reclaim), the memory of its running master and workers, and what the systemd unit, the
    Gunicorn config file and Gunicorn's live control socket say.
  - Only reads; it never changes anything, so it behaves the same in check mode.
  - The contents of the unit's EnvironmentFile= files are never read, because they hold secrets;
    only their paths, owners and modes (from stat) are returned. The Gunicorn config file is parsed
    for its literal values; it is run only by C(settings_reader), as gunicorn runs it.
  - The facts are returned as the top-level C(gunicorn_facts) key, not as C(ansible_facts).
  - Only a unit that systemd does not know fails the module. Anything optional that cannot be
    read becomes null and a message in C(gunicorn_facts.warnings), also shown as an Ansible warning.
version_added: "0.1.0"
author:
  - djdeploy contributors
options:
  service:
    description:
      - The systemd unit that runs Gunicorn.
    type: str
    default: gunicorn.service
  config_path:
    description:
      - The Gunicorn config file djdeploy manages, for example C(/etc/gunicorn/gunicorn.conf.py).
      - When omitted, the C(-c)/C(--config) path of ExecStart= is used, else C(gunicorn.conf.py)
        in the unit's WorkingDirectory= (where Gunicorn itself looks).
    type: path
  control_socket:
    description:
      - Path of Gunicorn's control socket. Tried before the paths named by ExecStart= and the
        config file and Gunicorn's defaults (C($XDG_RUNTIME_DIR/gunicorn.ctl),
        C($HOME/.gunicorn/gunicorn.ctl) of the service user).
    type: path
  history_dir:
    description:
      - Where djdeploy keeps the history of configs and units; only its permissions are read.
    type: path
    default: /var/lib/djdeploy/history
  settings_reader:
    description:
      - Source of a Python program that reads every setting the service's gunicorn command line
        sets by gunicorn's own rules (the role's C(files/read_settings.py)). When given, it runs
        with the service's Python as a transient unit with the service's User=, Group=,
        WorkingDirectory=, Environment= and EnvironmentFile= (the config file is run, as gunicorn
        runs it), and its JSON answer is returned as C(service.settings_read).
    type: str
  discover:
    description:
      - When C(service) is not there, use the one loaded service whose ExecStart= runs gunicorn;
        none or several fail the module, naming them. C(service.unit_id) says which was used.
    type: bool
    default: false
  overrides:
    description:
      - Settings to check with the host gunicorn's own validators (only with C(settings_reader)).
    type: dict
    default: {}
notes:
  - Needs root on the host (C(become)) to read other users' C(/proc/PID/smaps_rollup) and to
    connect to the control socket, which Gunicorn creates with mode 0600.
  - Talks to the control socket directly with Gunicorn's protocol (a 4-byte big-endian length,
    then JSON), so nothing from the application's virtualenv is imported or run.
  - Supports check mode.
requirements:
  - systemd (systemctl, busctl)
  - Linux /proc
"""

EXAMPLES = r"""
- name: Read the facts Gunicorn is sized from
  gunicorn_facts:
    service: gunicorn.service
    config_path: /etc/gunicorn/gunicorn.conf.py
  register: gathered
  become: true

- name: Show the measured worker memory
  ansible.builtin.debug:
    msg: "{{ gathered.gunicorn_facts.sizing.worker_anonymous_bytes }}"

- name: Use an explicit control socket
  gunicorn_facts:
    control_socket: /run/gunicorn/gunicorn.ctl
  register: gathered
"""

RETURN = r"""
gunicorn_facts:
  description: Facts about the host and its Gunicorn service.
  returned: success
  type: dict
  contains:
    sizing:
      description: Exactly the host facts the sizing function takes, no more.
      returned: success
      type: dict
      contains:
        cpus_affinity:
          description: CPUs the running master may run on (its Cpus_allowed_list), else the CPUs this module may run on.
          returned: success
          type: int
          sample: 1
        cpu_quota:
          description: Smallest CFS quota in cores over the service's cgroup and its ancestors; null if unlimited.
          returned: success
          type: float
          sample: 1.5
        cpus_online:
          description: CPUs the kernel shows (os.cpu_count()).
          returned: success
          type: int
          sample: 2
        mem_total_bytes:
          description: MemTotal from /proc/meminfo.
          returned: success
          type: int
          sample: 4102127616
        mem_available_bytes:
          description: MemAvailable from /proc/meminfo.
          returned: success
          type: int
          sample: 3112173568
        cgroup_memory_limit_bytes:
          description: Smallest memory limit over the service's cgroup and its ancestors; null if unlimited.
          returned: success
          type: int
          sample: 1073741824
        cgroup_memory_usage_bytes:
          description: Memory usage of the cgroup that has that limit, page cache included; null without a limit.
          returned: success
          type: int
          sample: 71061504
        cgroup_memory_inactive_file_bytes:
          description:
            - Inactive file pages (page cache the kernel reclaims first) of that cgroup and its children,
              from memory.stat (v1 C(total_inactive_file), v2 C(inactive_file)); null without a limit or
              when unreadable.
          returned: success
          type: int
          sample: 11423744
        worker_anonymous_bytes:
          description:
            - Mean anonymous memory (C(Anonymous) + C(Swap) of smaps_rollup) of the running workers,
              whether shared with the master or not; null if none runs.
          returned: success
          type: int
          sample: 31457280
        workers_measured:
          description: How many running workers worker_anonymous_bytes is the mean of; 0 if none runs.
          returned: success
          type: int
          sample: 3
        gunicorn_pss_total_bytes:
          description: PSS of the master plus all workers; 0 if nothing runs.
          returned: success
          type: int
          sample: 30060544
    service:
      description: What systemd, the config file and Gunicorn itself say about the service.
      returned: success
      type: dict
      contains:
        unit_id:
          description: The service the facts are about (with C(discover), the one found).
          type: str
          returned: success
        main_pid:
          description: PID of the Gunicorn master; null when the service does not run.
          type: int
          returned: success
        active_state:
          description: systemd ActiveState.
          type: str
          returned: success
          sample: active
        sub_state:
          description: systemd SubState.
          type: str
          returned: success
          sample: running
        user:
          description: User the service runs as (root when User= is not set).
          type: str
          returned: success
          sample: demo
        group:
          description: Group the service runs as (the user's primary group when Group= is not set).
          type: str
          returned: success
          sample: demo
        working_directory:
          description: WorkingDirectory= of the unit; null when not set.
          type: str
          returned: success
        environment_files:
          description: Paths of the unit's EnvironmentFile= entries. Their contents are never read.
          type: list
          elements: str
          returned: success
          sample: [/etc/demo/env]
        exec_start:
          description: The argv of ExecStart=.
          type: list
          elements: str
          returned: success
        fragment_path:
          description: The unit file.
          type: str
          returned: success
        unit_sha256:
          description: SHA-256 of the unit file; null if it cannot be read.
          type: str
          returned: success
        config_path:
          description: The Gunicorn config file read; null if it does not exist.
          type: str
          returned: success
        config_sha256:
          description: SHA-256 of the config file; null if it does not exist.
          type: str
          returned: success
        config_directories_missing:
          description:
            - The directories above I(config_path) that do not exist, the deepest first: those
              that writing the config there would make. Empty without I(config_path).
          type: list
          elements: str
          returned: success
        config_settings:
          description:
            - Top-level C(name = literal) assignments of the config file, parsed without running it.
            - Names assigned anything else (or changed later) are left out. Null without a config file.
          type: dict
          returned: success
        control_socket:
          description: The control socket that answered; null if none did.
          type: str
          returned: success
        live_settings:
          description:
            - Settings of the running master from the control socket's C(show config), worker_class
              given by gunicorn's name for it (C(sync), C(gthread)). Null if no socket answered.
          type: dict
          returned: success
        workers:
          description: The running workers, each with pid, pss_bytes, rss_bytes, anonymous_bytes, started_at_epoch.
          type: list
          elements: dict
          returned: success
        master:
          description:
            - The master process (pid, pss_bytes, rss_bytes, anonymous_bytes, started_at_epoch); null when not running.
          type: dict
          returned: success
        gunicorn_version:
          description: Version in the dist-info METADATA of the virtualenv Gunicorn runs from.
          type: str
          returned: success
          sample: 27.0.1
        venv_python:
          description: The Python interpreter Gunicorn runs with.
          type: str
          returned: success
          sample: /srv/demo/venv/bin/python3
        socket:
          description: The socket unit that starts the service (socket activation); null when none does.
          type: dict
          returned: success
          contains:
            unit:
              description: Its name.
              type: str
              sample: gunicorn.socket
            active_state:
              description: systemd ActiveState of the socket.
              type: str
              sample: active
            fragment_path:
              description: The socket unit file.
              type: str
              sample: /etc/systemd/system/gunicorn.socket
            sha256:
              description: SHA-256 of the socket unit file; null if it cannot be read.
              type: str
            written_by_djdeploy:
              description: Whether djdeploy rendered the socket unit file (its first line says so).
              type: bool
            text:
              description: The socket unit file's text; null if it cannot be read.
              type: str
            listen:
              description: The addresses systemd listens on for the service.
              type: list
              elements: str
              sample: [127.0.0.1:8000]
        security:
          description: How exposed the service is, and whether the files around it are safe.
          type: dict
          returned: success
          contains:
            exposure:
              description:
                - The overall exposure level from C(systemd-analyze security), 0.0 (safest) to
                  10.0; null if systemd-analyze could not score the unit. It takes about 10 ms.
              type: float
              sample: 1.0
            files:
              description:
                - The gunicorn config, the unit, the socket unit, the history directory and each
                  EnvironmentFile, in that order; absent ones have null owner, group and mode.
                - Each with kind, path, owner, group, mode (octal string such as C(0640)) and
                  problems, a list of sentences such as
                  C(gunicorn config /etc/gunicorn/gunicorn.conf.py is writable by the service user)
                  or C(EnvironmentFile /etc/demo/env is world-readable (mode 0644)); empty when all is well.
                - EnvironmentFile= files are only stat()ed, never opened.
              type: list
              elements: dict
              sample:
                - {kind: EnvironmentFile, path: /etc/demo/env, owner: root, group: demo, mode: "0640", problems: []}
        settings_read:
          description:
            - Only with C(settings_reader); else null. What the reader printed, by gunicorn's own rules
              - C(settings), each setting the flags, GUNICORN_CMD_ARGS or the config file set, with
              C(source), C(value) (null when not plain data), C(hook) (a function), C(plain) and
              C(error) (gunicorn's validator refused it); C(registry), each setting of the host's
              gunicorn with its C(flags), C(validator), C(section) and C(default); C(overrides),
              gunicorn's verdict on each of the C(overrides); C(config_file); C(app);
              C(gunicorn_version); C(djdeploy), what a config djdeploy wrote records about itself.
            - Or C({error}) when the reader could not run or gunicorn could not parse the command line.
          type: dict
    warnings:
      description: Why an optional fact is null.
      type: list
      elements: str
      returned: success
    collected_at_epoch:
      description: The host's clock when the facts were read, to age processes against.
      type: float
      returned: success
"""

import ast
import glob
import grp
import hashlib
import json
import math
import os
import pwd
import re
import shlex
import socket
import stat
import struct
import time
from collections import namedtuple

from ansible.module_utils.basic import AnsibleModule

KIB = 1024
MIB = 1024 * KIB
# cgroup v1 reports "no limit" as 2**63 rounded down to a page; nothing real comes near an
# exbibyte, so anything from here up means "no limit" (the sizing function agrees).
UNLIMITED_BYTES = 2**60
SIZING_MEMORY_FILE = "/sys/fs/cgroup/memory/memory.limit_in_bytes"

UNIT_PROPERTIES = (
    "Id", "LoadState", "MainPID", "ActiveState", "SubState", "User", "Group", "WorkingDirectory",
    "EnvironmentFiles", "Environment", "ExecStart", "FragmentPath", "ControlGroup", "Slice", "TriggeredBy",
)
SOCKET_PROPERTIES = ("Id", "LoadState", "ActiveState", "FragmentPath", "Listen")
LIVE_SETTING_NAMES = (
    "workers", "worker_class", "threads", "timeout", "graceful_timeout", "keepalive",
    "max_requests", "max_requests_jitter", "backlog", "bind", "preload_app", "worker_connections",
)
# `show config` reports worker_class as the class repr ("<class 'gunicorn.workers.sync.SyncWorker'>");
# these are gunicorn's own names for its classes (gunicorn.workers.SUPPORTED_WORKERS), so the live
# value reads like the setting a config file holds.
WORKER_CLASS_NAMES = {
    "gunicorn.workers.sync.SyncWorker": "sync",
    "gunicorn.workers.gthread.ThreadWorker": "gthread",
    "gunicorn.workers.ggevent.GeventWorker": "gevent",
    "gunicorn.workers.ggevent.GeventPyWSGIWorker": "gevent_pywsgi",
    "gunicorn.workers.gtornado.TornadoWorker": "tornado",
    "gunicorn.workers.gasgi.ASGIWorker": "asgi",
}
CONTROL_SOCKET_TIMEOUT_SECONDS = 3.0
CONTROL_REPLY_MAX_BYTES = 16 * MIB  # gunicorn's own ControlProtocol.MAX_MESSAGE_SIZE
# systemctl and busctl translate their messages; the parsing below expects English.
C_LOCALE = {"LC_ALL": "C", "LANG": "C"}


class Warnings(list):
    """Messages explaining why an optional fact is null."""

    def attempt(self, what, read, *args):
        """Return read(*args), or None plus a warning when the host does not let us read it."""
        try:
            return read(*args)
        except (OSError, ValueError, KeyError, IndexError, SyntaxError) as exc:
            self.append("%s: %s" % (what, exc))
            return None


# --- small readers ----------------------------------------------------------------------


def read_text(path):
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def read_int_if_present(path):
    """The integer in a one-value kernel file, or None when the file does not exist here."""
    try:
        return int(read_text(path).strip())
    except FileNotFoundError:
        return None


# The first line of every socket unit djdeploy renders (templates/gunicorn.socket.j2).
DJDEPLOY_SOCKET_MARK = "# Socket unit written by djdeploy."


def written_by_djdeploy(path):
    """Whether the unit file at path is one djdeploy rendered (its first line says so)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline().startswith(DJDEPLOY_SOCKET_MARK)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def kib_field(text, name):
    """Bytes of a "Name:   1234 kB" line, as in /proc/meminfo and smaps_rollup."""
    match = re.search(r"^%s:\s+(\d+) kB$" % re.escape(name), text, re.MULTILINE)
    if match is None:
        raise ValueError("no %s line" % name)
    return int(match.group(1)) * KIB


def count_cpu_list(text):
    """Number of CPUs in a list like "0-3,8,10-11"."""
    count = 0
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def first_value(properties, name):
    values = properties.get(name) or [""]
    return values[0]


# --- the systemd unit ---------------------------------------------------------------------


def systemctl_show(module, unit):
    """The unit's properties as {name: [values]}.

    One `systemctl show -p A,B,...` call parsed as Name=value lines rather than one
    `--value` call per property: with several properties `--value` loses which line is which,
    and EnvironmentFiles= repeats once per file.
    """
    command = ["systemctl", "show", unit, "--property=" + ",".join(UNIT_PROPERTIES)]
    rc, out, err = module.run_command(command, environ_update=C_LOCALE)
    if rc != 0:
        module.fail_json(msg="systemd unit %s: systemctl show failed: %s" % (unit, err.strip()), rc=rc)
    return shown_properties(out)


def units_running_gunicorn(module):
    """The loaded services whose ExecStart= runs gunicorn (`gunicorn ...`, `python -m gunicorn ...`)."""
    rc, out, err = module.run_command(
        ["systemctl", "show", "--property=Id,ExecStart", "*.service"], environ_update=C_LOCALE
    )
    if rc != 0:
        module.fail_json(msg="listing the services: systemctl show failed: %s" % err.strip(), rc=rc)
    found = []
    for block in out.split("\n\n"):
        properties = shown_properties(block)
        argv = re.search(r"argv\[\]=(\S+)(?: (\S+) (\S+))?", first_value(properties, "ExecStart"))
        if argv and (os.path.basename(argv.group(1)) == "gunicorn" or argv.group(2, 3) == ("-m", "gunicorn")):
            found.append(first_value(properties, "Id"))
    return sorted(unit for unit in found if unit)


def find_service(module, service):
    """The service's properties; when it is not there and discovery is on, those of the one
    service that runs gunicorn. Fails naming the candidates when there are none or several."""
    properties = systemctl_show(module, service)
    if first_value(properties, "LoadState") not in ("", "not-found"):
        return properties
    candidates = units_running_gunicorn(module) if module.params["discover"] else []
    if len(candidates) == 1:
        return systemctl_show(module, candidates[0])
    if candidates:
        module.fail_json(msg="systemd unit %s not found, and several services run gunicorn: %s; set gunicorn_service "
                             "to the one to tune" % (service, ", ".join(candidates)), unit=service, candidates=candidates)
    module.fail_json(msg="systemd unit %s not found%s; set gunicorn_service to the service that runs gunicorn"
                         % (service, ", and no loaded service runs gunicorn" if module.params["discover"] else ""),
                     unit=service, candidates=[])


def shown_properties(out):
    """systemctl show's Name=value lines as {name: [values]}."""
    properties = {}
    for line in out.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            properties.setdefault(name, []).append(value)
    return properties


def environment_file_paths(values):
    # systemctl prints "/etc/demo/env (ignore_errors=no)"; "-" prefixed files say "yes".
    return [re.sub(r" \(ignore_errors=(yes|no)\)$", "", value) for value in values if value]


def unit_object_path(unit_id):
    """systemd's D-Bus object path for a unit: bytes outside [A-Za-z0-9] (and a leading digit) become _xx."""
    escaped = []
    for index, byte in enumerate(unit_id.encode("utf-8")):
        char = chr(byte)
        if char.isascii() and char.isalnum() and not (index == 0 and char.isdigit()):
            escaped.append(char)
        else:
            escaped.append("_%02x" % byte)
    return "/org/freedesktop/systemd1/unit/" + "".join(escaped)


def exec_start_from_bus(module, unit_id):
    """(program path, argv) of ExecStart= exactly as systemd holds them.

    `systemctl show` (systemd 252) joins argv with spaces and no quoting, so an argument with a
    space could not be told apart; the D-Bus property keeps the list.
    """
    command = [
        "busctl", "--json=short", "get-property", "org.freedesktop.systemd1", unit_object_path(unit_id),
        "org.freedesktop.systemd1.Service", "ExecStart",
    ]
    rc, out, err = module.run_command(command, environ_update=C_LOCALE)
    if rc != 0:
        raise ValueError(err.strip() or "busctl exited %d" % rc)
    commands = json.loads(out)["data"]
    if not commands:
        return None, []
    program, argv = commands[0][0], commands[0][1]
    return program, list(argv)


def exec_start_from_text(shown):
    """(program path, argv) from systemctl's text; arguments with spaces come out split."""
    program = re.search(r"path=(\S+)", shown)
    argv = re.search(r"argv\[\]=(.*?) ; ", shown)
    return (program.group(1) if program else None), (argv.group(1).split() if argv else [])


def exec_start(module, unit_id, shown, warnings):
    try:
        return exec_start_from_bus(module, unit_id)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        warnings.append("ExecStart from D-Bus: %s; split systemctl's text at spaces instead" % exc)
        return exec_start_from_text(shown)


def primary_group(user):
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def option_value(argv, *names):
    """Value of a command-line option given as `--name VALUE` or `--name=VALUE` (last one wins)."""
    found = None
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                found = argv[index + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                found = arg[len(name) + 1:]
    return found


def unit_cgroup_path(slice_name, unit_id):
    """Where systemd would put the unit: slice "a-b.slice" nests as /a.slice/a-b.slice."""
    if not slice_name or slice_name == "-.slice":
        return "/" + unit_id
    parts = slice_name[: -len(".slice")].split("-")
    slices = ["-".join(parts[: depth + 1]) + ".slice" for depth in range(len(parts))]
    return "/" + "/".join(slices + [unit_id])


# --- processes ------------------------------------------------------------------------------


def boot_time_epoch():
    return int(re.search(r"^btime (\d+)$", read_text("/proc/stat"), re.MULTILINE).group(1))


def stat_fields(pid):
    """Fields of /proc/PID/stat after the command name, which may itself hold spaces and ')'."""
    text = read_text("/proc/%d/stat" % pid)
    return text[text.rindex(")") + 2:].split()


def started_at_epoch(pid, boot_epoch):
    # Field 22 of stat (index 19 after the name) is the start time in clock ticks since boot.
    ticks = int(stat_fields(pid)[19])
    return round(boot_epoch + ticks / os.sysconf("SC_CLK_TCK"), 2)


def child_pids(parent):
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if int(stat_fields(int(entry))[1]) == parent:
                children.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return sorted(children)


def process_memory(pid, boot_epoch):
    rollup = read_text("/proc/%d/smaps_rollup" % pid)
    return {
        "pid": pid,
        "pss_bytes": kib_field(rollup, "Pss"),
        "rss_bytes": kib_field(rollup, "Rss"),
        # Memory backed by no file, shared with the master (copy-on-write) or not, in RAM or swapped out.
        "anonymous_bytes": kib_field(rollup, "Anonymous") + kib_field(rollup, "Swap"),
        "started_at_epoch": started_at_epoch(pid, boot_epoch),
    }


def cpus_allowed(pid):
    status = read_text("/proc/%d/status" % pid)
    return count_cpu_list(re.search(r"^Cpus_allowed_list:\s*(\S+)$", status, re.MULTILINE).group(1))


def master_argv0(pid):
    return read_text("/proc/%d/cmdline" % pid).split("\0")[0]


# --- cgroups ----------------------------------------------------------------------------------

CgroupMount = namedtuple("CgroupMount", "version controllers root mountpoint")


def unescape_mount_field(field):
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def cgroup_mounts(mountinfo):
    mounts = []
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        root, mountpoint = unescape_mount_field(fields[3]), unescape_mount_field(fields[4])
        if tail[0] == "cgroup2":
            mounts.append(CgroupMount(2, frozenset(), root, mountpoint))
        else:
            controllers = frozenset(option for option in tail[2].split(",") if option not in ("rw", "ro"))
            mounts.append(CgroupMount(1, controllers, root, mountpoint))
    return mounts


def process_cgroup_paths(text):
    """{controllers: path} from /proc/PID/cgroup; cgroup v2's line is keyed by an empty set."""
    paths = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        paths[frozenset(controllers.split(",")) if controllers else frozenset()] = path
    return paths


def relative_to_mount(mount, path):
    """Path of cgroup `path` (as /proc/PID/cgroup names it) below the mount point.

    A mount may show only a subtree: in a container the machine's /djdeploy-x-web01 is mounted
    as /sys/fs/cgroup/memory. A cgroup outside the subtree is seen as the mount's root.
    """
    root = mount.root.rstrip("/")
    if path == mount.root or path.startswith(root + "/"):
        return path[len(root):].strip("/")
    return ""


def cgroup_dirs(mountpoint, relative):
    """The cgroup directory and each ancestor up to the mount point, leaf first.

    A cgroup that does not exist (a stopped unit's) starts the walk at its nearest ancestor.
    """
    current = os.path.join(mountpoint, relative) if relative else mountpoint
    dirs = []
    while True:
        if os.path.isdir(current):
            dirs.append(current)
        if len(current) <= len(mountpoint):
            return dirs
        current = os.path.dirname(current)


def mount_path(mount, master_paths, unit_path):
    """Where the service's cgroup is below this mount point.

    `master_paths` are the running master's cgroups ({controllers: path}). For a stopped unit
    they are None and systemd's ControlGroup path is used: systemd names it relative to its
    own root, which is each mount's root.
    """
    if master_paths is None:
        return unit_path.strip("/")
    if mount.version == 2:
        path = master_paths.get(frozenset(), "/")
    else:
        # v1 hierarchies may combine controllers ("cpu,cpuacct"), so match on any shared one.
        path = next((p for names, p in master_paths.items() if names & mount.controllers), "/")
    return relative_to_mount(mount, path)


def service_cgroup_dirs(controller, mounts, master_paths, unit_path):
    """(cgroup version, directory) of the service's cgroups that may limit `controller`, leaf first."""
    dirs = []
    for mount in mounts:
        if mount.version == 1 and controller not in mount.controllers:
            continue
        relative = mount_path(mount, master_paths, unit_path)
        dirs.extend((mount.version, directory) for directory in cgroup_dirs(mount.mountpoint, relative))
    return dirs


def stat_value(text, name):
    """The number of a "name 1234" line, as in memory.stat; None when there is none."""
    match = re.search(r"^%s (\d+)$" % re.escape(name), text, re.MULTILINE)
    return None if match is None else int(match.group(1))


def inactive_file_bytes(directory, version):
    """Page cache the kernel reclaims first, within the cgroup and below it; None if unreadable.

    The usage counts it, but it is not memory the cgroup needs: sizing takes it off.
    """
    try:
        text = read_text(os.path.join(directory, "memory.stat"))
    except FileNotFoundError:
        return None
    # v1's own inactive_file leaves out child cgroups, which memory.usage_in_bytes counts.
    return stat_value(text, "total_inactive_file" if version == 1 else "inactive_file")


NO_MEMORY_LIMIT = (None, None, None)


def memory_limit_and_usage(directory, version):
    """(limit, usage, inactive file cache) of one cgroup; all None when it sets no limit."""
    if version == 1:
        limit = read_int_if_present(os.path.join(directory, "memory.limit_in_bytes"))
        usage_file = "memory.usage_in_bytes"
    else:
        try:
            text = read_text(os.path.join(directory, "memory.max")).strip()
        except FileNotFoundError:
            return NO_MEMORY_LIMIT  # the memory controller is not enabled in this v2 tree
        limit = None if text == "max" else int(text)
        usage_file = "memory.current"
    if limit is None or limit >= UNLIMITED_BYTES:
        return NO_MEMORY_LIMIT
    usage = read_int_if_present(os.path.join(directory, usage_file))
    return limit, usage, inactive_file_bytes(directory, version)


def smallest_memory_limit(cgroup_dirs_with_version):
    """(limit, usage, inactive file cache) of the tightest memory limit; all None when nothing limits."""
    best = NO_MEMORY_LIMIT
    seen = set()
    for version, directory in cgroup_dirs_with_version:
        if directory in seen:
            continue
        seen.add(directory)
        found = memory_limit_and_usage(directory, version)
        if found[0] is not None and (best[0] is None or found[0] < best[0]):
            best = found
    return best


def cpu_quota_cores(directory, version):
    if version == 1:
        quota = read_int_if_present(os.path.join(directory, "cpu.cfs_quota_us"))
        period = read_int_if_present(os.path.join(directory, "cpu.cfs_period_us"))
    else:
        try:
            quota_text, period_text = read_text(os.path.join(directory, "cpu.max")).split()
        except FileNotFoundError:
            return None
        quota, period = (None if quota_text == "max" else int(quota_text)), int(period_text)
    if quota is None or quota < 0 or not period:
        return None  # v1 writes -1 for no quota
    return quota / period


def smallest_cpu_quota(cgroup_dirs_with_version):
    quotas = [cpu_quota_cores(directory, version) for version, directory in cgroup_dirs_with_version]
    limited = [quota for quota in quotas if quota is not None]
    return min(limited) if limited else None


# --- the Gunicorn config file -------------------------------------------------------------------


def json_plain(value):
    """`value` as JSON can carry it; ValueError for bytes, sets, complex numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not a finite number: %r" % value)  # JSON cannot carry inf or nan
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [json_plain(item) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: json_plain(item) for key, item in value.items()}
    raise ValueError("not plain data: %s" % type(value).__name__)


def assigned_name(node):
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
        return node.target.id
    return None


def literal_settings(source):
    """Top-level `name = <literal>` assignments of a config file, without running any of it.

    A name whose last top-level assignment is not a literal (`workers = cpu_count() * 2`,
    `workers += 1`) is left out: its value is only known by running the file.
    """
    settings = {}
    for node in ast.parse(source).body:
        name = assigned_name(node)
        if name is None:
            continue
        try:
            if isinstance(node, ast.AugAssign) or node.value is None:
                raise ValueError("not a plain assignment")
            settings[name] = json_plain(ast.literal_eval(node.value))
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            settings.pop(name, None)
    return settings


def config_file_path(explicit, argv, working_directory):
    """The config file gunicorn reads: the given one, ExecStart's -c, else its default name.

    A relative path is relative to the master's working directory; a `python:module`
    config is not a file and is not read.
    """
    path = explicit or option_value(argv, "-c", "--config") or "gunicorn.conf.py"
    if path.startswith("python:"):
        return None
    return os.path.join(working_directory or "/", path)  # join keeps an absolute path as it is


# --- the control socket -----------------------------------------------------------------------------


def recv_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 16))
        if not chunk:
            raise ValueError("control socket closed the connection mid-reply")
        data += chunk
    return data


def control_request(path, command):
    """Send one command over gunicorn's control protocol: a 4-byte big-endian length, then JSON."""
    payload = json.dumps({"id": 1, "command": command, "args": []}).encode("utf-8")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONTROL_SOCKET_TIMEOUT_SECONDS)
        sock.connect(path)
        sock.sendall(struct.pack(">I", len(payload)) + payload)
        (length,) = struct.unpack(">I", recv_exactly(sock, 4))
        if length > CONTROL_REPLY_MAX_BYTES:
            raise ValueError("control reply of %d bytes is too large" % length)
        reply = json.loads(recv_exactly(sock, length).decode("utf-8"))
    if reply.get("status") != "ok":
        raise ValueError("%r answered %s" % (command, reply.get("error", reply)))
    return reply.get("data") or {}


def worker_class_setting(reported):
    """The worker_class setting behind `show config`'s class repr: gunicorn's alias, else the dotted path."""
    match = re.match(r"^<class '([\w.]+)'>$", reported) if isinstance(reported, str) else None
    if match is None:
        return reported
    return WORKER_CLASS_NAMES.get(match.group(1), match.group(1))


def control_socket_disabled(argv, settings):
    return "--no-control-socket" in argv or (settings or {}).get("control_socket_disable") is True


def control_socket_candidates(explicit, argv, settings, working_directory, user):
    """Paths where this service's control socket may be, most specific first."""
    configured = [explicit, option_value(argv, "--control-socket"), (settings or {}).get("control_socket")]
    candidates = [path for path in configured if isinstance(path, str) and path]
    if not control_socket_disabled(argv, settings):
        # Gunicorn's default, evaluated in the master's environment: $XDG_RUNTIME_DIR exists for
        # units with PAMName= (/run/user/UID), else systemd sets $HOME from the user's passwd entry.
        try:
            account = pwd.getpwnam(user)
            candidates += [
                "/run/user/%d/gunicorn.ctl" % account.pw_uid,
                os.path.join(account.pw_dir, ".gunicorn", "gunicorn.ctl"),
            ]
        except KeyError:
            pass
    # A relative path is relative to the master's working directory, as gunicorn resolves it.
    absolute = [os.path.join(working_directory or "/", path) for path in candidates]
    return list(dict.fromkeys(absolute))


def is_socket(path):
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def live_control(candidates, warnings):
    """(socket path, live settings, live worker pids) from the first socket that answers."""
    if not candidates:
        warnings.append("the control socket is disabled (--no-control-socket): live_settings unknown")
        return None, None, None
    existing = [path for path in candidates if is_socket(path)]
    if not existing:
        warnings.append(
            "no gunicorn control socket at %s: live_settings unknown (gunicorn logs why at startup)"
            % ", ".join(candidates)
        )
        return None, None, None
    for path in existing:
        try:
            config = control_request(path, "show config")
            workers = control_request(path, "show workers").get("workers") or []
        except (OSError, ValueError) as exc:
            warnings.append("control socket %s: %s" % (path, exc))
            continue
        live = {name: config[name] for name in LIVE_SETTING_NAMES if name in config}
        if "worker_class" in live:
            live["worker_class"] = worker_class_setting(live["worker_class"])
        return path, live, {worker["pid"] for worker in workers if "pid" in worker}
    return None, None, None


# --- the virtualenv Gunicorn runs from ------------------------------------------------------------


def shebang_interpreter(script):
    with open(script, "rb") as handle:
        first_line = handle.readline(512).decode("utf-8", "replace").strip()
    if not first_line.startswith("#!"):
        return None
    words = first_line[2:].split()
    return words[0] if words and not words[0].endswith("/env") else None


def gunicorn_version_in(prefix):
    """Version from gunicorn's dist-info METADATA under a virtualenv or prefix, or None."""
    patterns = ("lib/python3*/site-packages/gunicorn-*.dist-info/METADATA",
                "lib64/python3*/site-packages/gunicorn-*.dist-info/METADATA")
    for pattern in patterns:
        for metadata in sorted(glob.glob(os.path.join(prefix, pattern))):
            match = re.search(r"^Version: (\S+)$", read_text(metadata), re.MULTILINE)
            if match:
                return match.group(1)
    return None


def gunicorn_install(program, master_python, warnings):
    """(venv_python, gunicorn_version), found from the master's interpreter or ExecStart's program."""
    pythons = [master_python]
    if program and os.path.basename(program).startswith("python"):
        pythons.append(program)
    elif program:
        pythons.append(warnings.attempt("shebang of %s" % program, shebang_interpreter, program))
    pythons = [path for path in pythons if path and os.path.isabs(path)]
    for python in pythons:
        version = gunicorn_version_in(os.path.dirname(os.path.dirname(python)))
        if version:
            return python, version
    warnings.append("no gunicorn dist-info next to %s: gunicorn_version unknown" % (", ".join(pythons) or program))
    return (pythons[0] if pythons else None), None


# --- the socket unit and the service's security ---------------------------------------------


def socket_unit(module, triggered_by, warnings):
    """The socket unit that starts the service (socket activation), or None."""
    sockets = [unit for unit in triggered_by.split() if unit.endswith(".socket")]
    if not sockets:
        return None
    command = ["systemctl", "show", sockets[0], "--property=" + ",".join(SOCKET_PROPERTIES)]
    rc, out, err = module.run_command(command, environ_update=C_LOCALE)
    if rc != 0:
        warnings.append("socket unit %s: systemctl show failed: %s" % (sockets[0], err.strip()))
        return None
    properties = shown_properties(out)
    fragment_path = first_value(properties, "FragmentPath") or None
    return {
        "unit": first_value(properties, "Id") or sockets[0],
        "active_state": first_value(properties, "ActiveState"),
        "fragment_path": fragment_path,
        "sha256": warnings.attempt("socket unit file", sha256_of, fragment_path) if fragment_path else None,
        "written_by_djdeploy": bool(fragment_path)
        and bool(warnings.attempt("socket unit file", written_by_djdeploy, fragment_path)),
        # A socket unit is kept as it is, so its text goes into the next state unchanged.
        "text": warnings.attempt("socket unit file", read_text, fragment_path) if fragment_path else None,
        # "127.0.0.1:8000 (Stream)"
        "listen": [re.sub(r" \(\w+\)$", "", value) for value in properties.get("Listen", []) if value],
    }


def exposure_level(module, unit, warnings):
    """systemd-analyze security's overall exposure (0 safest, 10 most exposed), or None."""
    rc, out, err = module.run_command(
        ["systemd-analyze", "security", "--no-pager", unit], environ_update=C_LOCALE
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    if match is None:
        warnings.append("systemd-analyze security %s: %s" % (unit, (err or out).strip()[-300:] or "rc %d" % rc))
        return None
    return float(match.group(1))


def account_ids(user, group, warnings):
    """(uid, gids) of the service account: its primary, supplementary and unit groups."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        warnings.append("service user %s is unknown: file permissions are judged for root only" % user)
        return None, set()
    gids = set(os.getgrouplist(user, account.pw_gid))
    try:
        gids.add(grp.getgrnam(group).gr_gid)
    except (KeyError, TypeError):
        pass
    return account.pw_uid, gids


def name_of(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def writable_by(status, uid, gids):
    """Whether an account can write (or, as the owner, chmod) a file it does not own through root."""
    if uid is not None and status.st_uid == uid:
        return True
    if status.st_mode & stat.S_IWGRP and status.st_gid in gids:
        return True
    return bool(status.st_mode & stat.S_IWOTH)


def file_problems(kind, path, status, parent_status, uid, gids, service_group_gid):
    """What is wrong with the permissions of one file djdeploy or systemd relies on."""
    mode = stat.S_IMODE(status.st_mode)
    problems = []
    if status.st_uid != 0:
        problems.append("%s %s is not owned by root" % (kind, path))
    if kind == "history directory":
        if mode & 0o077:
            problems.append("%s %s is open to others than root (mode %04o)" % (kind, path, mode))
        return problems
    if kind == "EnvironmentFile":
        if mode & stat.S_IROTH:
            problems.append("%s %s is world-readable (mode %04o)" % (kind, path, mode))
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            problems.append("%s %s is writable by others than root (mode %04o)" % (kind, path, mode))
        if mode & stat.S_IRGRP and status.st_gid not in (0, service_group_gid):
            group = name_of(grp.getgrgid, status.st_gid)
            problems.append("%s %s is readable by group %s, not the service's group" % (kind, path, group))
        return problems
    if writable_by(status, uid, gids):
        problems.append("%s %s is writable by the service user" % (kind, path))
    elif parent_status is not None and writable_by(parent_status, uid, gids):
        problems.append("%s %s can be replaced by the service user, who may write its directory" % (kind, path))
    if mode & stat.S_IWOTH:
        problems.append("%s %s is world-writable" % (kind, path))
    return problems


def file_security(kind, path, uid, gids, service_group_gid):
    """Path, owner, group, mode and problems of a file, from stat alone; nulls when it is absent."""
    entry = {"kind": kind, "path": path, "owner": None, "group": None, "mode": None, "problems": []}
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return entry
    try:
        parent_status = os.stat(os.path.dirname(path))
    except OSError:
        parent_status = None
    entry.update(
        owner=name_of(pwd.getpwuid, status.st_uid),
        group=name_of(grp.getgrgid, status.st_gid),
        mode="%04o" % stat.S_IMODE(status.st_mode),
        problems=file_problems(kind, path, status, parent_status, uid, gids, service_group_gid),
    )
    return entry


def security_facts(module, unit_id, unit, config_path, socket, history_dir, warnings):
    """The unit's exposure score and the permissions of the files around the service.

    EnvironmentFile= files hold secrets: they are stat()ed, never opened.
    """
    uid, gids = account_ids(unit["user"], unit["group"], warnings)
    try:
        service_group_gid = grp.getgrnam(unit["group"]).gr_gid
    except (KeyError, TypeError):
        service_group_gid = None
    files = [("gunicorn config", config_path), ("unit", unit["fragment_path"])]
    files += [("socket unit", (socket or {}).get("fragment_path")), ("history directory", history_dir)]
    files += [("EnvironmentFile", path) for path in unit["environment_files"]]
    checked = [
        warnings.attempt("permissions of %s" % path, file_security, kind, path, uid, gids, service_group_gid)
        for kind, path in files
        if path
    ]
    return {
        "exposure": exposure_level(module, unit_id, warnings),
        "files": [entry for entry in checked if entry is not None],
    }


# --- assembling the facts ---------------------------------------------------------------------------


def measure_processes(main_pid, live_worker_pids, warnings):
    """(master, workers) with their memory; workers are the master's children."""
    if main_pid is None:
        return None, []
    boot_epoch = boot_time_epoch()
    master = warnings.attempt("memory of master %d" % main_pid, process_memory, main_pid, boot_epoch)
    pids = child_pids(main_pid)
    if live_worker_pids is not None:
        # Gunicorn's list leaves out other children such as the dirty-worker arbiter.
        pids = [pid for pid in pids if pid in live_worker_pids]
    workers = [warnings.attempt("memory of worker %d" % pid, process_memory, pid, boot_epoch) for pid in pids]
    return master, [worker for worker in workers if worker is not None]


def sizing_facts(main_pid, master_cgroups, unit_cgroup, master, workers, warnings):
    mounts = warnings.attempt("cgroup mounts", lambda: cgroup_mounts(read_text("/proc/self/mountinfo"))) or []
    memory_dirs = service_cgroup_dirs("memory", mounts, master_cgroups, unit_cgroup)
    # The explicit root of the v1 memory hierarchy, which is the container's limit on the lab hosts.
    if os.path.exists(SIZING_MEMORY_FILE):
        memory_dirs.append((1, os.path.dirname(SIZING_MEMORY_FILE)))
    memory_limit = warnings.attempt("cgroup memory limit", smallest_memory_limit, memory_dirs) or NO_MEMORY_LIMIT
    cpu_dirs = service_cgroup_dirs("cpu", mounts, master_cgroups, unit_cgroup)
    meminfo = warnings.attempt("/proc/meminfo", read_text, "/proc/meminfo") or ""

    affinity = None
    if main_pid is not None:
        affinity = warnings.attempt("CPU affinity of master %d" % main_pid, cpus_allowed, main_pid)
    if affinity is None:
        affinity = len(os.sched_getaffinity(0))

    worker_anonymous = [worker["anonymous_bytes"] for worker in workers]
    measured = [process["pss_bytes"] for process in ([master] if master else []) + workers]
    return {
        "cpus_affinity": affinity,
        "cpu_quota": warnings.attempt("cgroup CPU quota", smallest_cpu_quota, cpu_dirs),
        "cpus_online": os.cpu_count(),
        "mem_total_bytes": warnings.attempt("MemTotal", kib_field, meminfo, "MemTotal"),
        "mem_available_bytes": warnings.attempt("MemAvailable", kib_field, meminfo, "MemAvailable"),
        "cgroup_memory_limit_bytes": memory_limit[0],
        "cgroup_memory_usage_bytes": memory_limit[1],
        "cgroup_memory_inactive_file_bytes": memory_limit[2],
        "worker_anonymous_bytes": round(sum(worker_anonymous) / len(worker_anonymous)) if workers else None,
        "workers_measured": len(workers),
        "gunicorn_pss_total_bytes": sum(measured),
    }


def read_running_settings(module, unit, venv_python, reader_source):
    """What the settings reader prints about the service's command line and config file, or
    {"error": why} when it cannot run."""
    if not venv_python:
        return {"error": "no Python with gunicorn found beside the unit's program %s" % unit["program"]}
    command = ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec",
               "--property=RuntimeMaxSec=60", "--property=User=" + unit["user"],
               "--property=Group=" + (unit["group"] or unit["user"])]
    if unit["working_directory"]:
        command.append("--property=WorkingDirectory=" + unit["working_directory"])
    command += ["--property=EnvironmentFile=" + path for path in unit["environment_files"]]
    command += ["--setenv=" + assignment for assignment in unit["environment"]]
    request = {"argv": unit["exec_start"], "overrides": module.params["overrides"]}
    command += ["--", venv_python, "-c", reader_source, json.dumps(request)]
    rc, out, err = module.run_command(command, environ_update=C_LOCALE)
    if rc != 0:
        lines = [line for line in (err or out).splitlines() if line.strip()]
        return {"error": "the settings reader exited %d: %s" % (rc, lines[-1] if lines else "no message")}
    try:
        return json.loads(out)
    except ValueError as exc:
        return {"error": "the settings reader printed no JSON (%s): %s" % (exc, out[:200])}


def config_facts(path, warnings):
    """(config_path, sha256, literal settings) of the config file, all None when there is none."""
    if not path or not os.path.exists(path):
        return None, None, None
    digest = warnings.attempt("config %s" % path, sha256_of, path)
    settings = warnings.attempt("config %s" % path, lambda: literal_settings(read_text(path)))
    return path, digest, settings


def missing_directories(path):
    """The directories above `path` that do not exist, the deepest first."""
    missing = []
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    return missing


def read_unit(module, service, warnings):
    """What systemd says about the unit; fails the module only when systemd does not know it."""
    properties = find_service(module, service)
    unit_id = first_value(properties, "Id") or service
    program, argv = exec_start(module, unit_id, first_value(properties, "ExecStart"), warnings)
    # systemd runs a unit without User= as root, and without Group= as the user's primary group.
    user = first_value(properties, "User") or "root"
    group = first_value(properties, "Group") or warnings.attempt("primary group of %s" % user, primary_group, user)
    return {
        "unit_id": unit_id,
        "triggered_by": first_value(properties, "TriggeredBy"),
        "main_pid": int(first_value(properties, "MainPID") or 0) or None,
        "active_state": first_value(properties, "ActiveState"),
        "sub_state": first_value(properties, "SubState"),
        "user": user,
        "group": group,
        "working_directory": first_value(properties, "WorkingDirectory") or None,
        "environment_files": environment_file_paths(properties.get("EnvironmentFiles", [])),
        # systemctl quotes an assignment with spaces the way a shell would.
        "environment": shlex.split(first_value(properties, "Environment")),
        "program": program,
        "exec_start": argv,
        "fragment_path": first_value(properties, "FragmentPath") or None,
        # Where the unit's cgroup is (or would be, when stopped) below systemd's root.
        "cgroup_path": first_value(properties, "ControlGroup")
        or unit_cgroup_path(first_value(properties, "Slice"), unit_id),
    }


def gather(module):
    params = module.params
    warnings = Warnings()
    unit = read_unit(module, params["service"], warnings)
    main_pid, argv, working_directory = unit["main_pid"], unit["exec_start"], unit["working_directory"]

    config_path, config_sha256, config_settings = config_facts(
        config_file_path(params["config_path"], argv, working_directory), warnings
    )
    control_socket, live_settings, live_worker_pids = None, None, None
    master_cgroups, master_python = None, None
    if main_pid is not None:
        candidates = control_socket_candidates(
            params["control_socket"], argv, config_settings, working_directory, unit["user"]
        )
        control_socket, live_settings, live_worker_pids = live_control(candidates, warnings)
        master_cgroups = warnings.attempt(
            "cgroups of master %d" % main_pid, lambda: process_cgroup_paths(read_text("/proc/%d/cgroup" % main_pid))
        )
        master_python = warnings.attempt("command line of master %d" % main_pid, master_argv0, main_pid)
    master, workers = measure_processes(main_pid, live_worker_pids, warnings)
    venv_python, gunicorn_version = gunicorn_install(unit["program"], master_python, warnings)

    fragment_path = unit["fragment_path"]
    socket = socket_unit(module, unit["triggered_by"], warnings)
    service = {
        "unit_id": unit["unit_id"],
        "main_pid": main_pid,
        "active_state": unit["active_state"],
        "sub_state": unit["sub_state"],
        "user": unit["user"],
        "group": unit["group"],
        "working_directory": working_directory,
        "environment_files": unit["environment_files"],
        "exec_start": argv,
        "fragment_path": fragment_path,
        "unit_sha256": warnings.attempt("unit file", sha256_of, fragment_path) if fragment_path else None,
        "config_path": config_path,
        "config_sha256": config_sha256,
        # What a rollback to a state without a config removes again (the baseline keeps it).
        "config_directories_missing": missing_directories(params["config_path"]) if params["config_path"] else [],
        "config_settings": config_settings,
        "control_socket": control_socket,
        "live_settings": live_settings,
        "workers": workers,
        "master": master,
        "gunicorn_version": gunicorn_version,
        "venv_python": venv_python,
        "socket": socket,
        "security": security_facts(module, unit["unit_id"], unit, config_path, socket, params["history_dir"], warnings),
        "settings_read": read_running_settings(module, unit, venv_python, params["settings_reader"])
        if params["settings_reader"] else None,
    }
    sizing = sizing_facts(main_pid, master_cgroups, unit["cgroup_path"], master, workers, warnings)
    return {"sizing": sizing, "service": service, "warnings": list(warnings), "collected_at_epoch": time.time()}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            service=dict(type="str", default="gunicorn.service"),
            config_path=dict(type="path"),
            control_socket=dict(type="path"),
            history_dir=dict(type="path", default="/var/lib/djdeploy/history"),
            settings_reader=dict(type="str"),
            discover=dict(type="bool", default=False),
            overrides=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    facts = gather(module)
    for warning in facts["warnings"]:
        module.warn(warning)
    module.exit_json(changed=False, gunicorn_facts=facts)


if __name__ == "__main__":
    main()
