#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: djdeploy contributors
# MIT License (see pyproject.toml)

DOCUMENTATION = r"""
---
module: gunicorn_bridge
short_description: Keep warm gunicorn workers serving while the service restarts (a bridge master)
description:
  - C(state=started) sends the running master USR2, so gunicorn forks and executes a copy of
    itself (the bridge) that inherits the listening sockets, loads the app and forks warm
    workers; waits until as many of its workers as C(workers) have marked themselves ready
    (files C(booted-AGE-PID) in C(WORKER_TMP_DIR/djdeploy-workers-MASTERPID), written by
    djdeploy's config after each worker's warm-up); then moves the bridge and its workers into a
    transient scope C(djdeploy-bridge-PID.scope), out of the service's cgroup, so that a
    restart of the service does not kill them. Whatever fails, the bridge is stopped before
    the module fails: no bridge is left behind by a failed start.
  - C(state=ready) waits until C(workers) workers of the master C(pid) have marked themselves
    ready (the service's new master after the restart).
  - C(state=stopped) stops the bridge C(pid) gracefully (SIGTERM: in-flight requests finish)
    and waits until its scope is gone; after C(timeout) it stops the scope unit, which kills
    what is left.
  - C(state=absent) stops every C(djdeploy-bridge-*.scope) on the host (one left by a run
    that was cut off), gracefully first.
version_added: "0.1.0"
author:
  - djdeploy contributors
options:
  state:
    type: str
    choices: [started, ready, stopped, absent]
    required: true
  pid:
    description: The service's master (started), the master to wait for (ready), the bridge (stopped).
    type: int
  workers:
    description: How many ready workers make the master ready.
    type: int
  service:
    description: With C(state=ready) and no C(pid), wait for this unit's main process.
    type: str
  worker_tmp_dir:
    description: gunicorn's worker_tmp_dir as the service sees it (null is gunicorn's default, /tmp).
    type: str
  timeout:
    description: Seconds to wait for readiness (started, ready) or for the bridge to stop.
    type: float
    default: 60
notes:
  - Standard library only. Paths under the service's own /dev and /tmp are read through
    C(/proc/PID/root), because the service may have PrivateDevices= and PrivateTmp=.
"""

RETURN = r"""
bridge:
  description: The bridge started (pid, scope, workers, waited seconds); for stopped/absent, the scopes stopped.
  returned: success
  type: dict
"""

import os
import re
import signal
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

SCOPE_PREFIX = "djdeploy-bridge-"
# What djdeploy's config has each worker leave in its master's directory once it is warm.
READY_MARK = re.compile(r"^booted-(\d+)-(\d+)$")
POLL = 0.2


class BridgeError(Exception):
    pass


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            # A zombie has exited; only its parent has not collected it yet.
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def environ_of(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as handle:
            return dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
    except OSError:
        return {}


def ready_workers(master, worker_tmp_dir):
    """Pids of the master's live workers that marked themselves ready."""
    directory = "/proc/%d/root%s/djdeploy-workers-%d" % (master, worker_tmp_dir or "/tmp", master)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    marked = set()
    for name in names:
        found = READY_MARK.match(name)
        if found:
            marked.add(int(found.group(2)))
    return sorted(marked & set(children(master)))


def wait_ready(master, workers, worker_tmp_dir, deadline, what):
    while True:
        if not alive(master):
            raise BridgeError("%s (pid %d) exited before its workers were ready" % (what, master))
        ready = ready_workers(master, worker_tmp_dir)
        if len(ready) >= workers:
            return ready
        if time.monotonic() >= deadline:
            raise BridgeError("%s (pid %d) had %d of %d workers ready after the time limit"
                              % (what, master, len(ready), workers))
        time.sleep(POLL)


def find_bridge(master, deadline):
    """The child that gunicorn executed on USR2: it carries GUNICORN_PID=<master>."""
    wanted = str(master).encode()
    while time.monotonic() < deadline:
        for child in children(master):
            if environ_of(child).get(b"GUNICORN_PID") == wanted:
                return child
        if not alive(master):
            raise BridgeError("the master (pid %d) exited" % master)
        time.sleep(POLL)
    raise BridgeError("the master (pid %d) started no bridge on USR2 (a USR2 ignored, or a bridge master that "
                      "failed at once)" % master)


def run(argv):
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env=dict(os.environ, LC_ALL="C"))
    return done.returncode, done.stdout, done.stderr


def in_scope(pid, scope):
    try:
        with open("/proc/%d/cgroup" % pid) as handle:
            return any(line.rstrip().endswith("/" + scope) for line in handle)
    except OSError:
        return True  # gone: nothing left to move


def move_to_scope(bridge, scope):
    pids = [bridge] + children(bridge)
    rc, _out, err = run(["busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                         "org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))", scope, "fail",
                         "1", "PIDs", "au", str(len(pids))] + [str(p) for p in pids] + ["0"])
    if rc != 0:
        raise BridgeError("systemd refused the scope %s: %s" % (scope, err.strip()))
    # A worker forked meanwhile stayed in the service's cgroup, where the restart would kill it
    # in the middle of its requests: attach it too.
    for _ in range(5):
        left = [p for p in [bridge] + children(bridge) if not in_scope(p, scope)]
        if not left:
            return
        run(["busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
             "org.freedesktop.systemd1.Manager", "AttachProcessesToUnit", "ssau", scope, "/",
             str(len(left))] + [str(p) for p in left])
        time.sleep(POLL)
    raise BridgeError("processes %s of the bridge stayed in the service's cgroup" % left)


def scope_loaded(scope):
    rc, out, _err = run(["systemctl", "show", "--property=LoadState,ActiveState", scope])
    states = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return rc == 0 and states.get("LoadState") == "loaded" and states.get("ActiveState") not in ("inactive", "failed")


def stop(bridge, scope, timeout):
    """SIGTERM the bridge master (a graceful stop), wait for its scope to empty, then stop the
    scope (or, before it had one, kill the bridge's processes)."""
    processes = [bridge] + children(bridge) if bridge else []
    if bridge and alive(bridge):
        try:
            os.kill(bridge, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scope and not scope_loaded(scope) or not scope and not any(alive(p) for p in processes):
            return True
        time.sleep(POLL)
    if scope:
        run(["systemctl", "kill", "--signal=SIGKILL", scope])
        run(["systemctl", "stop", scope])
    for pid in processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return False


def stale_scopes():
    rc, out, _err = run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--type=scope",
                         SCOPE_PREFIX + "*"])
    return [line.split()[0] for line in out.splitlines() if line.startswith(SCOPE_PREFIX)] if rc == 0 else []


def scope_master(scope):
    rc, out, _err = run(["systemctl", "show", "--property=MainPID", "--value", scope])
    main = out.strip()
    if main.isdigit() and int(main):
        return int(main)
    name = scope[len(SCOPE_PREFIX):-len(".scope")]
    return int(name) if name.isdigit() else None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=True, choices=["started", "ready", "stopped", "absent"]),
            pid=dict(type="int"),
            workers=dict(type="int"),
            worker_tmp_dir=dict(type="str"),
            service=dict(type="str"),
            timeout=dict(type="float", default=60.0),
        ),
        required_if=[("state", "started", ("pid", "workers")), ("state", "ready", ("workers",)),
                     ("state", "stopped", ("pid",))],
        supports_check_mode=False,
    )
    params = module.params
    state, pid, timeout = params["state"], params["pid"], params["timeout"]
    began = time.monotonic()
    if state == "started":
        deadline = began + timeout
        bridge = scope = None
        try:
            os.kill(pid, signal.SIGUSR2)
            bridge = find_bridge(pid, deadline)
            ready = wait_ready(bridge, params["workers"], params["worker_tmp_dir"], deadline, "the bridge master")
            scope = SCOPE_PREFIX + "%d.scope" % bridge
            move_to_scope(bridge, scope)
        except (BridgeError, OSError) as exc:
            if bridge:
                stop(bridge, scope if scope and scope_loaded(scope) else None, 10.0)
            module.fail_json(msg=str(exc), bridge_removed=True, changed=bridge is not None)
        module.exit_json(changed=True, bridge={"pid": bridge, "scope": scope, "workers": ready,
                                               "waited": round(time.monotonic() - began, 2)})
    if state == "ready":
        if not pid:
            _rc, out, _err = run(["systemctl", "show", "--property=MainPID", "--value", params["service"] or ""])
            pid = int(out.strip()) if out.strip().isdigit() else 0
        if not pid:
            module.fail_json(msg="the service has no main process")
        try:
            ready = wait_ready(pid, params["workers"], params["worker_tmp_dir"], began + timeout, "the new master")
        except BridgeError as exc:
            module.fail_json(msg=str(exc))
        module.exit_json(changed=False, bridge={"master": pid, "workers": ready,
                                                "waited": round(time.monotonic() - began, 2)})
    if state == "stopped":
        scope = SCOPE_PREFIX + "%d.scope" % pid
        graceful = stop(pid, scope if scope_loaded(scope) else None, timeout)
        module.exit_json(changed=True, bridge={"stopped": [scope], "graceful": graceful})
    stopped = []
    for scope in stale_scopes():
        stop(scope_master(scope), scope, timeout)
        stopped.append(scope)
    module.exit_json(changed=bool(stopped), bridge={"stopped": stopped, "graceful": None})


if __name__ == "__main__":
    main()
