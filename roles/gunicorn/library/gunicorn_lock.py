#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: djdeploy contributors
# MIT License (see pyproject.toml)

DOCUMENTATION = r"""
---
module: gunicorn_lock
short_description: Take or release the per-host lock that lets one djdeploy run change a host at a time
description:
  - The lock is a JSON file naming its owner (user@controller, the controller's pid, the
    command, the run id) with the time it was taken and when it expires.
  - C(state=acquired) creates it atomically. If another run holds it, the module fails and
    returns the holder in C(lock), unless the lock has expired, or the caller names the
    holder's run id in C(takeover) (its run is known to be gone); then the lock is taken over
    and the module warns whose it was.
  - C(state=released) removes the lock only if this run holds it; another run's lock is left.
    The directories the lock's run created for it go too, when nothing else was put in them (a
    run refused before it wrote anything leaves no trace).
  - Acquiring again with the same run id renews the expiry.
version_added: "0.1.0"
author:
  - djdeploy contributors
options:
  path:
    description: The lock file.
    type: path
    required: true
  state:
    description: Take (acquired) or give back (released) the lock.
    type: str
    choices: [acquired, released]
    default: acquired
  owner:
    description: Who takes the lock; C(run_id) is required, C(who), C(pid), C(controller) and C(command) are shown to others.
    type: dict
    required: true
  ttl:
    description: Seconds after which the lock counts as stale.
    type: int
    default: 900
  takeover:
    description: Run ids whose runs are known to be gone; a lock held by one of them is taken over.
    type: list
    elements: str
    default: []
notes:
  - Check mode changes nothing and reports what would happen.
"""

EXAMPLES = r"""
- name: Take the host's lock
  gunicorn_lock:
    path: /var/lib/djdeploy/lock
    owner: {run_id: "20261121T101500Z-a1b2c3", who: "ops@laptop", pid: 4242, controller: laptop, command: "djdeploy tune web01"}
"""

RETURN = r"""
lock:
  description: The lock as it is after the call (the holder's, when the module failed); null when released.
  returned: always
  type: dict
took_over:
  description: The stale lock that was taken over, if any.
  returned: when acquired
  type: dict
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule


def read_lock(path):
    try:
        with open(path, encoding="utf-8") as handle:
            held = json.load(handle)
        return held if isinstance(held, dict) else {"unreadable": "not a JSON object"}
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"unreadable": str(exc)}


def write_new(path, lock):
    """Create the lock only if there is none; False if someone else was first."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(lock, handle)
    return True


def replace(path, lock):
    temporary = "%s.%d" % (path, os.getpid())
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(lock, handle)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def describe(held):
    if "unreadable" in held:
        return "an unreadable lock (%s)" % held["unreadable"]
    return "%s (pid %s on %s) running `%s` since %s, until %s" % (
        held.get("who"), held.get("pid"), held.get("controller"), held.get("command"),
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(held.get("acquired_at", 0))),
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(held.get("expires_at", 0))),
    )


def missing_directories(directory):
    """The directories from `directory` up that do not exist, deepest first."""
    missing = []
    while directory and directory != "/" and not os.path.lexists(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    return missing


def acquire(module, path, owner, now):
    if module.check_mode:
        return {"changed": False, "lock": read_lock(path)}
    lock = dict(owner, acquired_at=now, expires_at=now + module.params["ttl"],
                created_directories=missing_directories(os.path.dirname(path)))
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if write_new(path, lock):
        return {"changed": True, "lock": lock}
    held = read_lock(path)
    if held is None:  # released between our two looks
        return acquire(module, path, owner, now)
    if held.get("run_id") == owner["run_id"]:
        lock["acquired_at"] = held.get("acquired_at", now)
        replace(path, lock)
        return {"changed": True, "lock": lock}
    expired = "unreadable" not in held and held.get("expires_at", 0) < now
    gone = held.get("run_id") in module.params["takeover"]
    if expired or gone or "unreadable" in held:
        replace(path, lock)
        module.warn("took over the lock of %s: %s" % (
            describe(held), "its run is gone" if gone else "it expired" if expired else "it was unreadable"))
        return {"changed": True, "lock": lock, "took_over": held}
    module.fail_json(msg="the host is locked by %s; nothing was changed" % describe(held), lock=held)


def release(path, owner):
    held = read_lock(path)
    if held is None or held.get("run_id") != owner["run_id"]:
        return {"changed": False, "lock": held}
    os.unlink(path)
    for directory in held.get("created_directories") or []:
        try:
            os.rmdir(directory)  # only when empty: a history written meanwhile stays
        except OSError:
            break
    return {"changed": True, "lock": None}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["acquired", "released"], default="acquired"),
            owner=dict(type="dict", required=True),
            ttl=dict(type="int", default=900),
            takeover=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    owner = module.params["owner"]
    if not owner.get("run_id"):
        module.fail_json(msg="owner.run_id is required")
    path = module.params["path"]
    if module.params["state"] == "acquired":
        result = acquire(module, path, owner, time.time())
    elif module.check_mode:
        result = {"changed": False, "lock": read_lock(path)}
    else:
        result = release(path, owner)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
